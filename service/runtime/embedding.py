"""A model folder's backbone graph (card role ``embedding``): hidden states for embeddings.

The graph takes the classifier's inputs and gives ``last_hidden_state`` (batch, tokens, dim),
zero at padding. It runs in its own session and batcher beside the classifier's, so embedding
traffic is batched, admitted and timed like predictions. A batch's answer is one row per
sequence holding that sequence's hidden states without the padding (rows of different lengths:
an object array), so a record's rows are the same alone or in any batch; pooling is done by
:mod:`service.contract.embedding`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.contract.card import EMBEDDING_OUTPUT, EMBEDDING_ROLE, ModelCard
from service.contract.errors import ModelArtifactError
from service.contract.tokens import SequenceTokenizerLike
from service.runtime.session import CPU, RuntimeUnavailable, Session


class TokenStates:
    """One sequence's hidden states, ``(tokens, dim)``, as one opaque row of a batch's answer:
    the batcher stacks rows, and rows of different lengths stack only as objects."""

    __slots__ = ("hidden",)

    def __init__(self, hidden: np.ndarray):
        self.hidden = hidden


def has_embedding(card: ModelCard) -> bool:
    return EMBEDDING_ROLE in card.files


class EmbeddingGraph:
    """The backbone graph of a loaded model folder (files already checked against the card)."""

    def __init__(self, folder: Path, card: ModelCard, tokenizer: SequenceTokenizerLike,
                 providers: Sequence[str] = (CPU,), threads: int = 0):
        self.folder = folder
        self.tokenizer = tokenizer
        graph = card.files[EMBEDDING_ROLE]
        try:
            self.session = Session(folder / graph, providers, threads)
        except RuntimeUnavailable as exc:
            raise ModelArtifactError(f"{folder}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelArtifactError(f"{folder}: ONNX Runtime cannot load {graph}: {first}") from exc
        if self.session.input_names != card.inputs or EMBEDDING_OUTPUT not in self.session.output_names:
            raise ModelArtifactError(
                f"{folder}: {graph} has inputs {self.session.input_names} / outputs {self.session.output_names}; "
                f"expected {card.inputs} -> {EMBEDDING_OUTPUT}")

    def hidden_states(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """One batch of token-id rows -> an object array of :class:`TokenStates`, each holding a
        row's ``(len(row), dim)`` float32 hidden states. This is the embedding batcher's ``run_batch``."""
        input_ids, mask = self.tokenizer.pad(batch)
        hidden = self.session.run({"input_ids": input_ids, "attention_mask": mask}, EMBEDDING_OUTPUT)
        out = np.empty(len(batch), dtype=object)
        for i, row in enumerate(batch):
            out[i] = TokenStates(np.ascontiguousarray(hidden[i, : len(row)], dtype=np.float32))
        return out
