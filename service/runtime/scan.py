"""Scanning long sequences with a promoter model: windows through the one prediction path.

:class:`Scanner` cuts each record into windows (:mod:`service.contract.windows`), scores them
with :meth:`InferenceService.score <service.runtime.inference.InferenceService.score>` (the path
``/predict`` takes: normalise, tokenize, the model's dynamic batcher, ONNX Runtime, activation),
so a window's probability is what ``POST /predict/promoter`` answers for the window's sequence
(its reverse complement on ``-``). The windows go in chunks of :data:`CHUNK_POSITIONS`
positions, :data:`IN_FLIGHT` chunks queued at once so that the batcher always has full batches
to cut while memory stays bounded, and come back in order as events (:class:`RecordStarted`,
:class:`WindowsScored`, :class:`RecordFinished`) that the writers of
:mod:`service.contract.windows` turn into JSON, NDJSON, bedGraph or BED, the same for
``POST /scan/promoter`` and ``dnabert-serve scan``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from service.contract.fasta import FastaRecord
from service.contract.prepare import records_of
from service.contract.tasks import ALL, LNCRNA, PROMOTER
from service.contract.windows import (
    DEFAULT_MAX_N_FRACTION,
    DEFAULT_STRIDE,
    MINUS,
    PLUS,
    STRANDS,
    NotScannable,
    RecordSummary,
    RegionMerger,
    ScanMeta,
    ScanRecord,
    ScanWriter,
    Text,
    Windows,
    normalised,
    reverse_complement,
    scan_record,
    window_chunks,
    window_length,
)
from service.runtime.inference import InferenceService

CHUNK_POSITIONS = 256
"""Window positions per ``score`` call (times the strands: 512 windows for both)."""
IN_FLIGHT = 4
"""``score`` calls queued at once per scan."""

@dataclass(frozen=True)
class ScanOptions:
    stride: int = DEFAULT_STRIDE
    strands: tuple[str, ...] = STRANDS["both"]
    max_n_fraction: float = DEFAULT_MAX_N_FRACTION
    threshold: float | None = None
    """Windows at or over it make regions; None: the service's default for the model
    (:meth:`InferenceService.promoter_threshold`), which :class:`Scanner` fills in."""
    min_windows: int = 1


@dataclass(frozen=True)
class Target:
    """A record ready to scan: placed, and its sequence normalised."""

    record: ScanRecord
    sequence: str


@dataclass(frozen=True)
class RecordStarted:
    record: ScanRecord


@dataclass(frozen=True)
class WindowsScored:
    record: ScanRecord
    windows: Windows


@dataclass(frozen=True)
class RecordFinished:
    summary: RecordSummary


Event = RecordStarted | WindowsScored | RecordFinished


def refuse_lncrna(service: InferenceService, model: str | None) -> None:
    """A clear 422 for a lncRNA-localization model (which ``/scan/promoter`` would otherwise
    answer with 404 "unknown promoter model"): it reads whole transcripts, not windows."""
    if model and model != ALL and model in service.task_models(LNCRNA) and model not in service.task_models(PROMOTER):
        raise NotScannable(f"{model!r} is the lncRNA-localization model: it reads whole transcripts (up to "
                           "2,292 nt), so windows of a longer sequence make no sense for it; scan with a "
                           "promoter model (GET /models lists them), or send transcripts to "
                           "/predict/lncrna-localization")


@dataclass
class _Progress:
    """A record between its start and its end: its regions so far, its counts."""

    target: Target
    merger: RegionMerger
    scored: int = 0
    skipped: int = 0


@dataclass
class _Job:
    """What the scan does next, in output order: start a record (``starts`` None and not
    ``end``), score a chunk of its windows (``task``), or finish it (``end``)."""

    progress: _Progress
    starts: np.ndarray | None = None
    end: bool = False
    task: asyncio.Future | None = None


class Scanner:
    """Scans records with one promoter model, or ``all`` (the mean of the five variants)."""

    def __init__(self, service: InferenceService, model: str | None, options: ScanOptions, *,
                 timeout: float | None = None, chunk: int = CHUNK_POSITIONS, in_flight: int = IN_FLIGHT):
        refuse_lncrna(service, model)
        models = service.resolve(PROMOTER, model)
        windows = {window_length(lm.model.card) for lm in models}
        if len(windows) != 1:
            raise NotScannable(f"the models of {model!r} are trained on different window lengths "
                               f"({', '.join(map(str, sorted(windows)))} bp); scan with one of them")
        options = replace(options, threshold=service.promoter_threshold(models, options.threshold))
        self.service, self.model, self.options, self.timeout = service, model, options, timeout
        self.meta = ScanMeta(ALL if len(models) > 1 else models[0].name, windows.pop(), options.stride,
                             options.strands, options.threshold, options.min_windows, options.max_n_fraction)
        # every chunk of the scan may be queued at once: keep them within the batcher's queue
        capacity = service.settings.max_queue // (len(options.strands) * (in_flight + 1))
        self.chunk, self.in_flight = max(1, min(chunk, capacity)), in_flight

    def target(self, record: FastaRecord) -> Target:
        sequence = normalised(record)
        return Target(scan_record(record.id, len(sequence), self.meta.window), sequence)

    async def targets(self, records: Iterable[FastaRecord]) -> list[Target]:
        """Every record checked and placed before any is scored (off the event loop)."""
        return await asyncio.to_thread(lambda: [self.target(r) for r in records])

    async def events(self, targets: Iterable[Target] | AsyncIterable[Target]) -> AsyncIterator[Event]:
        """The scan's events in record order, windows by start then strand, while up to
        :attr:`in_flight` chunks are being scored. Closing the iterator withdraws them."""
        jobs = aiter(self._jobs(targets))
        queue: deque = deque()
        running = 0
        more = True
        try:
            while True:
                while more and running < self.in_flight:
                    job = await anext(jobs, None)
                    if job is None:
                        more = False
                    else:
                        if job.starts is not None:
                            job.task = asyncio.ensure_future(self._score(job.progress.target, job.starts))
                            running += 1
                        queue.append(job)
                if not queue:
                    return
                job = queue.popleft()
                progress = job.progress
                if job.task is not None:
                    windows = await job.task
                    running -= 1
                    progress.merger.add(windows)
                    progress.scored += len(windows)
                    yield WindowsScored(progress.target.record, windows)
                elif job.end:
                    yield RecordFinished(RecordSummary(progress.target.record, progress.scored, progress.skipped,
                                                       progress.merger.finish()))
                else:
                    yield RecordStarted(progress.target.record)
        finally:
            pending = [job.task for job in queue if job.task is not None]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await jobs.aclose()

    async def _jobs(self, targets: Iterable[Target] | AsyncIterable[Target]) -> AsyncIterator[_Job]:
        o = self.options
        async for target in _each(targets):
            progress = _Progress(target, RegionMerger(o.threshold, o.min_windows))
            yield _Job(progress)
            for starts, skipped in window_chunks(target.sequence, target.record.window, o.stride,
                                                 o.max_n_fraction, self.chunk):
                progress.skipped += skipped * len(o.strands)
                if len(starts):
                    yield _Job(progress, starts)
            yield _Job(progress, end=True)

    async def _score(self, target: Target, chunk: np.ndarray) -> Windows:
        """One chunk's windows, scored on every strand asked, as :class:`Windows`."""
        rec, seq, strands = target.record, target.sequence, self.options.strands
        w = rec.window
        starts = chunk.tolist()
        plus = [seq[s : s + w] for s in starts]
        sequences = [*(plus if PLUS in strands else ()),
                     *((reverse_complement(s) for s in plus) if MINUS in strands else ())]
        ids = [f"{rec.id}:{s}{strand}" for strand in strands for s in starts]  # internal, never shown
        scored = await self.service.score(PROMOTER, records_of(sequences, ids), self.model, self.timeout)
        n, k = len(starts), len(strands)
        probability = scored.probability.reshape(k, n).T.reshape(-1)  # by start, then strand
        start = np.repeat(chunk + rec.offset, k)
        return Windows(start, start + w, np.tile(np.array(strands), n), probability)


async def _each(items: Iterable | AsyncIterable) -> AsyncIterator:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


@dataclass
class ScanStats:
    """What a scan did, counted as it goes (``on_windows``: a progress bar's ``update``)."""

    records: int = 0
    windows: int = 0
    skipped: int = 0
    regions: int = 0
    on_windows: Callable[[int], object] | None = None

    def describe(self) -> str:
        return (f"{self.records} record{'s' if self.records != 1 else ''}, {self.windows} windows scored, "
                f"{self.skipped} skipped, {self.regions} region{'s' if self.regions != 1 else ''}")


async def write(scanner: Scanner, targets: Iterable[Target] | AsyncIterable[Target], writer: ScanWriter,
                stats: ScanStats | None = None) -> AsyncIterator[Text]:
    """The writer's text for a whole scan, piece by piece: head, records, tail."""
    stats = stats or ScanStats()
    yield writer.head()
    events = scanner.events(targets)
    try:
        async for event in events:
            if isinstance(event, WindowsScored):
                stats.windows += len(event.windows)
                if stats.on_windows is not None:
                    stats.on_windows(len(event.windows))
                yield writer.windows(event.record, event.windows)
            elif isinstance(event, RecordStarted):
                yield writer.start(event.record)
            else:
                summary = event.summary
                stats.records += 1
                stats.skipped += summary.skipped
                stats.regions += len(summary.regions)
                yield writer.finish(summary)
    finally:
        await events.aclose()
    yield writer.tail(stats.records)
