"""``dnabert-serve explain``: in-silico mutagenesis offline, from a FASTA file.

    dnabert-serve explain FILE [--task promoter|lncrna-localization] [--model NAME]
                          [-o OUT.json|.bedgraph|.png|.svg] [--format F] [--label L]

The same runtime and batcher as ``POST /explain/...`` (:func:`service.runtime.explain.explain`),
so the numbers are the server's. Records go up to the model's input length, as over HTTP; the
per-request limit on mutants (``max_mutants``) does not apply. A progress bar counts the scored
sequences (references and mutants) on stderr.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from service.commands import CommandUsage, offline_settings
from service.commands import output_format as _output_format
from service.commands.remote import add_server_arguments, run_job
from service.contract.fasta import FastaRecord, read_fasta_bytes
from service.contract.plots import FORMATS, IMAGE_FORMATS, render_explanations, require_one_record
from service.contract.tasks import LNCRNA, PROMOTER, TASK_NAMES, TASKS
from service.settings import Settings

_SUFFIXES = {"json": "json", "bedgraph": "bedgraph", "bg": "bedgraph", "png": "png", "svg": "svg"}


def output_format(output: str | None, requested: str | None) -> str:
    return _output_format(output, requested, _SUFFIXES, "json")


async def explain_file(records: list[FastaRecord], task: str, model: str | None, settings: Settings,
                       progress: bool = True):
    """The explanations of ``records`` (no limit on mutants), with a progress bar on stderr."""
    from tqdm import tqdm

    from service.runtime.explain import explain, planned_mutants
    from service.runtime.inference import InferenceService

    service = InferenceService(settings)
    await service.start()
    bar = None
    try:
        total = len(records) + planned_mutants(service, task, records, model)
        bar = tqdm(total=total, unit="seq", disable=not progress, file=sys.stderr, desc="explain")
        return await explain(service, task, records, model, progress=bar.update)
    finally:
        if bar is not None:
            bar.close()  # before any error message, which then starts on a line of its own
        await service.stop()


def cmd_explain(args) -> int:
    fmt = output_format(args.output, args.format)  # refused before any model is loaded
    if args.label is not None and args.task != LNCRNA:
        raise CommandUsage(f"--label is for {LNCRNA}; the promoter score is the probability")
    path = Path(args.file)
    if args.server:
        params = {"model": args.model, "format": fmt, **({"label": args.label} if args.label else {})}
        job = run_job(args, "explain", args.task, params, {"file": path}, args.output)
        if args.output:
            print(f"wrote the explanation of {job['progress']['done']} record(s) on {args.server} (job {job['id']}) "
                  f"to {args.output}", file=sys.stderr)
        return 0
    records = read_fasta_bytes(path.read_bytes(), max_bytes=1 << 34)
    if fmt in IMAGE_FORMATS:
        require_one_record(len(records))
    explained = asyncio.run(explain_file(records, args.task, args.model, offline_settings(args), not args.quiet))
    items, model = explained.explanations, explained.model
    body = render_explanations(items, explained.task, model, fmt, args.label)
    if args.output:
        out = Path(args.output)
        out.write_bytes(body) if isinstance(body, bytes) else out.write_text(body)
        print(f"wrote the explanation of {len(items)} record{'s' if len(items) != 1 else ''} "
              f"({sum(e.mutants for e in items)} mutants, model {model}) to {args.output}", file=sys.stderr)
    elif isinstance(body, bytes):
        sys.stdout.buffer.write(body)
    else:
        sys.stdout.write(body)
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("explain", help="in-silico mutagenesis of each record: how each base changes the score",
                       description="In-silico mutagenesis offline: every record's reference score and how each "
                                   "single-base substitution changes it, through the server's runtime and batcher.")
    s.add_argument("file", help="FASTA, plain or gzip; records up to the model's input length "
                                "(promoter: 300 bp, lncRNA: 2,292 nt)")
    s.add_argument("--task", default=PROMOTER, choices=TASK_NAMES, help="default: promoter")
    s.add_argument("--model", help="promoter variant or 'all' (default from settings)")
    s.add_argument("-o", "--output", help="output file: .json, .bedgraph, .png or .svg (png/svg: one record); "
                                          "default: JSON to stdout")
    s.add_argument("--format", choices=FORMATS, help="default: from the output file's extension, else json")
    s.add_argument("--label", choices=TASKS[LNCRNA].labels,
                   help="lncRNA: the label drawn (png/svg; default nucleus) or the only one written (bedgraph)")
    s.add_argument("--models-dir")
    s.add_argument("--device", choices=["auto", "cpu", "gpu"])
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_server_arguments(s)
    s.set_defaults(func=cmd_explain)
