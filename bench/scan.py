"""Scan benchmark: 1 Mb on both strands at stride 50 (about 40,000 windows of 300 bp) through
the service's scan path, against raw ONNX Runtime on the very same windows.

    python -m bench.scan                  # full run (< 3 min on 2 cores), writes bench/results/scan.{md,json}
    python -m bench.scan --quick          # seconds-long smoke (CI), writes scan-quick.{md,json}

* **service**: :class:`service.runtime.scan.Scanner` on an
  :class:`~service.runtime.inference.InferenceService` with the service's own CPU settings
  (two workers of one thread each, batches of up to 32, the dynamic batcher), timed from the raw
  record to the last scored window: normalisation, tiling, reverse complements, tokenization,
  batching, ONNX Runtime, activation, region merging. What ``dnabert-serve scan`` and
  ``POST /scan/promoter`` run (less file or HTTP I/O).
* **raw ONNX Runtime**: one :class:`~service.runtime.model.OnnxModel` session with every core
  (``--threads``), the same windows tokenized and padded in batches of 32 beforehand, and only
  the session runs timed: the ceiling of the hardware for this model.

The sequence is random DNA (seeded): windows of one length, as in a genome. Both paths' scores
are compared (they must agree to float precision). Figures are printed and written; nothing
here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.run import REPO, machine, random_dna

MODEL = "cnn_bilstm_max"
BATCH = 32


def _windows(sequence: str, window: int, stride: int) -> tuple[list[str], list[str]]:
    """The scan's windows, forward and reverse complement, in the scanner's order."""
    from service.contract.windows import reverse_complement, tile

    plus = [sequence[s : s + window] for s in tile(len(sequence), window, stride).tolist()]
    return plus, [reverse_complement(s) for s in plus]


class Raw:
    """Raw ONNX Runtime on pre-tokenized windows padded in batches of :data:`BATCH`, session runs
    only, in two set-ups: one session with every core (``threads``), and one single-threaded
    session per core running side by side (what the service's workers do)."""

    def __init__(self, models_dir: Path, model: str, threads: int):
        from service.runtime.model import OnnxModel

        folder = models_dir / "promoter" / model
        self.shared = OnnxModel(folder, threads=threads)
        self.parallel = [OnnxModel(folder, threads=1) for _ in range(threads)]
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads)

    def batches(self, sequences: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        from service.contract.prepare import prepare, records_of

        tokens = prepare(records_of(sequences), self.shared.tokenizer).tokens
        return [self.shared.tokenizer.pad(tokens[i : i + BATCH]) for i in range(0, len(tokens), BATCH)]

    def run_shared(self, batches) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        logits = [self.shared.run(ids, mask) for ids, mask in batches]
        return time.perf_counter() - start, self._probability(logits)

    def run_parallel(self, batches) -> tuple[float, np.ndarray]:
        def part(k: int) -> list[np.ndarray]:
            return [self.parallel[k].run(ids, mask) for ids, mask in batches[k :: self.threads]]

        start = time.perf_counter()
        parts = list(self.pool.map(part, range(self.threads)))
        seconds = time.perf_counter() - start
        logits = [parts[i % self.threads][i // self.threads] for i in range(len(batches))]
        return seconds, self._probability(logits)

    def _probability(self, logits: list[np.ndarray]) -> np.ndarray:
        from service.contract.activation import activate

        card = self.shared.card
        return activate(np.concatenate(logits), card.activation, card.positive_index)[:, 0]


class Service:
    """The scanner through the service's runtime (the settings ``dnabert-serve scan`` uses),
    timed from the raw record to its last scored window."""

    def __init__(self, models_dir: Path, model: str, stride: int):
        from service.runtime.inference import InferenceService
        from service.runtime.scan import Scanner, ScanOptions
        from service.settings import Settings

        self.settings = Settings(models_dir=models_dir, device="cpu", default_promoter_model=model)
        self.settings.max_queue, self.settings.request_timeout_s = 1 << 30, 24 * 3600.0
        self.service = InferenceService(self.settings)
        self.model, self.stride, self.make = model, stride, lambda: Scanner(self.service, model,
                                                                            ScanOptions(stride=stride))

    async def scan(self, name: str, sequence: str) -> tuple[float, np.ndarray, int]:
        """(seconds, probabilities as the raw order has them: + windows then -, regions)."""
        from service.contract.fasta import FastaRecord
        from service.runtime.scan import RecordFinished, WindowsScored

        scanner = self.make()
        start = time.perf_counter()
        target = scanner.target(FastaRecord(name, name, sequence, 0))
        plus, minus, regions = [], [], 0
        async for event in scanner.events([target]):
            if isinstance(event, WindowsScored):
                w = event.windows
                plus.append(w.probability[w.strand == "+"])
                minus.append(w.probability[w.strand == "-"])
            elif isinstance(event, RecordFinished):
                regions = len(event.summary.regions)
        return time.perf_counter() - start, np.concatenate([*plus, *minus]), regions

    def setup(self) -> dict:
        scanner = self.make()
        lm = self.service.models[("promoter", self.model)]
        return {"workers": self.settings.workers, "max_batch_size": lm.batcher.config.max_batch_size,
                "chunk_positions": scanner.chunk, "in_flight": scanner.in_flight}


async def interleaved(raw: Raw, service: Service, pieces: list[str], window: int, stride: int) -> dict:
    """Each piece through raw (both set-ups) and then the service, piece after piece, so that a
    change in the machine's load falls on both alike."""
    await service.service.start()
    try:
        warm = pieces[0][: 400 * stride + window]  # every batch shape the pieces will have, about
        await service.scan("warm", warm)
        warm_batches = raw.batches(sum(_windows(warm, window, stride), []))
        raw.run_shared(warm_batches)
        raw.run_parallel(warm_batches)
        totals = {"shared": 0.0, "parallel": 0.0, "service": 0.0}
        windows = regions = 0
        diff = 0.0
        for i, piece in enumerate(pieces):
            plus, minus = _windows(piece, window, stride)
            batches = raw.batches(plus + minus)
            seconds, shared = raw.run_shared(batches)
            totals["shared"] += seconds
            seconds, parallel = raw.run_parallel(batches)
            totals["parallel"] += seconds
            seconds, scanned, found = await service.scan(f"piece{i}", piece)
            totals["service"] += seconds
            windows += len(scanned)
            regions += found
            diff = max(diff, float(np.max(np.abs(scanned - shared))), float(np.max(np.abs(parallel - shared))))
            print(f"  piece {i + 1}/{len(pieces)}: {windows:,} windows so far; windows/s raw "
                  f"{windows / totals['shared']:,.0f} (1 session) / {windows / totals['parallel']:,.0f} "
                  f"({raw.threads} sessions), service {windows / totals['service']:,.0f}", flush=True)
        setup = service.setup()
    finally:
        await service.service.stop()
        raw.pool.shutdown()
    return {"windows": windows, "regions": regions, "seconds": totals, "max_abs_diff": diff, "service_setup": setup}


def report_md(r: dict) -> str:
    m, setup, rate = r["machine"], r["service_setup"], r["windows_per_s"]
    threads = r["raw_threads"]
    rows = [("service scan path (Scanner -> InferenceService.score -> dynamic batcher -> ONNX Runtime)", "service",
             f"{setup['workers']} workers x {max(1, m['cpus'] // setup['workers'])} thread, batches <= "
             f"{setup['max_batch_size']}, {setup['chunk_positions']} positions x 2 strands per score call, "
             f"{setup['in_flight']} calls in flight"),
            ("raw ONNX Runtime, one session", "shared", f"{threads} intra-op threads, batches of {BATCH}"),
            (f"raw ONNX Runtime, {threads} sessions side by side", "parallel",
             f"1 thread each, batches of {BATCH} dealt out in turn")]
    table = [f"| {name} | {r['seconds'][key]:.1f} | {rate[key]:,.0f} | {how} |" for name, key, how in rows]
    return "\n".join([
        "# Scan benchmark", "",
        f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, ONNX Runtime {m['onnxruntime']}, "
        f"commit {m['commit']}, {m['date']}.", f"Command: `{r['command']}`", "",
        f"{r['bases']:,} bp of random DNA (seeded) in {r['pieces']} records of {r['bases'] // r['pieces']:,} bp, "
        f"scanned on both strands at stride {r['stride']} with {r['model']}: {r['windows']:,} windows of "
        f"{r['window']} bp. Each record went through the raw set-ups and then the service before the next "
        "record, so that a change in the machine's load falls on all of them alike.", "",
        "| path | seconds | windows/s | set-up |", "|---|---:|---:|---|", *table, "",
        f"**Service / raw: {100 * r['service_over_raw']:.1f} %** of the faster raw set-up "
        f"({100 * r['service_over_shared']:.1f} % of the single session). Largest difference between the "
        f"paths' probabilities: {r['max_abs_diff']:.1e}. Regions found (P >= 0.5): {r['regions']}.", "",
        "The service figure includes everything a scan does besides reading the file: normalisation, tiling, "
        "reverse complements, tokenization, batching, activation and region merging; the raw figures are the "
        "sessions alone, on windows tokenized and padded beforehand.", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bases", type=int, default=1_000_000)
    p.add_argument("--pieces", type=int, default=8, help="records the bases are cut into (interleaving rounds)")
    p.add_argument("--stride", type=int, default=50)
    p.add_argument("--model", default=MODEL)
    p.add_argument("--models-dir", default=str(REPO / "models"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="raw ONNX Runtime threads / sessions")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--quick", action="store_true", help="a few thousand bases in two pieces: a smoke run")
    args = p.parse_args(argv)
    bases, count = (6000, 2) if args.quick else (args.bases, args.pieces)
    sequence = random_dna(1, bases, seed=13)[0]
    size = -(-bases // count)
    pieces = [sequence[i : i + size] for i in range(0, bases, size)]
    with tempfile.TemporaryDirectory() as tmp:  # the one model only: a quick start
        from service.contract.card import ModelCard
        from service.contract.windows import window_length

        models = Path(tmp)
        (models / "promoter").mkdir()
        (models / "promoter" / args.model).symlink_to(Path(args.models_dir).resolve() / "promoter" / args.model)
        window = window_length(ModelCard.load(models / "promoter" / args.model))
        print(f"scan benchmark: {bases:,} bp in {len(pieces)} records, model {args.model}", flush=True)
        raw = Raw(models, args.model, args.threads)
        result = asyncio.run(interleaved(raw, Service(models, args.model, args.stride), pieces, window, args.stride))
    windows, seconds = result["windows"], result["seconds"]
    rate = {k: windows / v for k, v in seconds.items()}
    report = {"command": " ".join(["python -m bench.scan", *(sys.argv[1:] if argv is None else argv)]),
              "machine": machine(), "model": args.model, "bases": bases, "pieces": len(pieces),
              "stride": args.stride, "window": window, "raw_threads": args.threads, "windows_per_s": rate,
              "service_over_raw": rate["service"] / max(rate["shared"], rate["parallel"]),
              "service_over_shared": rate["service"] / rate["shared"], **result}
    print(f"service / raw: {100 * report['service_over_raw']:.1f} % ({rate['service']:,.0f} windows/s against "
          f"{max(rate['shared'], rate['parallel']):,.0f}); max |difference| {result['max_abs_diff']:.1e}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "scan-quick" if args.quick else "scan"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(report_md(report))
    print(f"wrote {out / name}.md and {name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
