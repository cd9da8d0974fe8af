"""What each kind of job does, chunk by chunk: the synchronous endpoint's work and answer, cut
into pieces that can be committed one at a time and resumed.

A :class:`Work` is made for one run of one job. The runner (:mod:`service.jobs.runner`) calls

1. :meth:`Work.setup` (the models and options, as the endpoint resolves them);
2. on a fresh job, :meth:`Work.count` (a full pass over the input that checks it as the endpoint
   would before scoring anything, and counts the progress total), then :meth:`Work.head`;
   on a resumed job, :meth:`Work.restore` with the checkpoint of its last committed chunk;
3. :meth:`Work.units` (the chunks still to do), :meth:`Work.compute` for a few of them at once
   (the scoring, through :class:`~service.runtime.inference.InferenceService` and the runtime's
   scan, variant and explanation code), and :meth:`Work.emit` for each, in order (the text it adds
   to the result, and the progress it makes);
4. :meth:`Work.tail`.

Everything :meth:`Work.emit` changes is in :attr:`Work.state`, pickled into the checkpoint, so a
resumed job writes the same bytes as one that never stopped. A result has one stream, or two for
the scan's bedGraph of both strands (the ``-`` track follows the ``+`` track): the streams
concatenated are the result, byte for byte what the synchronous endpoint answers (its JSON,
CSV/TSV, bedGraph, BED, NDJSON, VCF, PNG or SVG).
"""

from __future__ import annotations

import asyncio
import json
import pickle
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from service import __version__
from service.api.formats import lncrna_table, promoter_table
from service.contract.errors import DnabertError, EmptyInput
from service.contract.fasta import FastaRecord
from service.contract.mutagenesis import BASES, check_limits
from service.contract.plots import IMAGE_FORMATS, render_explanations, require_one_record
from service.contract.reference import FaidxReference, Reference, ReferenceUnavailable, server_reference
from service.contract.results import PromoterResult
from service.contract.sequence import normalize_sequence
from service.contract.tasks import ALL, LNCRNA, PROMOTER
from service.contract.variant_windows import VariantReport
from service.contract.vcf import VcfReader, iter_lines
from service.contract.windows import (
    RecordSummary,
    RegionMerger,
    normalised,
    strand_name,
    strands_of,
    tile,
    window_chunks,
)
from service.jobs.inputs import iter_fasta, iter_records
from service.jobs.store import Job
from service.runtime.explain import explain, explain_limit, score_labels
from service.runtime.inference import InferenceService
from service.runtime.scan import Scanner, ScanOptions, Target, refuse_lncrna
from service.runtime.variants import model_window, variant_report
from service.settings import Settings

CHUNK_TIMEOUT_S = 3600.0
"""A chunk's deadline in the batcher: background work waits behind interactive requests."""
FASTA_FILE = "fasta"
"""The spooled FASTA of predict, scan and explain jobs (the body, or the multipart field ``file``)."""
VCF_FILE, REFERENCE_FILE = "vcf", "reference"
"""The spooled VCF and reference FASTA of a variants job."""
REFERENCE_INDEXED = "reference.fa"
"""The uploaded reference, checked and rewritten in lines of one width for the index."""
SOURCE = f"dnabert-serve {__version__}"
"""The ``##DNABERT_source`` of the variants VCF, as ``POST /variants/promoter`` writes it."""


class MissingReference(DnabertError):
    code = "missing_reference"
    http_status = 422


def _json(value: Any) -> str:
    """JSON as the service's JSON answers are written (Starlette's ``JSONResponse``)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


@dataclass
class JobContext:
    service: InferenceService
    settings: Settings
    job: Job
    folder: Path
    """The job's folder: ``input/`` (the spooled upload), the result streams, the result."""

    @property
    def params(self) -> dict:
        return self.job.params

    def input(self, name: str) -> Path:
        return self.folder / "input" / name


@dataclass
class Unit:
    """One chunk: its place (what the checkpoint records once it is emitted) and its data."""

    position: Any
    data: Any


Texts = list[str | bytes]
"""What one step adds to each result stream."""


class Work(ABC):
    """One kind of job (module docstring). Subclasses set :attr:`unit` (what progress counts),
    :attr:`formats` (format -> Content-Type of the result) and :attr:`streams`."""

    unit = "records"
    formats: dict[str, str] = {}
    tasks: tuple[str, ...] = (PROMOTER,)
    ahead = 2
    """Chunks scored at once (so the batcher always has the next one queued)."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.service = ctx.service
        self.params = ctx.params
        self.format: str = self.params.get("format") or next(iter(self.formats))
        self.state: Any = None
        self.total: int | None = None
        self.complete = False
        """Every chunk and the tail are written: only the result's assembly is left."""

    @property
    def streams(self) -> int:
        return 1

    @classmethod
    def check(cls, service: InferenceService, task: str, params: dict) -> None:
        """Refuse at submission what the endpoint would refuse before reading the body."""
        cls.check_format(params)

    @classmethod
    def check_format(cls, params: dict) -> None:
        from service.api.negotiation import UnsupportedFormat

        fmt = params.get("format")
        if fmt is not None and fmt.lower() not in cls.formats:
            raise UnsupportedFormat(f"format {fmt[:64]!r} is not offered; format must be one of "
                                    f"{', '.join(cls.formats)}")
        if fmt is not None:
            params["format"] = fmt.lower()

    @abstractmethod
    async def setup(self) -> None:
        """Models, options and a fresh :attr:`state` (errors as the endpoint's)."""

    @abstractmethod
    def count(self) -> int:
        """A full pass over the input (blocking: run in a thread), checking it; the progress total."""

    def head(self) -> Texts:
        return [""] * self.streams

    @abstractmethod
    def units(self) -> Iterator[Unit]:
        """The chunks after the checkpoint's position (blocking: reads the input)."""

    @abstractmethod
    async def compute(self, unit: Unit) -> Any: ...

    @abstractmethod
    def emit(self, unit: Unit, result: Any) -> tuple[Texts, int]:
        """The text ``unit`` adds to each stream and the progress it makes; updates :attr:`state`."""

    def tail(self) -> Texts:
        return [""] * self.streams

    @property
    def media_type(self) -> str:
        return self.formats[self.format]

    def checkpoint(self) -> bytes:
        """What a resumed run needs: the total, :attr:`state` and :attr:`complete`."""
        return pickle.dumps((self.total, self.state, self.complete), protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, checkpoint: bytes) -> None:
        self.total, self.state, self.complete = pickle.loads(checkpoint)  # noqa: S301 - written by this service


# -- predict --------------------------------------------------------------------------------------


@dataclass
class PredictState:
    records: int = 0
    """Records emitted: the resume position."""
    any_scored: bool = False
    """Some record has an A, C, G or T (then model=all's tables have a column per variant)."""
    header: str = ""


class PredictWork(Work):
    """``POST /predict/{task}``: JSON, CSV or TSV, records in chunks of :data:`CHUNK`."""

    CHUNK = 128
    formats = {"json": "application/json", "csv": "text/csv; charset=utf-8",
               "tsv": "text/tab-separated-values; charset=utf-8"}
    tasks = (PROMOTER, LNCRNA)

    @classmethod
    def check(cls, service: InferenceService, task: str, params: dict) -> None:
        super().check(service, task, params)
        service.resolve(task, params.get("model"))

    async def setup(self) -> None:
        task = self.ctx.job.task
        self.models = self.service.resolve(task, self.params.get("model"))
        keys = ("threshold",) if task == PROMOTER else ("threshold_nucleus", "threshold_cytoplasm",
                                                         "threshold_extracellular_vesicle")
        given = {k.removeprefix("threshold_") if task == LNCRNA else "promoter": self.params.get(k) for k in keys}
        self.thresholds = {k: v for k, v in given.items() if v is not None}
        self.state = PredictState()

    def _records(self) -> Iterator[list[FastaRecord]]:
        return iter_fasta(self.ctx.input(FASTA_FILE), max_sequence_length=self.ctx.settings.max_sequence_length)

    def count(self) -> int:
        n = 0
        for group in self._records():
            for record in group:
                self.state.any_scored |= any(b in normalised(record) for b in "ACGT")
            n += len(group)
        self.total = n
        return n

    def units(self) -> Iterator[Unit]:
        done = self.state.records
        seen = 0
        for group in self._records():
            for i in range(0, len(group), self.CHUNK):
                piece = group[i:i + self.CHUNK]
                start, seen = seen, seen + len(piece)
                if seen <= done:
                    continue
                yield Unit(seen, piece[max(0, done - start):])

    async def compute(self, unit: Unit):
        prep, outs = await self.service.scores(unit.data, self.models, CHUNK_TIMEOUT_S)
        return self.service.respond(self.ctx.job.task, self.models, prep, outs, self.thresholds)

    def emit(self, unit: Unit, result) -> tuple[Texts, int]:
        first = self.state.records == 0
        self.state.records = unit.position
        if self.format == "json":
            head = _json(result.model_copy(update={"results": [], "count": self.total}).model_dump(mode="json"))
            body = ",".join(_json(r.model_dump(mode="json")) for r in result.results)
            return [(head[:-2] if first else ",") + body], len(result.results)
        header, rows = self._table(result)
        return [(header if first else "") + rows], len(result.results)

    def _table(self, result) -> tuple[str, str]:
        """(header line, rows) of a chunk, with the columns the whole answer has: with
        ``model=all`` a ``p_<variant>`` column per variant as soon as any record is scored."""
        if self.ctx.job.task == LNCRNA:
            header, rows = lncrna_table(result, self.format).split("\n", 1)
            return header + "\n", rows
        if len(self.models) > 1 and self.state.any_scored:
            names = {m.name: 0.5 for m in self.models}
            marker = PromoterResult(id="-", length=1, probability=0.5, label="promoter", model=ALL,
                                    variant_probabilities=names, truncated=False, ambiguous_bases=0, flags=[])
            text = promoter_table(result.model_copy(update={"results": [marker, *result.results]}), self.format)
            header, _, rows = text.split("\n", 2)
        else:
            header, rows = promoter_table(result, self.format).split("\n", 1)
        return header + "\n", rows

    def tail(self) -> Texts:
        return ["]}" if self.format == "json" else ""]


# -- scan -----------------------------------------------------------------------------------------


@dataclass
class ScanState:
    record: int = 0
    """Index of the record being scanned (the resume position, with ``chunk``)."""
    chunk: int = 0
    writer: Any = None
    merger: Any = None
    scored: int = 0
    skipped: int = 0
    records: int = 0
    """Records finished."""


@dataclass
class ScanChunk:
    target: Target
    starts: Any
    skipped: int
    first: bool
    last: bool


class ScanWork(Work):
    """``POST /scan/promoter``: the scanner's windows, chunk by chunk (:class:`ScanChunk`), through
    the endpoint's writer; progress counts windows (positions x strands, skipped ones included)."""

    unit = "windows"
    formats = {"json": "application/json", "bedgraph": "text/x-bedgraph; charset=utf-8",
               "bed": "text/x-bed; charset=utf-8", "ndjson": "application/x-ndjson"}

    @classmethod
    def check(cls, service: InferenceService, task: str, params: dict) -> None:
        super().check(service, task, params)
        refuse_lncrna(service, params.get("model"))
        strands_of(params.get("strand") or "both")
        Scanner(service, params.get("model"), ScanOptions())

    @property
    def streams(self) -> int:
        return 2 if self.format == "bedgraph" and len(self.options.strands) == 2 else 1

    async def setup(self) -> None:
        from service.contract.windows import WRITERS

        p = self.params
        options = ScanOptions(p.get("stride", 50), strands_of(p.get("strand") or "both"),
                              p.get("max_n_fraction", 0.1), p.get("threshold"), p.get("min_windows", 1))
        self.scanner = Scanner(self.service, p.get("model"), options, timeout=CHUNK_TIMEOUT_S)
        self.options = self.scanner.options  # the threshold filled in for the model
        self.state = ScanState(writer=WRITERS[self.format](self.scanner.meta))

    def _texts(self, now: str, later: str) -> Texts:
        return [now, later] if self.streams == 2 else [now + later]

    def count(self) -> int:
        total = 0
        for record in iter_records(self.ctx.input(FASTA_FILE)):
            target = self.scanner.target(record)
            total += len(tile(target.record.length, target.record.window, self.options.stride))
        self.total = total * len(self.options.strands)
        return self.total

    def head(self) -> Texts:
        return self._texts(*self.state.writer.head())

    def units(self) -> Iterator[Unit]:
        o, size = self.options, self.scanner.chunk
        for r, record in enumerate(iter_records(self.ctx.input(FASTA_FILE))):
            if r < self.state.record:
                continue
            target = self.scanner.target(record)
            n = -(-len(tile(target.record.length, target.record.window, o.stride)) // size)
            chunks = window_chunks(target.sequence, target.record.window, o.stride, o.max_n_fraction, size)
            for c, (starts, skipped) in enumerate(chunks):
                if r == self.state.record and c < self.state.chunk:
                    continue
                yield Unit((r, c), ScanChunk(target, starts, skipped, c == 0, c == n - 1))

    async def compute(self, unit: Unit):
        chunk: ScanChunk = unit.data
        return await self.scanner._score(chunk.target, chunk.starts) if len(chunk.starts) else None

    def emit(self, unit: Unit, windows) -> tuple[Texts, int]:
        s, chunk, strands = self.state, unit.data, len(self.options.strands)
        record = chunk.target.record
        now, later = [], []

        def add(text: tuple[str, str]) -> None:
            now.append(text[0])
            later.append(text[1])

        if chunk.first:
            s.merger, s.scored, s.skipped = RegionMerger(self.options.threshold, self.options.min_windows), 0, 0
            add(s.writer.start(record))
        s.skipped += chunk.skipped * strands
        if windows is not None:
            s.merger.add(windows)
            s.scored += len(windows)
            add(s.writer.windows(record, windows))
        if chunk.last:
            s.records += 1
            add(s.writer.finish(RecordSummary(record, s.scored, s.skipped, s.merger.finish())))
            s.record, s.chunk, s.merger = unit.position[0] + 1, 0, None
        else:
            s.record, s.chunk = unit.position[0], unit.position[1] + 1
        return self._texts("".join(now), "".join(later)), (len(chunk.starts) + chunk.skipped) * strands

    def tail(self) -> Texts:
        return self._texts(*self.state.writer.tail(self.state.records))


# -- variants -------------------------------------------------------------------------------------


@dataclass
class VariantsState:
    records: int = 0
    """VCF records emitted: the resume position."""
    effects: int = 0


class VariantsWork(Work):
    """``POST /variants/promoter``: VCF records in chunks of :data:`CHUNK`; progress counts
    variants (one per ALT)."""

    CHUNK = 256
    unit = "variants"
    formats = {"json": "application/json", "tsv": "text/tab-separated-values; charset=utf-8",
               "vcf": "text/x-vcf; charset=utf-8"}

    @classmethod
    def check(cls, service: InferenceService, task: str, params: dict) -> None:
        super().check(service, task, params)
        strands_of(params.get("strand") or "both")
        model_window(service, params.get("model"))

    async def setup(self) -> None:
        self.name, self.window = model_window(self.service, self.params.get("model"))
        self.strand = strand_name(strands_of(self.params.get("strand") or "both"))
        self.state = VariantsState()
        self.reference: Reference | None = None

    def _reader(self) -> VcfReader:
        path = self.ctx.input(VCF_FILE)
        with path.open("rb") as f:
            if not f.read(1 << 16).strip() and not f.read(1):
                raise EmptyInput("no VCF: the 'vcf' field (or the body) is empty")

        def chunks():
            with path.open("rb") as f:
                while data := f.read(1 << 20):
                    yield data

        return VcfReader(iter_lines(chunks(), self.ctx.settings.job_max_upload_bytes))

    def _open_reference(self) -> Reference:
        if self.reference is None:
            indexed = self.ctx.folder / REFERENCE_INDEXED
            if indexed.is_file():
                self.reference = _uploaded(indexed)
            elif self.ctx.input(REFERENCE_FILE).is_file():
                raise ReferenceUnavailable("the uploaded reference was not prepared; resubmit the job")
            elif self.ctx.settings.reference_fasta is not None:
                try:
                    self.reference = server_reference(self.ctx.settings.reference_fasta)
                except ReferenceUnavailable:
                    raise ReferenceUnavailable("the server's reference FASTA (DNABERT_REFERENCE_FASTA) cannot be "
                                               "opened; see the server log") from None
            else:
                raise MissingReference("no reference: send the reference FASTA in the multipart field "
                                       "'reference' (this server has no DNABERT_REFERENCE_FASTA)")
        return self.reference

    def count(self) -> int:
        reader = self._reader()
        total = sum(max(1, len(r.alts)) for r in reader)
        uploaded = self.ctx.input(REFERENCE_FILE)
        if uploaded.is_file():
            _index_reference(uploaded, self.ctx.folder / REFERENCE_INDEXED)
        self._open_reference()
        self.total = total
        return total

    def _empty(self, header) -> VariantReport:
        return VariantReport(header, [], [], self.name, self.strand, self.window)

    def head(self) -> Texts:
        report = self._empty(self._reader().header)
        if self.format == "json":
            text = report.response().model_dump_json()
            return [text[: text.rindex('"results":[') + len('"results":[')]]
        return [report.tsv(header=True) if self.format == "tsv" else report.vcf(SOURCE, header=True)]

    def units(self) -> Iterator[Unit]:
        reader = self._reader()
        records = islice(iter(reader), self.state.records, None)
        done = self.state.records
        while batch := list(islice(records, self.CHUNK)):
            done += len(batch)
            yield Unit(done, (reader.header, batch))

    async def compute(self, unit: Unit):
        header, batch = unit.data
        reference = await asyncio.to_thread(self._open_reference)
        return await variant_report(self.service, header, batch, reference, self.params.get("model"), self.strand,
                                    timeout=CHUNK_TIMEOUT_S)

    def emit(self, unit: Unit, report: VariantReport) -> tuple[Texts, int]:
        s = self.state
        if self.format == "json":
            text = ",".join(e.model_dump_json() for e in report.effects)
            text = ("," if s.effects and text else "") + text
        elif self.format == "tsv":
            text = report.tsv(header=False)
        else:
            text = report.vcf(SOURCE, header=False)
        s.records, s.effects = unit.position, s.effects + len(report.effects)
        return [text], len(report.effects)

    def tail(self) -> Texts:
        return [f'],"count":{self.state.effects}}}' if self.format == "json" else ""]


def _index_reference(uploaded: Path, indexed: Path) -> None:
    """Check the uploaded reference as ``POST /variants/promoter`` checks it (every contig
    normalised; errors name the contig and the line) and write it in lines of one width, which
    the index needs, under a name that only appears once it is complete."""
    part = indexed.with_name(indexed.name + ".part")
    try:
        with part.open("w", encoding="ascii") as out:
            for record in iter_records(uploaded):
                try:
                    sequence = normalize_sequence(record.sequence, record.id).sequence
                except DnabertError as exc:
                    position = getattr(exc, "position", None)
                    exc.line = record.line_of(position) if position else record.line
                    raise
                out.write(f">{record.id}\n")
                for i in range(0, len(sequence), 80):
                    out.write(sequence[i:i + 80] + "\n")
    except DnabertError as exc:
        part.unlink(missing_ok=True)
        exc.message = f"field 'reference' (the reference FASTA): {exc.message}"
        exc.args = (exc.message,)
        raise
    part.replace(indexed)


def _uploaded(path: Path) -> Reference:
    try:
        return FaidxReference(path)
    except ReferenceUnavailable:
        raise ReferenceUnavailable("field 'reference' (the reference FASTA) cannot be indexed") from None


# -- explain --------------------------------------------------------------------------------------


@dataclass
class ExplainState:
    records: int = 0
    """Records emitted: the resume position."""
    extra: dict = field(default_factory=dict)


class ExplainWork(Work):
    """``POST /explain/{task}``: records in chunks of :data:`CHUNK` (no limit on mutants, as
    offline); PNG and SVG take one record."""

    CHUNK = 4
    formats = {"json": "application/json", "bedgraph": "text/x-bedgraph; charset=utf-8", "png": "image/png",
               "svg": "image/svg+xml; charset=utf-8"}
    tasks = (PROMOTER, LNCRNA)

    @classmethod
    def check(cls, service: InferenceService, task: str, params: dict) -> None:
        super().check(service, task, params)
        service.resolve(task, params.get("model"))

    async def setup(self) -> None:
        task, model = self.ctx.job.task, self.params.get("model")
        resolved = self.service.resolve(task, model)
        self.name = ALL if len(resolved) > 1 else resolved[0].name
        self.labels = score_labels(resolved[0])
        self.limit = explain_limit(self.service, task, model)
        self.state = ExplainState()

    def count(self) -> int:
        n = 0
        for group in iter_fasta(self.ctx.input(FASTA_FILE)):
            check_limits(group, self.limit, None)
            for record in group:
                normalised(record)
            n += len(group)
        if self.format in IMAGE_FORMATS:
            require_one_record(n)
        self.total = n
        return n

    def head(self) -> Texts:
        if self.format != "json":
            return [""]
        text = json.dumps({"task": self.ctx.job.task, "model": self.name, "bases": list(BASES), "count": self.total,
                           "results": []}, allow_nan=False)
        return [text[:-2]]

    def units(self) -> Iterator[Unit]:
        done = self.state.records
        seen = 0
        for group in iter_fasta(self.ctx.input(FASTA_FILE)):
            for i in range(0, len(group), self.CHUNK):
                piece = group[i:i + self.CHUNK]
                start, seen = seen, seen + len(piece)
                if seen > done:
                    yield Unit(seen, piece[max(0, done - start):])

    async def compute(self, unit: Unit):
        explained = await explain(self.service, self.ctx.job.task, unit.data, self.params.get("model"),
                                  timeout=CHUNK_TIMEOUT_S)
        if self.format in ("png", "svg", "bedgraph"):
            return await asyncio.to_thread(render_explanations, explained.explanations, explained.task,
                                           explained.model, self.format, self.params.get("label")), len(unit.data)
        return explained.explanations, len(unit.data)

    def emit(self, unit: Unit, result) -> tuple[Texts, int]:
        body, n = result
        first = self.state.records == 0
        self.state.records = unit.position
        if self.format == "json":
            text = ", ".join(json.dumps(e.to_json(), allow_nan=False) for e in body)
            return [("" if first else ", ") + text], n
        return [body], n

    def tail(self) -> Texts:
        return ["]}\n" if self.format == "json" else ""]


KINDS: dict[str, type[Work]] = {"predict": PredictWork, "scan": ScanWork, "variants": VariantsWork,
                                "explain": ExplainWork}
"""The kinds of job, by name; a kind is added by registering its :class:`Work` here."""
ENDPOINTS = {"predict": "/predict/{task}", "scan": "/scan/{task}", "variants": "/variants/{task}",
             "explain": "/explain/{task}"}
"""The synchronous endpoint of each kind, whose query parameters a job takes."""
