"""The PostgreSQL job store against a real server: the store contract of the SQLite store, what
only a store shared by several replicas needs (claims across connections, orphans told apart from
jobs a live replica runs, fencing after a takeover), and the jobs issue's restart test through
the app and the runner, once in one process and once with two "replicas" sharing the store.

The server is Debian's ``postgresql`` (``apt-get install postgresql``): ``initdb`` in a temporary
folder, ``postgres`` on 127.0.0.1 on a free port, stopped by its process id. Without the binaries
or psycopg the module is skipped with a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (the postgres extra)")

from service.jobs import runner as runner_module  # noqa: E402
from service.jobs.postgres import TABLE, PostgresJobStore  # noqa: E402
from service.jobs.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job  # noqa: E402
from tests.service.robustness import fasta, make_settings, needs_models, run, serving, small_models_dir  # noqa: E402


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("postgres")
    return Path(which).parent if which else None


BINDIR = _bindir()
pytestmark = pytest.mark.skipif(BINDIR is None, reason="PostgreSQL server binaries are not installed "
                                                       "(apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``postgres`` on 127.0.0.1 from a fresh ``initdb`` in a temporary folder; as root, it runs
    as the ``postgres`` user (the server refuses root). Stopped by its process id."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://dnabert@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        data = self.root / "data"
        subprocess.run([*self.as_user, str(BINDIR / "initdb"), "-D", str(data), "-U", "dnabert", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, cwd=self.root)
        self.proc = subprocess.Popen(
            [*self.as_user, str(BINDIR / "postgres"), "-D", str(data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
             "-c", "max_connections=50"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root)
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.poll() is not None else "timed out"
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start: {err}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    pg = PostgresServer().start()
    yield pg
    pg.stop()


@pytest.fixture
def url(server):
    """A clean table for each test."""
    with psycopg.connect(server.url, autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {TABLE}")
    return server.url


@pytest.fixture
def stores(url):
    """Stores on their own connections, as replicas would have; closed after the test."""
    made: list[PostgresJobStore] = []

    def new() -> PostgresJobStore:
        made.append(PostgresJobStore(url))
        return made[-1]

    yield new
    for s in made:
        s.close()


def _job(i: int, owner: str | None = "a") -> Job:
    return Job(id=f"job{i}", kind="scan", task="promoter", params={"stride": 50, "model": None}, owner=owner,
               unit="windows")


def _backend_pid(store: PostgresJobStore) -> int:
    return store._db.info.backend_pid


def _claim_soon(store: PostgresJobStore, seconds: float = 10) -> Job:
    """A claim that succeeds once the server has ended a gone replica's session (it does so
    shortly after the connection closes)."""
    deadline = time.monotonic() + seconds
    while (job := store.claim()) is None:
        assert time.monotonic() < deadline, "no job could be claimed: the orphan was never requeued"
        time.sleep(0.05)
    return job


# -- the store contract ---------------------------------------------------------------------------
def test_a_job_round_trips_and_survives_a_new_connection(stores):
    a = stores()
    job = a.create(_job(1))
    assert job.seq == 1
    a.close()
    again = stores().get("job1")
    assert again.params == {"stride": 50, "model": None} and again.state == QUEUED and again.unit == "windows"
    assert again.owner == "a" and again.seq == 1 and again.offsets == [] and again.checkpoint is None


def test_claim_takes_the_oldest_queued_job_once(stores):
    s = stores()
    for i in range(3):
        s.create(_job(i))
    first = s.claim()
    assert first.id == "job0" and first.state == RUNNING and first.attempts == 1 and first.started_at
    assert s.get("job0").state == RUNNING
    assert s.claim().id == "job1"


def test_claims_of_several_replicas_never_hand_out_a_job_twice(stores):
    writer = stores()
    for i in range(60):
        writer.create(_job(i))
    replicas = [stores() for _ in range(4)]
    got: list[str] = []
    lock = threading.Lock()

    def worker(store: PostgresJobStore):
        while (job := store.claim()) is not None:
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=worker, args=(s,)) for s in replicas for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"job{i}" for i in range(60))
    assert sum(len(s.running_here()) for s in replicas) == 60


def test_commit_records_a_chunk_only_while_running(stores):
    s = stores()
    s.create(_job(1))
    assert not s.commit("job1", chunks=1, offsets=[10], done=5, total=9, checkpoint=b"x")  # queued
    s.claim()
    assert s.commit("job1", chunks=2, offsets=[10, 3], done=5, total=9, checkpoint=b"state\x00\xff")
    job = s.get("job1")
    assert (job.chunks, job.offsets, job.done, job.total, job.checkpoint) == (2, [10, 3], 5, 9, b"state\x00\xff")
    other = stores()
    assert other.cancel("job1")  # cancelled through another replica
    assert not s.commit("job1", chunks=3, offsets=[20, 3], done=7, total=9, checkpoint=b"later")
    job = s.get("job1")
    assert job.state == CANCELLED and job.done == 5 and job.checkpoint is None and job.finished_at
    assert s.running_here() == []  # and its lock went with it


def test_a_job_finishes_once(stores):
    s = stores()
    s.create(_job(1))
    s.create(_job(2))
    assert not s.finish("job1", SUCCEEDED, result={"bytes": 1})  # not running
    s.claim()
    assert s.finish("job1", FAILED, error={"code": "invalid_fasta", "message": "m", "line": 3})
    assert not s.finish("job1", SUCCEEDED)
    assert not s.cancel("job1")
    job = s.get("job1")
    assert job.state == FAILED and job.error == {"code": "invalid_fasta", "message": "m", "line": 3}
    with pytest.raises(ValueError):
        s.finish("job2", CANCELLED)


def test_listing_is_per_owner_newest_first_and_paged(stores):
    s = stores()
    for i in range(7):
        s.create(_job(i, owner="a" if i % 2 == 0 else "b"))
    assert [j.id for j in s.list("a", limit=10)] == ["job6", "job4", "job2", "job0"]
    page1 = s.list("a", limit=2)
    page2 = s.list("a", limit=2, before=page1[-1].seq)
    assert [j.id for j in page1 + page2] == ["job6", "job4", "job2", "job0"]
    assert len(s.list(None, limit=100)) == 7
    assert s.delete("job6") and s.get("job6") is None and not s.delete("job6")


# -- what a shared store adds -------------------------------------------------------------------
def test_a_live_replicas_job_is_no_orphan_but_a_gone_replicas_job_is(stores):
    a, b = stores(), stores()
    a.create(_job(1))
    a.claim()
    a.commit("job1", chunks=4, offsets=[99], done=40, total=100, checkpoint=b"cp")
    assert b.requeue_orphans() == 0  # replica a is alive and holds it
    assert b.claim() is None and b.get("job1").state == RUNNING
    a.close()  # replica a stops (or its machine goes): its connection, and the job's lock, go
    job = _claim_soon(b)  # an idle runner of replica b picks the orphan up, with its progress
    assert job.id == "job1" and job.attempts == 2 and job.done == 40 and job.checkpoint == b"cp"


def test_a_killed_replicas_job_is_resumed_by_another(stores, url):
    a, b = stores(), stores()
    a.create(_job(1))
    a.claim()
    with psycopg.connect(url, autocommit=True) as admin:  # a replica's process dies: the server sees it go
        admin.execute("SELECT pg_terminate_backend(%s)", (_backend_pid(a),))
    job = _claim_soon(b)
    assert job.id == "job1" and job.attempts == 2


def test_a_replica_whose_job_was_taken_over_cannot_commit_it(stores, url):
    a, b = stores(), stores()
    a.create(_job(1))
    a.claim()
    with psycopg.connect(url, autocommit=True) as admin:  # a loses its connection for a while
        admin.execute("SELECT pg_terminate_backend(%s)", (_backend_pid(a),))
    _claim_soon(b)
    assert b.commit("job1", chunks=1, offsets=[5], done=1, total=2, checkpoint=b"b")
    # a reconnects: it cannot take the job's lock back, and its commits are refused
    assert not a.commit("job1", chunks=9, offsets=[50], done=2, total=2, checkpoint=b"a")
    assert not a.finish("job1", SUCCEEDED, result={"bytes": 50})
    job = a.get("job1")
    assert job.state == RUNNING and job.attempts == 2 and job.checkpoint == b"b"
    assert a.running_here() == [] and b.running_here() == ["job1"]
    assert b.finish("job1", SUCCEEDED, result={"bytes": 5})


def test_a_reconnected_replica_keeps_the_job_nobody_took(stores, url):
    a, b = stores(), stores()
    a.create(_job(1))
    a.claim()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (_backend_pid(a),))
    time.sleep(0.2)
    assert a.commit("job1", chunks=1, offsets=[5], done=1, total=2, checkpoint=b"a")  # reconnected, lock retaken
    assert b.requeue_orphans() == 0 and b.claim() is None
    assert a.finish("job1", SUCCEEDED, result={"bytes": 5})


def test_tables_are_created_once_when_replicas_start_together(url):
    made: list[PostgresJobStore] = []
    errors: list[BaseException] = []

    def start():
        try:
            made.append(PostgresJobStore(url))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in made:
        s.close()
    assert errors == [] and len(made) == 6


# -- the jobs issue's restart test, on PostgreSQL ------------------------------------------------
FASTA = {"Content-Type": "text/plain"}


def _genome(n: int, seed: int = 11) -> bytes:
    rng = random.Random(seed)
    return fasta([(f"chr{i + 1}:1-{n}", "".join(rng.choices("ACGT", k=n))) for i in range(2)])


@pytest.fixture
def on_postgres(url, monkeypatch):
    """The service keeps its jobs on PostgreSQL: DNABERT_JOBS_DATABASE_URL, read by the settings
    that make_settings builds, selects the store (no SQLite file is written)."""
    monkeypatch.setenv("DNABERT_JOBS_DATABASE_URL", url)
    monkeypatch.setattr(runner_module, "SqliteJobStore", _no_sqlite)
    return url


def _no_sqlite(path):
    raise AssertionError(f"the SQLite store was opened ({path}) although DNABERT_JOBS_DATABASE_URL is set")


async def _wait(client, url: str, until, seconds: float = 90) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        job = (await client.get(url)).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job never got there: {job}"
        await asyncio.sleep(0.05)


@needs_models
def test_a_stopped_job_resumes_from_its_last_chunk_and_ends_byte_identical(tmp_path, on_postgres):
    settings = make_settings(small_models_dir(tmp_path, "base"), jobs_dir=tmp_path / "jobs")
    body = _genome(30_000)
    params = {"stride": 40, "format": "json"}

    async def first_run() -> tuple[str, int]:
        async with serving(settings) as client:
            r = await client.post("/jobs", params={"kind": "scan", **params}, content=body, headers=FASTA)
            assert r.status_code == 202, r.text
            job = await _wait(client, r.json()["url"], lambda j: j["progress"]["done"] > 0)
            assert job["state"] == "running" and job["progress"]["done"] < job["progress"]["total"]
            return r.json()["id"], job["progress"]["total"]

    job_id, total = run(first_run())
    store = PostgresJobStore(on_postgres)
    stopped = store.get(job_id)
    store.close()
    assert stopped.state == "running" and 0 < stopped.done < total and stopped.checkpoint
    with (tmp_path / "jobs" / job_id / "part.0").open("ab") as f:  # a chunk half-written when it stopped
        f.write(b'{"start":999999,"end":')

    async def second_run() -> tuple[dict, bytes, bytes]:
        async with serving(settings) as client:
            job = await _wait(client, f"/jobs/{job_id}", lambda j: j["state"] in ("succeeded", "failed"))
            result = (await client.get(f"/jobs/{job_id}/result")).content
            sync = await client.post("/scan/promoter", params=params, content=body, headers=FASTA)
            assert sync.status_code == 200
            return job, result, sync.content

    job, result, sync = run(second_run())
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    assert job["progress"] == {"done": total, "total": total, "unit": "windows"}
    assert result == sync
    assert sorted(p.name for p in (tmp_path / "jobs" / job_id).iterdir()) == ["result"]


@needs_models
@pytest.mark.slow
def test_two_replicas_share_the_jobs_and_one_resumes_the_job_of_a_replica_that_stopped(tmp_path, on_postgres,
                                                                                      monkeypatch):
    monkeypatch.setattr(runner_module, "POLL_S", 0.5)  # idle runners look for orphans often
    settings = make_settings(small_models_dir(tmp_path, "base"), jobs_dir=tmp_path / "jobs")
    body = _genome(40_000, seed=5)
    params = {"stride": 40, "format": "json"}

    async def scenario() -> tuple[dict, bytes, bytes, dict]:
        async with contextlib.AsyncExitStack() as replicas:
            b = await replicas.enter_async_context(serving(settings))
            await b.get("/jobs")  # replica b's runner is up and idle
            async with serving(settings) as a:
                r = await a.post("/jobs", params={"kind": "scan", **params}, content=body, headers=FASTA)
                assert r.status_code == 202, r.text
                job_id = r.json()["id"]
                # replica b sees the job replica a runs, with its progress
                seen = await _wait(b, f"/jobs/{job_id}", lambda j: j["progress"]["done"] > 0)
                assert seen["state"] == "running" and seen["attempts"] == 1
            # replica a is gone; b's idle runner takes the job over and finishes it
            job = await _wait(b, f"/jobs/{job_id}", lambda j: j["state"] in ("succeeded", "failed"))
            result = (await b.get(f"/jobs/{job_id}/result")).content
            sync = (await b.post("/scan/promoter", params=params, content=body, headers=FASTA)).content
            return job, result, sync, seen

    job, result, sync, seen = run(scenario())
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    assert result == sync
