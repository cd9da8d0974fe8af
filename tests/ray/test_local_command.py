"""``dnabert-serve ray`` without ``--address``, as the README runs it: it starts a private local
Ray cluster on 127.0.0.1 (token authentication with a token of its own), deploys, serves, and on
SIGINT deletes the application, stops the cluster, removes its token and exits 0.

The cluster tests connect to a cluster started with ``ray start`` (``--address``); this one covers
the command's own cluster, whose token must be in place before Ray is imported (Ray reads
``RAY_AUTH_*`` once, at import: a driver that read none cannot talk to a cluster with a token).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.service.robustness import fasta, needs_models, small_models_dir

pytestmark = [pytest.mark.slow, needs_models]


def test_the_readme_command_starts_its_own_cluster_serves_and_stops_on_ctrl_c(tmp_path):
    pytest.importorskip("ray", reason="Ray Serve is not installed (the ray extra)")
    from bench.run import free_port

    port = free_port()
    # the command's temporary folders (its token's, Ray's session) in one of our own; a short path,
    # since Ray's socket paths must stay under 108 bytes
    temp = Path(tempfile.mkdtemp(prefix="dnabert-t-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"DNABERT_DEFAULT_PROMOTER_MODEL": "base", "DNABERT_SHUTDOWN_GRACE_S": "2", "TMPDIR": str(temp)})
    cmd = [sys.executable, "-m", "service.cli", "ray", "--replicas", "1", "--num-cpus", "1", "--host", "127.0.0.1",
           "--port", str(port), "--models-dir", str(small_models_dir(tmp_path, "base"))]
    log = tmp_path / "ray.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "not serving in 180 s:\n" + log.read_text()[-3000:]
            if "serving on http://127.0.0.1" in log.read_text():
                break
            time.sleep(0.5)
        tokens = list(temp.glob("dnabert-ray-*/auth_token"))
        assert len(tokens) == 1  # its own token, in its own folder
        body = fasta([("p1", "TATAAAAGGCGCGCCGCGGCTATAAAAGGGCGCGCACGTGACGTCA" * 4)])
        r = httpx.post(f"http://127.0.0.1:{port}/predict/promoter", content=body,
                       headers={"Content-Type": "text/plain"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "base" and 0 < r.json()["results"][0]["probability"] < 1
        assert r.headers["x-dnabert-replica"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
        tokens_left = list(temp.glob("dnabert-ray-*"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
    text = log.read_text()
    assert re.search(r"deploying \S+ on a local Ray cluster: 1 replica", text)
    assert "deleting the application" in text
    assert not tokens_left, "the cluster's token folder was left behind"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
