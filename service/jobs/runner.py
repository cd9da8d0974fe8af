"""The job runner: claims queued jobs and runs them chunk by chunk, at background priority.

One worker task per process (started by the app's lifespan through :class:`Jobs`), one job at a
time. For each job (a :class:`~service.jobs.kinds.Work` of its kind):

* everything it scores is submitted as :data:`~service.runtime.batcher.BACKGROUND` work (the
  batcher's :data:`~service.runtime.batcher.PRIORITY` context variable), so interactive requests
  are always batched first and keep a worker to themselves;
* a fresh job first reads its whole input once (checked as the endpoint checks it: a bad record
  fails the job before anything is scored) and counts the progress total;
* chunks are scored a few at a time and emitted in order: each chunk's text is appended to the
  job's result streams (``part.0``, ``part.1``), the streams are flushed to disk (fsync), and then
  the stream sizes, the progress and the checkpoint are committed in one store transaction;
* on a restart (a crash, SIGKILL, a deploy) a job left ``running`` is queued again; when it runs,
  its streams are cut back to the committed sizes and it goes on from the checkpoint: no record
  is lost or written twice;
* at the end the streams are joined into ``result.part``, flushed, renamed to ``result`` (and the
  folder flushed) and only then is the job marked ``succeeded``: a result under its final name is
  always complete.

A chunk refused for load (429), timed out in the queue (504) or whose batch failed (500) is
retried after a pause, up to :data:`RETRIES` times; any other error fails the job with that error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import uuid
from collections import deque
from pathlib import Path

from service.contract.errors import DnabertError, InferenceFailed, Overloaded, RequestTimeout
from service.jobs.kinds import KINDS, JobContext, Texts, Unit, Work
from service.jobs.store import CANCELLED, DB_FILE, FAILED, FINISHED, SUCCEEDED, Job, JobStore, SqliteJobStore
from service.runtime.batcher import BACKGROUND, PRIORITY
from service.runtime.inference import InferenceService
from service.settings import Settings

log = logging.getLogger("dnabert.jobs")

RESULT = "result"
INPUT = "input"
RETRIES = 5
POLL_S = 5.0
"""How often an idle runner looks for jobs queued by another process sharing the store."""


class JobsUnavailable(DnabertError):
    code = "jobs_unavailable"
    http_status = 503


class JobNotFound(DnabertError):
    code = "not_found"
    http_status = 404


class JobStopped(Exception):
    """The job was cancelled (or deleted) while it ran: stop without touching its state."""


def default_jobs_dir() -> Path:
    """``$XDG_STATE_HOME/dnabert-serve/jobs`` (default ``~/.local/state/...``) where it could be
    created, else ``dnabert-serve-jobs-<uid>`` in the temporary folder (nothing is created here)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    home = Path(state) / "dnabert-serve" / "jobs"
    existing = next((p for p in (home, *home.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return home
    return Path(tempfile.gettempdir()) / f"dnabert-serve-jobs-{os.getuid() if hasattr(os, 'getuid') else 0}"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Parts:
    """A job's result streams on disk: appended to, flushed, cut back to committed sizes."""

    def __init__(self, folder: Path, streams: int):
        self.paths = [folder / f"part.{i}" for i in range(streams)]
        self.files = []

    def open(self, offsets: list[int] | None) -> None:
        """Open the streams, cut back to ``offsets`` (None: empty)."""
        for i, path in enumerate(self.paths):
            f = path.open("r+b" if path.exists() else "w+b")
            f.truncate(offsets[i] if offsets else 0)
            f.seek(0, os.SEEK_END)
            self.files.append(f)

    def append(self, texts: Texts) -> None:
        for f, text in zip(self.files, texts, strict=True):
            if text:
                f.write(text.encode("utf-8") if isinstance(text, str) else text)

    def sync(self) -> list[int]:
        """Flush to disk; the streams' sizes."""
        for f in self.files:
            f.flush()
            os.fsync(f.fileno())
        return [f.tell() for f in self.files]

    def assemble(self, result: Path) -> int:
        """Join the streams into ``result`` atomically; its size."""
        first, *rest = self.files
        for f in rest:
            f.seek(0)
            shutil.copyfileobj(f, first, 1 << 20)
        first.flush()
        os.fsync(first.fileno())
        size = first.tell()
        self.close()
        os.replace(self.paths[0], result)
        fsync_dir(result.parent)
        for path in self.paths[1:]:
            path.unlink(missing_ok=True)
        return size

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files = []


class JobRunner:
    """The worker task (module docstring)."""

    def __init__(self, service: InferenceService, settings: Settings, store: JobStore, root: Path):
        self.service, self.settings, self.store, self.root = service, settings, store, root
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._current: tuple[str, asyncio.Task] | None = None
        self._stopping = False

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    async def start(self) -> None:
        requeued = await asyncio.to_thread(self.store.requeue_orphans)
        if requeued:
            log.info("jobs: %d job(s) left running by a previous process are queued again", requeued)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="job-runner")

    async def stop(self) -> None:
        """Stop the worker; a running job stays ``running`` and is resumed by the next process."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def cancel(self, job_id: str) -> None:
        """Stop the job if this runner is running it."""
        if self._current is not None and self._current[0] == job_id:
            task = self._current[1]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping:
            job = await asyncio.to_thread(self.store.claim)
            if job is None:
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                try:  # not wait_for, which may swallow a cancellation that comes with the wake-up
                    await asyncio.wait({waiter}, timeout=POLL_S)
                finally:
                    waiter.cancel()
                continue
            task = asyncio.ensure_future(self._run(job))
            self._current = (job.id, task)
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise
            finally:
                self._current = None
            if task.cancelled():  # cancelled or deleted by a client: its files go
                await asyncio.to_thread(shutil.rmtree, self.folder(job.id), True)

    async def _run(self, job: Job) -> None:
        token = PRIORITY.set(BACKGROUND)
        log.info("job %s (%s %s) %s", job.id, job.kind, job.task, "resumed" if job.checkpoint else "started")
        try:
            await self._execute(job)
        except JobStopped:
            log.info("job %s was cancelled", job.id)
            now = await asyncio.to_thread(self.store.get, job.id)
            if now is None or now.state == CANCELLED:  # not when another replica has taken it over
                await asyncio.to_thread(shutil.rmtree, self.folder(job.id), True)
        except DnabertError as exc:
            log.info("job %s failed: %s", job.id, exc.message)
            await self._fail(job, {"code": exc.code, "message": exc.message, "record_id": exc.record_id,
                                   "line": exc.line})
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug: the job fails, the runner goes on
            log.exception("job %s failed unexpectedly", job.id)
            await self._fail(job, {"code": "internal_error", "message": "internal error; see the server log"})
        finally:
            PRIORITY.reset(token)

    async def _fail(self, job: Job, error: dict) -> None:
        error = {k: v for k, v in error.items() if v is not None}
        await asyncio.to_thread(self.store.finish, job.id, FAILED, error=error)
        await asyncio.to_thread(self._clean, job.id, keep_result=False)

    def _clean(self, job_id: str, keep_result: bool) -> None:
        folder = self.folder(job_id)
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if keep_result and path.name == RESULT:
                continue
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    async def _commit(self, job: Job, work: Work, parts: Parts, chunks: int, done: int) -> None:
        offsets = await asyncio.to_thread(parts.sync)
        ok = await asyncio.to_thread(self.store.commit, job.id, chunks=chunks, offsets=offsets, done=done,
                                     total=work.total, checkpoint=work.checkpoint())
        if not ok:
            raise JobStopped(job.id)

    async def _execute(self, job: Job) -> None:
        folder = self.folder(job.id)
        work = KINDS[job.kind](JobContext(self.service, self.settings, job, folder))
        await work.setup()
        parts = Parts(folder, work.streams)
        done, chunks = job.done, job.chunks
        try:
            if job.checkpoint is None:
                await asyncio.to_thread(work.count)
                await asyncio.to_thread(parts.open, None)
                await asyncio.to_thread(parts.append, work.head())
                done = chunks = 0
                await self._commit(job, work, parts, chunks, done)
            else:
                work.restore(job.checkpoint)
                if work.complete and (folder / RESULT).is_file() and not parts.paths[0].exists():
                    await self._succeed(job, work, None)  # assembled before the crash
                    return
                await asyncio.to_thread(parts.open, job.offsets)
            if not work.complete:
                done, chunks = await self._chunks(job, work, parts, done, chunks)
                await asyncio.to_thread(parts.append, work.tail())
                work.complete = True
                await self._commit(job, work, parts, chunks, done)
            await self._succeed(job, work, parts)
        finally:
            parts.close()

    async def _chunks(self, job: Job, work: Work, parts: Parts, done: int, chunks: int) -> tuple[int, int]:
        units = work.units()
        pending: deque[tuple[Unit, asyncio.Future]] = deque()
        more = True
        try:
            while True:
                while more and len(pending) < work.ahead:
                    unit = await asyncio.to_thread(next, units, None)
                    if unit is None:
                        more = False
                    else:
                        pending.append((unit, asyncio.ensure_future(self._compute(work, unit))))
                if not pending:
                    return done, chunks
                unit, future = pending.popleft()
                texts, n = work.emit(unit, await future)
                await asyncio.to_thread(parts.append, texts)
                done, chunks = done + n, chunks + 1
                await self._commit(job, work, parts, chunks, done)
        finally:
            for _, future in pending:
                future.cancel()
            await asyncio.gather(*(f for _, f in pending), return_exceptions=True)

    async def _compute(self, work: Work, unit: Unit):
        for attempt in range(RETRIES + 1):
            try:
                return await work.compute(unit)
            except (Overloaded, RequestTimeout, InferenceFailed) as exc:
                if attempt == RETRIES:
                    raise
                pause = getattr(exc, "retry_after", None) or 2.0 ** attempt
                log.info("job chunk refused or failed (%s); retrying in %.0f s", exc.code, pause)
                await asyncio.sleep(pause)

    async def _succeed(self, job: Job, work: Work, parts: Parts | None) -> None:
        result = self.folder(job.id) / RESULT
        size = await asyncio.to_thread(parts.assemble, result) if parts is not None else result.stat().st_size
        info = {"bytes": size, "media_type": work.media_type, "format": work.format}
        if not await asyncio.to_thread(self.store.finish, job.id, SUCCEEDED, result=info):
            raise JobStopped(job.id)
        await asyncio.to_thread(self._clean, job.id, True)
        log.info("job %s succeeded: %d bytes", job.id, size)


class Jobs:
    """The jobs of this process: the store and the runner, opened on first use (or at start-up
    when the jobs folder already holds a store, whose unfinished jobs are then resumed)."""

    def __init__(self, service: InferenceService, settings: Settings):
        self.service, self.settings = service, settings
        self.root = settings.jobs_dir or default_jobs_dir()
        self.store: JobStore | None = None
        self.runner: JobRunner | None = None
        self._opening = asyncio.Lock()
        self._stopped = False

    async def start(self) -> None:
        if self.settings.jobs_database_url is not None or (self.root / DB_FILE).is_file():
            try:
                await self.open()
            except JobsUnavailable as exc:
                log.error("%s", exc.message)

    async def open(self) -> JobStore:
        async with self._opening:
            if self.store is not None:
                return self.store
            if self._stopped:
                raise JobsUnavailable("the service is shutting down")
            if not await asyncio.to_thread(_writable, self.root):
                log.error("jobs: the jobs folder %s cannot be written (DNABERT_JOBS_DIR)", self.root)
                raise JobsUnavailable("jobs are not available on this server: the jobs folder (DNABERT_JOBS_DIR) "
                                      "cannot be written; see the server log")
            url = self.settings.jobs_database_url
            if url is not None:  # several replicas or machines: one shared store (the ray extra's psycopg)
                from service.jobs.postgres import PostgresJobStore

                store: JobStore = await asyncio.to_thread(PostgresJobStore, url.get_secret_value())
            else:
                store = await asyncio.to_thread(SqliteJobStore, self.root / DB_FILE)
            self.runner = JobRunner(self.service, self.settings, store, self.root)
            await self.runner.start()
            self.store = store
            log.info("jobs: store %s", "PostgreSQL (DNABERT_JOBS_DATABASE_URL)" if url else self.root / DB_FILE)
            return store

    async def stop(self) -> None:
        self._stopped = True
        if self.runner is not None:
            await self.runner.stop()
        if self.store is not None:
            self.store.close()

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    async def submit(self, job: Job) -> Job:
        """Store a job whose input is spooled in its folder, and wake the runner."""
        store = await self.open()
        job = await asyncio.to_thread(store.create, job)
        assert self.runner is not None
        self.runner.wake()
        return job

    async def get(self, job_id: str, owner: str | None) -> Job:
        """The job, if ``owner`` may see it (404 otherwise: another key's job does not exist for it)."""
        store = await self.open()
        job = await asyncio.to_thread(store.get, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(f"no job {job_id[:64]!r}")
        return job

    async def list(self, owner: str | None, limit: int, before: int | None) -> list[Job]:
        store = await self.open()
        return await asyncio.to_thread(store.list, owner, limit=limit, before=before)

    async def remove(self, job_id: str, owner: str | None) -> Job | None:
        """Cancel an unfinished job (kept, ``cancelled``) or delete a finished one (None); its
        input and result files are deleted either way."""
        job = await self.get(job_id, owner)
        store = self.store
        assert store is not None and self.runner is not None
        if not job.finished and await asyncio.to_thread(store.cancel, job_id):
            await self.runner.cancel(job_id)
            await asyncio.to_thread(shutil.rmtree, self.folder(job_id), True)
            return await asyncio.to_thread(store.get, job_id)
        await asyncio.to_thread(store.delete, job_id)
        await asyncio.to_thread(shutil.rmtree, self.folder(job_id), True)
        return None

    def result(self, job: Job) -> Path:
        return self.folder(job.id) / RESULT


__all__ = ["FINISHED", "Jobs", "JobsUnavailable", "JobNotFound", "JobRunner", "Parts", "default_jobs_dir"]
