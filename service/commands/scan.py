"""``dnabert-serve scan``: promoter probability along genomes and loci, offline.

    dnabert-serve scan FILE [-o OUT.json|.bedgraph|.bed|.ndjson|.bw] [--format F] [--model NAME]
                       [--stride 50] [--strand both|+|-] [--max-n-fraction 0.1]
                       [--threshold 0.5] [--min-windows 1]

The same scanner, writers and batcher as ``POST /scan/promoter`` (:mod:`service.runtime.scan`),
so the numbers are the server's. The FASTA file (plain, gzip or bgzip) is streamed record by
record (:func:`service.contract.fasta_stream.iter_fasta_file`) and the output written as the
windows are scored: only one record is in memory, and there is no limit on its size. The ``-``
strand's bedGraph track, which follows the ``+`` track, waits in a temporary file. ``bigwig``
(pyBigWig, the ``bigwig`` extra) writes one file per strand, ``OUT.plus.bw`` and
``OUT.minus.bw`` (``OUT.bw`` with one strand); it needs the records of a chromosome in order
and not overlapping, and reads the file twice (first for the chromosome sizes). Files are
written under ``.part`` names and renamed at the end, so a failed run leaves nothing under the
names asked for. A progress bar counts the windows on stderr.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, aclosing, contextmanager
from pathlib import Path
from typing import TextIO

from service.commands import CommandUsage, offline_settings
from service.commands import output_format as _output_format
from service.commands.remote import add_server_arguments, run_job
from service.contract.fasta_stream import iter_fasta_file
from service.contract.windows import (
    DEFAULT_MAX_N_FRACTION,
    DEFAULT_STRIDE,
    PLUS,
    STRANDS,
    WRITERS,
    ScanMeta,
    ScanRecord,
    ScanWriter,
    StepTrack,
    Text,
    Windows,
    scan_record,
    strand_name,
    strands_of,
)
from service.settings import Settings

FORMATS = (*WRITERS, "bigwig")
_SUFFIXES = {"json": "json", "bedgraph": "bedgraph", "bg": "bedgraph", "bdg": "bedgraph", "bed": "bed",
             "ndjson": "ndjson", "jsonl": "ndjson", "bw": "bigwig", "bigwig": "bigwig"}


def output_format(output: str | None, requested: str | None) -> str:
    """``--format``, else the output file's extension, else JSON."""
    fmt = _output_format(output, requested, _SUFFIXES, "json")
    if fmt == "bigwig" and not output:
        raise CommandUsage("bigWig is a binary file: give -o OUT.bw")
    return fmt


def bigwig_paths(output: str, strands: tuple[str, ...]) -> dict[str, Path]:
    """``OUT.bw`` for one strand; ``OUT.plus.bw`` and ``OUT.minus.bw`` for both."""
    out = Path(output)
    if len(strands) == 1:
        return {strands[0]: out}
    return {s: out.with_name(f"{out.stem}.{'plus' if s == PLUS else 'minus'}{out.suffix or '.bw'}") for s in strands}


def _pybigwig():
    try:
        import pyBigWig
    except ImportError:
        raise CommandUsage("bigWig output needs pyBigWig: pip install 'dnabert-serve[bigwig]' (or write bedGraph "
                        "and convert it with bedGraphToBigWig)") from None
    return pyBigWig


def chrom_sizes(path: Path, window: int) -> dict[str, int]:
    """Each chromosome's extent (the end of its last record), in file order, for a bigWig header;
    refused unless the records of a chromosome come together, in order, without overlapping."""
    sizes: dict[str, int] = {}
    last = None
    for record in iter_fasta_file(path):
        placed = scan_record(record.id, len(record.sequence), window)
        if placed.chrom in sizes and (placed.chrom != last or placed.offset < sizes[placed.chrom]):
            raise CommandUsage(f"record {record.id!r}: bigWig needs the records of a chromosome together, in order "
                            "and not overlapping; write bedGraph instead (and sort it)")
        sizes[placed.chrom] = placed.offset + placed.length
        last = placed.chrom
    return sizes


class BigWigWriter(ScanWriter):
    """Each strand's bedGraph intervals (:class:`~service.contract.windows.StepTrack`), written
    into its own bigWig file as they come."""

    def __init__(self, meta: ScanMeta, files: dict):
        super().__init__(meta)
        self.files = files
        self._track = StepTrack(meta.stride)

    def start(self, record: ScanRecord) -> Text:
        self._track = StepTrack(self.meta.stride)
        return "", ""

    def windows(self, record: ScanRecord, windows: Windows) -> Text:
        for strand, bw in self.files.items():
            lo, hi, value = self._track.intervals(windows.of(strand))
            if len(lo):
                bw.addEntries([record.chrom] * len(lo), lo.tolist(), ends=hi.tolist(), values=value.tolist())
        return "", ""


@contextmanager
def _replacing(paths: list[Path]) -> Iterator[list[Path]]:
    """``.part`` files, renamed to ``paths`` if the block succeeds, removed if it fails."""
    parts = [p.with_name(p.name + ".part") for p in paths]
    try:
        yield parts
    except BaseException:
        for part in parts:
            part.unlink(missing_ok=True)
        raise
    for part, path in zip(parts, paths):
        part.replace(path)


async def _targets(scanner, path: Path) -> AsyncIterator:
    """The file's records as scan targets, read and normalised in a thread, one at a time."""
    records = iter_fasta_file(path)

    def following():
        record = next(records, None)
        return None if record is None else scanner.target(record)

    while (target := await asyncio.to_thread(following)) is not None:
        yield target


async def scan_file(path: Path, model: str | None, options, settings: Settings, out: TextIO | None,
                    bigwigs: dict[str, Path] | None = None, fmt: str = "json", progress: bool = True):
    """Scan every record of ``path``, writing ``fmt`` to ``out`` (or the ``bigwigs`` files) as
    the windows are scored; returns the scan's :class:`~service.runtime.scan.ScanStats`."""
    from tqdm import tqdm

    from service.runtime.inference import InferenceService
    from service.runtime.scan import Scanner, ScanStats, write

    service = InferenceService(settings)
    await service.start()
    bar = None
    try:
        scanner = Scanner(service, model, options)
        with ExitStack() as stack:
            if bigwigs is not None:
                sizes = await asyncio.to_thread(chrom_sizes, path, scanner.meta.window)
                files = {}
                for strand, target in bigwigs.items():
                    bw = stack.enter_context(_open_bigwig(target))
                    bw.addHeader(list(sizes.items()), maxZooms=10)
                    files[strand] = bw
                writer: ScanWriter = BigWigWriter(scanner.meta, files)
            else:
                writer = WRITERS[fmt](scanner.meta)
            later = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
            bar = tqdm(unit="win", unit_scale=True, disable=not progress, file=sys.stderr,
                       desc=f"scan ({scanner.meta.model})")
            stats = ScanStats(on_windows=bar.update)
            async with aclosing(write(scanner, _targets(scanner, path), writer, stats)) as pieces:
                async for now, deferred in pieces:
                    if out is not None and now:
                        out.write(now)
                    if deferred:
                        later.write(deferred)
            if out is not None:
                later.seek(0)
                shutil.copyfileobj(later, out)
        return scanner.meta, stats
    finally:
        if bar is not None:
            bar.close()  # before any error message, which then starts on a line of its own
        await service.stop()


@contextmanager
def _open_bigwig(path: Path):
    bw = _pybigwig().open(str(path), "w")
    try:
        yield bw
    finally:
        bw.close()


def cmd_scan(args) -> int:
    from service.runtime.scan import ScanOptions

    fmt = output_format(args.output, args.format)  # refused before any model is loaded
    strands = strands_of(args.strand)
    if args.server:
        return _scan_on_server(args, fmt)
    if fmt == "bigwig":
        _pybigwig()
    settings = offline_settings(args)
    options = ScanOptions(args.stride, strands, args.max_n_fraction, args.threshold, args.min_windows)
    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {args.file}")
    targets = list(bigwig_paths(args.output, strands).values()) if fmt == "bigwig" else (
        [Path(args.output)] if args.output else [])
    with _replacing(targets) as parts:
        if fmt == "bigwig":
            run = scan_file(path, args.model, options, settings, None, dict(zip(strands, parts)),
                            progress=not args.quiet)
            meta, stats = asyncio.run(run)
        elif parts:
            with parts[0].open("w", encoding="utf-8") as out:
                meta, stats = asyncio.run(scan_file(path, args.model, options, settings, out, fmt=fmt,
                                                    progress=not args.quiet))
        else:
            meta, stats = asyncio.run(scan_file(path, args.model, options, settings, sys.stdout, fmt=fmt,
                                                progress=not args.quiet))
    where = f" to {', '.join(map(str, targets))}" if targets else ""
    print(f"scanned {stats.describe()} (model {meta.model}, {meta.window} bp windows every {meta.stride} bp, "
          f"strand {strand_name(strands)}){where}", file=sys.stderr)
    return 0


def _scan_on_server(args, fmt: str) -> int:
    """``--server``: the scan as a job on the server (``POST /jobs?kind=scan``)."""
    if fmt == "bigwig":
        raise CommandUsage("bigWig is written here, not by the server: with --server write bedGraph (-o OUT.bedgraph) "
                           "and convert it with bedGraphToBigWig")
    params = {"model": args.model, "format": fmt, "stride": args.stride, "strand": args.strand,
              "max_n_fraction": args.max_n_fraction, "threshold": args.threshold, "min_windows": args.min_windows}
    job = run_job(args, "scan", "promoter", params, {"file": Path(args.file)}, args.output)
    where = f" to {args.output}" if args.output else ""
    print(f"scanned {job['progress']['done']} windows on {args.server} (job {job['id']}){where}", file=sys.stderr)
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(text)
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def add_parser(sub) -> None:
    s = sub.add_parser(
        "scan", help="promoter probability along long sequences (genomes, loci), in windows on both strands",
        description="Scan long sequences offline: windows of the model's input length every --stride bases, "
                    "scored on both strands through the server's runtime and batcher; the FASTA file is "
                    "streamed record by record. Coordinates are 0-based, half-open; a record named as a "
                    "samtools region (chr1:10001-20000) is placed there.")
    s.add_argument("file", help="FASTA, plain, gzip or bgzip; records of any length")
    s.add_argument("-o", "--output", help="output file: .json, .bedgraph, .bed, .ndjson or .bw (bigWig: one file "
                                          "per strand, OUT.plus.bw and OUT.minus.bw); default: JSON to stdout")
    s.add_argument("--format", choices=FORMATS, help="default: from the output file's extension, else json")
    s.add_argument("--model", help="promoter model or 'all' (default from settings); not the lncRNA model")
    s.add_argument("--stride", type=_positive, default=DEFAULT_STRIDE, help="bases between window starts "
                                                                            f"(default {DEFAULT_STRIDE})")
    s.add_argument("--strand", default="both", choices=[*STRANDS, "plus", "minus"],
                   help="both (default), + or -: the reverse complement")
    s.add_argument("--max-n-fraction", type=_fraction, default=DEFAULT_MAX_N_FRACTION,
                   help=f"skip windows with more N than this (default {DEFAULT_MAX_N_FRACTION})")
    s.add_argument("--threshold", type=_fraction, help="windows at or over it make regions (default: "
                   "DNABERT_PROMOTER_THRESHOLD if set, else the model card's dev-chosen threshold, else 0.5)")
    s.add_argument("--min-windows", type=_positive, default=1, help="drop regions of fewer windows (default 1)")
    s.add_argument("--models-dir")
    s.add_argument("--device", choices=["auto", "cpu", "gpu"])
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_server_arguments(s)
    s.set_defaults(func=cmd_scan)
