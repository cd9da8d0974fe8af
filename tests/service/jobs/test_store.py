"""The SQLite job store: states change only along the allowed edges, a chunk's commit is one
transaction that a cancelled job refuses, claims hand out each job once, paging is stable."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from service.jobs.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job, SqliteJobStore


@pytest.fixture
def store(tmp_path):
    s = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def _job(i: int, owner: str | None = "a") -> Job:
    return Job(id=f"job{i}", kind="scan", task="promoter", params={"stride": 50, "model": None}, owner=owner,
               unit="windows")


def test_the_store_is_in_wal_mode_and_survives_reopening(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    s = SqliteJobStore(path)
    s.create(_job(1))
    s.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SqliteJobStore(path)
    job = again.get("job1")
    assert job is not None and job.params == {"stride": 50, "model": None} and job.state == QUEUED
    assert job.unit == "windows" and job.owner == "a" and job.seq == 1
    again.close()


def test_claim_takes_the_oldest_queued_job_once(store):
    for i in range(3):
        store.create(_job(i))
    first = store.claim()
    assert first.id == "job0" and first.state == RUNNING and first.attempts == 1 and first.started_at
    assert store.get("job0").state == RUNNING
    assert store.claim().id == "job1"


def test_concurrent_claims_never_hand_out_a_job_twice(store):
    for i in range(40):
        store.create(_job(i))
    got: list[str] = []
    lock = threading.Lock()

    def worker():
        while (job := store.claim()) is not None:
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"job{i}" for i in range(40))


def test_commit_records_progress_offsets_and_checkpoint_only_while_running(store):
    store.create(_job(1))
    assert not store.commit("job1", chunks=1, offsets=[10], done=5, total=9, checkpoint=b"x")  # queued
    store.claim()
    assert store.commit("job1", chunks=2, offsets=[10, 3], done=5, total=9, checkpoint=b"state")
    job = store.get("job1")
    assert (job.chunks, job.offsets, job.done, job.total, job.checkpoint) == (2, [10, 3], 5, 9, b"state")
    assert store.cancel("job1")
    assert not store.commit("job1", chunks=3, offsets=[20, 3], done=7, total=9, checkpoint=b"later")
    job = store.get("job1")
    assert job.state == CANCELLED and job.done == 5 and job.checkpoint is None and job.finished_at


def test_a_job_finishes_once(store):
    store.create(_job(1))
    store.create(_job(2))
    assert not store.finish("job1", SUCCEEDED, result={"bytes": 1})  # not running
    store.claim()
    assert store.finish("job1", FAILED, error={"code": "invalid_fasta", "message": "m", "line": 3})
    assert not store.finish("job1", SUCCEEDED)
    assert not store.cancel("job1")
    job = store.get("job1")
    assert job.state == FAILED and job.error == {"code": "invalid_fasta", "message": "m", "line": 3}
    with pytest.raises(ValueError):
        store.finish("job2", CANCELLED)


def test_requeue_puts_orphans_back_with_their_progress(store):
    store.create(_job(1))
    store.claim()
    store.commit("job1", chunks=4, offsets=[99], done=40, total=100, checkpoint=b"cp")
    assert store.requeue_orphans() == 1
    job = store.claim()
    assert job.id == "job1" and job.attempts == 2 and job.done == 40 and job.checkpoint == b"cp"


def test_listing_is_per_owner_newest_first_and_paged(store):
    for i in range(7):
        store.create(_job(i, owner="a" if i % 2 == 0 else "b"))
    mine = store.list("a", limit=10)
    assert [j.id for j in mine] == ["job6", "job4", "job2", "job0"]
    page1 = store.list("a", limit=2)
    page2 = store.list("a", limit=2, before=page1[-1].seq)
    assert [j.id for j in page1 + page2] == ["job6", "job4", "job2", "job0"]
    assert len(store.list(None, limit=100)) == 7
    assert store.delete("job6") and store.get("job6") is None and not store.delete("job6")
