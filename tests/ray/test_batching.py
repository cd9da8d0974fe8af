"""The replica's batcher wrappers without a cluster: remote errors come back as the service's
errors, and background (job) work goes to any replica while interactive work stays. (Ray's
``@serve.batch`` runs only inside a replica: the ``--batching serve`` deployment is checked on the
cluster, in ``test_cluster.py``.)"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.contract.errors import InferenceFailed, Overloaded, RequestTimeout
from service.runtime.batcher import BACKGROUND, PRIORITY, BatcherConfig, DynamicBatcher

pytest.importorskip("ray", reason="Ray Serve is not installed (the ray extra)")
from service.ray.batching import SpreadBatcher, pack_error, unpack  # noqa: E402


def _scores(batch):
    return np.array([[float(sum(seq)), float(len(seq))] for seq in batch])


def test_remote_errors_come_back_as_the_errors_the_job_runner_retries():
    with pytest.raises(Overloaded) as over:
        unpack(pack_error(Overloaded("full", retry_after=7)))
    assert over.value.retry_after == 7 and over.value.message == "full"
    with pytest.raises(Overloaded):
        unpack({"error": "NotReady", "message": "stopping", "retry_after": None})
    with pytest.raises(RequestTimeout):
        unpack(pack_error(RequestTimeout("late")))
    with pytest.raises(InferenceFailed):
        unpack({"error": "SomethingElse", "message": "x"})
    assert unpack([[1.0, 2.0]]).tolist() == [[1.0, 2.0]]


def test_background_work_goes_to_any_replica_and_interactive_work_stays():
    remote_calls = []

    async def remote(task, name, sequences, timeout):
        remote_calls.append((task, name, sequences, timeout))
        return _scores(sequences) * 10

    async def scenario():
        local = DynamicBatcher("promoter/m", _scores, BatcherConfig(max_wait_ms=0))
        await local.start()
        spread = SpreadBatcher(local, "promoter", "m", remote)
        try:
            interactive = await spread.submit([[1, 2], [3]], timeout=5)
            background = await spread.submit([[1, 2], [3]], timeout=5, priority=BACKGROUND)
            token = PRIORITY.set(BACKGROUND)  # what the job runner sets around a job
            try:
                by_context = await spread.submit([[4]])
            finally:
                PRIORITY.reset(token)
            assert spread.queue_depth == 0 and spread.name == "promoter/m"  # the rest is the local batcher's
        finally:
            await spread.stop()
        return interactive, background, by_context

    interactive, background, by_context = asyncio.run(scenario())
    assert interactive.tolist() == [[3.0, 2.0], [3.0, 1.0]]
    assert background.tolist() == [[30.0, 20.0], [30.0, 10.0]] and by_context.tolist() == [[40.0, 10.0]]
    assert remote_calls == [("promoter", "m", [[1, 2], [3]], 5), ("promoter", "m", [[4]], None)]
