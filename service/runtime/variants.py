"""Variant effects: REF and ALT windows scored through the one prediction path.

The windows come from :mod:`service.contract.variant_windows` (which also says what the values
mean); here they are scored with :meth:`InferenceService.score`, so each probability is exactly
what ``/predict/promoter`` answers for that window's sequence (``model=all``: the mean of the
five DNABERT-2 variants). The HTTP endpoint and ``dnabert-serve variants`` both call
:func:`variant_report`, so they give the same numbers.

Windows are submitted in chunks of :data:`CHUNK` sequences with at most :data:`PARALLEL` chunks
queued at once per call: enough to keep the dynamic batcher's batches full, few enough that one
large VCF neither fills the queue (``max_queue``, 429 for everyone else) nor holds every window
in memory at once; each chunk gets the request deadline from the moment it is queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np

from service.contract.errors import DnabertError
from service.contract.prepare import records_of
from service.contract.reference import Reference
from service.contract.tasks import ALL, PROMOTER
from service.contract.variant_windows import (
    StrandEffect,
    VariantEffect,
    VariantReport,
    VariantWindows,
    build_windows,
    strand_effect,
)
from service.contract.vcf import VcfHeader, VcfRecord, split_alleles
from service.contract.windows import window_length
from service.runtime.inference import InferenceService

CHUNK = 512
"""Windows per :meth:`InferenceService.score` call."""
PARALLEL = 4
"""Chunks in flight at once per call."""


class MixedWindows(DnabertError):
    """The models of ``model=all`` were trained on windows of different lengths."""

    code = "mixed_windows"
    http_status = 422


def model_window(service: InferenceService, model: str | None) -> tuple[str, int]:
    """The model's name as reported (``all`` for the ensemble) and its window length (every
    member of ``all`` must agree); 404/503 as :meth:`InferenceService.resolve` for a model
    that is not served."""
    models = service.resolve(PROMOTER, model)
    lengths = {window_length(lm.model.card) for lm in models}
    if len(lengths) != 1:
        raise MixedWindows(f"the models of {model!r} were trained on windows of different lengths: "
                           f"{sorted(lengths)}; choose one model")
    return ALL if len(models) > 1 else models[0].name, lengths.pop()


async def score_sequences(service: InferenceService, sequences: Sequence[str], ids: Sequence[str],
                          model: str | None, *, chunk: int = CHUNK, parallel: int = PARALLEL,
                          progress: Callable[[int], None] | None = None,
                          timeout: float | None = None) -> tuple[np.ndarray, list[list[str]], list[bool]]:
    """P(promoter) of each sequence, its :class:`Prepared` flags and whether it is scored, in
    order; submitted in chunks (module docstring). If one chunk fails, the others are withdrawn."""
    probability = np.full(len(sequences), np.nan)
    flags: list[list[str]] = [[] for _ in sequences]
    scored = [False] * len(sequences)
    gate = asyncio.Semaphore(parallel)

    async def one(start: int) -> None:
        async with gate:
            stop = min(start + chunk, len(sequences))
            result = await service.score(PROMOTER, records_of(sequences[start:stop], ids[start:stop]), model,
                                         timeout)
        probability[start:stop] = result.probability
        for i in range(stop - start):
            flags[start + i] = result.prepared.flags(i)
            scored[start + i] = result.prepared.scored(i)
        if progress is not None:
            progress(stop - start)

    work = [asyncio.ensure_future(one(s)) for s in range(0, len(sequences), chunk)]
    try:
        await asyncio.gather(*work)
    except BaseException:
        for w in work:
            w.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        raise
    return probability, flags, scored


async def score_windows(service: InferenceService, windows: Sequence[VariantWindows], model: str | None,
                        strand: str, *, parallel: int = PARALLEL, timeout: float | None = None) -> list[VariantEffect]:
    """One :class:`VariantEffect` per window pair, in order (unscorable ones with their flags)."""
    strands = ("+", "-") if strand == "both" else (strand,)
    jobs = [(i, s) for i, w in enumerate(windows) if w.scorable for s in strands]
    sequences: list[str] = []
    ids: list[str] = []
    for i, s in jobs:
        name = windows[i].variant.name
        sequences.extend(windows[i].sequences(s))
        ids += [f"{name} REF {s}", f"{name} ALT {s}"]
    p, flags, scored = (await score_sequences(service, sequences, ids, model, parallel=parallel, timeout=timeout)
                        if sequences else (np.empty(0), [], []))
    per_variant = 2 * len(strands)
    effects: dict[int, VariantEffect] = {}
    for k in range(0, len(jobs), len(strands)):
        i = jobs[k][0]
        rows = range(2 * k, 2 * k + per_variant)
        notes = list(dict.fromkeys(f for r in rows for f in flags[r]))
        per_strand: dict[str, StrandEffect] = {}
        if all(scored[r] for r in rows):
            per_strand = {s: strand_effect(p[2 * (k + j)], p[2 * (k + j) + 1]) for j, s in enumerate(strands)}
        effects[i] = VariantEffect.of(windows[i], per_strand, notes, both=strand == "both")
    return [effects[i] if i in effects else VariantEffect.of(w) for i, w in enumerate(windows)]


async def variant_report(service: InferenceService, header: VcfHeader, records: Sequence[VcfRecord],
                         reference: Reference, model: str | None, strand: str, *, parallel: int = PARALLEL,
                         timeout: float | None = None) -> VariantReport:
    """The effect of every variant (record and ALT) of ``records``, in order: windows built off
    the event loop (the reference may be a file), then scored. What ``POST /variants/promoter``
    answers, and what ``dnabert-serve variants`` writes for each batch of records."""
    name, length = model_window(service, model)
    found = [v for record in records for v in split_alleles(record)]
    loop = asyncio.get_running_loop()
    windows = await loop.run_in_executor(None, lambda: [build_windows(v, reference, length) for v in found])
    effects = await score_windows(service, windows, model, strand, parallel=parallel, timeout=timeout)
    return VariantReport(header, list(records), effects, name, strand, length)
