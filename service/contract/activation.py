"""From a classifier's logits to the scores a card promises (numpy, float64).

Used by the service after every batch and by training's PyTorch evaluation alike, so a model
scores the same whichever runtime ran its graph.
"""

from __future__ import annotations

import numpy as np

from service.contract.tasks import Activation


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def activate(logits: np.ndarray, activation: Activation, positive_index: int | None) -> np.ndarray:
    """(B, k) logits -> (B, k) sigmoid scores, or (B, 1) softmax probability of the positive
    class (all k columns when ``positive_index`` is None)."""
    if activation == "sigmoid":
        return sigmoid(logits)
    probs = softmax(logits)
    return probs[:, positive_index, None] if positive_index is not None else probs
