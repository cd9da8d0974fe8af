"""Benchmarks, side by side in one run: raw ONNX Runtime, the service end to end, the PyTorch
eager per-sequence baseline, and the front end (FASTA parsing + tokenization).

    python -m bench.run                 # full run, writes bench/results/latest.{md,json}
    python -m bench.run --quick         # seconds-long smoke (CI)

Figures are printed and written; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def random_dna(n: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGT"))
    return ["".join(letters[rng.integers(0, 4, length)]) for _ in range(n)]


def fasta(seqs: list[str]) -> str:
    return "".join(f">seq{i}\n{s}\n" for i, s in enumerate(seqs))


def timed(fn, min_seconds: float, min_iters: int = 3) -> float:
    """Seconds per call (median of repeated timings after one warm-up call)."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


# --------------------------------------------------------------------------------------------
def bench_raw_onnx(models_dir: Path, batch_sizes: list[int], seconds: float, threads: int) -> list[dict]:
    from service.contract.card import ModelCard
    from service.runtime.model import OnnxModel

    rows = []
    for folder in sorted(models_dir.glob("*/*/card.json")):
        card = ModelCard.load(folder.parent)
        for precision in ["fp32"] + (["int8"] if "graph_int8" in card.files else []):
            model = OnnxModel(folder.parent, precision=precision, threads=threads)
            lnc = model.card.task == "lncrna-localization"
            length = 2292 if lnc else 300
            seqs = random_dna(max(batch_sizes), length, seed=1)
            tokens = [e.ids for e in model.tokenizer.encode(seqs)]
            for bs in batch_sizes:
                ids, mask = model.tokenizer.pad(tokens[:bs])
                per_call = timed(lambda ids=ids, mask=mask, model=model: model.run(ids, mask), seconds)
                rows.append({"model": f"{model.card.task}/{model.card.name}", "precision": precision,
                             "input_nt": length, "batch": bs, "tokens": int(ids.shape[1]),
                             "sequences_per_s": bs / per_call, "latency_ms": 1000 * per_call})
                print(f"  raw onnx {rows[-1]['model']:36s} {precision} {length:5d} nt batch {bs:4d}: "
                      f"{rows[-1]['sequences_per_s']:9.1f} seq/s", flush=True)
    return rows


def bench_torch_eager(models_dir: Path, variant: str, n: int, runs_dir: Path) -> dict:
    """The baseline users have today: PyTorch eager, one sequence at a time."""
    import torch

    from service.contract.card import ModelCard
    from service.contract.sequence import normalize_sequence
    from service.contract.tokenization import SequenceTokenizer, TruncationPolicy
    from training.checkpoint import is_run_folder, load_classifier
    from training.models.dnabert2 import DnaBertConfig
    from training.models.heads import SequenceClassifier

    card = ModelCard.load(models_dir / "promoter" / variant)
    run = runs_dir / f"promoter-{variant}" / "model"
    kept = card.training.selection.kept if card.training.selection else None
    if kept:
        run = runs_dir / kept / "model"
    if is_run_folder(run):
        model, tok, _ = load_classifier(run)
        weights = f"trained weights from {run.relative_to(REPO) if run.is_relative_to(REPO) else run}"
    else:  # speed does not depend on the weights: same architecture, seeded random weights
        torch.manual_seed(0)
        model = SequenceClassifier(DnaBertConfig.from_dict(card.backbone), variant).eval()
        tok = SequenceTokenizer.from_file(models_dir / "promoter" / variant / "tokenizer.json",
                                          TruncationPolicy(**{k: v for k, v in card.tokenization.entry().items() if k in TruncationPolicy.__slots__}))
        weights = "same architecture, random weights (run folder not present)"
    seqs = random_dna(n, 300, seed=2)
    torch.set_num_threads(os.cpu_count() or 1)

    def one_by_one():
        with torch.no_grad():
            for s in seqs:
                ids = tok.encode([normalize_sequence(s).sequence])[0].ids
                x = torch.tensor([ids])
                model(x, torch.ones_like(x)).softmax(-1)

    per_call = timed(one_by_one, 0.0, min_iters=2)
    return {"model": f"promoter/{variant}", "sequences_per_s": n / per_call, "weights": weights}


def bench_front_end(models_dir: Path, n: int) -> dict:
    from service.contract.fasta import read_fasta_bytes
    from service.contract.prepare import prepare
    from service.runtime.model import OnnxModel

    model = OnnxModel(next(iter(sorted(models_dir.glob("promoter/*/card.json")))).parent)
    body = fasta(random_dna(n, 300, seed=3)).encode()

    def parse():
        return read_fasta_bytes(body, max_bytes=1 << 31)

    def parse_and_tokenize():
        return prepare(parse(), model.tokenizer)  # the service's first stage, as it runs there

    t_parse = timed(parse, 1.0)
    t_all = timed(parse_and_tokenize, 1.0)
    return {"records": n, "parse_per_s": n / t_parse, "parse_normalise_tokenize_per_s": n / t_all}


# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("server not ready")


def metric_sums(port: int, model: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        for name in ("dnabert_queue_seconds", "dnabert_inference_seconds", "dnabert_request_seconds",
                     "dnabert_batch_size"):
            for suffix in ("_sum", "_count"):
                if line.startswith(name + suffix) and (f'model="{model}"' in line or "endpoint=" in line):
                    out[name + suffix] = out.get(name + suffix, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def bench_service(models_dir: Path, model: str, loads: list[tuple[int, int]], seconds: float,
                  idle_requests: int, env_extra: dict[str, str]) -> dict:
    port = free_port()
    env = {**os.environ, "DNABERT_MODELS_DIR": str(models_dir), "DNABERT_PORT": str(port),
           "DNABERT_HOST": "127.0.0.1", "DNABERT_DEFAULT_PROMOTER_MODEL": model, **env_extra}
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--log-level", "warning"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    result: dict = {"model": f"promoter/{model}", "settings": env_extra, "loads": []}
    try:
        wait_ready(port, server)
        # idle single-sequence latency, and where its time goes (server-side histograms)
        one = fasta(random_dna(1, 300, seed=4)).encode()
        before = metric_sums(port, f"promoter/{model}")
        lat = []
        for _ in range(idle_requests):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/predict/promoter", data=one,
                                         headers={"Content-Type": "text/x-fasta"})
            t = time.perf_counter()
            urllib.request.urlopen(req, timeout=30).read()
            lat.append(time.perf_counter() - t)
        after = metric_sums(port, f"promoter/{model}")
        d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        n = max(1.0, d.get("dnabert_request_seconds_count", 1))
        result["idle"] = {
            "requests": idle_requests,
            "p50_ms": 1000 * float(np.median(lat)), "min_ms": 1000 * min(lat),
            "server_total_ms": 1000 * d.get("dnabert_request_seconds_sum", 0) / n,
            "queue_wait_ms": 1000 * d.get("dnabert_queue_seconds_sum", 0) / max(1, d.get("dnabert_queue_seconds_count", 1)),
            "inference_ms": 1000 * d.get("dnabert_inference_seconds_sum", 0) / max(1, d.get("dnabert_inference_seconds_count", 1)),
        }
        result["idle"]["http_parse_tokenize_ms"] = result["idle"]["p50_ms"] - result["idle"]["queue_wait_ms"] - result["idle"]["inference_ms"]
        print(f"  idle single-sequence latency p50 {result['idle']['p50_ms']:.1f} ms", flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".fa", delete=False) as fh:
            fh.write(fasta(random_dna(4000, 300, seed=5)))
        for records, clients in loads:
            out = subprocess.run([sys.executable, "-m", "bench.loadgen", "--url", f"http://127.0.0.1:{port}",
                                  "--fasta", fh.name, "--records", str(records), "--clients", str(clients),
                                  "--seconds", str(seconds)], capture_output=True, text=True, cwd=REPO, check=True)
            row = json.loads(out.stdout)
            result["loads"].append(row)
            print(f"  service {records:4d} records x {clients:3d} clients: {row['sequences_per_s']:9.1f} seq/s "
                  f"p50 {row['p50_ms']:.0f} ms p99 {row['p99_ms']:.0f} ms", flush=True)
        os.unlink(fh.name)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    return result


# --------------------------------------------------------------------------------------------
def machine() -> dict:
    from service.runtime import session

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "onnxruntime": session.version(),
            "providers": session.available_providers(), "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def report_md(r: dict) -> str:
    lines = ["# Benchmark report", "", f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['platform']}, "
             f"Python {r['machine']['python']}, ONNX Runtime {r['machine']['onnxruntime']}, "
             f"torch {r['machine'].get('torch', '-')}, commit {r['machine']['commit']}, {r['machine']['date']}.",
             f"Command: `{r['command']}`", "", "## Summary", "",
             "| figure | value | target |", "|---|---|---|"]
    for k, v in r["summary"].items():
        lines.append(f"| {k} | {v['value']} | {v.get('target', '')} |")
    lines += ["", "## Raw ONNX Runtime (in process)", "",
              "| model | precision | input | batch | tokens | sequences/s | latency ms |", "|---|---|---|---|---|---|---|"]
    for x in r["raw_onnx"]:
        lines.append(f"| {x['model']} | {x.get('precision', 'fp32')} | {x['input_nt']} nt | {x['batch']} | {x['tokens']} "
                     f"| {x['sequences_per_s']:.1f} | {x['latency_ms']:.2f} |")
    for key in ("service", "service_int8"):
        if key not in r:
            continue
        s = r[key]
        lines += ["", f"## Service end to end ({s['model']}, {s.get('precision', 'fp32')}, load generator in a "
                  "separate process)", "",
                  "| records/request | clients | sequences/s | requests/s | p50 ms | p95 ms | p99 ms | statuses |",
                  "|---|---|---|---|---|---|---|---|"]
        for x in s["loads"]:
            lines.append(f"| {x['records_per_request']} | {x['clients']} | {x['sequences_per_s']:.1f} "
                         f"| {x['requests_per_s']:.1f} | {x['p50_ms']:.1f} | {x['p95_ms']:.1f} | {x['p99_ms']:.1f} "
                         f"| {x['statuses']} |")
    s = r["service"]
    i = s["idle"]
    lines += ["", f"Idle single-sequence latency: p50 {i['p50_ms']:.1f} ms (min {i['min_ms']:.1f}); of it, "
              f"batcher queue wait {i['queue_wait_ms']:.2f} ms, ONNX Runtime {i['inference_ms']:.2f} ms, "
              f"HTTP + parsing + tokenization + response {i['http_parse_tokenize_ms']:.2f} ms.", "",
              "## Baseline: PyTorch eager, one sequence at a time", "",
              f"{r['torch_eager']['model']}: {r['torch_eager']['sequences_per_s']:.1f} sequences/s ({r['torch_eager']['weights']}).",
              "", "## Front end", "",
              f"FASTA parsing: {r['front_end']['parse_per_s']:,.0f} records/s; parsing + normalisation + tokenization: "
              f"{r['front_end']['parse_normalise_tokenize_per_s']:,.0f} records/s ({r['front_end']['records']} records of 300 nt)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(REPO / "models"))
    p.add_argument("--runs", default=str(REPO / "runs" / "embedded"), help="run folders with PyTorch weights")
    p.add_argument("--model", default="cnn_bilstm_max", help="promoter variant for the service and baseline")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    a = p.parse_args(argv)
    models = Path(a.models)
    quick = a.quick
    batch_sizes = [1, 8] if quick else [1, 8, 32, 128]
    r: dict = {"command": "python -m bench.run" + (" --quick" if quick else ""), "machine": machine()}
    print("raw ONNX Runtime", flush=True)
    r["raw_onnx"] = bench_raw_onnx(models, batch_sizes, 0.2 if quick else 2.0, a.threads)
    print("front end", flush=True)
    r["front_end"] = bench_front_end(models, 2000 if quick else 100_000)
    print("PyTorch eager baseline", flush=True)
    r["torch_eager"] = bench_torch_eager(models, a.model, 20 if quick else 300, Path(a.runs))
    print("service", flush=True)
    loads = [(10, 4)] if quick else [(1, 16), (10, 16), (100, 8), (1000, 2)]
    threads = {"DNABERT_INTRA_OP_THREADS": str(a.threads)} if a.threads else {}
    r["service"] = bench_service(models, a.model, loads, 2 if quick else 15, 10 if quick else 100,
                                 {**threads, "DNABERT_PRECISION": "fp32"})
    r["service"]["precision"] = "fp32"
    has_int8 = any(x["model"] == f"promoter/{a.model}" and x["precision"] == "int8" for x in r["raw_onnx"])
    if has_int8:
        print("service (int8)", flush=True)
        r["service_int8"] = bench_service(models, a.model, loads, 2 if quick else 15, 10 if quick else 100,
                                          {**threads, "DNABERT_PRECISION": "int8"})
        r["service_int8"]["precision"] = "int8"
    summary: dict = {}
    eager = r["torch_eager"]["sequences_per_s"]
    for precision, key in (("fp32", "service"), ("int8", "service_int8")):
        if key not in r:
            continue
        best_raw = max(x["sequences_per_s"] for x in r["raw_onnx"]
                       if x["model"] == f"promoter/{a.model}" and x["precision"] == precision)
        best_service = max(x["sequences_per_s"] for x in r[key]["loads"])
        summary[f"service / best raw ONNX Runtime (same model, {precision})"] = {
            "value": f"{best_service / best_raw:.0%} ({best_service:.0f} / {best_raw:.0f} seq/s)", "target": ">= 85%"}
        summary[f"service ({precision}) / PyTorch eager per sequence"] = {
            "value": f"{best_service / eager:.1f}x ({best_service:.0f} / {eager:.0f} seq/s)", "target": ">= 10x"}
    r["summary"] = {
        **summary,
        "FASTA parsing + tokenization": {"value": f"{r['front_end']['parse_normalise_tokenize_per_s']:,.0f} seq/s", "target": ">= 50,000 seq/s"},
        "idle single-sequence latency (p50)": {"value": f"{r['service']['idle']['p50_ms']:.1f} ms", "target": "reported"},
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "quick" if quick else "latest"
    (out / f"{name}.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / f"{name}.md").write_text(report_md(r))
    print(report_md(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
