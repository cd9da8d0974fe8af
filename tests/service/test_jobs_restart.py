"""A real server, SIGKILLed in the middle of a scan job over a few hundred kb and started again
on the same jobs folder: the job resumes from its last committed chunk, ends ``succeeded``, and
its result is byte-identical to the synchronous scan of the same input."""

from __future__ import annotations

import random
import signal
import time

import httpx
import pytest

from service.contract.windows import tile
from tests.service.robustness import ServerProcess, fasta, needs_models, small_models_dir

pytestmark = [needs_models, pytest.mark.slow]
# A model whose ONNX Runtime kernels give the same bits for a sequence whatever its batch
# (see docs/jobs.md, "Identical results"): the synchronous scan is then reproducible to the byte.
MODEL = "base"
PARAMS = {"format": "json", "stride": 100}


def _wait(client: httpx.Client, url: str, until, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"the job did not get there in {timeout:.0f} s: {job}")


def test_sigkill_mid_scan_then_restart_finishes_byte_identical(tmp_path):
    rng = random.Random(2024)
    body = fasta([("chr7:1000001-1240000", "".join(rng.choices("ACGT", k=240_000))),
                  ("locus2", "".join(rng.choices("ACGTN", weights=[24, 25, 25, 24, 2], k=60_000)))])
    env = {"DNABERT_MODELS_DIR": str(small_models_dir(tmp_path, MODEL)), "DNABERT_DEFAULT_PROMOTER_MODEL": MODEL,
           "DNABERT_JOBS_DIR": str(tmp_path / "jobs")}
    server = ServerProcess(tmp_path / "server.log", env)
    with server, httpx.Client(base_url=server.base, timeout=120.0) as client:
        sync = client.post("/scan/promoter", params=PARAMS, content=body, headers={"Content-Type": "text/plain"})
        assert sync.status_code == 200, sync.text[:300]
        r = client.post("/jobs", params={"kind": "scan", **PARAMS}, content=body,
                        headers={"Content-Type": "text/plain"})
        assert r.status_code == 202, r.text
        url = r.json()["url"]
        total = 2 * sum(len(tile(n, 300, PARAMS["stride"])) for n in (240_000, 60_000))  # positions x strands
        job = _wait(client, url, lambda j: j["progress"]["done"] >= total // 3)
        server.proc.send_signal(signal.SIGKILL)
        assert server.proc.wait(timeout=10) == -signal.SIGKILL
        assert job["state"] == "running" and job["progress"]["total"] == total, job
        killed_at = job["progress"]["done"]
        assert killed_at < total

        server.start()  # the same port, the same jobs folder
        server.wait_ready()
        resumed = client.get(url).json()
        assert resumed["progress"]["done"] >= killed_at  # from its last committed chunk, not from 0
        job = _wait(client, url, lambda j: j["state"] in ("succeeded", "failed", "cancelled"))
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 2 and job["progress"]["done"] == total
        result = client.get(f"{url}/result", headers={"Accept-Encoding": "identity"})
        assert result.status_code == 200
        assert result.headers["content-type"] == sync.headers["content-type"]
        assert result.content == sync.content
    assert "resumed" in server.output()
