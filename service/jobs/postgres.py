""":class:`~service.jobs.store.JobStore` on a PostgreSQL server, shared by several replicas.

SQLite (:class:`~service.jobs.store.SqliteJobStore`) is the store of one process. When several
processes serve (Ray Serve replicas, several machines), every replica must see every job and a
job must run in one place only; :class:`PostgresJobStore` keeps the same contract there:

* the jobs live in one table (``dnabert_jobs``, created on first use); every method is one short
  statement or one transaction on the store's own connection (psycopg 3, autocommit, one lock:
  safe from several threads of one process);
* :meth:`~PostgresJobStore.claim` takes the oldest queued job with ``FOR UPDATE SKIP LOCKED``, so
  runners of several replicas never get the same job;
* **who runs a job**: a claimed job is held by a session-level advisory lock of the claiming
  connection (``pg_advisory_lock(namespace, seq)``), taken in the claim's transaction. The lock
  goes when the job finishes, is cancelled or deleted, or when that connection ends: a replica
  that stops, crashes or loses its machine releases it with no clean-up of its own;
* **orphans**: :meth:`~PostgresJobStore.requeue_orphans` queues again only the ``running`` jobs
  whose lock nobody holds, never those another live replica is running (SQLite's version queues
  every running job, since its process is the only one). :meth:`~PostgresJobStore.claim` does the
  same first, so an orphan is picked up by the next idle runner of any replica, not only by a
  replica that starts;
* **fencing**: each claim counts an attempt, and this store commits, finishes a job only for the
  attempt it claimed: a runner whose job was taken over (its connection dropped, its lock was
  lost, another replica resumed the job) gets ``False`` and stops, as for a cancelled job. After a
  reconnection the store takes its jobs' locks again where it still can.

Selected with ``DNABERT_JOBS_DATABASE_URL=postgresql://user:password@host:5432/dbname`` (the
``ray`` extra installs psycopg 3). The jobs' input and result files stay in
``DNABERT_JOBS_DIR``, which must then be one folder that every replica sees (a shared volume).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from service.jobs.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job

TABLE = "dnabert_jobs"
LOCK_NAMESPACE = 0x444E4A42
"""First key of this store's advisory locks (``'DNJB'``); the second is the job's ``seq``."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    task TEXT NOT NULL,
    params TEXT NOT NULL,
    owner TEXT,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    done BIGINT NOT NULL DEFAULT 0,
    total BIGINT,
    unit TEXT NOT NULL,
    error TEXT,
    result TEXT,
    chunks BIGINT NOT NULL DEFAULT 0,
    offsets TEXT NOT NULL DEFAULT '[]',
    checkpoint BYTEA,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {TABLE}_state ON {TABLE} (state, seq);
CREATE INDEX IF NOT EXISTS {TABLE}_owner ON {TABLE} (owner, seq);
"""
_COLUMNS = ("seq", "id", "kind", "task", "params", "owner", "state", "created_at", "started_at", "finished_at",
            "done", "total", "unit", "error", "result", "chunks", "offsets", "checkpoint", "attempts")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {TABLE}"
_UNLOCKED = (f"NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
             f"AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
             f"AND l.classid = {LOCK_NAMESPACE}::oid AND l.objid = {TABLE}.seq::oid AND l.objsubid = 2)")
_MAX_SEQ = 2**31 - 1
T = TypeVar("T")  # the advisory lock's second key is a 4-byte integer


def _job(row: tuple) -> Job:
    values = dict(zip(_COLUMNS, row))
    for name in ("params", "error", "result", "offsets"):
        if values[name] is not None:
            values[name] = json.loads(values[name])
    if values["checkpoint"] is not None:
        values["checkpoint"] = bytes(values["checkpoint"])
    return Job(**values)


class PostgresJobStore:
    """:class:`~service.jobs.store.JobStore` on PostgreSQL (module docstring)."""

    def __init__(self, url: str, *, connect_timeout: float = 10.0):
        self.url = url
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._claims: dict[str, int] = {}
        """Jobs this store claimed and has not ended: id -> the attempt it claimed (the fence)."""
        self._held: dict[str, int] = {}
        """Of those, the ones whose lock this store's session holds: id -> seq."""
        self._db = self._connect()
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_NAMESPACE,))  # one creator at a time
            self._db.execute(_SCHEMA)

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, round(self._connect_timeout)),
                               application_name="dnabert-serve jobs")

    def _conn(self) -> psycopg.Connection:
        """The connection; a new one when the old one broke, with this store's locks taken again
        for the jobs it still runs (those another replica took over meanwhile are dropped)."""
        if not self._db.closed and not self._db.broken:
            return self._db
        self._db = self._connect()
        for job_id, seq in list(self._held.items()):
            row = self._db.execute(
                f"SELECT pg_try_advisory_lock(%s, %s::int) FROM {TABLE} WHERE id = %s AND state = %s AND attempts = %s",
                (LOCK_NAMESPACE, seq, job_id, RUNNING, self._claims[job_id])).fetchone()
            if not (row and row[0]):
                del self._held[job_id]  # taken over, or ended elsewhere: the fence refuses its commits
        return self._db

    def _unlock(self, db: psycopg.Connection, job_id: str) -> None:
        seq = self._held.pop(job_id, None)
        if seq is not None:
            db.execute("SELECT pg_advisory_unlock(%s, %s::int)", (LOCK_NAMESPACE, seq))

    def _release(self, db: psycopg.Connection, job_id: str) -> None:
        """The job ended here (or was cancelled, deleted): its lock and its fence go."""
        self._unlock(db, job_id)
        self._claims.pop(job_id, None)

    def _fence(self, job_id: str) -> tuple[str, tuple]:
        """The condition that the job is running, for the attempt this store claimed when it did."""
        attempt = self._claims.get(job_id)
        if attempt is None:
            return f"id = %s AND state = '{RUNNING}'", (job_id,)
        return f"id = %s AND state = '{RUNNING}' AND attempts = %s", (job_id, attempt)

    def _with(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work(connection)`` under the store's lock; once more on a new connection when the
        old one turns out to be broken (the server restarted, or ended this session)."""
        with self._lock:
            db = self._conn()
            try:
                return work(db)
            except psycopg.OperationalError:
                if not (db.closed or db.broken):
                    raise
                return work(self._conn())

    # -- JobStore ---------------------------------------------------------------------------------
    def create(self, job: Job) -> Job:
        row = self._with(lambda db: db.execute(
            f"INSERT INTO {TABLE} (id, kind, task, params, owner, state, created_at, unit, offsets) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq",
            (job.id, job.kind, job.task, json.dumps(job.params), job.owner, job.state, job.created_at,
             job.unit, json.dumps(job.offsets))).fetchone())
        job.seq = int(row[0])
        return job

    def get(self, job_id: str) -> Job | None:
        row = self._with(lambda db: db.execute(f"{_SELECT} WHERE id = %s", (job_id,)).fetchone())
        return _job(row) if row is not None else None

    def list(self, owner: str | None, *, limit: int, before: int | None = None) -> list[Job]:
        where, args = ["seq < %s"], [before if before is not None else 1 << 62]
        if owner is not None:
            where.append("owner = %s")
            args.append(owner)
        rows = self._with(lambda db: db.execute(
            f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s", (*args, limit)).fetchall())
        return [_job(r) for r in rows]

    def claim(self) -> Job | None:
        return self._with(self._claim)

    def _claim(self, db: psycopg.Connection) -> Job | None:
        self._requeue(db)
        with db.transaction():
            row = db.execute(f"{_SELECT} WHERE state = %s ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                             (QUEUED,)).fetchone()
            if row is None:
                return None
            job = _job(row)
            if job.seq > _MAX_SEQ:
                raise OverflowError(f"job seq {job.seq} is beyond the advisory lock's key range")
            # the lock is taken before the claim commits: no replica ever sees it running unlocked
            got = db.execute("SELECT pg_try_advisory_lock(%s, %s::int)", (LOCK_NAMESPACE, job.seq)).fetchone()[0]
            if not got:  # its previous runner's session is still ending: leave it queued for now
                return None
            job.state, job.attempts = RUNNING, job.attempts + 1
            job.started_at = job.started_at or time.time()
            db.execute(f"UPDATE {TABLE} SET state = %s, started_at = %s, attempts = %s WHERE seq = %s",
                       (RUNNING, job.started_at, job.attempts, job.seq))
        self._claims[job.id], self._held[job.id] = job.attempts, job.seq
        return job

    def commit(self, job_id: str, *, chunks: int, offsets: list[int], done: int, total: int | None,
               checkpoint: bytes) -> bool:
        def work(db: psycopg.Connection) -> bool:
            where, args = self._fence(job_id)
            ok = db.execute(f"UPDATE {TABLE} SET chunks = %s, offsets = %s, done = %s, total = %s, checkpoint = %s "
                            f"WHERE {where}", (chunks, json.dumps(offsets), done, total, checkpoint, *args)).rowcount
            if not ok:  # cancelled, or taken over: the lock goes, the fence stays until it ends here
                self._unlock(db, job_id)
            return ok > 0

        return self._with(work)

    def finish(self, job_id: str, state: str, *, error: dict | None = None, result: dict | None = None) -> bool:
        if state not in (SUCCEEDED, FAILED):
            raise ValueError(f"a job finishes succeeded or failed, not {state!r}")

        def work(db: psycopg.Connection) -> bool:
            where, args = self._fence(job_id)
            ok = db.execute(f"UPDATE {TABLE} SET state = %s, finished_at = %s, error = %s, result = %s, "
                            f"checkpoint = NULL WHERE {where}",
                            (state, time.time(), None if error is None else json.dumps(error),
                             None if result is None else json.dumps(result), *args)).rowcount
            self._release(db, job_id)
            return ok > 0

        return self._with(work)

    def cancel(self, job_id: str) -> bool:
        def work(db: psycopg.Connection) -> bool:
            ok = db.execute(f"UPDATE {TABLE} SET state = %s, finished_at = %s, checkpoint = NULL "
                            "WHERE id = %s AND state IN (%s, %s)",
                            (CANCELLED, time.time(), job_id, QUEUED, RUNNING)).rowcount
            self._release(db, job_id)
            return ok > 0

        return self._with(work)

    def delete(self, job_id: str) -> bool:
        def work(db: psycopg.Connection) -> bool:
            ok = db.execute(f"DELETE FROM {TABLE} WHERE id = %s", (job_id,)).rowcount
            self._release(db, job_id)
            return ok > 0

        return self._with(work)

    def requeue_orphans(self) -> int:
        """The ``running`` jobs whose runner is gone (nobody holds their lock) go back to the queue."""
        return self._with(self._requeue)

    def _requeue(self, db: psycopg.Connection) -> int:
        return db.execute(f"UPDATE {TABLE} SET state = %s WHERE state = %s AND {_UNLOCKED}",
                          (QUEUED, RUNNING)).rowcount

    def close(self) -> None:
        """Close the connection: the jobs this store was running become orphans for the others."""
        with self._lock:
            self._claims.clear()
            self._held.clear()
            self._db.close()

    # -- for operators and tests ----------------------------------------------------------------
    def running_here(self) -> list[str]:
        """Ids of the jobs this store holds (claimed and not ended)."""
        with self._lock:
            return sorted(self._held)
