"""The runner in process: a stopped server's job resumes from its last committed chunk (bytes
written after that commit are cut off) and ends byte-identical to the synchronous answer; a bad
record fails the job before anything is scored; a job stopped after its last chunk but before
its result was put in place is finished by the next process."""

from __future__ import annotations

import asyncio
import random

from service.jobs.runner import JobRunner, Parts
from service.jobs.store import SqliteJobStore
from tests.service.robustness import fasta, make_settings, needs_models, run, serving, small_models_dir

pytestmark = needs_models
FASTA = {"Content-Type": "text/plain"}


def _genome(n: int, seed: int = 11) -> bytes:
    rng = random.Random(seed)
    return fasta([(f"chr{i + 1}:1-{n}", "".join(rng.choices("ACGT", k=n))) for i in range(2)])


def _settings(tmp_path, **extra):
    return make_settings(small_models_dir(tmp_path, "base"), jobs_dir=tmp_path / "jobs", **extra)


async def _wait(client, url: str, until) -> dict:
    for _ in range(1200):
        job = (await client.get(url)).json()
        if until(job):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job never got there: {job}")


def test_a_stopped_job_resumes_from_its_last_chunk_and_ends_byte_identical(tmp_path):
    body = _genome(30_000)
    params = {"stride": 40, "format": "json"}

    async def first_run() -> tuple[str, int]:
        async with serving(_settings(tmp_path)) as client:
            r = await client.post("/jobs", params={"kind": "scan", **params}, content=body, headers=FASTA)
            assert r.status_code == 202, r.text
            job = await _wait(client, r.json()["url"], lambda j: j["progress"]["done"] > 0)
            assert job["state"] == "running" and job["progress"]["done"] < job["progress"]["total"]
            return r.json()["id"], job["progress"]["total"]
        # leaving the block stops the server: the job stays 'running' with its last checkpoint

    job_id, total = run(first_run())
    store = SqliteJobStore(tmp_path / "jobs" / "jobs.sqlite3")
    stopped = store.get(job_id)
    store.close()
    assert stopped.state == "running" and 0 < stopped.done < total and stopped.checkpoint
    part = tmp_path / "jobs" / job_id / "part.0"
    assert part.stat().st_size >= stopped.offsets[0]
    with part.open("ab") as f:  # a chunk half-written when the process died
        f.write(b'{"start":999999,"end":')

    async def second_run() -> tuple[dict, bytes, bytes]:
        async with serving(_settings(tmp_path)) as client:
            job = await _wait(client, f"/jobs/{job_id}", lambda j: j["state"] in ("succeeded", "failed"))
            result = (await client.get(f"/jobs/{job_id}/result")).content
            sync = await client.post("/scan/promoter", params=params, content=body, headers=FASTA)
            assert sync.status_code == 200
            return job, result, sync.content

    job, result, sync = run(second_run())
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    assert job["progress"] == {"done": total, "total": total, "unit": "windows"}
    assert result == sync
    leftovers = sorted(p.name for p in (tmp_path / "jobs" / job_id).iterdir())
    assert leftovers == ["result"]  # input and result streams are gone


def test_a_bad_record_fails_the_job_before_anything_is_scored(tmp_path):
    good = fasta([(f"r{i}", "ACGT" * 30) for i in range(300)])
    body = good + b">bad\nACGTACGT\nACGXQ\n"

    async def body_():
        async with serving(_settings(tmp_path)) as client:
            r = await client.post("/jobs", params={"kind": "predict"}, content=body, headers=FASTA)
            job = await _wait(client, r.json()["url"], lambda j: j["state"] in ("succeeded", "failed"))
            sync = await client.post("/predict/promoter", content=body, headers=FASTA)
            return job, sync.json()["error"], (await client.get(r.json()["url"] + "/result"))

    job, sync_error, result = run(body_())
    assert job["state"] == "failed" and job["progress"]["done"] == 0
    assert job["error"] == {k: v for k, v in sync_error.items() if k != "request_id"}
    assert job["error"]["line"] == 903 and job["error"]["record_id"] == "bad"
    assert result.status_code == 409 and result.json()["error"]["code"] == "job_not_finished"


def test_a_job_stopped_before_its_result_was_put_in_place_is_finished_next_time(tmp_path, monkeypatch):
    body = fasta([(f"r{i}", "ACGTTGCA" * 20) for i in range(50)])

    async def never(self, job, work, parts):
        await asyncio.Event().wait()

    async def first_run() -> str:
        with monkeypatch.context() as m:
            m.setattr(JobRunner, "_succeed", never)
            async with serving(_settings(tmp_path)) as client:
                r = await client.post("/jobs", params={"kind": "predict", "format": "tsv"}, content=body,
                                      headers=FASTA)
                job_id = r.json()["id"]
                await _wait(client, f"/jobs/{job_id}", lambda j: j["progress"]["done"] == 50)
                await asyncio.sleep(0.2)
                return job_id

    job_id = run(first_run())
    assert not (tmp_path / "jobs" / job_id / "result").exists()

    async def second_run():
        async with serving(_settings(tmp_path)) as client:
            job = await _wait(client, f"/jobs/{job_id}", lambda j: j["state"] == "succeeded")
            result = await client.get(f"/jobs/{job_id}/result")
            sync = await client.post("/predict/promoter", params={"format": "tsv"}, content=body, headers=FASTA)
            return job, result.content, sync.content

    job, result, sync = run(second_run())
    assert job["attempts"] == 2 and result == sync


def test_result_streams_are_cut_back_and_joined_atomically(tmp_path):
    parts = Parts(tmp_path, 2)
    parts.open(None)
    parts.append(["head,", "later1;"])
    committed = parts.sync()
    parts.append(["half-written", "x"])
    parts.close()
    again = Parts(tmp_path, 2)
    again.open(committed)
    again.append(["tail", "later2"])
    again.sync()
    assert not (tmp_path / "result").exists()
    size = again.assemble(tmp_path / "result")
    assert (tmp_path / "result").read_bytes() == b"head,taillater1;later2" and size == 22
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
