"""Where jobs are kept: one small interface (:class:`JobStore`) and its SQLite implementation.

The runner and the HTTP routes only ever use :class:`JobStore`, so another store (a database
server shared by several replicas) can replace :class:`SqliteJobStore` without touching them.
Every method is a short blocking call; callers on the event loop run them in a thread.

What a store must guarantee:

* :meth:`JobStore.commit` records a chunk's progress, the sizes of the job's result streams and
  the runner's checkpoint in **one transaction**, and only while the job is ``running``: a job
  cancelled meanwhile is never written over, and after a crash the job resumes from exactly the
  last committed chunk (the result streams are cut back to the committed sizes);
* :meth:`JobStore.finish` and :meth:`JobStore.cancel` change the state only from an unfinished
  one, so a job ends once;
* :meth:`JobStore.claim` hands each queued job to one runner (oldest first);
* :meth:`JobStore.requeue_orphans` puts the jobs that a stopped or crashed runner left
  ``running`` back in the queue, their progress and checkpoint kept.

:class:`SqliteJobStore` keeps everything in one SQLite file (``jobs.sqlite3``) in WAL mode with
``synchronous=FULL``: a committed transaction survives a crash of the process or of the machine.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})
DB_FILE = "jobs.sqlite3"


@dataclass
class Job:
    """One job as the store keeps it."""

    id: str
    kind: str
    """``predict``, ``scan``, ``variants`` or ``explain``."""
    task: str
    params: dict
    """The synchronous endpoint's query parameters, validated (and the input's description)."""
    owner: str | None = None
    """SHA-256 of the API key that created it (None: created without a key)."""
    state: str = QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    done: int = 0
    total: int | None = None
    unit: str = "records"
    """What ``done`` and ``total`` count: records, windows or variants."""
    error: dict | None = None
    """``{"code", "message", "record_id"?, "line"?}`` of a failed job."""
    result: dict | None = None
    """``{"bytes", "media_type"}`` of a succeeded job's result."""
    chunks: int = 0
    """Chunks committed."""
    offsets: list[int] = field(default_factory=list)
    """Committed size of each result stream."""
    checkpoint: bytes | None = None
    """The runner's state after the last committed chunk (opaque to the store)."""
    attempts: int = 0
    """How many times a runner has started (or resumed) it."""
    seq: int = 0
    """Order of creation (set by the store): the paging key."""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class JobStore(Protocol):
    """What the runner and the routes need from a job store."""

    def create(self, job: Job) -> Job:
        """Store a new (queued) job; returns it with its ``seq``."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def list(self, owner: str | None, *, limit: int, before: int | None = None) -> list[Job]:
        """The owner's jobs (every job when ``owner`` is None), newest first, ``seq`` below ``before``."""
        ...

    def claim(self) -> Job | None:
        """The oldest queued job, now ``running`` (``started_at`` set, ``attempts`` + 1); None if none."""
        ...

    def commit(self, job_id: str, *, chunks: int, offsets: list[int], done: int, total: int | None,
               checkpoint: bytes) -> bool:
        """Record a chunk, in one transaction; False (nothing written) unless the job is running."""
        ...

    def finish(self, job_id: str, state: str, *, error: dict | None = None, result: dict | None = None) -> bool:
        """End a running job (succeeded or failed); False if it was not running."""
        ...

    def cancel(self, job_id: str) -> bool:
        """A queued or running job becomes ``cancelled``; False if it had finished already."""
        ...

    def delete(self, job_id: str) -> bool: ...

    def requeue_orphans(self) -> int:
        """Running jobs whose runner is gone go back to the queue; returns how many."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    task TEXT NOT NULL,
    params TEXT NOT NULL,
    owner TEXT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    unit TEXT NOT NULL,
    error TEXT,
    result TEXT,
    chunks INTEGER NOT NULL DEFAULT 0,
    offsets TEXT NOT NULL DEFAULT '[]',
    checkpoint BLOB,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
"""
_COLUMNS = ("seq", "id", "kind", "task", "params", "owner", "state", "created_at", "started_at", "finished_at",
            "done", "total", "unit", "error", "result", "chunks", "offsets", "checkpoint", "attempts")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs"


def _job(row: tuple) -> Job:
    values = dict(zip(_COLUMNS, row))
    for name in ("params", "error", "result", "offsets"):
        if values[name] is not None:
            values[name] = json.loads(values[name])
    return Job(**values)


class SqliteJobStore:
    """:class:`JobStore` in one SQLite file (WAL, ``synchronous=FULL``); safe to call from
    several threads (one connection, one lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def _one(self, sql: str, args: tuple = ()) -> Job | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return _job(row) if row is not None else None

    def _change(self, sql: str, args: tuple) -> bool:
        with self._lock:
            return self._db.execute(sql, args).rowcount > 0

    def create(self, job: Job) -> Job:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO jobs (id, kind, task, params, owner, state, created_at, unit, offsets) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.kind, job.task, json.dumps(job.params), job.owner, job.state, job.created_at,
                 job.unit, json.dumps(job.offsets)))
            job.seq = int(cur.lastrowid or 0)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._one(f"{_SELECT} WHERE id = ?", (job_id,))

    def list(self, owner: str | None, *, limit: int, before: int | None = None) -> list[Job]:
        where, args = ["seq < ?"], [before if before is not None else 1 << 62]
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        with self._lock:
            rows = self._db.execute(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
                                    (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def claim(self) -> Job | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(f"{_SELECT} WHERE state = ? ORDER BY seq LIMIT 1", (QUEUED,)).fetchone()
                if row is not None:
                    self._db.execute("UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?), "
                                     "attempts = attempts + 1 WHERE seq = ?", (RUNNING, time.time(), row[0]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if row is None:
            return None
        job = _job(row)
        job.state, job.attempts = RUNNING, job.attempts + 1
        job.started_at = job.started_at or time.time()
        return job

    def commit(self, job_id: str, *, chunks: int, offsets: list[int], done: int, total: int | None,
               checkpoint: bytes) -> bool:
        return self._change("UPDATE jobs SET chunks = ?, offsets = ?, done = ?, total = ?, checkpoint = ? "
                            "WHERE id = ? AND state = ?",
                            (chunks, json.dumps(offsets), done, total, checkpoint, job_id, RUNNING))

    def finish(self, job_id: str, state: str, *, error: dict | None = None, result: dict | None = None) -> bool:
        if state not in (SUCCEEDED, FAILED):
            raise ValueError(f"a job finishes succeeded or failed, not {state!r}")
        return self._change("UPDATE jobs SET state = ?, finished_at = ?, error = ?, result = ?, checkpoint = NULL "
                            "WHERE id = ? AND state = ?",
                            (state, time.time(), None if error is None else json.dumps(error),
                             None if result is None else json.dumps(result), job_id, RUNNING))

    def cancel(self, job_id: str) -> bool:
        return self._change("UPDATE jobs SET state = ?, finished_at = ?, checkpoint = NULL "
                            "WHERE id = ? AND state IN (?, ?)", (CANCELLED, time.time(), job_id, QUEUED, RUNNING))

    def delete(self, job_id: str) -> bool:
        return self._change("DELETE FROM jobs WHERE id = ?", (job_id,))

    def requeue_orphans(self) -> int:
        with self._lock:
            return self._db.execute("UPDATE jobs SET state = ? WHERE state = ?", (QUEUED, RUNNING)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
