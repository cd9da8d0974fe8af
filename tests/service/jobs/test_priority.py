"""Background (job) work in the dynamic batcher: interactive sequences are always cut first,
batches never mix the two, background batches leave a worker to interactive requests, and the
interactive deadline admission does not count background work."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from service.runtime.batcher import BACKGROUND, INTERACTIVE, PRIORITY, BatcherConfig, DynamicBatcher


def run(coro):
    async def guarded():
        return await asyncio.wait_for(coro, 30.0)

    return asyncio.run(guarded())


class Recorder:
    """``run_batch``: rows ``[rid]``; records each batch's request ids and the overlap of batches."""

    def __init__(self, seconds: float = 0.01):
        self.seconds = seconds
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()
        self.running: list[list[int]] = []
        self.overlaps: list[tuple[list[int], list[int]]] = []

    def __call__(self, batch):
        ids = [s[0] for s in batch]
        with self.lock:
            self.batches.append(ids)
            self.overlaps += [(ids, other) for other in self.running]
            self.running.append(ids)
        time.sleep(self.seconds)
        with self.lock:
            self.running.remove(ids)
        return np.array([[s[0]] for s in batch])


def test_interactive_sequences_go_before_queued_background_work():
    async def body():
        rec = Recorder()
        b = DynamicBatcher("m", rec, BatcherConfig(max_batch_size=4, max_wait_ms=0, workers=1))
        await b.start()
        try:
            job = asyncio.ensure_future(b.submit([[1, 7, 7]] * 40, priority=BACKGROUND))
            await asyncio.sleep(0.03)  # a few background batches have run
            served_before = len(rec.batches)
            out = await b.submit([[2, 7, 7]] * 3, priority=INTERACTIVE)
            assert out[:, 0].tolist() == [2, 2, 2]
            assert (await job)[:, 0].tolist() == [1] * 40
        finally:
            await b.stop()
        first = next(i for i, ids in enumerate(rec.batches) if 2 in ids)
        assert first <= served_before + 1  # the next batch cut (one may have been running)
        assert all(len(set(ids)) == 1 for ids in rec.batches)  # never mixed

    run(body())


def test_background_batches_leave_a_worker_to_interactive_requests():
    async def body():
        rec = Recorder(seconds=0.03)
        b = DynamicBatcher("m", rec, BatcherConfig(max_batch_size=2, max_wait_ms=0, workers=2))
        assert b.config.background_slots == 1
        await b.start()
        try:
            job = asyncio.ensure_future(b.submit([[1, 7, 7]] * 20, priority=BACKGROUND))
            await asyncio.sleep(0.05)
            start = time.monotonic()
            await b.submit([[2, 7, 7]], priority=INTERACTIVE)
            waited = time.monotonic() - start
            await job
        finally:
            await b.stop()
        background_pairs = [(a, o) for a, o in rec.overlaps if 2 not in a and 2 not in o]
        assert background_pairs == []  # never two background batches at once
        assert any(2 in a or 2 in o for a, o in rec.overlaps)  # the interactive one ran beside one
        assert waited < 0.03 + 0.025  # its own batch, not behind a background batch

    run(body())


def test_the_priority_context_variable_marks_a_tasks_work_as_background():
    async def body():
        rec = Recorder()
        b = DynamicBatcher("m", rec, BatcherConfig(max_batch_size=4, max_wait_ms=0, workers=1))
        await b.start()

        async def job():
            PRIORITY.set(BACKGROUND)
            return await b.submit([[1, 7, 7]] * 12)

        try:
            task = asyncio.ensure_future(job())
            await asyncio.sleep(0.015)
            await b.submit([[2, 7, 7]] * 4)  # this task's context: interactive
            await task
        finally:
            await b.stop()
        first_interactive = next(i for i, ids in enumerate(rec.batches) if 2 in ids)
        assert first_interactive < len(rec.batches) - 1  # it did not wait for all 3 background batches
        assert PRIORITY.get() == INTERACTIVE

    run(body())


def test_deadline_admission_does_not_count_background_work():
    async def body():
        rec = Recorder(seconds=0.01)
        b = DynamicBatcher("m", rec, BatcherConfig(max_batch_size=2, max_wait_ms=0, workers=1))
        await b.start()
        try:
            for _ in range(4):  # measure a rate
                await b.submit([[3, 7, 7]] * 2)
            job = asyncio.ensure_future(b.submit([[1, 7, 7]] * 2000, priority=BACKGROUND))
            await asyncio.sleep(0.01)
            # 2000 background sequences would take ~10 s at this rate: a 1 s deadline is still admitted
            out = await b.submit([[2, 7, 7]], timeout=1.0)
            assert out[0, 0] == 2
            job.cancel()
        finally:
            await b.stop()

    run(body())


def test_background_batches_are_small_and_wait_for_running_interactive_batches():
    async def body():
        rec = Recorder(seconds=0.02)
        b = DynamicBatcher("m", rec, BatcherConfig(max_batch_size=8, max_wait_ms=0, workers=3))
        assert b.config.background_size == 2 and b.config.background_slots == 2
        await b.start()
        try:
            interactive = asyncio.ensure_future(b.submit([[2, 7, 7]] * 8))
            await asyncio.sleep(0.005)  # its batch runs
            job = asyncio.ensure_future(b.submit([[1, 7, 7]] * 12, priority=BACKGROUND))
            await interactive
            await job
        finally:
            await b.stop()
        assert max(len(ids) for ids in rec.batches if 1 in ids) == 2
        assert [ids for ids in rec.batches if 2 in ids] == [[2] * 8]
        # no background batch started while the interactive one ran (nor ran beside it)
        assert not any(2 in a and 1 in o or 1 in a and 2 in o for a, o in rec.overlaps)

    run(body())
