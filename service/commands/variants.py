"""``dnabert-serve variants``: variant effects offline, from a VCF and a reference FASTA.

    dnabert-serve variants --vcf FILE --reference FASTA [-o OUT.json|.tsv|.vcf] [--format F]
                           [--model NAME] [--strand +|-|both]

The same runtime and batcher as ``POST /variants/promoter``
(:func:`service.runtime.variants.variant_report`), so the numbers are the server's. The VCF
(plain or bgzip) is streamed: records are read, scored and written in batches of
:data:`BATCH` variants, so neither the VCF nor the results are ever held whole; the reference is
read through its pyfaidx index. There is no limit on the number of variants. A progress bar
counts the variants on stderr; the output is written to ``OUT.part`` and renamed at the end, so
a failed run leaves no half-written file under the name asked for.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TextIO

from service import __version__
from service.commands import CommandUsage, offline_settings
from service.commands import output_format as _output_format
from service.commands.remote import add_server_arguments, run_job
from service.contract.reference import FaidxReference
from service.contract.variant_windows import VariantReport
from service.contract.vcf import VcfReader, iter_lines
from service.contract.windows import strand_name, strands_of
from service.settings import Settings

FORMATS = ("json", "tsv", "vcf")
BATCH = 4096
"""Records read, scored and written at a time."""
PARALLEL = 8
"""Chunks of windows in flight: offline, keep the batcher full."""
READ = 1 << 20
SOURCE = f"dnabert-serve {__version__}"


def output_format(output: str | None, requested: str | None) -> str:
    """``--format``, else the output file's extension (.json, .tsv, .vcf), else JSON."""
    return _output_format(output, requested, {f: f for f in FORMATS}, "json")


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(READ):
            yield chunk


class _Writer:
    """Writes one report after another in ``fmt``: the header with the first, and for JSON the
    ``results`` list spread over the reports, closed (with its ``count``) by :meth:`close`."""

    def __init__(self, out: TextIO, fmt: str):
        self.out, self.fmt = out, fmt
        self.count = 0

    def write(self, report: VariantReport) -> None:
        first = self.count == 0
        if self.fmt == "vcf":
            self.out.write(report.vcf(SOURCE, header=first))
        elif self.fmt == "tsv":
            self.out.write(report.tsv(header=first))
        else:
            if first:
                head = report.response().model_dump_json(exclude={"results", "count"})
                self.out.write(head[:-1] + ',"results":[\n')
            for effect in report.effects:
                self.out.write(("" if self.count == 0 else ",\n") + effect.model_dump_json())
                self.count += 1
            return
        self.count += len(report.effects)

    def close(self) -> None:
        if self.fmt == "json":
            self.out.write(f'\n],"count":{self.count}}}\n')


async def score_file(vcf: Path, reference: FaidxReference, model: str | None, strand: str, settings: Settings,
                     out: TextIO, fmt: str, progress: bool = True) -> tuple[int, str]:
    """Score every variant of ``vcf`` batch by batch, writing to ``out``; (variants, model)."""
    from tqdm import tqdm

    from service.runtime.inference import InferenceService
    from service.runtime.variants import model_window, variant_report

    reader = VcfReader(iter_lines(_chunks(vcf)))  # the header is checked before any model loads
    records = iter(reader)
    service = InferenceService(settings)
    await service.start()
    bar = tqdm(unit="variant", disable=not progress, file=sys.stderr, desc="variants")
    writer = _Writer(out, fmt)
    empty = True
    try:
        name, window = model_window(service, model)
        while batch := list(islice(records, BATCH)):
            report = await variant_report(service, reader.header, batch, reference, model, strand,
                                          parallel=PARALLEL)
            writer.write(report)
            bar.update(len(report.effects))
            empty = False
        if empty:  # a VCF without records still gets its header (and JSON its empty list)
            writer.write(VariantReport(reader.header, [], [], name, strand, window))
        writer.close()
    finally:
        bar.close()  # before any error message, which then starts on a line of its own
        await service.stop()
    return reader.variants, name


def cmd_variants(args) -> int:
    fmt = output_format(args.output, args.format)  # refused before any model is loaded
    strand = strand_name(strands_of(args.strand))
    vcf = Path(args.vcf)
    if not vcf.is_file():
        raise FileNotFoundError(f"no such VCF file: {vcf}")
    if args.server:
        return _variants_on_server(args, fmt, vcf)
    if args.reference is None:
        raise CommandUsage("--reference is needed (only with --server may it be left out, to use the server's own)")
    reference = FaidxReference(args.reference)
    target = Path(args.output) if args.output else None
    part = target.with_name(target.name + ".part") if target else None
    try:
        with (part.open("w", encoding="utf-8", newline="\n") if part else _stdout()) as out:
            n, model = asyncio.run(score_file(vcf, reference, args.model, strand, offline_settings(args), out, fmt,
                                              not args.quiet))
    except BaseException:
        if part is not None:
            part.unlink(missing_ok=True)
        raise
    finally:
        reference.close()
    if target is not None and part is not None:
        os.replace(part, target)
        print(f"wrote the effects of {n} variant{'s' if n != 1 else ''} (model {model}, strand {strand}) "
              f"to {target}", file=sys.stderr)
    return 0


def _variants_on_server(args, fmt: str, vcf: Path) -> int:
    """``--server``: the variants as a job on the server (``POST /jobs?kind=variants``); without
    ``--reference``, the server's own reference is used."""
    files = {"vcf": vcf, **({"reference": Path(args.reference)} if args.reference else {})}
    params = {"model": args.model, "strand": args.strand, "format": fmt}
    job = run_job(args, "variants", "promoter", params, files, args.output)
    if args.output:
        n = job["progress"]["done"]
        print(f"wrote the effects of {n} variant{'s' if n != 1 else ''} on {args.server} (job {job['id']}) "
              f"to {args.output}", file=sys.stderr)
    return 0


class _stdout:
    """``sys.stdout`` as a context manager that does not close it."""

    def __enter__(self) -> TextIO:
        return sys.stdout

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()


def add_parser(sub) -> None:
    s = sub.add_parser("variants", help="effect of each VCF variant on the promoter probability",
                       description="Variant effects offline: for each VCF record and ALT, the promoter probability "
                                   "of a window centred on the REF and on the ALT allele, their difference and "
                                   "log-odds ratio, through the server's runtime and batcher.")
    s.add_argument("--vcf", required=True, help="VCF 4.x, plain or bgzip (streamed; no limit on its size)")
    s.add_argument("--reference",
                   help="reference FASTA (plain; indexed with pyfaidx: a .fai is written beside it, or in a "
                        "temporary folder where that folder is read-only); needed, except with --server where "
                        "the server's own reference is used without it")
    s.add_argument("-o", "--output", help="output file: .json, .tsv or .vcf; default: JSON to stdout")
    s.add_argument("--format", choices=FORMATS, help="default: from the output file's extension, else json")
    s.add_argument("--model", help="promoter variant or 'all' (default from settings)")
    s.add_argument("--strand", default="both", choices=["both", "+", "-", "plus", "minus"],
                   help="+ (windows as in the reference), - (reverse complements) or both (default: each strand "
                        "reported; the top-level values are the strand with the larger |delta|)")
    s.add_argument("--models-dir")
    s.add_argument("--device", choices=["auto", "cpu", "gpu"])
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_server_arguments(s)
    s.set_defaults(func=cmd_variants)
