"""A real ``dnabert-serve serve`` process (uvicorn) on a free port: ready, predicts, stops cleanly."""

from __future__ import annotations

import gzip
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

MODELS_DIR = Path(os.environ.get("DNABERT_TEST_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))
if not (MODELS_DIR / "promoter").is_dir():
    pytest.skip(f"no promoter models in {MODELS_DIR} (set DNABERT_TEST_MODELS_DIR)", allow_module_level=True)
HAS_LNCRNA = (MODELS_DIR / "lncrna-localization").is_dir()

import httpx  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fasta(n: int = 12, seed: int = 7) -> tuple[list[str], bytes]:
    rng = random.Random(seed)
    ids, lines = [], []
    for i in range(n):
        seq = "".join(rng.choices("ACGT", k=rng.randint(50, 600)))
        if i % 4 == 1:
            seq = seq.lower()
        elif i % 4 == 2:
            seq = seq.replace("T", "U")
        elif i % 4 == 3:
            seq = seq[:10] + "NN" + seq[12:]
        ids.append(f"smoke_{i}")
        lines.append(f">smoke_{i} record {i}")
        lines.extend(seq[j : j + 70] for j in range(0, len(seq), 70))
    return ids, ("\n".join(lines) + "\n").encode()


def output_of(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-8000:]
    except OSError:
        return "<no output>"


def wait_ready(proc: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode} before it was ready:\n{output_of(log)}")
        try:
            r = httpx.get(f"{base}/readyz", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.25)
    pytest.fail(f"/readyz not 200 within {READY_TIMEOUT_S:.0f} s (last: {last}); server output:\n{output_of(log)}")


def test_real_server_serves_and_stops_cleanly(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DNABERT_MODELS_DIR": str(MODELS_DIR),
        "DNABERT_INTRA_OP_THREADS": "1",
        "DNABERT_TOKENIZER_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(port), "--host", "127.0.0.1"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, base, log)
        ids, body = fasta()
        with httpx.Client(base_url=base, timeout=60.0) as client:
            upload = client.post("/predict/promoter",
                                 files={"file": ("smoke.fasta", body, "text/x-fasta")})
            assert upload.status_code == 200, upload.text
            data = upload.json()
            assert data["task"] == "promoter"
            assert data["count"] == len(ids)
            assert [r["id"] for r in data["results"]] == ids
            assert all(0.0 <= r["probability"] <= 1.0 for r in data["results"])
            assert "X-Request-ID" in upload.headers

            raw = client.post("/predict/promoter", content=body, headers={"Content-Type": "text/plain"})
            assert raw.status_code == 200, raw.text
            raw_results = raw.json()["results"]
            assert [r["id"] for r in raw_results] == ids
            for a, b in zip(data["results"], raw_results):
                assert abs(a["probability"] - b["probability"]) <= 1e-6, a["id"]

            gz = client.post("/predict/promoter", params={"format": "csv"}, content=gzip.compress(body),
                             headers={"Content-Type": "text/x-fasta", "Content-Encoding": "gzip"})
            assert gz.status_code == 200, gz.text
            lines = gz.text.splitlines()
            assert lines[0].startswith("id,length,probability,label,model")
            assert [line.split(",")[0] for line in lines[1:]] == ids

            if HAS_LNCRNA:
                lnc = client.post("/predict/lncrna-localization", content=body,
                                  headers={"Content-Type": "text/plain"})
                assert lnc.status_code == 200, lnc.text
                assert [r["id"] for r in lnc.json()["results"]] == ids

            bad = client.post("/predict/promoter", content=b">oops\nACGT1234\n",
                              headers={"Content-Type": "text/plain"})
            assert bad.status_code == 422
            assert bad.json()["error"]["record_id"] == "oops"

            docs = client.get("/docs")
            assert docs.status_code == 200
            assert "swagger" in docs.text.lower()
            assert client.get("/openapi.json").status_code == 200
            assert client.get("/healthz").status_code == 200

        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within {STOP_TIMEOUT_S:.0f} s of SIGTERM:\n{output_of(log)}")
        # uvicorn shuts down gracefully, then re-raises the signal it caught, so a clean stop is
        # exit status 0 or "terminated by SIGTERM" -- after the lifespan shutdown has completed.
        text = output_of(log)
        assert rc in (0, -signal.SIGTERM), f"exit status {rc} after SIGTERM:\n{text}"
        assert "Application shutdown complete" in text, text
        assert "Traceback" not in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
