"""Front-end benchmark: FASTA parsing + normalisation + BPE tokenization of 300 bp records.

    python -m bench.frontend                 # 100,000 records, 5 interleaved rounds
    python -m bench.frontend --quick         # seconds-long smoke

The figure is the one ``bench.run`` reports (``bench_front_end``): the service's first stage,
``prepare(read_fasta_bytes(body), tokenizer)``, on one FASTA body of random 300 bp records, in
records per second. Beside it, each stage alone, measured in the same rounds (the order
alternating, medians): parsing, normalisation, the tokenizer's ``encode`` and, inside it, the
project's C BPE encoder alone (``service/contract/_fastbpe.c``, both cores) and, for comparison,
the ``tokenizers`` BPE alone (``encode_batch_fast`` of the bare model, both cores), the path
``encode`` takes where the package was built without a C compiler. Writes
``bench/results/frontend.{md,json}``; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench.run import REPO, fasta, machine, random_dna


def main(argv: list[str] | None = None) -> int:
    from service.contract.fasta import read_fasta_bytes
    from service.contract.prepare import prepare
    from service.contract.sequence import normalize_sequence
    from service.runtime.model import OnnxModel

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=REPO / "models")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.records, a.rounds = 2000, 1
    model = OnnxModel(next(iter(sorted(a.models.glob("promoter/*/card.json")))).parent)
    tok = model.tokenizer
    sequences = random_dna(a.records, 300, seed=3)
    body = fasta(sequences).encode()
    records = read_fasta_bytes(body, max_bytes=1 << 31)
    core, fast = getattr(tok, "_core", None), getattr(tok, "_fast", None)
    stages = {
        "parse + normalise + tokenize (prepare)": lambda: prepare(read_fasta_bytes(body, max_bytes=1 << 31), tok),
        "FASTA parsing": lambda: read_fasta_bytes(body, max_bytes=1 << 31),
        "normalisation": lambda: [normalize_sequence(r.sequence, r.id) for r in records],
        "tokenizer.encode": lambda: tok.encode(sequences),
    }
    if fast is not None:
        stages["C BPE encoder alone (_fastbpe)"] = lambda: fast.encode(sequences, tok.cls_id, tok.sep_id, tok._threads)
    if core is not None:
        stages["tokenizers BPE alone (encode_batch_fast)"] = lambda: core(sequences, add_special_tokens=False)
    load_start = [round(x, 2) for x in os.getloadavg()]
    for fn in stages.values():
        fn()
    rates: dict[str, list[float]] = {name: [] for name in stages}
    names = list(stages)
    for r in range(a.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            t = time.perf_counter()
            stages[name]()
            rates[name].append(a.records / (time.perf_counter() - t))
    result = {"command": "python -m bench.frontend " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "records": a.records, "rounds": a.rounds, "tokenizer": str(model.folder),
              "encoder": "C (_fastbpe)" if fast is not None else "tokenizers",
              "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
              "records_per_s": {name: statistics.median(v) for name, v in rates.items()}}
    lines = ["# Front-end benchmark", "",
             f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}, commit "
             f"{result['machine']['commit']}, {result['machine']['date']}. Command: `{result['command']}`.",
             f"{a.records:,} random 300 bp records in one FASTA body, tokenizer of {model.folder.relative_to(REPO) if model.folder.is_relative_to(REPO) else model.folder} "
             f"(encode runs the {result['encoder']} encoder); "
             f"medians of {a.rounds} interleaved rounds; load average {result['load_average']['start']} at the "
             f"start, {result['load_average']['end']} at the end.", "",
             "| stage | records/s | target |", "|---|---|---|"]
    for name, value in result["records_per_s"].items():
        target = ">= 50,000" if name.startswith("parse + normalise") else ""
        lines.append(f"| {name} | {value:,.0f} | {target} |")
    md = "\n".join(lines) + "\n"
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "frontend-quick" if a.quick else "frontend"
    (a.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (a.out / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
