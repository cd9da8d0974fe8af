"""First contact with a hostile client and a busy machine, against real servers on 127.0.0.1.

* a second server on a busy port exits at once (status 2) with how to choose another port,
  before loading any model;
* uploads that stall or trickle get 408 ``body_timeout`` after ``body_timeout_s`` and free their
  in-flight slots, so they cannot lock the service out;
* SIGTERM: requests in progress finish, new ones are refused, a half-sent upload does not keep
  the process alive; it exits within the grace period with status 0.

Every server here is started by the test on a free loopback port and stopped by process id (or
in its thread); every request loop is bounded in count and time.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import signal
import socket
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.robustness import (
    FASTA,
    PROMOTER,
    ServerProcess,
    ThreadedServer,
    fasta,
    free_port,
    make_settings,
    needs_models,
    small_models_dir,
)

pytestmark = needs_models


def _metric(text: str, sample: str, **labels: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def _dna(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


def _read_reply(sock: socket.socket, until: float) -> bytes:
    """What the server sends on ``sock`` until it closes the connection (or ``until`` passes)."""
    reply = b""
    while time.monotonic() < until:
        sock.settimeout(max(0.05, until - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not data:
            break
        reply += data
    return reply


def _half_upload(port: int, rid: str, first: bytes = b">stalled\nACGT") -> socket.socket:
    """A raw-FASTA upload that announces 100 kB, sends its headers and a few bytes, then waits."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST {PROMOTER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                 f"Content-Length: 100000\r\nX-Request-ID: {rid}\r\n\r\n".encode() + first)
    return sock


def _error_code(reply: bytes) -> tuple[int, str]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["code"]


# ------------------------------------------------------------------------------------ 10: port


def test_second_server_on_a_busy_port_exits_2_before_loading_models(tmp_path):
    root = small_models_dir(tmp_path, "base")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = ServerProcess(tmp_path / "server.log", env={"DNABERT_MODELS_DIR": str(root),
                                                              "DNABERT_DEFAULT_PROMOTER_MODEL": "base"})
        server.port = port
        t0 = time.monotonic()
        proc = server.start()
        try:
            rc = proc.wait(timeout=60)
        finally:
            server.stop()
        elapsed = time.monotonic() - t0
    out = server.output()
    assert rc == 2, out
    assert f"cannot listen on 127.0.0.1:{port}" in out and "already in use" in out, out
    assert "--port" in out and "DNABERT_PORT" in out, out
    assert "loaded promoter/" not in out and "ready:" not in out, out  # no model was loaded
    assert "Traceback" not in out, out
    print(f"\nbusy port: exit status 2 after {elapsed:.1f} s")


# ------------------------------------------------------------------- 14: slow uploads, headers


def test_stalled_uploads_get_408_and_free_their_slots(tmp_path):
    """In-flight limit 2, body deadline 1 s: one upload that stalls after a few bytes and one
    that trickles a byte every 0.2 s (an idle timeout would never end it) hold both slots; a
    normal request is refused 429 meanwhile. Both get 408 ``body_timeout`` at the deadline, their
    connections are closed, and a normal request is served at once afterwards."""
    root = small_models_dir(tmp_path, "base")
    settings = make_settings(root, max_requests_in_flight=2, body_timeout_s=1.0)
    body = fasta([("ok", _dna(random.Random(1), 300))])
    with ThreadedServer(settings) as server:
        gate = server.app.state.in_flight
        t0 = time.monotonic()
        stalled = _half_upload(server.port, "stalled-1")
        trickle = _half_upload(server.port, "trickle-1", first=b">trickle\n")
        deadline = time.monotonic() + 5
        while gate.count < 2:
            assert time.monotonic() < deadline, "the uploads were not admitted"
            time.sleep(0.01)
        locked = httpx.post(server.base + PROMOTER, content=body, headers=FASTA, timeout=10)
        assert locked.status_code == 429, locked.text  # what 128 one-byte-a-second clients did
        replies = {}
        try:
            trickle.settimeout(0.2)
            until = t0 + 4.0
            while time.monotonic() < until and b"\r\n\r\n" not in replies.get("trickle", b""):
                try:
                    trickle.sendall(b"A")
                except OSError:  # closed by the server after its answer
                    pass
                try:
                    replies["trickle"] = replies.get("trickle", b"") + trickle.recv(65536)
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    break
            replies["trickle"] = replies.get("trickle", b"") + _read_reply(trickle, time.monotonic() + 1)
            replies["stalled"] = _read_reply(stalled, t0 + 4.0)
            answered = time.monotonic() - t0
        finally:
            stalled.close()
            trickle.close()
        for name, reply in replies.items():
            assert reply.startswith(b"HTTP/1.1 408"), (name, reply[:300])
            assert _error_code(reply) == (408, "body_timeout"), reply
            assert b"connection: close" in reply.lower(), reply[:300]
        assert answered < 3.0, answered
        t1 = time.monotonic()
        ok = httpx.post(server.base + PROMOTER, content=body, headers=FASTA, timeout=10)
        served = time.monotonic() - t0
        assert ok.status_code == 200, ok.text
        assert [r["id"] for r in ok.json()["results"]] == ["ok"]
        assert time.monotonic() - t1 < 1.0
        assert gate.count == 0
        text = httpx.get(server.base + "/metrics", timeout=10).text
        assert _metric(text, "dnabert_rejected_requests_total", reason="body_timeout") == 2
        assert _metric(text, "dnabert_requests_total", status="408") == 2
    print(f"\nstalled uploads: 408 after {answered:.2f} s, next request served at {served:.2f} s")


def test_cli_sets_the_connection_limits():
    """keep-alive from DNABERT_KEEP_ALIVE_S, the header limit, the h11 parser (whose limit holds)
    and the graceful-shutdown timeout are passed to uvicorn."""
    import uvicorn

    from service import cli

    seen = {}

    class Probe(uvicorn.Server):
        def run(self, sockets=None):
            seen["config"] = self.config
            seen["sockets"] = sockets

    args = cli.build_parser().parse_args(["serve", "--host", "127.0.0.1", "--port", str(free_port())])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(uvicorn, "Server", Probe)
        mp.setenv("DNABERT_KEEP_ALIVE_S", "7")
        mp.setenv("DNABERT_SHUTDOWN_GRACE_S", "4")
        rc = cli.cmd_serve(args)
    config = seen["config"]
    assert rc == 3  # the probe never started: reported as a start-up failure
    assert config.timeout_keep_alive == 7 and config.timeout_graceful_shutdown == 4
    assert config.h11_max_incomplete_event_size == cli.MAX_HEADER_BYTES
    assert config.http == "h11"
    assert seen["sockets"] and seen["sockets"][0].fileno() == -1  # bound before, closed after


# --------------------------------------------------------------------------------- 15: SIGTERM


GRACE = 6.0


def test_sigterm_lets_requests_in_flight_finish_and_exits_0(tmp_path):
    """Three requests of 600 records are being served and one upload is half-sent when the
    server gets SIGTERM: the three finish with 200 and their own records, a new request is
    refused (connection refused or 503 ``shutting_down``), the half-sent upload is answered 503
    ``shutting_down`` when the grace period runs out, and the process exits 0 within the grace
    period (plus a small margin). Before, it waited for the stalled upload (>70 s)."""
    root = small_models_dir(tmp_path, "base")
    rng = random.Random(15)
    n = 600
    bodies = [(f"q{b}", fasta([(f"q{b}_{i}", _dna(rng, 300)) for i in range(n)])) for b in range(3)]
    env = {"DNABERT_MODELS_DIR": str(root), "DNABERT_DEFAULT_PROMOTER_MODEL": "base",
           "DNABERT_SHUTDOWN_GRACE_S": str(GRACE), "DNABERT_BODY_TIMEOUT_S": "60",
           "DNABERT_MAX_BATCH_SIZE": "32"}
    with ServerProcess(tmp_path / "server.log", env=env) as server, \
            concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        proc = server.proc
        stalled = _half_upload(server.port, "half-sent")

        def post(item):
            rid, body = item
            return httpx.post(server.base + PROMOTER, content=body, headers={**FASTA, "X-Request-ID": rid},
                              timeout=30)

        futures = [pool.submit(post, item) for item in bodies]
        deadline = time.monotonic() + 20
        while True:  # all three are being served: their sequences are queued or have run
            text = httpx.get(server.base + "/metrics", timeout=5).text
            queued = _metric(text, "dnabert_queue_depth")
            ran = _metric(text, "dnabert_batch_size_sum") - 2  # less the warm-up batch
            if queued > 0 and queued + ran >= 3 * n - 64:  # (up to two batches may be running)
                break
            assert time.monotonic() < deadline and not any(f.done() for f in futures), server.output()[-3000:]
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            late = httpx.post(server.base + PROMOTER, content=b">late\nACGTACGT\n", headers=FASTA, timeout=5)
            assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down", late.text
        except httpx.TransportError:
            pass  # the port is closed: connection refused
        replies = [f.result(timeout=GRACE + 5) for f in futures]
        finished = time.monotonic() - t0
        try:
            half = _read_reply(stalled, t0 + GRACE + 3)
        finally:
            stalled.close()
        try:
            rc = proc.wait(timeout=max(0.1, t0 + GRACE + 3 - time.monotonic()))
        except subprocess.TimeoutExpired:
            rc = None
        exited = time.monotonic() - t0
        out = server.output()
    assert rc == 0, (rc, out[-4000:])
    for (rid, _), reply in zip(bodies, replies):
        assert reply.status_code == 200, (rid, reply.text[:300])
        ids = [r["id"] for r in reply.json()["results"]]
        assert ids == [f"{rid}_{i}" for i in range(n)]
    assert finished < GRACE, finished
    assert half.startswith(b"HTTP/1.1 503"), half[:300]
    assert _error_code(half) == (503, "shutting_down")
    assert exited < GRACE + 2.0, exited
    assert "Traceback" not in out and "Exception in ASGI application" not in out, out[-4000:]
    print(f"\nSIGTERM: in-flight requests done {finished:.2f} s after the signal, exit 0 after {exited:.2f} s")


def test_sigterm_while_idle_exits_0_at_once(tmp_path):
    root = small_models_dir(tmp_path, "base")
    env = {"DNABERT_MODELS_DIR": str(root), "DNABERT_DEFAULT_PROMOTER_MODEL": "base",
           "DNABERT_SHUTDOWN_GRACE_S": str(GRACE)}
    with ServerProcess(tmp_path / "server.log", env=env) as server:
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        rc = server.proc.wait(timeout=GRACE + 5)
        elapsed = time.monotonic() - t0
    assert rc == 0, server.output()[-3000:]
    assert elapsed < 3.0, elapsed

