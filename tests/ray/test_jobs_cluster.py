"""Jobs over HTTP on a real local Ray cluster with two replicas sharing the PostgreSQL job store.

A PostgreSQL server (``tests/service/jobs/test_postgres.py: PostgresServer``: ``initdb`` in a
temporary folder, ``postgres`` on 127.0.0.1 on a free port) and a local Ray cluster
(``bench.ray.LocalRayCluster``: ``ray start --head --node-ip-address 127.0.0.1 --num-cpus 2``)
are started by this module and stopped by process id; the app is deployed with ``dnabert-serve
ray --replicas 2`` and ``DNABERT_JOBS_DATABASE_URL`` pointing at that server, the jobs folder one
temporary folder both replicas see; all traffic goes to 127.0.0.1.

* a predict job (600 records, 5 chunks) and a scan job (a 40 kb sequence at stride 10: 7,942 windows, 16 chunks) submitted
  over HTTP end ``succeeded``, and their results are the synchronous endpoints' answers for the
  same input, byte for byte (the ``base`` model gives a sequence the same score in any batch:
  ``docs/jobs.md``, "Identical results"); the jobs' rows in PostgreSQL say the same;
* the chunks were scored on both replicas: while only the jobs ran, each replica's
  ``dnabert_batch_size`` (merged ``/metrics``, labelled by replica) grew, and together by exactly
  the sequences the two jobs have (every sequence scored once, none twice);
* the replica whose runner holds a job (the PostgreSQL session holding the job's advisory lock,
  traced to the replica process that owns that connection's socket) is killed with SIGKILL
  mid-job: the job is resumed by a runner of another replica (attempt 2) and ends ``succeeded``
  with the synchronous answer, byte for byte.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray Serve is not installed (the ray extra)")
psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (the ray extra)")

import httpx  # noqa: E402

from bench.ray import LocalRayCluster, RayDeployment  # noqa: E402
from bench.run import free_port  # noqa: E402
from service.jobs.postgres import LOCK_NAMESPACE, TABLE  # noqa: E402
from service.ray.metrics import REPORT_EVERY_S  # noqa: E402
from tests.service.jobs.test_postgres import BINDIR, PostgresServer  # noqa: E402
from tests.service.robustness import fasta, needs_models, small_models_dir  # noqa: E402

pytestmark = [pytest.mark.slow, needs_models,
              pytest.mark.skipif(BINDIR is None, reason="PostgreSQL server binaries are not installed "
                                                        "(apt-get install postgresql)")]

FASTA = {"Content-Type": "text/plain"}
MODEL = "promoter/base"
RNG = random.Random(16)
RECORDS = fasta([(f"r{i}", "".join(RNG.choices("ACGT", k=RNG.randint(60, 400)))) for i in range(600)])
LOCUS = fasta([("chr2:1-40000", "".join(RNG.choices("ACGT", k=40_000)))])
LONG = fasta([("chr3:1-60000", "".join(RNG.choices("ACGT", k=60_000)))])
PREDICT = {"kind": "predict", "task": "promoter", "format": "json"}
SCAN = {"kind": "scan", "stride": 10, "format": "json"}


@pytest.fixture(scope="module")
def postgres():
    pg = PostgresServer().start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def deployment(postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-jobs")
    models = small_models_dir(root, "base")
    env = {"DNABERT_JOBS_DATABASE_URL": postgres.url, "DNABERT_JOBS_DIR": str(root / "jobs"),
           "DNABERT_DEFAULT_PROMOTER_MODEL": "base", "DNABERT_SHUTDOWN_GRACE_S": "2"}
    with LocalRayCluster(num_cpus=2) as cluster:
        with RayDeployment(cluster, free_port(), "--replicas", "2", "--num-cpus", "0.5", "--models-dir",
                           str(models), env=env) as dep:
            assert len(cluster.replicas()) == 2
            yield cluster, dep


# -- helpers --------------------------------------------------------------------------------------
def _submit(c: httpx.Client, params: dict, body: bytes) -> str:
    r = c.post("/jobs", params=params, content=body, headers=FASTA)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _wait(c: httpx.Client, job_id: str, until, seconds: float = 150) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        r = c.get(f"/jobs/{job_id}")
        # a replica killed while it answered: the proxy answers 500 (Ray's text); ask again
        assert r.status_code in (200, 500), r.text
        job = r.json() if r.status_code == 200 else None
        if job is not None and until(job):
            return job
        assert time.monotonic() < deadline, f"job never got there: {job or r.text}"
        time.sleep(0.1)


def _ended(job: dict) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


def _batched(c: httpx.Client) -> dict[str, tuple[float, float]]:
    """Per replica: (batches, sequences) run for :data:`MODEL`, from the merged ``/metrics``."""
    out: dict[str, list[float]] = {}
    for line in c.get("/metrics").text.splitlines():
        for i, name in enumerate(("dnabert_batch_size_count{", "dnabert_batch_size_sum{")):
            if line.startswith(name) and f'model="{MODEL}"' in line:
                replica = line.split('replica="', 1)[1].split('"', 1)[0]
                out.setdefault(replica, [0.0, 0.0])[i] += float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def _fresh_metrics(c: httpx.Client) -> dict[str, tuple[float, float]]:
    time.sleep(REPORT_EVERY_S + 2)  # every replica has reported what it ran so far
    return _batched(c)


def _rows(url: str) -> dict[str, tuple]:
    with psycopg.connect(url) as db:
        return {r[0]: r[1:] for r in db.execute(f"SELECT id, state, attempts, chunks, done, total FROM {TABLE}")}


def _lock_holder_port(url: str, job_id: str) -> int | None:
    """The client port of the PostgreSQL session that holds the job's advisory lock (its runner)."""
    with psycopg.connect(url) as db:
        row = db.execute(
            f"SELECT a.client_port FROM {TABLE} j JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted "
            f"AND l.classid = {LOCK_NAMESPACE}::oid AND l.objid = j.seq::oid AND l.objsubid = 2 "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE j.id = %s", (job_id,)).fetchone()
    return row[0] if row else None


def _socket_owner(local_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` owns the TCP socket bound to 127.0.0.1:``local_port`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    return None


# -- the tests ------------------------------------------------------------------------------------
def test_jobs_on_two_replicas_answer_as_the_synchronous_endpoints_and_spread_their_chunks(deployment, postgres):
    _, dep = deployment
    with httpx.Client(base_url=dep.url, timeout=120) as c:
        before = _fresh_metrics(c)
        assert len(before) == 2, before
        ids = {"predict": _submit(c, PREDICT, RECORDS), "scan": _submit(c, SCAN, LOCUS)}
        jobs = {kind: _wait(c, job_id, _ended) for kind, job_id in ids.items()}
        after = _fresh_metrics(c)  # nothing but the two jobs scored in between
        results = {kind: c.get(f"/jobs/{job_id}/result") for kind, job_id in ids.items()}
        sync = {"predict": c.post("/predict/promoter", params={"format": "json"}, content=RECORDS, headers=FASTA),
                "scan": c.post("/scan/promoter", params={"stride": 10, "format": "json"}, content=LOCUS,
                               headers=FASTA)}
    for kind, job in jobs.items():
        assert job["state"] == "succeeded" and job["attempts"] == 1, job
        assert job["progress"]["done"] == job["progress"]["total"] > 0, job
        assert results[kind].status_code == 200 and sync[kind].status_code == 200, (kind, sync[kind].text[:300])
        assert results[kind].headers["content-type"] == sync[kind].headers["content-type"]
        assert results[kind].content == sync[kind].content, kind
    assert jobs["predict"]["progress"]["total"] == 600
    assert len(sync["predict"].json()["results"]) == 600
    assert len(sync["scan"].json()["results"][0]["windows"]) == jobs["scan"]["progress"]["total"]
    rows = _rows(postgres.url)  # state, attempts, chunks, done, total
    assert rows[ids["predict"]] == ("succeeded", 1, 5, 600, 600), rows  # chunks of 128 records
    scan_total = jobs["scan"]["progress"]["total"]
    assert rows[ids["scan"]] == ("succeeded", 1, 16, scan_total, scan_total), rows  # 256 positions x 2 strands
    # every replica scored some of the chunks, and together every sequence of the jobs once
    grew = {r: (after[r][0] - before.get(r, (0, 0))[0], after[r][1] - before.get(r, (0, 0))[1]) for r in after}
    assert len(grew) == 2 and all(batches > 0 for batches, _ in grew.values()), (before, after)
    total = jobs["predict"]["progress"]["total"] + jobs["scan"]["progress"]["total"]
    assert sum(seqs for _, seqs in grew.values()) == total, (grew, total)


def test_a_job_whose_replica_is_killed_is_resumed_by_another_and_ends_the_same(deployment, postgres):
    cluster, dep = deployment
    with httpx.Client(base_url=dep.url, timeout=120) as c:
        job_id = _submit(c, SCAN, LONG)
        running = _wait(c, job_id, lambda j: j["progress"]["done"] > 0 or _ended(j))
        assert running["state"] == "running", running
        replicas = cluster.replicas()
        port = _lock_holder_port(postgres.url, job_id)
        assert port is not None, "no PostgreSQL session holds the running job's lock"
        victim = _socket_owner(port, replicas)
        assert victim is not None, f"the job's runner (client port {port}) is none of the replicas {replicas}"
        os.kill(victim, signal.SIGKILL)
        killed_at = _wait(c, job_id, lambda j: True)
        resumed = _wait(c, job_id, lambda j: j["attempts"] > 1 or _ended(j))
        if resumed["state"] == "running":  # its new runner is a live replica's (Ray's replacement or the other)
            port = _lock_holder_port(postgres.url, job_id)
            owner = _socket_owner(port, cluster.replicas()) if port is not None else None
            assert port is None or owner not in (None, victim), (port, owner, victim)
        job = _wait(c, job_id, _ended, seconds=240)
        result = c.get(f"/jobs/{job_id}/result")
        sync = c.post("/scan/promoter", params={"stride": 10, "format": "json"}, content=LONG, headers=FASTA)
    assert killed_at["progress"]["done"] < killed_at["progress"]["total"], "the job ended before the kill"
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    assert job["progress"]["done"] == job["progress"]["total"]
    assert sync.status_code == 200 and result.content == sync.content
    assert _rows(postgres.url)[job_id][:2] == ("succeeded", 2)
