"""Dynamic batching of token-id sequences in front of one model.

One :class:`DynamicBatcher` per model. It knows nothing of HTTP, tokenizers or ONNX: callers
``await submit(sequences)`` with lists of token ids, and a background scheduling task groups the
queued sequences of all requests into batches that it hands to a blocking ``run_batch`` function
in worker threads (ONNX Runtime releases the GIL while it runs).

Scheduling (after TEI / Infinity practice, with an explicit fairness rule):

* Every request keeps its sequences in its own FIFO queue. Admission is all-or-nothing against
  ``max_queue`` (queued sequences of all requests together); beyond it ``submit`` raises
  :class:`~service.contract.errors.Overloaded` at once.
* Requests are ranked "least recently served first": a request's rank is the index of the last
  batch that held one of its sequences (ties: older request first). A new request ranks as if it
  had last been served two batches before it arrived, so it beats every request served since, and
  it gets into the very next batch even behind a huge upload; since that head start is bounded,
  an old request is never starved by a stream of new ones.
* Each batch is cut from a candidate window of up to ``window`` sequences built round-robin over
  the pending requests in rank order (the head of each request, then the second item of each, ...).
  The candidates are sorted by length and the batch is a contiguous run of that order: it starts
  at the anchor, the head of the top-ranked request (so every batch serves that request), and
  grows to whichever neighbour adds the least padding, while ``len(batch) * longest`` stays within
  ``max_batch_tokens``, ``len(batch)`` within ``max_batch_size``, and the batch's padded tokens
  within twice its real tokens (no short sequence is dragged into a batch of long ones when it
  would cost far more than it is worth). A sequence longer than the whole budget runs alone.
  Candidates not taken stay queued in their request's original order.
* **Deadlines.** ``submit(..., timeout=)`` gives a request a deadline. The batcher measures its
  throughput in real tokens per busy second (the union of the run intervals of its last 64
  successful batches, so idle time does not count) once it has run at least
  ``_MIN_RATE_BATCHES`` batches; before that no estimate is made and the rules below do not
  apply. A request is *feasible* while its queued tokens alone, at the measured rate, fit in the
  time left to its deadline.
* **Admission against the deadline.** A request with a deadline is refused at once with
  :class:`~service.contract.errors.Overloaded` (and a ``retry_after`` estimate) when the queued
  tokens of the feasible requests whose deadlines come no later than its own, plus its own
  tokens, would not run before its deadline at the measured rate. A request with nothing
  queued ahead of it is always admitted (retrying could not help it, and it delays no one).
* **Deadline mode.** Before each cut the scheduler estimates when each request would finish under
  the fair rule above (processor sharing: the queued tokens of every pending request, each
  counted up to the request's own queued tokens, at the measured rate). When some feasible
  request would overrun its deadline that way, the batch is cut in deadline mode instead:
  requests are ranked feasible first, then by earliest deadline (none: last), then by age, and
  the candidate window is filled request by request in that order (all of the first request's
  queued items, then the next request's) rather than round-robin. Requests are then finished
  one after another, as many as the deadlines allow, instead of all advancing together and all
  timing out; a request that can no longer finish in time yields to those that can. Once no
  feasible request is at risk, the fair rule applies again.
* Once work is queued the scheduler waits up to ``max_wait_ms`` after the first item arrived for
  more to come, unless a full batch is already queued. At most ``workers`` batches are in flight;
  while they run, the scheduler already waits for the next slot with the queue filling behind it.
* A request that times out or whose awaiting task is cancelled has its queued sequences removed at
  once (they never run). If ``run_batch`` raises, every request with a sequence in that batch gets
  :class:`~service.contract.errors.InferenceFailed` (and its other queued sequences are dropped); other
  requests are unaffected. Rows are delivered to the awaiting coroutines from the event loop.
* **Priority.** A request is :data:`INTERACTIVE` (the default) or :data:`BACKGROUND` (the
  ``priority=`` of :meth:`DynamicBatcher.submit`, else the :data:`PRIORITY` context variable, which
  the job runner sets for everything it scores). While any interactive sequence is queued, batches
  are cut from interactive requests only, by the rules above; background sequences are cut only
  when no interactive one waits and no interactive batch runs, in batches of at most
  ``background_batch_size`` (default: a quarter of ``max_batch_size``), and at most
  ``background_workers`` of them run at once (default: one worker fewer than ``workers``): an
  interactive request finds a worker free, and the processor nearly to itself, instead of waiting
  behind a job's batches. Background requests are left out of the interactive
  requests' deadline admission and deadline mode, and have no deadline admission of their own.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import math
import operator
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.contract.errors import DnabertError, InferenceFailed, NotReady, Overloaded, RequestTimeout

__all__ = [
    "BACKGROUND",
    "INTERACTIVE",
    "PRIORITY",
    "BatchObserver",
    "BatcherConfig",
    "DynamicBatcher",
    "NullObserver",
    "RunBatch",
]

logger = logging.getLogger(__name__)

RunBatch = Callable[[list[Sequence[int]]], np.ndarray]
"""Blocking: returns one output row per input sequence, in the same order (e.g. (B, k) scores)."""

# A batch may hold at most this many padded tokens per real token (unless it has one sequence).
_MAX_PADDING_FACTOR = 2.0
# Throughput for the Retry-After estimate is measured over batches that ended this recently.
_THROUGHPUT_HORIZON_S = 60.0
_MAX_RETRY_AFTER_S = 60.0
# Deadline admission and deadline mode need a throughput measured over at least this many batches.
_MIN_RATE_BATCHES = 3

INTERACTIVE = 0
"""A request answered while its client waits: always cut before background work."""
BACKGROUND = 1
"""Work of a job: cut only when no interactive sequence is queued."""
PRIORITY: ContextVar[int] = ContextVar("dnabert_batch_priority", default=INTERACTIVE)
"""The priority of what the current task submits when ``submit`` is given none: the job runner
sets it to :data:`BACKGROUND` around a job, and the tasks it starts inherit it."""


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_tokens: int = 16384
    """Padded-token budget: ``len(batch) * max(len(seq))`` stays within it (a single sequence
    longer than the budget still runs, alone)."""
    max_batch_size: int = 128
    max_wait_ms: float = 2.0
    """How long to wait for more work after the first item arrives, unless a full batch is
    already queued."""
    window: int = 1024
    """How many queued sequences are considered (and sorted by length) when cutting a batch."""
    max_queue: int = 4096
    """Most queued sequences (all requests together); beyond it ``submit`` raises Overloaded."""
    workers: int = 1
    """Batches running concurrently (threads of the executor)."""
    background_workers: int = 0
    """Background batches running at once; 0: ``workers - 1`` (at least 1), so that one worker is
    always left to interactive requests where there are two or more."""
    background_batch_size: int = 0
    """Sequences per background batch; 0: a quarter of ``max_batch_size`` (at least 1): a short
    batch is soon out of an arriving interactive request's way."""

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_batch_size", "window", "max_queue", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BatcherConfig.{name} must be a positive integer, got {value!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"BatcherConfig.max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        for name in ("background_workers", "background_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"BatcherConfig.{name} must be an integer >= 0, got {value!r}")

    @property
    def background_size(self) -> int:
        """Sequences per background batch."""
        return min(self.max_batch_size, self.background_batch_size or max(1, self.max_batch_size // 4))

    @property
    def background_slots(self) -> int:
        """Background batches that may run at once."""
        return min(self.workers, self.background_workers or max(1, self.workers - 1))


class BatchObserver(Protocol):
    """Optional metrics hooks; called from the event-loop thread."""

    def batch_done(self, *, size: int, padded_tokens: int, real_tokens: int,
                   queue_seconds: list[float], run_seconds: float, failed: bool) -> None: ...

    def queue_depth(self, depth: int) -> None: ...

    def dropped(self, n: int, reason: str) -> None:
        """``n`` queued sequences were removed without running; ``reason`` is one of
        ``cancelled``, ``timeout``, ``failed`` (a batch with another of the request's sequences
        failed) or ``shutdown``."""


class NullObserver:
    def batch_done(self, *, size: int, padded_tokens: int, real_tokens: int,
                   queue_seconds: list[float], run_seconds: float, failed: bool) -> None:
        pass

    def queue_depth(self, depth: int) -> None:
        pass

    def dropped(self, n: int, reason: str) -> None:
        pass


class _Request:
    __slots__ = ("id", "future", "pending", "rows", "remaining", "last_served", "enqueued_at",
                 "deadline", "tokens", "priority")

    def __init__(self, rid: int, future: asyncio.Future, n: int, last_served: int, now: float,
                 deadline: float = math.inf, priority: int = INTERACTIVE):
        self.id = rid
        self.future = future
        self.pending: deque[_Item] = deque()
        self.rows: list[np.ndarray | None] = [None] * n
        self.remaining = n
        self.last_served = last_served
        self.enqueued_at = now
        self.deadline = deadline  # time.monotonic() by which it must finish; inf: none
        self.tokens = 0  # real tokens of its queued (not yet running) items
        self.priority = priority


# Least recently served first; ties: the older request first.
_RANK = operator.attrgetter("last_served", "id")


class _Item:
    __slots__ = ("request", "index", "seq", "length")

    def __init__(self, request: _Request, index: int, seq: Sequence[int]):
        self.request = request
        self.index = index
        self.seq = seq
        self.length = len(seq)


class DynamicBatcher:
    def __init__(self, name: str, run_batch: RunBatch, config: BatcherConfig = BatcherConfig(),
                 observer: BatchObserver | None = None,
                 executor: concurrent.futures.Executor | None = None):
        self.name = name
        self.config = config
        self._run_batch = run_batch
        self._observer: BatchObserver = observer if observer is not None else NullObserver()
        self._own_executor = executor is None
        self._executor = executor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closing = False
        self._started = False
        # Pending requests (with at least one queued item), in arrival order.
        self._active: dict[int, _Request] = {}
        self._next_id = 0
        self._depth = 0
        # queued sequences, their real tokens and when the first of them arrived, per priority
        self._class_depth = [0, 0]
        self._class_tokens = [0, 0]
        self._class_first = [0.0, 0.0]
        self._background_running = 0
        self._interactive_running = 0
        self._batches_cut = 0
        self._inflight: dict[asyncio.Task, list[_Item]] = {}
        # (start, end, n items, real tokens) of the last successful batches
        self._recent: deque[tuple[float, float, int, int]] = deque(maxlen=64)
        self._rate: float | None = None  # real tokens per busy second; None: not measured yet
        self.deadline_cuts = 0  # batches cut in deadline mode (for tests and logs)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            raise RuntimeError(f"batcher {self.name!r} was already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.config.workers)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.config.workers, thread_name_prefix=f"batcher-{self.name}")
        self._task = self._loop.create_task(self._schedule(), name=f"batcher-{self.name}")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop accepting work and fail queued requests at once (:class:`NotReady`).

        Batches already running get up to ``grace`` seconds to finish and deliver their rows;
        after that their requests are failed too and the batcher stops waiting for them (a thread
        stuck in ``run_batch`` cannot be interrupted).
        """
        if self._closing:
            return
        self._closing = True
        shutdown = NotReady(f"model {self.name!r} is shutting down")
        for req in list(self._active.values()):
            self._fail(req, shutdown, reason="shutdown")
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # already logged by the scheduler
                pass
        if self._inflight:
            _, still = await asyncio.wait(list(self._inflight), timeout=max(grace, 0.0))
            for task in still:
                for item in self._inflight.get(task, ()):
                    self._fail(item.request, shutdown, reason="shutdown")
                task.cancel()
            if still:
                await asyncio.wait(still)
                logger.warning("batcher %r: stopped with %d batch(es) still running",
                               self.name, len(still))
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queue_depth(self) -> int:
        """Sequences queued and not yet handed to a worker."""
        return self._depth

    # ------------------------------------------------------------------ submission

    async def submit(self, sequences: Sequence[Sequence[int]], *,
                     timeout: float | None = None, priority: int | None = None) -> np.ndarray:
        """Run ``sequences`` and return ``np.stack`` of their output rows, in input order.

        Raises :class:`Overloaded` at once when the queue is full, or when ``timeout`` is given
        and the request cannot finish in time behind the work queued ahead of it (see the module
        docstring); :class:`RequestTimeout` when ``timeout`` passes before its rows are ready.
        ``priority``: :data:`INTERACTIVE` or :data:`BACKGROUND` (default: :data:`PRIORITY`).
        """
        priority = PRIORITY.get() if priority is None else priority
        if priority not in (INTERACTIVE, BACKGROUND):
            raise ValueError(f"priority must be INTERACTIVE (0) or BACKGROUND (1), got {priority!r}")
        n = len(sequences)
        if n == 0:
            raise ValueError("submit() needs at least one sequence")
        if not self._started or self._closing or self._loop is None:
            raise NotReady(f"model {self.name!r} is not running")
        cfg = self.config
        if self._depth + n > cfg.max_queue:
            retry_after = self._retry_after(n)
            if n > cfg.max_queue:
                msg = (f"model {self.name!r}: a request of {n} sequences exceeds the queue "
                       f"capacity of {cfg.max_queue}")
            else:
                msg = (f"model {self.name!r} is overloaded ({self._depth} sequences queued); "
                       f"retry in {retry_after:.0f} s")
            raise Overloaded(msg, retry_after=retry_after)

        loop = self._loop
        now = time.monotonic()
        deadline = now + max(timeout, 0.0) if timeout is not None else math.inf
        req = _Request(self._next_id, loop.create_future(), n, self._batches_cut - 2, now, deadline, priority)
        tokens = 0
        for i, seq in enumerate(sequences):
            item = _Item(req, i, seq)
            tokens += item.length
            req.pending.append(item)
        req.tokens = tokens
        if timeout is not None and priority == INTERACTIVE:
            self._admit_by_deadline(n, tokens, timeout, deadline, now)
        self._next_id += 1
        if self._class_depth[priority] == 0:
            self._class_first[priority] = now
        self._active[req.id] = req
        self._depth += n
        self._class_depth[priority] += n
        self._class_tokens[priority] += tokens
        self._notify_depth()
        self._wakeup.set()

        timer = None
        if timeout is not None:
            timer = loop.call_later(max(timeout, 0.0), self._expire, req, timeout)
        try:
            return await req.future
        except asyncio.CancelledError:
            if not req.future.done():
                req.future.cancel()
            self._drop(req, "cancelled")
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._drop(req, "cancelled")  # no-op unless something unexpected left items queued

    def _expire(self, req: _Request, timeout: float) -> None:
        if req.future.done():
            return
        req.future.set_exception(
            RequestTimeout(f"model {self.name!r}: request timed out after {timeout:g} s"))
        self._drop(req, "timeout")

    def _drop(self, req: _Request, reason: str) -> None:
        """Remove the request's queued items (they will never run)."""
        self._active.pop(req.id, None)
        n = len(req.pending)
        if n == 0:
            return
        tokens = sum(item.length for item in req.pending)
        req.pending.clear()
        req.tokens = 0
        self._depth -= n
        self._class_depth[req.priority] -= n
        self._class_tokens[req.priority] -= tokens
        self._call_observer("dropped", n, reason)
        self._notify_depth()

    def _fail(self, req: _Request, error: DnabertError, *, reason: str) -> None:
        if not req.future.done():
            req.future.set_exception(error)
        self._drop(req, reason)

    def _token_rate(self) -> float | None:
        """Real tokens per busy second over the recent successful batches (the union of their run
        intervals: idle time between batches does not count); None until measured."""
        if self._rate is None and len(self._recent) >= _MIN_RATE_BATCHES:
            spans = sorted((start, end) for start, end, _, _ in self._recent)
            busy, (lo, hi) = 0.0, spans[0]
            for start, end in spans[1:]:
                if start > hi:
                    busy += hi - lo
                    lo, hi = start, end
                else:
                    hi = max(hi, end)
            busy += hi - lo
            tokens = sum(r[3] for r in self._recent)
            if busy > 0 and tokens > 0:
                self._rate = tokens / busy
        return self._rate

    def _admit_by_deadline(self, n: int, tokens: int, timeout: float, deadline: float,
                           now: float) -> None:
        """Refuse (Overloaded) a request that cannot finish before its deadline behind the work
        that would be served before it (see the module docstring)."""
        rate = self._token_rate()
        if rate is None:
            return
        ahead = sum(r.tokens for r in self._active.values()
                    if r.priority == INTERACTIVE and r.deadline <= deadline
                    and r.tokens <= rate * (r.deadline - now))
        if ahead == 0:
            return
        need = (ahead + tokens) / rate
        if need <= timeout:
            return
        # Retry once enough of the work ahead has run for this request to fit (if it ever can
        # when alone; else once the work ahead has run).
        wait = need - timeout if tokens / rate <= timeout else ahead / rate
        retry_after = float(min(_MAX_RETRY_AFTER_S, max(1.0, math.ceil(wait))))
        raise Overloaded(
            f"model {self.name!r} is overloaded: the work queued ahead of these {n} sequences "
            f"would take about {ahead / rate:.1f} s and theirs {tokens / rate:.1f} s, past the "
            f"{timeout:g} s deadline; retry in {retry_after:.0f} s", retry_after=retry_after)

    def _eligible(self) -> list[_Request]:
        """The pending requests the next batch may take from: the interactive ones while any is
        queued, else the background ones while a background slot is free, else none."""
        if self._class_depth[INTERACTIVE]:
            return [r for r in self._active.values() if r.priority == INTERACTIVE]
        if self._background_may_run():
            return list(self._active.values())
        return []

    def _cut_class(self) -> int | None:
        """The priority the next batch is cut for (None: nothing may be cut now)."""
        if self._class_depth[INTERACTIVE]:
            return INTERACTIVE
        if self._background_may_run():
            return BACKGROUND
        return None

    def _background_may_run(self) -> bool:
        """Background work is queued, a background slot is free and no interactive batch runs
        (which then has the processor to itself, but for a background batch already running)."""
        return (self._class_depth[BACKGROUND] > 0 and self._interactive_running == 0
                and self._background_running < self.config.background_slots)

    def _ranked(self) -> tuple[list[_Request], bool]:
        """Pending requests of the class cut next, in rank order, and whether that is deadline mode."""
        requests = self._eligible()
        rate = self._token_rate()
        if rate is None or not any(r.deadline < math.inf for r in requests):
            return sorted(requests, key=_RANK), False
        now = time.monotonic()
        # Fair (processor-sharing) finish of a request holding w tokens: every pending request's
        # tokens counted up to w.
        works = sorted(r.tokens for r in requests)
        prefix = [0]
        for w in works:
            prefix.append(prefix[-1] + w)
        at_risk = False
        for r in requests:
            if r.deadline == math.inf:
                continue
            budget = rate * (r.deadline - now)  # tokens that can still run before its deadline
            if r.tokens > budget:
                continue  # cannot finish even alone: no mode saves it
            k = bisect.bisect_left(works, r.tokens)
            if prefix[k] + r.tokens * (len(works) - k) > budget:
                at_risk = True
                break
        if not at_risk:
            return sorted(requests, key=_RANK), False

        def deadline_rank(r: _Request):
            feasible = r.deadline == math.inf or r.tokens <= rate * (r.deadline - now)
            return (not feasible, r.deadline, r.id)

        return sorted(requests, key=deadline_rank), True

    def _retry_after(self, n: int) -> float:
        """Seconds until enough of the queue has drained for ``n`` more sequences to fit."""
        now = time.monotonic()
        recent = [r for r in self._recent if now - r[1] <= _THROUGHPUT_HORIZON_S]
        excess = self._depth + n - self.config.max_queue
        seconds = 1.0
        if recent:
            span = max(r[1] for r in recent) - min(r[0] for r in recent)
            done = sum(r[2] for r in recent)
            if span > 0 and done > 0:
                seconds = excess / (done / span)
        return float(min(_MAX_RETRY_AFTER_S, max(1.0, math.ceil(seconds))))

    # ------------------------------------------------------------------ scheduling

    def _batch_full(self, priority: int) -> bool:
        cfg = self.config
        size = cfg.background_size if priority == BACKGROUND else cfg.max_batch_size
        return self._class_depth[priority] >= size or self._class_tokens[priority] >= cfg.max_batch_tokens

    async def _schedule(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        wakeup, slots = self._wakeup, self._slots
        try:
            while not self._closing:
                await slots.acquire()
                launched = False
                try:
                    # Work that may be cut now: interactive, or background with a slot free.
                    while (priority := self._cut_class()) is None:
                        wakeup.clear()
                        await wakeup.wait()
                    # Wait for more work, counting from the arrival of the first queued item of
                    # the class; an interactive arrival ends a background wait at once.
                    deadline = self._class_first[priority] + self.config.max_wait_ms / 1000.0
                    while self._cut_class() == priority and not self._batch_full(priority):
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        wakeup.clear()
                        try:
                            await asyncio.wait_for(wakeup.wait(), remaining)
                        except asyncio.TimeoutError:
                            break
                    batch = self._cut()
                    if batch:
                        background = batch[0].request.priority == BACKGROUND
                        self._background_running += background
                        self._interactive_running += not background
                        task = self._loop.create_task(self._execute(batch, background))
                        self._inflight[task] = batch
                        launched = True
                finally:
                    if not launched:
                        slots.release()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("batcher %r: scheduler crashed", self.name)
            self._closing = True
            broken = InferenceFailed(f"inference failed for model {self.name!r}")
            for req in list(self._active.values()):
                self._fail(req, broken, reason="failed")
            raise

    def _window(self) -> list[_Item]:
        """Up to ``window`` queued items, round-robin over requests in rank order (in deadline
        mode: request by request, in deadline order)."""
        limit = self.config.window
        requests, deadline_mode = self._ranked()
        if deadline_mode:
            self.deadline_cuts += 1
            window: list[_Item] = []
            for req in requests:
                for item in req.pending:
                    window.append(item)
                    if len(window) >= limit:
                        return window
            return window
        if len(requests) >= limit:  # the heads alone fill the window
            return [req.pending[0] for req in requests[:limit]]
        window = []
        iterators = [iter(req.pending) for req in requests]
        while iterators and len(window) < limit:
            still = []
            for it in iterators:
                item = next(it, None)
                if item is None:
                    continue
                window.append(item)
                if len(window) >= limit:
                    break
                still.append(it)
            iterators = still
        return window

    def _cut(self) -> list[_Item]:
        """Choose the next batch and take its items out of the queue."""
        window = self._window()
        if not window:
            return []
        cfg = self.config
        budget, max_size = cfg.max_batch_tokens, cfg.max_batch_size
        if window[0].request.priority == BACKGROUND:
            max_size = cfg.background_size
        # Sorted by length; ties keep window order (rank, then round-robin position).
        order = sorted(range(len(window)), key=lambda i: (window[i].length, i))
        lengths = [window[i].length for i in order]
        lo = hi = order.index(0)  # the anchor: head of the top-ranked request
        longest = lengths[hi]
        real = longest
        n = 1
        m = len(order)
        while n < max_size:
            # (added padding, side, new length, new longest) of each neighbour that fits.
            options = []
            if lo > 0:
                new_len = lengths[lo - 1]
                options.append((longest - new_len, 0, new_len, longest))
            if hi + 1 < m:
                new_len = lengths[hi + 1]
                options.append(((new_len - longest) * n, 1, new_len, new_len))
            options = [o for o in options
                       if (n + 1) * o[3] <= budget
                       and (n + 1) * o[3] <= _MAX_PADDING_FACTOR * (real + o[2])]
            if not options:
                break
            _, side, new_len, longest = min(options)
            if side == 0:
                lo -= 1
            else:
                hi += 1
            real += new_len
            n += 1

        chosen = order[lo:hi + 1]
        batch = [window[i] for i in sorted(chosen)]
        # Remove the taken items; the others stay queued in their request's original order.
        # A request's candidates are the first items of its queue, so its taken items are found
        # by popping from the left until all of them have been seen.
        taken_per_request: dict[int, set[int]] = {}
        for item in batch:
            taken_per_request.setdefault(item.request.id, set()).add(item.index)
        batch_index = self._batches_cut
        self._batches_cut += 1
        for rid, indexes in taken_per_request.items():
            req = self._active[rid]
            req.last_served = batch_index
            pending = req.pending
            keep = []
            left = len(indexes)
            while left:
                item = pending.popleft()
                if item.index in indexes:
                    left -= 1
                    req.tokens -= item.length
                else:
                    keep.append(item)
            pending.extendleft(reversed(keep))
            if not pending:
                del self._active[rid]
        self._depth -= len(batch)
        cut = batch[0].request.priority
        self._class_depth[cut] -= len(batch)
        self._class_tokens[cut] -= real
        self._notify_depth()
        return batch

    async def _execute(self, batch: list[_Item], background: bool = False) -> None:
        loop = self._loop
        sequences = [item.seq for item in batch]
        started = time.monotonic()
        queue_seconds = [started - item.request.enqueued_at for item in batch]
        out: np.ndarray | None = None
        try:
            try:
                result = await loop.run_in_executor(self._executor, self._run_batch, sequences)
                out = np.asarray(result)
                if out.ndim == 0 or out.shape[0] != len(batch):
                    raise ValueError(f"run_batch returned shape {out.shape} for a batch of "
                                     f"{len(batch)} sequences")
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("batcher %r: batch of %d sequences failed", self.name,
                                 len(batch))
                out = None
            ended = time.monotonic()
            failed = out is None
            if not failed:
                self._recent.append((started, ended, len(batch), sum(item.length for item in batch)))
                self._rate = None  # measured again when next needed
            longest = max(item.length for item in batch)
            self._call_observer(
                "batch_done", size=len(batch), padded_tokens=longest * len(batch),
                real_tokens=sum(item.length for item in batch), queue_seconds=queue_seconds,
                run_seconds=ended - started, failed=failed)
            self._deliver(batch, out)
        finally:
            self._inflight.pop(asyncio.current_task(), None)
            self._background_running -= background
            self._interactive_running -= not background
            self._slots.release()
            if self._wakeup is not None and self._class_depth[BACKGROUND]:
                self._wakeup.set()  # background work may be cut again

    def _deliver(self, batch: list[_Item], out: np.ndarray | None) -> None:
        if out is None:
            error = InferenceFailed(f"inference failed for model {self.name!r}")
            for item in batch:
                self._fail(item.request, error, reason="failed")
            return
        for i, item in enumerate(batch):
            req = item.request
            if req.future.done():  # timed out, cancelled or failed elsewhere
                continue
            req.rows[item.index] = out[i]
            req.remaining -= 1
            if req.remaining == 0:
                try:
                    req.future.set_result(np.stack(req.rows))
                except Exception:
                    logger.exception("batcher %r: inconsistent output rows", self.name)
                    req.future.set_exception(
                        InferenceFailed(f"inference failed for model {self.name!r}"))
                req.rows = []

    # ------------------------------------------------------------------ observer

    def _notify_depth(self) -> None:
        self._call_observer("queue_depth", self._depth)

    def _call_observer(self, method: str, *args, **kwargs) -> None:
        try:
            getattr(self._observer, method)(*args, **kwargs)
        except Exception:
            logger.exception("batcher %r: observer.%s failed", self.name, method)
