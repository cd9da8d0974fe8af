"""The prediction path without a server: the same stages and the same batcher, driven to the
end of a list of sequences in one call.

For ``dnabert-train evaluate``, int8 measurement, the comparison's throughput column and
training's own dev evaluation (with a PyTorch ``run_batch``): every score in the project comes
out of :class:`~service.runtime.batcher.DynamicBatcher`, which is where length bucketing lives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.contract.prepare import Prepared, prepare, records_of
from service.runtime.batcher import BatcherConfig, DynamicBatcher, RunBatch
from service.runtime.model import OnnxModel

OFFLINE_QUEUE = 1 << 30  # offline: everything may queue at once


def batcher_config(max_batch_size: int = 64, max_batch_tokens: int = 16384, workers: int = 1) -> BatcherConfig:
    return BatcherConfig(max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size, max_wait_ms=0.0,
                         window=4096, max_queue=OFFLINE_QUEUE, workers=workers)


def score_tokens(tokens: Sequence[Sequence[int]], run_batch: RunBatch,
                 config: BatcherConfig | None = None) -> np.ndarray:
    """(N, k) rows of ``run_batch`` for every token-id row, in input order."""
    if not tokens:
        return np.empty((0, 0))

    async def go() -> np.ndarray:
        batcher = DynamicBatcher("offline", run_batch, config or batcher_config())
        await batcher.start()
        try:
            return await batcher.submit(list(tokens))
        finally:
            await batcher.stop()

    return asyncio.run(go())


@dataclass(frozen=True)
class Prediction:
    scores: np.ndarray
    """(N,) P(positive) for one-class models, (N, k) for multi-label ones."""
    prepared: Prepared


def predict_sequences(model: OnnxModel, sequences: Sequence[str], ids: Sequence[str] | None = None,
                      config: BatcherConfig | None = None) -> Prediction:
    """Normalise, tokenize, batch, run and activate: the service's scores for these sequences."""
    prep = prepare(records_of(sequences, ids), model.tokenizer)
    scores = score_tokens(prep.tokens, model.scores, config)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    return Prediction(scores, prep)
