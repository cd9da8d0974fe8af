"""Helpers shared by the robustness tests (bad input, fuzzing, security, load and faults).

Not a test module: it builds applications on the embedded model folders, runs a real uvicorn
server (in a thread or in a child process) on a free loopback port, and checks the one error
shape with no stack trace or server path in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.api.app import create_app
from service.runtime.inference import InferenceService
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = Path(os.environ.get("DNABERT_TEST_MODELS_DIR", REPO / "models"))
HAS_MODELS = (MODELS_DIR / "promoter").is_dir()
HAS_LNCRNA = (MODELS_DIR / "lncrna-localization").is_dir()
PROMOTER = "/predict/promoter"
LNCRNA = "/predict/lncrna-localization"
FASTA = {"Content-Type": "text/plain"}
TEST_TIMEOUT = 120.0
ERROR_FIELDS = {"code", "message", "record_id", "line", "request_id"}

needs_models = pytest.mark.skipif(not HAS_MODELS, reason=f"no promoter models in {MODELS_DIR}")


def run(coro):
    """Run one test coroutine with a hard ceiling, so a bug fails the test instead of hanging."""

    async def guarded():
        return await asyncio.wait_for(coro, TEST_TIMEOUT)

    return asyncio.run(guarded())


def make_settings(models_dir: Path = MODELS_DIR, **overrides) -> Settings:
    values = dict(models_dir=models_dir, device="cpu", tokenizer_threads=1, intra_op_threads=1,
                  default_promoter_model="base", max_wait_ms=2,
                  jobs_dir=Path(tempfile.mkdtemp(prefix="dnabert-test-jobs-")))  # a server's own jobs
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def serving(settings: Settings, service: InferenceService | None = None, *, start: bool = True,
                  raise_app_exceptions: bool = True):
    """An httpx client on a fresh app; the app's lifespan runs around it when ``start``."""
    app = create_app(settings, service)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with contextlib.AsyncExitStack() as stack:
        if start:
            await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://test", timeout=TEST_TIMEOUT))
        client.app = app  # type: ignore[attr-defined]
        yield client


def no_leak(text: str, *extra_paths: Path | str) -> None:
    """No stack trace and no server path in a response."""
    assert "Traceback" not in text and 'File "' not in text, text
    assert not re.search(r"\.py\b", text), text
    assert str(REPO) not in text and "/site-packages/" not in text, text
    for path in extra_paths:
        assert str(path) not in text, (path, text)


def assert_error(resp: httpx.Response, status: int, code: str | None = None, *, record_id: str | None = None,
                 line: int | None = None) -> dict:
    """The single error shape (with the request id), without stack traces or server paths."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message", "request_id"} <= set(err) <= ERROR_FIELDS, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["request_id"] == resp.headers["x-request-id"]
    if code is not None:
        assert err["code"] == code, err
    if record_id is not None:
        assert err.get("record_id") == record_id, err
        assert record_id in err["message"], err
    if line is not None:
        assert err.get("line") == line, err
    no_leak(resp.text)
    return err


def fasta(records: list[tuple[str, str]], newline: str = "\n", width: int = 60) -> bytes:
    lines = []
    for rid, seq in records:
        lines.append(">" + rid)
        lines.extend(seq[i:i + width] for i in range(0, len(seq), width))
    return (newline.join(lines) + newline).encode()


def small_models_dir(tmp: Path, *names: str, lncrna: bool = False) -> Path:
    """A models folder with links to some of the embedded promoter models (faster start-up)."""
    root = tmp / "models"
    (root / "promoter").mkdir(parents=True, exist_ok=True)
    links = [(root / "promoter" / name, MODELS_DIR / "promoter" / name) for name in names]
    if lncrna and HAS_LNCRNA:
        (root / "lncrna-localization").mkdir(exist_ok=True)
        links += [(root / "lncrna-localization" / f.name, f) for f in (MODELS_DIR / "lncrna-localization").iterdir()]
    for link, target in links:
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return root


def copy_model(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst)
    return dst


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# real servers


class ThreadedServer:
    """uvicorn serving an app in a thread of this process, on a free loopback port."""

    def __init__(self, settings: Settings):
        import uvicorn

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("the test server exited during start-up")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the test server did not get ready")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ServerProcess:
    """``python -m service serve`` in a child process (its own memory, its own log file)."""

    def __init__(self, log: Path, env: dict[str, str] | None = None, ready_timeout: float = 90.0):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.ready_timeout = ready_timeout
        self.env = {
            **os.environ,
            "DNABERT_MODELS_DIR": str(MODELS_DIR),
            "DNABERT_INTRA_OP_THREADS": "1",
            "DNABERT_TOKENIZER_THREADS": "1",
            "DNABERT_DEVICE": "cpu",
            "DNABERT_JOBS_DIR": tempfile.mkdtemp(prefix="dnabert-test-jobs-"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", "--port", str(self.port), "--host", "127.0.0.1"],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self.proc

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server was not ready in time:\n{self.output()[-4000:]}")

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak resident set) of the server process, in KiB (Linux)."""
        assert self.proc is not None
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def __exit__(self, *exc) -> None:
        self.stop()
