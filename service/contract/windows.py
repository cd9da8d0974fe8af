"""Scanning long sequences: windows, strands, genome coordinates, regions and track formats.

Pure logic shared by ``POST /scan/promoter`` and ``dnabert-serve scan`` (which run it through
:mod:`service.runtime.scan`), so that both write the same windows, regions and numbers.

**Records** are normalised as ``/predict`` normalises them (:func:`normalised`: upper case,
``U`` as ``T``, IUPAC ambiguity codes as ``N``; a bad character named with its line).

**Windows.** A record is cut into windows of the model's input length (:func:`window_length`:
300 bp for the promoter models, which were trained on 300 bp windows), every ``stride`` bases
from its first base, plus one more window aligned to its last base when the stride does not
land there (:func:`tile`). A record shorter than a window is scored whole, as one window, and
flagged :data:`SHORTER_THAN_WINDOW`. A window whose ``N`` (and other IUPAC ambiguity codes,
which normalisation turns into ``N``) are more than ``max_n_fraction`` of its bases, or which
has no ``A C G T`` at all, is not scored but counted (``skipped_windows``, per strand).

**Strands.** ``+`` scores the window as written; ``-`` scores its reverse complement
(:func:`reverse_complement`). Both are reported in forward genome coordinates: the ``-``
window ``[start, end)`` is the reverse complement of the ``+`` window ``[start, end)``.

**Coordinates.** Every output is 0-based and half-open, as BED and bedGraph define them. A
record whose id is a samtools region, ``chr1:10001-20000`` (1-based, inclusive: what
``samtools faidx genome.fa chr1:10001-20000`` writes), lies on ``chr1`` from 0-based position
10000 (:func:`placement`); any other id is its own chromosome, starting at 0. A region whose
length disagrees with the record's is still placed at its start, and flagged
:data:`REGION_LENGTH_MISMATCH`. (``samtools faidx -i`` writes ``.../rc`` headers: such a record
is not placed, since its bases run backwards on the genome.)

**Regions.** Windows at or over ``threshold`` are merged per strand where they overlap or touch
(:class:`RegionMerger`): ``score`` is the best window's probability, ``mean`` the mean over the
merged windows; regions of fewer than ``min_windows`` windows are dropped.

**Formats** (:data:`WRITERS`): JSON, NDJSON (one line per window as it is scored), bedGraph
(one track per strand: each window's probability over the stride-wide span around its centre,
:class:`StepTrack`) and BED6 (the regions, with strand and a 0-1000 score). Writers turn scan
events into text and never do I/O; a caller writes their ``now`` text as it comes and appends
their ``later`` text (the ``-`` strand's bedGraph track) at the end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from service.contract.card import ModelCard
from service.contract.errors import DnabertError, PayloadTooLarge
from service.contract.fasta import FastaRecord
from service.contract.sequence import looks_like_protein, normalize_sequence, protein_error
from service.contract.tasks import PROMOTER

PROMOTER_WINDOW = 300
"""The promoter models' input length in bases: they were trained on 300 bp windows (the
``promoter_300bp`` data set of their cards). Used when a card states no window length."""
DEFAULT_STRIDE = 50
DEFAULT_MAX_N_FRACTION = 0.1
PLUS, MINUS = "+", "-"
STRANDS = {"both": (PLUS, MINUS), PLUS: (PLUS,), MINUS: (MINUS,)}
"""``strand=`` -> the strands scored, in output order."""
_STRAND_NAMES = {"both": "both", "+": PLUS, "plus": PLUS, "-": MINUS, "minus": MINUS,
                 # '+' in a URL query string reads as a space (form encoding): strand=+ arrives as ' '
                 " ": PLUS}

SHORTER_THAN_WINDOW = "shorter_than_window"
"""The record is shorter than a window: scored whole, as one window."""
REGION_LENGTH_MISMATCH = "region_length_mismatch"
"""The id is a samtools region whose length is not the record's: placed at the region's start."""
COORDINATES = "0-based, half-open"

_DATA_WINDOW = re.compile(r"_(\d+)bp$")
_REGION = re.compile(r"^(?P<chrom>.+):(?P<start>[1-9][0-9]*)-(?P<end>[1-9][0-9]*)$")
_N = ord("N")
_NORMALISED = re.compile(r"[ACGTN]*")


class NotScannable(DnabertError):
    """A model whose input is not a window of a longer sequence (the lncRNA model reads whole
    transcripts): scanning with it would score fragments it never saw."""

    code = "not_scannable"
    http_status = 422


class InvalidScanParameter(DnabertError):
    code = "invalid_parameter"
    http_status = 422


class ScanTooLarge(PayloadTooLarge):
    """More nucleotides in one scan request than ``max_scan_bases`` (413)."""


# --------------------------------------------------------------------------------------------
# parameters


def window_length(card: ModelCard) -> int:
    """The model's input length in bases: ``training.data.window`` when the card states it,
    else the ``_<N>bp`` suffix of ``training.data.name`` (``promoter_300bp``), else
    :data:`PROMOTER_WINDOW` for a promoter model. Other models cannot be scanned."""
    data = card.training.data or {}
    given = data.get("window")
    if isinstance(given, int) and given > 0:
        return given
    named = _DATA_WINDOW.search(str(data.get("name", "")))
    if named and int(named.group(1)) > 0:
        return int(named.group(1))
    if card.task == PROMOTER:
        return PROMOTER_WINDOW
    raise NotScannable(f"model {card.name!r} ({card.task}) is not trained on windows of a longer sequence; "
                       "only promoter models can scan")


def strands_of(value: str) -> tuple[str, ...]:
    """``strand=``: ``both`` (default), ``+`` (or ``plus``) or ``-`` (or ``minus``)."""
    name = _STRAND_NAMES.get(value.strip().lower() if value.strip() else value)
    if name is None:
        raise InvalidScanParameter(f"strand must be +, - or both (also: plus, minus), not {value[:20]!r}")
    return STRANDS[name]


def strand_name(strands: tuple[str, ...]) -> str:
    return "both" if len(strands) == 2 else strands[0]


def check_scan_size(records: list[FastaRecord], limit: int) -> None:
    """413 when the records hold more than ``limit`` nucleotides in all (``max_scan_bases``)."""
    total = sum(len(r.sequence) for r in records)
    if total > limit:
        raise ScanTooLarge(f"the records hold {total} nucleotides, over the limit of {limit} per scan request "
                           "(DNABERT_MAX_SCAN_BASES); split the input, or scan it offline with "
                           "'dnabert-serve scan', which has no limit")


# --------------------------------------------------------------------------------------------
# sequences and coordinates

_COMPLEMENT = str.maketrans("ACGTUNRYSWKMBDHVacgtunryswkmbdhv", "TGCAANYRSWMKVHDBtgcaanyrswmkvhdb")


def reverse_complement(sequence: str) -> str:
    """The reverse complement (IUPAC codes complemented, ``U`` read as ``T``, case kept)."""
    return sequence.translate(_COMPLEMENT)[::-1]


@dataclass(frozen=True)
class ScanRecord:
    """A record being scanned, placed on the genome."""

    id: str
    chrom: str
    offset: int
    """0-based genome position of the record's first base."""
    length: int
    window: int
    """The length of its windows: the model's, or the record's when it is shorter."""
    flags: tuple[str, ...] = ()


def placement(record_id: str, length: int) -> tuple[str, int, tuple[str, ...]]:
    """(chrom, 0-based offset, flags) of a record: a samtools region id ``chr1:10001-20000``
    (1-based, inclusive) puts it on ``chr1`` at 10000; any other id at 0 on itself."""
    m = _REGION.match(record_id)
    if m is None or int(m["end"]) < int(m["start"]):
        return record_id, 0, ()
    start, end = int(m["start"]), int(m["end"])
    flags = (REGION_LENGTH_MISMATCH,) if end - start + 1 != length else ()
    return m["chrom"], start - 1, flags


def normalised(record: FastaRecord) -> str:
    """The record's sequence normalised (upper case ``A C G T N``), errors naming the record and
    the line of the bad character; a record that looks like protein is refused."""
    if _NORMALISED.fullmatch(record.sequence):
        return record.sequence  # already normalised (the offline reader's records)
    try:
        norm = normalize_sequence(record.sequence, record.id)
        if looks_like_protein(norm):
            raise protein_error(norm, record.id)
    except DnabertError as exc:
        if exc.line is None and record.line:
            position = getattr(exc, "position", None)
            exc.line = record.line_of(position) if position else record.line
        raise
    return norm.sequence


def scan_record(record_id: str, length: int, window: int) -> ScanRecord:
    chrom, offset, flags = placement(record_id, length)
    if length < window:
        flags += (SHORTER_THAN_WINDOW,)
    return ScanRecord(record_id, chrom, offset, length, min(window, length), flags)


def tile(length: int, window: int, stride: int) -> np.ndarray:
    """0-based starts of the windows over a record: every ``stride`` bases, and the last one
    aligned to the record's end; one window at 0 when the record is not longer than a window."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    last = length - window
    if last <= 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    return starts if starts[-1] == last else np.append(starts, last)


def n_counts(sequence: str, starts: np.ndarray, window: int) -> np.ndarray:
    """``N`` in each window ``sequence[s:s + window]`` (a normalised sequence: ambiguity codes
    are ``N``), counted over the span the windows cover only."""
    lo, hi = int(starts[0]), int(starts[-1]) + window
    is_n = np.frombuffer(sequence[lo:hi].encode("ascii"), dtype=np.uint8) == _N
    cumulative = np.concatenate(([0], np.cumsum(is_n, dtype=np.int64)))
    rel = starts - lo
    return cumulative[rel + window] - cumulative[rel]


def window_chunks(sequence: str, window: int, stride: int, max_n_fraction: float,
                  size: int) -> Iterator[tuple[np.ndarray, int]]:
    """The windows of a normalised sequence, ``size`` positions at a time: (starts kept, number
    of positions skipped for their ``N``). ``window`` is the record's window length."""
    starts = tile(len(sequence), window, stride)
    for i in range(0, len(starts), size):
        chunk = starts[i : i + size]
        n = n_counts(sequence, chunk, window)
        keep = (n <= max_n_fraction * window) & (n < window)
        yield chunk[keep], int(len(chunk) - keep.sum())


# --------------------------------------------------------------------------------------------
# scored windows and regions


@dataclass(frozen=True)
class Windows:
    """Scored windows of one record, by start then strand, in genome coordinates."""

    start: np.ndarray
    end: np.ndarray
    strand: np.ndarray
    """``'+'`` or ``'-'`` per window."""
    probability: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def of(self, strand: str) -> Windows:
        pick = self.strand == strand
        return Windows(self.start[pick], self.end[pick], self.strand[pick], self.probability[pick])

    def rows(self) -> Iterator[tuple[int, int, str, float]]:
        return zip(self.start.tolist(), self.end.tolist(), self.strand.tolist(), self.probability.tolist())


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    strand: str
    score: float
    """The best window's probability."""
    mean: float
    windows: int

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "strand": self.strand, "score": self.score,
                "mean": self.mean, "windows": self.windows}


@dataclass
class _Open:
    start: int
    end: int
    best: float
    total: float
    count: int


class RegionMerger:
    """Regions of one record, fed its windows in order of start (per strand)."""

    def __init__(self, threshold: float, min_windows: int = 1):
        self.threshold = threshold
        self.min_windows = min_windows
        self._open: dict[str, _Open] = {}
        self._done: list[Region] = []

    def add(self, windows: Windows) -> None:
        hit = windows.probability >= self.threshold
        for start, end, strand, p in zip(windows.start[hit].tolist(), windows.end[hit].tolist(),
                                         windows.strand[hit].tolist(), windows.probability[hit].tolist()):
            current = self._open.get(strand)
            if current is not None and start <= current.end:
                current.end = max(current.end, end)
                current.best = max(current.best, p)
                current.total += p
                current.count += 1
                continue
            if current is not None:
                self._close(strand, current)
            self._open[strand] = _Open(start, end, p, p, 1)

    def _close(self, strand: str, region: _Open) -> None:
        if region.count >= self.min_windows:
            self._done.append(Region(region.start, region.end, strand, region.best,
                                     region.total / region.count, region.count))

    def finish(self) -> list[Region]:
        """The regions, by start then strand."""
        for strand, region in self._open.items():
            self._close(strand, region)
        self._open.clear()
        return sorted(self._done, key=lambda r: (r.start, r.strand, r.end))


@dataclass(frozen=True)
class RecordSummary:
    record: ScanRecord
    windows: int
    """Windows scored (all strands)."""
    skipped: int
    """Windows not scored for their ``N`` (all strands)."""
    regions: list[Region]


class StepTrack:
    """bedGraph intervals of one record: each window's probability over the ``stride``-wide span
    around its centre, cut to the window and to where the previous window's span ended (the
    last window, aligned to the record's end, is closer to its neighbour than ``stride``), so a
    strand's intervals never overlap. Fed each strand's windows in order of start."""

    def __init__(self, stride: int):
        self.stride = stride
        self._end: dict[str, int] = {}

    def intervals(self, windows: Windows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, end, value) of one strand's windows."""
        if not len(windows):
            return windows.start, windows.end, windows.probability
        half = self.stride // 2
        centre = windows.start + (windows.end - windows.start) // 2
        hi = np.minimum(centre + self.stride - half, windows.end)
        previous = self._end.get(windows.strand[0], int(windows.start[0]))
        lo = np.maximum(np.maximum(centre - half, windows.start), np.concatenate(([previous], hi[:-1])))
        self._end[windows.strand[0]] = int(hi[-1])
        return lo, hi, windows.probability


# --------------------------------------------------------------------------------------------
# writers


@dataclass(frozen=True)
class ScanMeta:
    """What a scan was asked for: stated in every output."""

    model: str
    window: int
    stride: int
    strands: tuple[str, ...]
    threshold: float
    min_windows: int
    max_n_fraction: float

    def as_dict(self) -> dict:
        return {"model": self.model, "window": self.window, "stride": self.stride,
                "strand": strand_name(self.strands), "threshold": self.threshold,
                "min_windows": self.min_windows, "max_n_fraction": self.max_n_fraction,
                "coordinates": COORDINATES}

    def describe(self) -> str:
        return (f"DNABERT-2 promoter scan, model {self.model}, {self.window} bp windows every {self.stride} bp, "
                f"0-based half-open")


Text = tuple[str, str]
"""(now, later): text to write at once, and text to append after everything else."""
NOTHING: Text = ("", "")


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class ScanWriter:
    """Turns scan events into one output format (no I/O)."""

    media_type = "text/plain"

    def __init__(self, meta: ScanMeta):
        self.meta = meta

    def head(self) -> Text:
        return NOTHING

    def start(self, record: ScanRecord) -> Text:
        return NOTHING

    def windows(self, record: ScanRecord, windows: Windows) -> Text:
        return NOTHING

    def finish(self, summary: RecordSummary) -> Text:
        return NOTHING

    def tail(self, count: int) -> Text:
        return NOTHING


def _record_fields(record: ScanRecord) -> dict:
    return {"id": record.id, "chrom": record.chrom, "offset": record.offset, "length": record.length}


def _summary_fields(summary: RecordSummary) -> dict:
    return {"regions": [r.as_dict() for r in summary.regions], "windows_scored": summary.windows,
            "skipped_windows": summary.skipped, "flags": list(summary.record.flags)}


class JsonWriter(ScanWriter):
    """``{<meta>, "results": [{id, chrom, offset, length, windows: [...], regions: [...],
    windows_scored, skipped_windows, flags}, ...], "count": N}``, written record by record and
    window by window (a chromosome's windows are never all held at once)."""

    media_type = "application/json"

    def __init__(self, meta: ScanMeta):
        super().__init__(meta)
        self._first_record = True
        self._first_window = True

    def head(self) -> Text:
        return _dumps(self.meta.as_dict())[:-1] + ',"results":[', ""

    def start(self, record: ScanRecord) -> Text:
        sep = "" if self._first_record else ","
        self._first_record, self._first_window = False, True
        return sep + _dumps(_record_fields(record))[:-1] + ',"windows":[', ""

    def windows(self, record: ScanRecord, windows: Windows) -> Text:
        text = ",".join(_dumps({"start": s, "end": e, "strand": st, "probability": p})
                        for s, e, st, p in windows.rows())
        if text and not self._first_window:
            text = "," + text
        self._first_window = self._first_window and not text
        return text, ""

    def finish(self, summary: RecordSummary) -> Text:
        return "]," + _dumps(_summary_fields(summary))[1:], ""

    def tail(self, count: int) -> Text:
        return f'],"count":{count}}}\n', ""


class NdjsonWriter(ScanWriter):
    """One JSON object a line, as the windows are scored: ``{"type": "scan", <meta>}``, then per
    record its windows (``{"type": "window", id, chrom, start, end, strand, probability}``) and a
    ``{"type": "record", ...}`` line with its regions, then ``{"type": "done", "count": N}``."""

    media_type = "application/x-ndjson"

    def head(self) -> Text:
        return _dumps({"type": "scan", **self.meta.as_dict()}) + "\n", ""

    def windows(self, record: ScanRecord, windows: Windows) -> Text:
        return "".join(_dumps({"type": "window", "id": record.id, "chrom": record.chrom, "start": s, "end": e,
                               "strand": st, "probability": p}) + "\n" for s, e, st, p in windows.rows()), ""

    def finish(self, summary: RecordSummary) -> Text:
        return _dumps({"type": "record", **_record_fields(summary.record), **_summary_fields(summary)}) + "\n", ""

    def tail(self, count: int) -> Text:
        return _dumps({"type": "done", "count": count}) + "\n", ""


def _value(p: float) -> str:
    return format(p, ".7g")


class BedGraphWriter(ScanWriter):
    """bedGraph, one track per strand (``+`` first; the ``-`` track comes as ``later`` text):
    ``chrom start end probability``, 0-based half-open, by :class:`StepTrack`'s intervals."""

    media_type = "text/x-bedgraph"

    def __init__(self, meta: ScanMeta):
        super().__init__(meta)
        self._track = StepTrack(meta.stride)

    def track_line(self, strand: str) -> str:
        word = "plus" if strand == PLUS else "minus"
        return (f'track type=bedGraph name="promoter_{word}" description="P(promoter), {strand} strand: '
                f'{self.meta.describe()}" visibility=full autoScale=off viewLimits=0:1 '
                f'color={"200,40,40" if strand == PLUS else "40,40,200"}\n')

    def _split(self, text: dict[str, str]) -> Text:
        first, *rest = self.meta.strands
        return text.get(first, ""), text.get(rest[0], "") if rest else ""

    def head(self) -> Text:
        return self._split({s: self.track_line(s) for s in self.meta.strands})

    def start(self, record: ScanRecord) -> Text:
        self._track = StepTrack(self.meta.stride)
        return NOTHING

    def windows(self, record: ScanRecord, windows: Windows) -> Text:
        text = {}
        for strand in self.meta.strands:
            lo, hi, value = self._track.intervals(windows.of(strand))
            text[strand] = "".join(f"{record.chrom}\t{a}\t{b}\t{_value(v)}\n"
                                   for a, b, v in zip(lo.tolist(), hi.tolist(), value.tolist()))
        return self._split(text)


class BedWriter(ScanWriter):
    """BED6 of the regions: ``chrom start end name score strand``, 0-based half-open; ``score``
    is the best window's probability x 1000 (0-1000, shaded with ``useScore=1``), ``name``
    ``<record>_<n>``, regions numbered by start within their record."""

    media_type = "text/x-bed"

    def head(self) -> Text:
        return (f'track name="promoter_regions" description="Promoter regions (windows with P >= '
                f'{self.meta.threshold:g}, at least {self.meta.min_windows}): {self.meta.describe()}" '
                f"useScore=1\n"), ""

    def finish(self, summary: RecordSummary) -> Text:
        chrom, rid = summary.record.chrom, summary.record.id
        return "".join(f"{chrom}\t{r.start}\t{r.end}\t{rid}_{i}\t{min(1000, max(0, round(1000 * r.score)))}"
                       f"\t{r.strand}\n" for i, r in enumerate(summary.regions, 1)), ""


WRITERS: dict[str, type[ScanWriter]] = {"json": JsonWriter, "bedgraph": BedGraphWriter, "bed": BedWriter,
                                        "ndjson": NdjsonWriter}
"""Output formats, the first the default."""


@dataclass
class Collected:
    """A writer's output gathered in memory (an HTTP answer: at most ``max_scan_bases``)."""

    now: list[str] = field(default_factory=list)
    later: list[str] = field(default_factory=list)

    def add(self, text: Text) -> None:
        self.now.append(text[0])
        self.later.append(text[1])

    def text(self) -> str:
        return "".join(self.now) + "".join(self.later)
