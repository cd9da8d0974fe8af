"""The dynamic batcher, with fake run functions (no model, no ONNX)."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import numpy as np
import pytest

from service.contract.errors import InferenceFailed, NotReady, Overloaded, RequestTimeout
from service.runtime.batcher import BatcherConfig, DynamicBatcher, NullObserver

TEST_TIMEOUT = 15.0


def run(coro):
    """Run one test coroutine with a hard ceiling, so a bug fails the test instead of hanging."""
    async def guarded():
        return await asyncio.wait_for(coro, TEST_TIMEOUT)
    return asyncio.run(guarded())


def seq(rid: int, idx: int, length: int) -> list[int]:
    """A sequence that names its request and position: ``[rid, idx, 7, 7, ...]``."""
    assert length >= 2
    return [rid, idx] + [7] * (length - 2)


def expected(seqs) -> np.ndarray:
    return np.array([[len(s), s[0], s[1]] for s in seqs], dtype=np.int64)


class FakeRun:
    """``run_batch`` stand-in: each row is ``[len(s), s[0], s[1]]``; records every batch it runs.

    ``gated``: each batch waits for one ``release()`` before it returns.
    ``poison``: a batch holding a sequence of that request id raises.
    """

    def __init__(self, *, gated: bool = False, poison: int | None = None):
        self.batches: list[list[tuple[int, int, int]]] = []
        self.lock = threading.Lock()
        self.gated = gated
        self.allowed = 0  # batches that may still pass a closed gate
        self.opened = False
        self.cond = threading.Condition()
        self.poison = poison
        self.running = 0
        self.max_running = 0

    def __call__(self, batch):
        with self.lock:
            self.batches.append([(len(s), s[0], s[1]) for s in batch])
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.gated:
                with self.cond:
                    if not self.cond.wait_for(lambda: self.opened or self.allowed > 0,
                                              timeout=TEST_TIMEOUT):
                        raise RuntimeError("gate never opened")
                    if not self.opened:
                        self.allowed -= 1
            if self.poison is not None and any(s[0] == self.poison for s in batch):
                raise RuntimeError("poison! internal detail")
            return expected(batch)
        finally:
            with self.lock:
                self.running -= 1

    def release(self, n: int = 1) -> None:
        with self.cond:
            self.allowed += n
            self.cond.notify_all()

    def open(self) -> None:
        with self.cond:
            self.opened = True
            self.cond.notify_all()

    def rids(self, batch) -> set[int]:
        return {rid for _, rid, _ in batch}


class Recorder(NullObserver):
    def __init__(self):
        self.done: list[dict] = []
        self.depths: list[int] = []
        self.drops: list[tuple[int, str]] = []

    def batch_done(self, **kw):
        self.done.append(kw)

    def queue_depth(self, depth):
        self.depths.append(depth)

    def dropped(self, n, reason):
        self.drops.append((n, reason))


async def until(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


async def started(fake: FakeRun, config: BatcherConfig, observer=None) -> DynamicBatcher:
    batcher = DynamicBatcher("test-model", fake, config, observer=observer)
    await batcher.start()
    return batcher


def check_limits(batches, config: BatcherConfig) -> None:
    for batch in batches:
        assert len(batch) <= config.max_batch_size
        longest = max(length for length, _, _ in batch)
        assert len(batch) == 1 or len(batch) * longest <= config.max_batch_tokens


# --------------------------------------------------------------------------- correctness


def test_many_concurrent_requests_get_their_own_rows_in_order():
    rng = random.Random(1234)
    requests = [[seq(rid, i, rng.randint(2, 300)) for i in range(rng.randint(1, 200))]
                for rid in range(50)]
    config = BatcherConfig(max_batch_tokens=4096, max_batch_size=64, max_wait_ms=1,
                           max_queue=20_000, workers=2)
    fake, rec = FakeRun(), Recorder()

    async def main():
        batcher = await started(fake, config, rec)
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        assert batcher.queue_depth == 0
        await batcher.stop()
        return results

    results = run(main())
    for r, out in zip(requests, results):
        assert out.shape == (len(r), 3)
        np.testing.assert_array_equal(out, expected(r))
    # Exactly once: every sequence ran once, nothing else ran.
    ran = sorted((rid, idx) for b in fake.batches for _, rid, idx in b)
    assert ran == sorted((rid, i) for rid, r in enumerate(requests) for i in range(len(r)))
    check_limits(fake.batches, config)
    assert rec.depths[-1] == 0
    assert len(rec.done) == len(fake.batches) and not any(d["failed"] for d in rec.done)
    assert sum(d["real_tokens"] for d in rec.done) == sum(len(s) for r in requests for s in r)
    assert all(d["padded_tokens"] >= d["real_tokens"] for d in rec.done)


def test_token_budget_and_batch_size_hold_and_overlong_runs_alone():
    rng = random.Random(7)
    requests = []
    for rid in range(20):
        lengths = [rng.choice([rng.randint(2, 120), rng.randint(100, 600)])
                   for _ in range(rng.randint(1, 40))]
        if rid % 5 == 0:
            lengths.append(3000)  # longer than the whole budget
        requests.append([seq(rid, i, n) for i, n in enumerate(lengths)])
    config = BatcherConfig(max_batch_tokens=2048, max_batch_size=16, max_wait_ms=1)
    fake = FakeRun()

    async def main():
        batcher = await started(fake, config)
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return results

    for r, out in zip(requests, run(main())):
        np.testing.assert_array_equal(out, expected(r))
    check_limits(fake.batches, config)
    overlong = [b for b in fake.batches if any(length == 3000 for length, _, _ in b)]
    assert len(overlong) == 4 and all(len(b) == 1 for b in overlong)
    assert max(len(b) for b in fake.batches) == config.max_batch_size


def test_empty_request_and_bad_config_are_rejected():
    async def main():
        batcher = await started(FakeRun(), BatcherConfig())
        with pytest.raises(ValueError):
            await batcher.submit([])
        await batcher.stop()
        with pytest.raises(NotReady):
            await batcher.submit([seq(0, 0, 4)])

    run(main())
    with pytest.raises(ValueError):
        BatcherConfig(max_batch_size=0)
    with pytest.raises(ValueError):
        BatcherConfig(max_wait_ms=-1)


# --------------------------------------------------------------------------- scheduling


def test_batches_are_length_sorted_and_pad_less_than_fifo():
    rng = random.Random(99)
    requests = [[seq(rid, i, rng.randint(10, 500)) for i in range(25)] for rid in range(40)]
    config = BatcherConfig(max_batch_tokens=4096, max_batch_size=64, max_wait_ms=50, window=4096)
    fake = FakeRun()

    async def main():
        batcher = await started(fake, config)
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return results

    for r, out in zip(requests, run(main())):
        np.testing.assert_array_equal(out, expected(r))
    check_limits(fake.batches, config)

    # All work was queued before the first cut and the window holds all of it, so every batch is
    # a contiguous run of the length-sorted queue: no later item lies strictly inside its range.
    for k, batch in enumerate(fake.batches):
        lo = min(length for length, _, _ in batch)
        hi = max(length for length, _, _ in batch)
        later = [length for b in fake.batches[k + 1:] for length, _, _ in b]
        assert not any(lo < length < hi for length in later), k

    padded = sum(len(b) * max(length for length, _, _ in b) for b in fake.batches)
    fifo_padded, cur = 0, []
    for length in (len(s) for r in requests for s in r):
        if cur and (len(cur) + 1 > config.max_batch_size
                    or (len(cur) + 1) * max(cur + [length]) > config.max_batch_tokens):
            fifo_padded += len(cur) * max(cur)
            cur = []
        cur.append(length)
    fifo_padded += len(cur) * max(cur)
    real = sum(len(s) for r in requests for s in r)
    assert padded < 0.75 * fifo_padded
    assert padded < 1.25 * real


def test_small_request_is_not_starved_by_a_huge_upload():
    rng = random.Random(5)
    big = [seq(0, i, rng.randint(50, 150)) for i in range(5000)]
    small = [seq(1, 0, 2)]  # far shorter than anything in the upload
    config = BatcherConfig(max_batch_size=64, max_wait_ms=1, max_queue=6000)
    fake = FakeRun(gated=True)

    async def main():
        batcher = await started(fake, config)
        big_task = asyncio.create_task(batcher.submit(big))
        await until(lambda: len(fake.batches) == 1)  # the first batch is running (held)
        small_task = asyncio.create_task(batcher.submit(small))
        await until(lambda: batcher.queue_depth == 5000 - 64 + 1)
        fake.release(2)  # let the running batch and exactly one more run
        out = await asyncio.wait_for(small_task, 5)
        np.testing.assert_array_equal(out, expected(small))
        assert (2, 1, 0) in fake.batches[1]  # the very next batch after it arrived
        assert not big_task.done()
        fake.open()
        np.testing.assert_array_equal(await big_task, expected(big))
        assert batcher.queue_depth == 0
        await batcher.stop()

    run(main())
    check_limits(fake.batches, config)


def test_workers_run_batches_concurrently_but_never_more_than_workers():
    barrier = threading.Barrier(2, timeout=5)
    calls = []
    lock = threading.Lock()

    def run_batch(batch):
        with lock:
            calls.append(batch)
            first_two = len(calls) <= 2
        if first_two:
            barrier.wait()  # passes only when two batches run at the same time
        return expected(batch)

    async def main():
        batcher = DynamicBatcher("test-model", run_batch,
                                 BatcherConfig(max_batch_size=1, max_wait_ms=0, workers=2))
        await batcher.start()
        reqs = [[seq(rid, 0, 5)] for rid in range(4)]
        outs = await asyncio.gather(*(batcher.submit(r) for r in reqs))
        for r, out in zip(reqs, outs):
            np.testing.assert_array_equal(out, expected(r))
        await batcher.stop()

    run(main())
    assert len(calls) == 4

    fake = FakeRun(gated=True)

    async def limit():
        batcher = await started(fake, BatcherConfig(max_batch_size=1, max_wait_ms=0, workers=2))
        tasks = [asyncio.create_task(batcher.submit([seq(rid, 0, 5)])) for rid in range(6)]
        await until(lambda: len(fake.batches) == 2)
        await asyncio.sleep(0.05)
        assert len(fake.batches) == 2 and batcher.queue_depth == 4  # the rest waits its turn
        fake.open()
        await asyncio.gather(*tasks)
        await batcher.stop()

    run(limit())
    assert fake.max_running == 2


# --------------------------------------------------------------------------- admission and dropping


def test_overloaded_is_raised_at_once_and_serving_goes_on():
    fake = FakeRun(gated=True)
    config = BatcherConfig(max_queue=10, max_wait_ms=0)

    async def main():
        batcher = await started(fake, config)
        first = asyncio.create_task(batcher.submit([seq(0, 0, 4)]))
        await until(lambda: len(fake.batches) == 1)
        queued = asyncio.create_task(batcher.submit([seq(1, i, 4) for i in range(8)]))
        await until(lambda: batcher.queue_depth == 8)
        t0 = time.monotonic()
        with pytest.raises(Overloaded) as info:
            await batcher.submit([seq(2, i, 4) for i in range(3)])
        assert time.monotonic() - t0 < 0.5
        assert info.value.retry_after >= 1
        with pytest.raises(Overloaded):
            await batcher.submit([seq(3, i, 4) for i in range(11)])
        assert batcher.queue_depth == 8  # nothing of the refused requests was queued
        fits = asyncio.create_task(batcher.submit([seq(4, i, 4) for i in range(2)]))
        await until(lambda: batcher.queue_depth == 10)
        fake.open()
        for task in (first, queued, fits):
            await task
        again = [seq(2, i, 4) for i in range(3)]
        np.testing.assert_array_equal(await batcher.submit(again), expected(again))
        await batcher.stop()

    run(main())
    assert all(rid != 3 for b in fake.batches for _, rid, _ in b)


def test_timed_out_request_raises_and_its_items_never_run():
    fake, rec = FakeRun(gated=True), Recorder()

    async def main():
        batcher = await started(fake, BatcherConfig(max_wait_ms=0), rec)
        first = asyncio.create_task(batcher.submit([seq(0, 0, 4)]))
        await until(lambda: len(fake.batches) == 1)
        with pytest.raises(RequestTimeout) as info:
            await batcher.submit([seq(1, i, 4) for i in range(10)], timeout=0.05)
        assert "test-model" in str(info.value)
        assert batcher.queue_depth == 0
        assert (10, "timeout") in rec.drops
        fake.open()
        await first
        later = [seq(2, 0, 4)]
        np.testing.assert_array_equal(await batcher.submit(later, timeout=5), expected(later))
        await batcher.stop()

    run(main())
    assert all(rid != 1 for b in fake.batches for _, rid, _ in b)


def test_cancelled_request_is_dropped_before_it_runs():
    fake, rec = FakeRun(gated=True), Recorder()

    async def main():
        batcher = await started(fake, BatcherConfig(max_wait_ms=0), rec)
        first = asyncio.create_task(batcher.submit([seq(0, 0, 4)]))
        await until(lambda: len(fake.batches) == 1)
        doomed = asyncio.create_task(batcher.submit([seq(1, i, 4) for i in range(7)]))
        await until(lambda: batcher.queue_depth == 7)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert batcher.queue_depth == 0
        assert (7, "cancelled") in rec.drops
        fake.open()
        await first
        later = [seq(2, 0, 4), seq(2, 1, 9)]
        np.testing.assert_array_equal(await batcher.submit(later), expected(later))
        assert batcher.queue_depth == 0
        await batcher.stop()

    run(main())
    assert all(rid != 1 for b in fake.batches for _, rid, _ in b)
    assert rec.depths[-1] == 0


def test_failed_batch_fails_only_its_requests_and_serving_goes_on():
    poison = 13
    rng = random.Random(3)
    requests = [[seq(rid, i, 10) for i in range(rng.randint(1, 3))] for rid in range(30)]
    fake, rec = FakeRun(gated=True, poison=poison), Recorder()
    config = BatcherConfig(max_batch_size=4, max_wait_ms=0)

    async def main():
        batcher = await started(fake, config, rec)
        tasks = [asyncio.create_task(batcher.submit(r)) for r in requests]
        fake.open()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert batcher.queue_depth == 0
        clean = [seq(100, 0, 10)]
        np.testing.assert_array_equal(await batcher.submit(clean), expected(clean))
        await batcher.stop()
        return results

    results = run(main())
    bad_batches = [b for b in fake.batches if poison in fake.rids(b)]
    assert bad_batches
    in_bad = set().union(*(fake.rids(b) for b in bad_batches))
    assert poison in in_bad and len(in_bad) > 1
    for rid, (r, out) in enumerate(zip(requests, results)):
        if rid in in_bad:
            assert isinstance(out, InferenceFailed), rid
            assert "test-model" in str(out) and "poison" not in str(out)
        else:
            np.testing.assert_array_equal(out, expected(r))
    assert sum(1 for out in results if not isinstance(out, Exception)) > len(requests) // 2
    assert sum(d["failed"] for d in rec.done) == len(bad_batches)


# --------------------------------------------------------------------------- shutdown


def test_stop_fails_queued_requests_and_lets_running_batch_finish():
    fake, rec = FakeRun(gated=True), Recorder()

    async def main():
        batcher = await started(fake, BatcherConfig(max_wait_ms=0), rec)
        running = asyncio.create_task(batcher.submit([seq(0, 0, 4)]))
        await until(lambda: len(fake.batches) == 1)
        queued = asyncio.create_task(batcher.submit([seq(1, 0, 4), seq(1, 1, 6)]))
        await until(lambda: batcher.queue_depth == 2)
        stopping = asyncio.create_task(batcher.stop(grace=5))
        with pytest.raises(NotReady):
            await asyncio.wait_for(queued, 2)
        assert batcher.queue_depth == 0 and (2, "shutdown") in rec.drops
        with pytest.raises(NotReady):
            await batcher.submit([seq(2, 0, 4)])
        fake.open()
        np.testing.assert_array_equal(await running, expected([seq(0, 0, 4)]))
        await asyncio.wait_for(stopping, 2)

    run(main())
    assert all(rid == 0 for b in fake.batches for _, rid, _ in b)


def test_stop_returns_promptly_when_a_batch_hangs():
    fake = FakeRun(gated=True)

    async def main():
        batcher = await started(fake, BatcherConfig(max_wait_ms=0))
        stuck = asyncio.create_task(batcher.submit([seq(0, 0, 4)]))
        await until(lambda: len(fake.batches) == 1)
        t0 = time.monotonic()
        await asyncio.wait_for(batcher.stop(grace=0.05), 2)
        assert time.monotonic() - t0 < 1.5
        with pytest.raises(NotReady):
            await stuck

    try:
        run(main())
    finally:
        fake.open()  # let the worker thread finish


# --------------------------------------------------------------------------- deadlines


class SlowRun:
    """``run_batch`` stand-in that takes ``per_token`` seconds per real token (like a model
    under load); rows as :class:`FakeRun`'s; records the request ids of every batch."""

    def __init__(self, per_token: float):
        self.per_token = per_token
        self.batches: list[list[int]] = []

    def __call__(self, batch):
        time.sleep(self.per_token * sum(len(s) for s in batch))
        self.batches.append([s[0] for s in batch])
        return expected(batch)


DEADLINE_CONFIG = BatcherConfig(max_batch_size=8, max_batch_tokens=4096, max_wait_ms=0, workers=1)


async def _measured(slow: SlowRun) -> DynamicBatcher:
    """A batcher that has measured its throughput on a few batches of 8 x 10 tokens."""
    batcher = DynamicBatcher("test-model", slow, DEADLINE_CONFIG)
    await batcher.start()
    for rid in range(100, 103):
        await batcher.submit([seq(rid, i, 10) for i in range(8)])
    assert batcher._token_rate() is not None
    return batcher


def test_request_that_cannot_finish_by_its_deadline_is_refused_at_once():
    """Six requests of 0.4 s of work each, 1.4 s deadline: three fit one after another and are
    admitted (and finish); the others are refused at once with Overloaded and never run. Before
    deadline admission all six were admitted, shared the worker fairly and all timed out."""
    slow = SlowRun(per_token=0.001)  # 1,000 tokens/s; a request of 40 x 10 tokens: 0.4 s alone
    requests = [[seq(rid, i, 10) for i in range(40)] for rid in range(6)]

    async def main():
        batcher = await _measured(slow)
        t0 = time.monotonic()
        ended: dict[int, float] = {}

        async def one(rid):
            try:
                return await batcher.submit(requests[rid], timeout=1.4)
            finally:
                ended[rid] = time.monotonic() - t0

        results = await asyncio.gather(*(one(rid) for rid in range(6)), return_exceptions=True)
        # A request alone is always admitted, even one that cannot finish in time.
        with pytest.raises(RequestTimeout):
            await batcher.submit([seq(9, i, 100) for i in range(20)], timeout=0.3)
        await batcher.stop()
        return results, ended

    results, ended = run(main())
    for rid in range(3):
        np.testing.assert_array_equal(results[rid], expected(requests[rid]))
        assert ended[rid] < 1.4
    for rid in range(3, 6):
        assert isinstance(results[rid], Overloaded), results[rid]
        assert ended[rid] < 0.1  # at once, not at the deadline
        assert results[rid].retry_after >= 1
        assert "deadline" in str(results[rid])
    assert not any(rid in (3, 4, 5) for b in slow.batches for rid in b)  # nothing refused ran


def test_under_a_deadline_requests_finish_one_after_another_instead_of_all_timing_out():
    """Six requests of 0.4 s of work each, all admitted (the throughput is not measured yet when
    they arrive), 1.6 s deadline. Shared fairly they would all finish at about 2.4 s, after
    their deadline (that was the behaviour: every one 504). Once the batcher has measured its
    throughput it sees them at risk and serves them in deadline order: the first ones finish."""
    slow = SlowRun(per_token=0.001)
    requests = [[seq(rid, i, 10) for i in range(40)] for rid in range(6)]

    async def main():
        batcher = DynamicBatcher("test-model", slow, DEADLINE_CONFIG)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(r, timeout=1.6) for r in requests),
                                       return_exceptions=True)
        cuts = batcher.deadline_cuts
        await batcher.stop()
        return results, cuts

    results, cuts = run(main())
    done = [rid for rid, out in enumerate(results) if not isinstance(out, Exception)]
    assert len(done) >= 2, results
    assert done == list(range(len(done)))  # the earliest deadlines first
    for rid in done:
        np.testing.assert_array_equal(results[rid], expected(requests[rid]))
    for rid in range(len(done), 6):
        assert isinstance(results[rid], RequestTimeout), results[rid]
    assert cuts > 0


def test_deadline_mode_stays_off_while_every_request_can_finish():
    """Fairness is kept while no deadline is at risk: two requests with ample deadlines are
    served round-robin (both in the first batches), never one after the other."""
    slow = SlowRun(per_token=0.0002)
    requests = [[seq(rid, i, 10) for i in range(24)] for rid in range(2)]

    async def main():
        batcher = await _measured(slow)
        outs = await asyncio.gather(*(batcher.submit(r, timeout=30) for r in requests))
        cuts = batcher.deadline_cuts
        await batcher.stop()
        return outs, cuts

    outs, cuts = run(main())
    for r, out in zip(requests, outs):
        np.testing.assert_array_equal(out, expected(r))
    assert cuts == 0
    first = slow.batches[3]  # the first batch after the three measuring ones
    assert {0, 1} <= set(first)
