"""In-silico mutagenesis through the one prediction path: what ``POST /explain/...`` and
``dnabert-serve explain`` run.

Each record and each of its single-base mutants (:class:`service.contract.mutagenesis.Mutagenesis`)
is scored by :meth:`InferenceService.score`, exactly as ``/predict`` scores a sequence
(normalise, tokenize, the model's dynamic batcher, ONNX Runtime, activation; ``all``: the mean
of the five variants), so every entry of a change matrix is predict(mutant) - predict(reference).
The mutants go in chunks of :data:`CHUNK` sequences, at most :data:`IN_FLIGHT` chunks queued at a
time: the batcher fills its batches from several chunks, memory stays bounded (a chunk's
sequences are built when it is sent), progress is reported chunk by chunk, and a cancelled
request (a client that went away) leaves at most a few chunks to withdraw from the queues.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.contract.fasta import FastaRecord
from service.contract.mutagenesis import Explanation, Mutagenesis, check_limits, input_length
from service.contract.prepare import records_of
from service.contract.sequence import normalize_sequence
from service.contract.tasks import ALL
from service.runtime.inference import InferenceService, LoadedModel

CHUNK = 256
"""Mutants per :meth:`InferenceService.score` call."""
IN_FLIGHT = 4
"""Chunks queued at once (several, so that the batcher can fill its batches)."""


@dataclass
class Explained:
    """The explanations of one request, in input order."""

    task: str
    model: str
    """The model's name, or ``all``."""
    explanations: list[Explanation]


def score_labels(lm: LoadedModel) -> tuple[str, ...]:
    """The labels of a model's scores: the positive class of a softmax model (the promoter
    probability), else every label."""
    card = lm.model.card
    return (card.labels[card.positive_index],) if card.positive_index is not None else tuple(card.labels)


def explain_limit(service: InferenceService, task: str, model: str | None) -> int:
    """The longest record the model (every member of ``all``) reads whole, in nucleotides."""
    return min(input_length(lm.model.card) for lm in service.resolve(task, model))


def planned_mutants(service: InferenceService, task: str, records: Sequence[FastaRecord], model: str | None,
                    max_mutants: int | None = None) -> int:
    """The mutants these records will be scored with, after the limits: 422 for a record over the
    model's input length, 413 over ``max_mutants`` (None: no limit)."""
    return sum(check_limits(records, explain_limit(service, task, model), max_mutants))


async def explain(service: InferenceService, task: str, records: Sequence[FastaRecord], model: str | None = None,
                  *, max_mutants: int | None = None, timeout: float | None = None,
                  progress: Callable[[int], None] | None = None, chunk: int = CHUNK) -> Explained:
    """Every record's reference score and L x 4 matrix of changes (per label).

    The limits are checked before anything is scored (:func:`planned_mutants`). The references
    are scored first, in one call, which also checks every record as ``/predict`` does (invalid
    characters, protein), with the same errors. A record with no A, C, G or T is not scored
    (as by ``/predict``) and gets no matrix. ``progress(n)`` is called as each piece of ``n``
    sequences (the references, then each chunk of mutants) is done; ``timeout`` is each
    piece's deadline (default: the request deadline).
    """
    resolved = service.resolve(task, model)
    planned_mutants(service, task, records, model, max_mutants)
    labels = score_labels(resolved[0])
    name = ALL if len(resolved) > 1 else resolved[0].name

    reference = await service.score(task, records, model, timeout)
    if progress is not None:
        progress(len(records))
    prep = reference.prepared
    plans = [Mutagenesis.of(normalize_sequence(r.sequence, r.id).sequence) if prep.scored(i) else None
             for i, r in enumerate(records)]
    scores = [np.empty((len(p), len(labels))) if p is not None else None for p in plans]
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def run(piece: list[tuple[int, int, int]]) -> None:
        async with gate:
            sequences = [s for i, a, b in piece for s in plans[i].mutants(a, b)]  # type: ignore[union-attr]
            out = (await service.score(task, records_of(sequences), model, timeout)).mean
        row = 0
        for i, a, b in piece:
            scores[i][a:b] = out[row: row + b - a]  # type: ignore[index]
            row += b - a
        if progress is not None:
            progress(len(sequences))

    await asyncio.gather(*(run(piece) for piece in _pieces([len(p) if p else 0 for p in plans], chunk)))

    explanations = []
    for i, r in enumerate(records):
        plan = plans[i]
        if plan is None:
            norm = normalize_sequence(r.sequence, r.id).sequence
            explanations.append(Explanation(r.id, norm, labels, None, None, np.zeros(len(norm), dtype=np.int64),
                                            prep.flags(i)))
            continue
        ref = np.asarray(reference.mean[i], dtype=np.float64)
        explanations.append(Explanation(r.id, plan.sequence, labels, ref, plan.changes(ref, scores[i]),
                                        plan.substitutions(), prep.flags(i), plan.ambiguous_positions))
    return Explained(task, name, explanations)


def _pieces(counts: Sequence[int], chunk: int) -> list[list[tuple[int, int, int]]]:
    """The mutants of all records (``counts[i]`` of record ``i``) in chunks of ``chunk``, each a list
    of ``(record, start, stop)`` runs: a chunk may span several short records."""
    pieces: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    room = chunk
    for i, n in enumerate(counts):
        start = 0
        while start < n:
            take = min(room, n - start)
            current.append((i, start, start + take))
            start += take
            room -= take
            if room == 0:
                pieces.append(current)
                current, room = [], chunk
    if current:
        pieces.append(current)
    return pieces
