"""Timing of in-silico mutagenesis: one 300 bp sequence (900 mutants and the reference) explained
through the service runtime (:func:`service.runtime.explain.explain`: the same
:class:`~service.runtime.inference.InferenceService`, batchers and chunks as ``POST /explain``),
with the default promoter model and with ``all`` (the five DNABERT-2 variants: 5 x 901 model
evaluations).

    python -m bench.explain                 # writes bench/results/explain.{md,json}
    python -m bench.explain --quick         # seconds-long smoke: a 60 bp sequence, one run

Each figure is the median (and the fastest) of ``--repeats`` timed runs after one warm-up run.
Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench.run import REPO, machine, random_dna

DEFAULT_OUT = REPO / "bench" / "results"


async def time_explain(models_dir: Path, device: str, length: int, repeats: int, models: list[str | None]) -> dict:
    from service.contract.prepare import records_of
    from service.contract.tasks import PROMOTER
    from service.runtime.explain import explain
    from service.runtime.inference import InferenceService
    from service.settings import Settings

    settings = Settings(models_dir=models_dir, device=device)
    service = InferenceService(settings)
    await service.start()
    records = records_of(random_dna(1, length, seed=13), ["seq300" if length == 300 else f"seq{length}"])
    rows = []
    try:
        for model in models:
            explained = await explain(service, PROMOTER, records, model)  # warm-up (and the sizes)
            name, mutants = explained.model, explained.explanations[0].mutants
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                await explain(service, PROMOTER, records, model)
                runs.append(time.perf_counter() - start)
            members = len(service.resolve(PROMOTER, model))
            median = statistics.median(runs)
            rows.append({"model": name, "length": length, "mutants": mutants, "models_run": members,
                         "sequences_scored": members * (mutants + 1), "seconds_median": median,
                         "seconds_min": min(runs), "runs": runs, "mutants_per_s": mutants / median,
                         "model_evaluations_per_s": members * (mutants + 1) / median})
    finally:
        await service.stop()
    return {"providers": service.providers, "settings": {
        "device": device, "workers": settings.workers, "max_batch_size": settings.max_batch_size,
        "max_batch_tokens": settings.max_batch_tokens, "intra_op_threads": settings.intra_op_threads}, "rows": rows}


def report_md(r: dict) -> str:
    m = r["machine"]
    lines = ["# In-silico mutagenesis timing", "",
             f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, ONNX Runtime {m['onnxruntime']}, "
             f"providers {', '.join(r['providers'])}, commit {m['commit']}, {m['date']}; load average "
             f"before the run {' / '.join(map(str, r['load_average_before']))} (1 / 5 / 15 min).",
             f"Command: `{r['command']}`", "",
             "One sequence through the service runtime (`service.runtime.explain.explain`: the reference and "
             "every single-base mutant, in chunks through the models' dynamic batchers), as `POST "
             "/explain/promoter` runs it, without HTTP. Seconds: median (fastest) of "
             f"{r['repeats']} runs after a warm-up run.", "",
             "| model | length | mutants | model evaluations | seconds | mutants/s | model evaluations/s |",
             "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['length']} bp | {row['mutants']} | {row['sequences_scored']} | "
                     f"{row['seconds_median']:.2f} ({row['seconds_min']:.2f}) | {row['mutants_per_s']:,.0f} | "
                     f"{row['model_evaluations_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a 60 bp sequence and one run (smoke)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models-dir", default=str(REPO / "models"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    length, repeats = (60, 1) if args.quick else (300, args.repeats)
    load = [round(x, 2) for x in os.getloadavg()]  # other work on the machine slows every figure
    result = asyncio.run(time_explain(Path(args.models_dir), args.device, length, repeats, [None, "all"]))
    result.update(machine=machine(), repeats=repeats, load_average_before=load, command=" ".join(["python -m bench.explain", *argv]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "explain-quick" if args.quick else "explain"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(report_md(result))
    print(report_md(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
