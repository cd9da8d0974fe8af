"""Embedding benchmark: 300 bp sequences embedded (mean-pooled vectors) through the service,
against raw ONNX Runtime on the same backbone graph.

    python -m bench.embed                # full run (about 2 min on 2 cores), writes bench/results/embed.{md,json}
    python -m bench.embed --quick        # seconds-long smoke, writes embed-quick.{md,json}

* **raw ONNX Runtime**: the model folder's ``embedding.onnx``, sequences tokenized and padded
  in batches of 32 beforehand, only the session runs and the pooling timed; one session with
  every core, and one single-threaded session per core side by side.
* **service runtime**: :meth:`InferenceService.embed` (normalisation, tokenization, the
  embedding batcher, ONNX Runtime) and the mean pooling of ``/embed``, with the service's CPU
  settings, requests of ``--request-size`` sequences, ``--concurrency`` at a time.
* **HTTP**: ``POST /v1/embeddings`` (JSON in and out) on a real server process on 127.0.0.1,
  with the same requests and concurrency.

Each round runs the three paths one after the other on the same sequences, so that a change in
the machine's load falls on all alike. The vectors of the paths are compared. Nothing here
asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from bench.run import REPO, free_port, machine, random_dna, wait_ready

MODEL = "cnn_bilstm_max"
BATCH = 32


class Raw:
    def __init__(self, folder: Path, threads: int):
        from service.contract.card import ModelCard
        from service.contract.tokenization import tokenizer_for_card
        from service.runtime.session import Session

        card = ModelCard.load(folder)
        self.tok = tokenizer_for_card(folder, card)
        graph = folder / card.files["embedding"]
        self.shared = Session(graph, threads=threads)
        self.parallel = [Session(graph, threads=1) for _ in range(threads)]
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads)

    def batches(self, sequences: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        from service.contract.prepare import prepare, records_of

        tokens = prepare(records_of(sequences), self.tok).tokens
        return [self.tok.pad(tokens[i : i + BATCH]) for i in range(0, len(tokens), BATCH)]

    @staticmethod
    def _pooled(session, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hidden = session.run({"input_ids": ids, "attention_mask": mask}, "last_hidden_state")
        return (hidden.sum(axis=1, dtype=np.float64) / mask.sum(axis=1, keepdims=True)).astype(np.float32)

    def run_shared(self, batches) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        out = [self._pooled(self.shared, ids, mask) for ids, mask in batches]
        return time.perf_counter() - start, np.concatenate(out)

    def run_parallel(self, batches) -> tuple[float, np.ndarray]:
        def part(k: int) -> list[np.ndarray]:
            return [self._pooled(self.parallel[k], ids, mask) for ids, mask in batches[k :: self.threads]]

        start = time.perf_counter()
        parts = list(self.pool.map(part, range(self.threads)))
        seconds = time.perf_counter() - start
        return seconds, np.concatenate([parts[i % self.threads][i // self.threads] for i in range(len(batches))])


async def service_round(service, sequences: list[str], size: int, concurrency: int) -> tuple[float, np.ndarray]:
    from service.contract.embedding import pool
    from service.contract.prepare import records_of

    chunks = [sequences[i : i + size] for i in range(0, len(sequences), size)]
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk: list[str]) -> np.ndarray:
        async with gate:
            result = await service.embed("promoter", records_of(chunk), MODEL)
            return np.stack([pool(h, "mean") for h in result.hidden])

    start = time.perf_counter()
    out = await asyncio.gather(*(one(c) for c in chunks))
    return time.perf_counter() - start, np.concatenate(out)


async def http_round(base: str, sequences: list[str], size: int, concurrency: int) -> tuple[float, np.ndarray]:
    chunks = [sequences[i : i + size] for i in range(0, len(sequences), size)]
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        async def one(chunk: list[str]) -> np.ndarray:
            async with gate:
                r = await client.post("/v1/embeddings", json={"model": f"promoter-{MODEL}", "input": chunk})
                r.raise_for_status()
                return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)

        start = time.perf_counter()
        out = await asyncio.gather(*(one(c) for c in chunks))
    return time.perf_counter() - start, np.concatenate(out)


async def measure(args, raw: Raw, base: str) -> dict:
    from service.runtime.inference import InferenceService
    from service.settings import Settings

    settings = Settings(models_dir=args.models_dir, device="cpu", default_promoter_model=MODEL)
    settings.max_queue, settings.request_timeout_s = 1 << 30, 3600.0
    service = InferenceService(settings)
    await service.start()
    totals = {"shared": 0.0, "parallel": 0.0, "service": 0.0, "http": 0.0}
    n, diff = 0, 0.0
    try:
        warm = random_dna(256, 300, seed=99)
        raw.run_shared(raw.batches(warm))
        raw.run_parallel(raw.batches(warm))
        await service_round(service, warm, args.request_size, args.concurrency)
        await http_round(base, warm, args.request_size, args.concurrency)
        for r in range(args.rounds):
            seqs = random_dna(args.per_round, 300, seed=r)
            batches = raw.batches(seqs)
            s, shared = raw.run_shared(batches)
            totals["shared"] += s
            s, parallel = raw.run_parallel(batches)
            totals["parallel"] += s
            s, served = await service_round(service, seqs, args.request_size, args.concurrency)
            totals["service"] += s
            s, http = await http_round(base, seqs, args.request_size, args.concurrency)
            totals["http"] += s
            n += len(seqs)
            diff = max(diff, *(float(np.abs(x - shared).max()) for x in (parallel, served, http)))
            print(f"  round {r + 1}/{args.rounds}: seq/s raw {n / totals['shared']:,.0f} / {n / totals['parallel']:,.0f}, "
                  f"service {n / totals['service']:,.0f}, HTTP {n / totals['http']:,.0f}", flush=True)
    finally:
        await service.stop()
        raw.pool.shutdown()
    rate = {k: n / v for k, v in totals.items()}
    best = max(rate["shared"], rate["parallel"])
    return {"sequences": n, "seconds": totals, "sequences_per_s": rate, "max_abs_diff": diff,
            "service_over_raw": rate["service"] / best, "http_over_raw": rate["http"] / best}


def report_md(r: dict) -> str:
    m, rate, sec = r["machine"], r["sequences_per_s"], r["seconds"]
    rows = [("raw ONNX Runtime, one session", "shared", f"{r['raw_threads']} threads, batches of {BATCH}, pooled"),
            (f"raw ONNX Runtime, {r['raw_threads']} sessions side by side", "parallel", "1 thread each"),
            ("service runtime (InferenceService.embed + mean pooling)", "service",
             f"requests of {r['request_size']}, {r['concurrency']} at a time"),
            ("HTTP POST /v1/embeddings (JSON), real server", "http",
             f"requests of {r['request_size']}, {r['concurrency']} at a time")]
    return "\n".join([
        "# Embedding benchmark", "",
        f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, ONNX Runtime {m['onnxruntime']}, "
        f"commit {m['commit']}, {m['date']}.", f"Command: `{r['command']}`", "",
        f"{r['sequences']:,} random 300 bp sequences (seeded) in {r['rounds']} rounds, mean-pooled embeddings of "
        f"{r['model']}'s backbone ({r['dim']} dimensions). Every round ran all four paths one after the other.", "",
        "| path | seconds | sequences/s | set-up |", "|---|---:|---:|---|",
        *[f"| {name} | {sec[k]:.1f} | {rate[k]:,.0f} | {how} |" for name, k, how in rows], "",
        f"**Service runtime / raw: {100 * r['service_over_raw']:.1f} %**, HTTP / raw: "
        f"{100 * r['http_over_raw']:.1f} % of the faster raw set-up. Largest difference between the paths' "
        f"vectors: {r['max_abs_diff']:.1e}.", "",
        "The HTTP figure includes JSON encoding of the vectors (128 floats each) and parsing them in the client.", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", type=Path, default=REPO / "models")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--per-round", type=int, default=2048)
    p.add_argument("--request-size", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.per_round = 1, 128
    folder = args.models_dir / "promoter" / MODEL
    raw = Raw(folder, args.threads)
    port = free_port()
    env = {**os.environ, "DNABERT_MODELS_DIR": str(args.models_dir), "DNABERT_DEVICE": "cpu",
           "DNABERT_MAX_QUEUE": str(1 << 24), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        result = asyncio.run(measure(args, raw, f"http://127.0.0.1:{port}"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result.update(machine=machine(), model=MODEL, dim=int(raw.shared.run(
        {k: v for k, v in zip(("input_ids", "attention_mask"), raw.batches(["ACGT" * 10])[0], strict=True)},
        "last_hidden_state").shape[-1]), rounds=args.rounds, request_size=args.request_size,
        concurrency=args.concurrency, raw_threads=args.threads,
        command="python -m bench.embed" + (" --quick" if args.quick else
                                           f" --rounds {args.rounds} --per-round {args.per_round}"))
    suffix = "-quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"embed{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"embed{suffix}.md").write_text(report_md(result))
    print(report_md(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
