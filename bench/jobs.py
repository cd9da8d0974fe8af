"""Interactive latency with and without a running job: does a job stay out of the way?

    python -m bench.jobs                # about 3 min on 2 cores; writes bench/results/jobs.{md,json}
    python -m bench.jobs --quick        # a smoke run of a few seconds a phase: jobs-quick.{md,json}

A real ``dnabert-serve serve`` process (uvicorn, the service's own CPU settings: two workers of one
thread, batches of up to 32) serves the default promoter model. One client sends single-record
``POST /predict/promoter`` requests (300 bp, FASTA), one after the other, and the latency of each is
taken on the client, in three phases of the same length:

* **idle**: nothing else runs;
* **job**: a scan job (``POST /jobs?kind=scan``, a few Mb, both strands) runs the whole time, at
  background priority, through the same batcher;
* **synchronous scan**: scans sent to ``POST /scan/promoter`` instead (interactive priority), one
  after the other (the first :data:`SYNC_BASES` of the job's sequence, so that the last one ends
  soon after the phase): what a big request does to the others without jobs.

The job's throughput (windows per second) during its phase is reported too. Nothing here asserts
a speed; the machine may be shared, so the phases are run in the order idle, job, idle, scan and
the two idle phases are reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.run import REPO, machine, random_dna

MODEL = "cnn_bilstm_max"
SYNC_BASES = 300_000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m service serve`` on a free port, one model, a temporary jobs folder."""

    def __init__(self, models: Path, jobs: Path, model: str):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DNABERT_MODELS_DIR": str(models), "DNABERT_DEFAULT_PROMOTER_MODEL": model,
               "DNABERT_JOBS_DIR": str(jobs), "DNABERT_DEVICE": "cpu",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port",
                                      str(self.port), "--log-level", "warning"], cwd=REPO, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, client) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                if client.get(f"{self.base}/readyz").status_code == 200:
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not get ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def latencies(client, base: str, seconds: float, seed: int) -> list[float]:
    """Single-record predictions, one after the other, for ``seconds``: each one's latency (s)."""
    sequences = random_dna(64, 300, seed=seed)
    out = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        body = f">q{i}\n{sequences[i % len(sequences)]}\n".encode()
        start = time.perf_counter()
        r = client.post(f"{base}/predict/promoter", content=body, headers={"Content-Type": "text/plain"})
        out.append(time.perf_counter() - start)
        if r.status_code != 200:
            raise RuntimeError(f"predict answered {r.status_code}: {r.text[:200]}")
        i += 1
    return out


def summary(values: list[float]) -> dict:
    ms = np.asarray(values) * 1000
    return {"requests": len(values), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def run(args) -> dict:
    import httpx

    genome = random_dna(1, args.bases, seed=17)[0]
    body = f">chr1:1-{args.bases}\n{genome}\n".encode()
    sync_body = f">chr1:1-{SYNC_BASES}\n{genome[:SYNC_BASES]}\n".encode()
    scan = {"stride": args.stride, "format": "bed"}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        (models / "promoter").mkdir(parents=True)
        (models / "promoter" / args.model).symlink_to(Path(args.models_dir).resolve() / "promoter" / args.model)
        server = Server(models, Path(tmp) / "jobs", args.model)
        try:
            with httpx.Client(timeout=600) as client:
                server.wait_ready(client)
                latencies(client, server.base, 2.0, seed=1)  # warm-up
                phases = {"idle": summary(latencies(client, server.base, args.seconds, seed=2))}

                r = client.post(f"{server.base}/jobs", params={"kind": "scan", **scan}, content=body,
                                headers={"Content-Type": "text/plain"})
                url = r.json()["url"]
                while client.get(url).json()["progress"]["done"] == 0:
                    time.sleep(0.05)
                first = client.get(url).json()["progress"]
                t0 = time.monotonic()
                phases["job"] = summary(latencies(client, server.base, args.seconds, seed=3))
                job = client.get(url).json()
                t1 = time.monotonic()
                assert job["state"] == "running", f"the job ended before its phase did ({job['state']}): use --bases"
                job_rate = (job["progress"]["done"] - first["done"]) / (t1 - t0)
                client.delete(url)

                phases["idle_again"] = summary(latencies(client, server.base, args.seconds, seed=4))

                stop = threading.Event()
                scans = []

                def scanning():
                    with httpx.Client(timeout=600) as other:
                        while not stop.is_set():
                            t = time.perf_counter()
                            other.post(f"{server.base}/scan/promoter", params=scan, content=sync_body,
                                       headers={"Content-Type": "text/plain"})
                            scans.append(time.perf_counter() - t)

                thread = threading.Thread(target=scanning)
                thread.start()
                time.sleep(0.5)
                phases["synchronous_scan"] = summary(latencies(client, server.base, args.seconds, seed=5))
                stop.set()
                thread.join()
        finally:
            server.stop()
    return {"phases": phases, "job_windows_per_s": job_rate, "job_total_windows": first["total"],
            "synchronous_scans_finished": len(scans)}


def report_md(report: dict) -> str:
    p = report["phases"]
    idle = p["idle"]["p50_ms"]
    rows = [("idle", "nothing else running"), ("job", "a scan job running (background priority)"),
            ("idle_again", "idle again, after the job was cancelled"),
            ("synchronous_scan", f"scans of {SYNC_BASES:,} bp sent to POST /scan/promoter, back to back")]
    lines = [
        "# Interactive latency with and without a running job",
        "",
        f"`{report['command']}` on {report['machine']['cpus']} CPUs ({report['machine']['processor']}), "
        f"commit {report['machine'].get('commit') or '-'}, {report['machine']['date']}.",
        "",
        f"A real `dnabert-serve serve` process (model `{report['model']}`, the service's CPU defaults: two workers "
        "of one thread, batches of up to 32). One client sends single-record `POST /predict/promoter` requests "
        f"(300 bp) back to back for {report['seconds']:g} s per phase; latency measured on the client. The scan is "
        f"{report['bases']:,} bp, both strands, stride {report['stride']} "
        f"({report['job_total_windows']:,} windows).",
        "",
        "| phase | what runs beside | requests | p50 ms | p90 ms | p99 ms | p50 / idle p50 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, what in rows:
        s = p[key]
        lines.append(f"| {key} | {what} | {s['requests']} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | "
                     f"{s['p99_ms']:.1f} | {s['p50_ms'] / idle:.2f} |")
    lines += [
        "",
        f"The job scored {report['job_windows_per_s']:,.0f} windows/s during its phase (one of the two workers: "
        "background batches never take the last free worker, and interactive sequences are always batched first).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    p.add_argument("--bases", type=int, default=3_000_000, help="the scan's length (the job must outlast its phase)")
    p.add_argument("--stride", type=int, default=50)
    p.add_argument("--model", default=MODEL)
    p.add_argument("--models-dir", default=str(REPO / "models"))
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--quick", action="store_true", help="3 s phases, a 300 kb scan: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.bases = 3.0, 300_000
    print(f"jobs benchmark: {args.seconds:g} s phases, scan of {args.bases:,} bp, model {args.model}", flush=True)
    report = {"command": " ".join(["python -m bench.jobs", *(sys.argv[1:] if argv is None else argv)]),
              "machine": machine(), "model": args.model, "seconds": args.seconds, "bases": args.bases,
              "stride": args.stride, **run(args)}
    for name, s in report["phases"].items():
        print(f"{name:>17}: p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms ({s['requests']} requests)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "jobs-quick" if args.quick else "jobs"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(report_md(report))
    print(f"wrote {out / name}.md and {name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
