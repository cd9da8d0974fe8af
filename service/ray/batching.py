"""What a replica changes in the runtime it runs: where job work is scored, and how it batches.

Both are wrappers around a model's :class:`~service.runtime.batcher.DynamicBatcher` with the
same ``submit`` (everything else, start, stop, queue depth, is the wrapped batcher's):

* :class:`SpreadBatcher`: background work (what the job runner submits, at
  :data:`~service.runtime.batcher.BACKGROUND` priority) is scored on whichever replica Serve
  routes it to, so the chunks of one job run on every replica; interactive requests stay on the
  replica that received them (the Serve proxy has spread those already).
* :class:`ServeBatcher`: Ray's ``@serve.batch`` in place of the dynamic batcher, one call per
  sequence, batches of at most ``max_batch_size`` cut in arrival order after at most
  ``batch_wait_timeout_s``. Kept to compare the two (``bench/ray.py``, ``docs/ray.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve

from service.contract.errors import (
    DnabertError,
    InferenceFailed,
    NotReady,
    Overloaded,
    RequestTimeout,
)
from service.metrics import BatchMetrics
from service.runtime.batcher import BACKGROUND, PRIORITY, DynamicBatcher, RunBatch

log = logging.getLogger("dnabert.ray")

Remote = Callable[[str, str, list[list[int]], "float | None"], Awaitable[np.ndarray]]
"""Scores ``sequences`` of model ``(task, name)`` on some replica, within ``timeout``."""


class _Wrapper:
    """Everything but ``submit`` is the wrapped batcher's."""

    def __init__(self, local: DynamicBatcher | _Wrapper):
        self.local = local

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    @property
    def innermost(self) -> DynamicBatcher:
        inner = self.local
        while isinstance(inner, _Wrapper):
            inner = inner.local
        return inner


class SpreadBatcher(_Wrapper):
    """Background work goes to :data:`Remote` (any replica), interactive work stays here."""

    def __init__(self, local: DynamicBatcher | _Wrapper, task: str, name: str, remote: Remote):
        super().__init__(local)
        self.task, self.name_, self.remote = task, name, remote

    async def submit(self, sequences: Sequence[Sequence[int]], *, timeout: float | None = None,
                     priority: int | None = None) -> np.ndarray:
        priority = PRIORITY.get() if priority is None else priority
        if priority != BACKGROUND:
            return await self.local.submit(sequences, timeout=timeout, priority=priority)
        return await self.remote(self.task, self.name_, [list(s) for s in sequences], timeout)


# -- the answer of a remote scoring call ------------------------------------------------------
_ERRORS: dict[str, type[DnabertError]] = {c.__name__: c for c in (Overloaded, RequestTimeout, InferenceFailed)}


def pack_error(exc: DnabertError) -> dict:
    """A scoring error as plain data (it crosses processes inside Ray's own error otherwise)."""
    return {"error": type(exc).__name__, "message": exc.message, "retry_after": getattr(exc, "retry_after", None)}


def unpack(reply: Any) -> np.ndarray:
    """The scores of a remote call, or its error raised here. An error the job runner should
    retry stays retryable: a replica that is not ready (stopping, starting) is an overload."""
    if isinstance(reply, dict):
        name, message = reply.get("error"), str(reply.get("message", "remote scoring failed"))
        if name == "Overloaded" or name == NotReady.__name__:
            raise Overloaded(message, retry_after=float(reply.get("retry_after") or 1.0))
        raise _ERRORS.get(str(name), InferenceFailed)(message)
    return np.asarray(reply)


class ServeBatcher(_Wrapper):
    """Ray's ``@serve.batch`` (module docstring): one call per sequence; the calls of every
    request are cut into batches in arrival order, ``concurrency`` batches at once in worker
    threads. No token budget, length sorting, fairness, priority or deadline admission."""

    def __init__(self, local: DynamicBatcher, run_batch: RunBatch, *, max_batch_size: int, wait_s: float,
                 concurrency: int, observer: BatchMetrics | None = None):
        super().__init__(local)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="serve-batch")
        self._observer = observer

        async def run(sequences: list[Sequence[int]]) -> list[np.ndarray]:
            started = time.monotonic()
            failed = True
            try:
                out = np.asarray(await asyncio.get_running_loop().run_in_executor(self._pool, run_batch, sequences))
                failed = False
                return list(out)
            finally:
                if self._observer is not None:
                    lengths = [len(s) for s in sequences]
                    self._observer.batch_done(size=len(sequences), padded_tokens=max(lengths) * len(lengths),
                                              real_tokens=sum(lengths), queue_seconds=[],
                                              run_seconds=time.monotonic() - started, failed=failed)

        self._one = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=wait_s,
                                max_concurrent_batches=concurrency)(run)

    async def submit(self, sequences: Sequence[Sequence[int]], *, timeout: float | None = None,
                     priority: int | None = None) -> np.ndarray:
        calls = [asyncio.ensure_future(self._one(seq)) for seq in sequences]
        try:
            rows = await asyncio.wait_for(asyncio.gather(*calls), timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"model {self.innermost.name!r}: not scored within {timeout:.0f} s") from None
        except DnabertError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed batch fails every call in it
            log.error("serve.batch of model %r failed: %s", self.innermost.name, exc)
            raise InferenceFailed(f"inference failed for model {self.innermost.name!r}") from None
        finally:
            for call in calls:
                call.cancel()
        return np.stack(rows)

    async def stop(self, *, grace: float = 5.0) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        await self.local.stop(grace=grace)
