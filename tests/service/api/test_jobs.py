"""``/jobs`` over HTTP: every kind's result is byte for byte what its synchronous endpoint
answers; gzip on request; parameters checked as the endpoint checks them; the upload limit;
cancel, delete and paging; each API key sees only its own jobs; the offline commands with
``--server``."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import random
import sqlite3

import pytest

from service.cli import main as cli_main
from tests.service.contract.test_variant_windows import fasta_bytes, genome, variant_vcf
from tests.service.robustness import (
    HAS_LNCRNA,
    ThreadedServer,
    assert_error,
    fasta,
    make_settings,
    needs_models,
    run,
    serving,
    small_models_dir,
)

pytestmark = needs_models
FASTA = {"Content-Type": "text/plain"}
RNG = random.Random(5)
RECORDS = [(f"r{i}", "".join(RNG.choices("ACGTN", weights=[25, 25, 25, 25, 1], k=RNG.randint(40, 500))))
           for i in range(300)] + [("rna", "ACGUACGUNNNNacgu" * 5), ("all_n", "NNNNNNNN")]
GENOME = [("chr3:20001-46000", "".join(RNG.choices("ACGT", k=26_000))), ("short", "ACGTTGCAAC" * 7)]
SHORT = [(f"s{i}", "".join(RNG.choices("ACGT", k=RNG.randint(30, 90)))) for i in range(5)]
CONTIGS = genome()
VARIANT_FILES = {"vcf": ("calls.vcf", variant_vcf(CONTIGS), "text/plain"),
                 "reference": ("ref.fa.gz", gzip.compress(fasta_bytes(CONTIGS)), "application/gzip")}


def _settings(tmp_path, **extra):
    return make_settings(small_models_dir(tmp_path, "base", lncrna=True), jobs_dir=tmp_path / "jobs", **extra)


def assert_close(a, b, path: str = "") -> None:
    """The same JSON document, numbers to 1e-6 (a model whose kernels depend on the batch)."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, path
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= 1e-6, (path, a, b)
    else:
        assert a == b, path


async def finished(client, url: str, headers: dict | None = None) -> dict:
    for _ in range(2400):
        job = (await client.get(url, headers=headers)).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"the job did not finish: {job}")


async def job_and_sync(client, kind: str, path: str, params: dict, **body) -> tuple[dict, bytes, object]:
    r = await client.post("/jobs", params={"kind": kind, **params}, **body)
    assert r.status_code == 202, r.text
    assert set(r.json()) == {"id", "url"} and r.headers["location"] == r.json()["url"]
    job = await finished(client, r.json()["url"])
    assert job["state"] == "succeeded", job
    result = await client.get(job["result"]["url"])
    sync = await client.post(path, params={k: v for k, v in params.items() if k != "task"}, **body)
    assert sync.status_code == 200, sync.text[:300]
    assert result.headers["content-type"] == sync.headers["content-type"]
    return job, result.content, sync.content


CASES = [
    ("predict", "/predict/promoter", {"format": "json"}, {"content": fasta(RECORDS), "headers": FASTA}),
    ("predict", "/predict/promoter", {"format": "CSV", "threshold": 0.3},
     {"content": gzip.compress(fasta(RECORDS)), "headers": {**FASTA, "Content-Encoding": "gzip"}}),
    ("predict", "/predict/promoter", {"format": "tsv"}, {"files": {"file": ("x.fa.gz", gzip.compress(fasta(RECORDS)))}}),
    ("scan", "/scan/promoter", {"format": "json", "stride": 60}, {"content": fasta(GENOME), "headers": FASTA}),
    ("scan", "/scan/promoter", {"format": "bedgraph", "stride": 60}, {"content": fasta(GENOME), "headers": FASTA}),
    ("scan", "/scan/promoter", {"format": "bed", "threshold": 0.2}, {"content": fasta(GENOME), "headers": FASTA}),
    ("scan", "/scan/promoter", {"format": "ndjson", "strand": "-", "stride": 90},
     {"content": fasta(GENOME), "headers": FASTA}),
    ("variants", "/variants/promoter", {"format": "json"}, {"files": VARIANT_FILES}),
    ("variants", "/variants/promoter", {"format": "tsv", "strand": "+"}, {"files": VARIANT_FILES}),
    ("variants", "/variants/promoter", {"format": "vcf"}, {"files": VARIANT_FILES}),
    ("explain", "/explain/promoter", {"format": "json"}, {"content": fasta(SHORT), "headers": FASTA}),
    ("explain", "/explain/promoter", {"format": "bedgraph"}, {"content": fasta(SHORT), "headers": FASTA}),
    ("explain", "/explain/promoter", {"format": "png"}, {"content": fasta(SHORT[:1]), "headers": FASTA}),
]


def test_every_kinds_result_is_its_endpoints_answer_byte_for_byte(tmp_path):
    async def body():
        async with serving(_settings(tmp_path)) as client:
            out = []
            for kind, path, params, data in CASES:
                job, result, sync = await job_and_sync(client, kind, path, params, **data)
                out.append((kind, params, job, result, sync))
            if HAS_LNCRNA:
                lnc = [(f"l{i}", s) for i, (_, s) in enumerate(RECORDS[:40])]
                for kind, path in (("predict", "/predict/lncrna-localization"),
                                   ("explain", "/explain/lncrna-localization")):
                    params = {"task": "lncrna-localization", "format": "json"}
                    data = lnc if kind == "predict" else [(i, s[:60]) for i, s in lnc[:2]]
                    job, result, sync = await job_and_sync(client, kind, path, params, content=fasta(data),
                                                           headers=FASTA)
                    out.append((kind, params, job, result, sync))
            return out

    for kind, params, job, result, sync in run(body()):
        if params.get("task") == "lncrna-localization":  # see docs/jobs.md, "Identical results"
            assert_close(json.loads(result), json.loads(sync))
        else:
            assert result == sync, (kind, params)
        assert job["progress"]["done"] == job["progress"]["total"] > 0
        assert job["result"]["bytes"] == len(result)
        assert job["params"].get("format") == params["format"].lower()


def test_gzip_on_request_and_the_job_description(tmp_path):
    async def body():
        async with serving(_settings(tmp_path)) as client:
            r = await client.post("/jobs", params={"kind": "scan", "stride": 80}, content=fasta(GENOME), headers=FASTA)
            job = await finished(client, r.json()["url"])
            url = job["result"]["url"]
            async with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as resp:
                raw = b"".join([chunk async for chunk in resp.aiter_raw()])
                headers = resp.headers
            plain = await client.get(url, headers={"Accept-Encoding": "identity"})
            return job, headers, raw, plain

    job, headers, raw, plain = run(body())
    assert headers["content-encoding"] == "gzip" and "accept-encoding" in headers["vary"].lower()
    assert gzip.decompress(raw) == plain.content and "content-encoding" not in plain.headers
    assert job["kind"] == "scan" and job["task"] == "promoter" and job["state"] == "succeeded"
    assert job["progress"]["unit"] == "windows" and job["attempts"] == 1
    assert job["params"]["stride"] == 80 and job["params"]["strand"] == "both"  # the endpoint's defaults
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert job["error"] is None and job["result"]["media_type"] == "application/json"


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"kind": "dance"}, 422, "invalid_parameter"),
    ({"kind": "finetune"}, 422, "invalid_parameter"),
    ({"kind": "scan", "task": "lncrna-localization"}, 404, "not_found"),
    ({"kind": "scan", "strid": 5}, 422, "invalid_parameter"),
    ({"kind": "scan", "stride": 0}, 422, "invalid_parameter"),
    ({"kind": "scan", "strand": "up"}, 422, "invalid_parameter"),
    ({"kind": "scan", "format": "xlsx"}, 406, "unsupported_format"),
    ({"kind": "predict", "model": "nope"}, 404, "model_not_found"),
    ({"kind": "explain", "format": "gif"}, 406, "unsupported_format"),
])
def test_parameters_are_checked_as_the_endpoint_checks_them(tmp_path, params, status, code):
    async def body():
        async with serving(_settings(tmp_path)) as client:
            return await client.post("/jobs", params=params, content=fasta(SHORT), headers=FASTA)

    assert_error(run(body()), status, code)
    assert not any((tmp_path / "jobs").glob("*/input"))


def test_bad_bodies_and_the_upload_limit(tmp_path):
    async def body():
        async with serving(_settings(tmp_path, job_max_upload_bytes=4096)) as client:
            big = await client.post("/jobs", params={"kind": "predict"}, content=b">a\n" + b"A" * 5000,
                                    headers=FASTA)
            bomb = await client.post("/jobs", params={"kind": "predict"}, headers=FASTA,
                                     content=gzip.compress(b">a\n" + b"ACGT" * 5000))
            json_body = await client.post("/jobs", params={"kind": "predict"}, json={"sequences": []})
            no_file = await client.post("/jobs", params={"kind": "predict"}, files={"other": ("x", b">a\nAC\n")})
            broken = await client.post("/jobs", params={"kind": "predict"}, headers=FASTA,
                                       content=gzip.compress(b">a\nACGT\n" * 100)[:-9])
            return big, bomb, json_body, no_file, broken

    big, bomb, json_body, no_file, broken = run(body())
    assert_error(big, 413, "payload_too_large")
    assert_error(bomb, 413, "payload_too_large")
    assert_error(json_body, 415, "unsupported_media_type")
    assert_error(no_file, 400, "empty_input")
    assert_error(broken, 400, "invalid_fasta")
    folders = [p.name for p in (tmp_path / "jobs").iterdir() if p.is_dir()]
    assert folders == []  # nothing is left of the refused uploads


def test_cancel_delete_and_paging(tmp_path):
    long = fasta([("chr1:1-400000", "".join(RNG.choices("ACGT", k=400_000)))])

    async def body():
        async with serving(_settings(tmp_path)) as client:
            r = await client.post("/jobs", params={"kind": "scan", "stride": 10}, content=long, headers=FASTA)
            url = r.json()["url"]
            for _ in range(400):
                if (await client.get(url)).json()["progress"]["done"] > 0:
                    break
                await asyncio.sleep(0.05)
            cancelled = await client.delete(url)
            after = await client.get(url)
            result = await client.get(url + "/result")
            removed = await client.delete(url)
            gone = await client.get(url)
            ids = []
            for i in range(5):
                s = await client.post("/jobs", params={"kind": "predict"}, content=fasta(SHORT[i:i + 1]),
                                      headers=FASTA)
                ids.append(s.json()["id"])
            for i in ids:
                await finished(client, f"/jobs/{i}")
            pages, link = [], "/jobs?limit=2"
            while link:
                page = (await client.get(link)).json()
                pages.append([j["id"] for j in page["jobs"]])
                link = page["next"]
            done = await client.delete(f"/jobs/{ids[0]}")
            return cancelled, after, result, removed, gone, ids, pages, done, r.json()["id"]

    cancelled, after, result, removed, gone, ids, pages, done, first = run(body())
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert after.json()["state"] == "cancelled" and 0 < after.json()["progress"]["done"]
    assert_error(result, 409, "job_not_finished")
    assert removed.status_code == 204 and gone.status_code == 404
    assert not (tmp_path / "jobs" / first).exists()
    assert pages == [ids[::-1][0:2], ids[::-1][2:4], ids[::-1][4:5]]
    assert done.status_code == 204 and not (tmp_path / "jobs" / ids[0]).exists()


def test_each_key_sees_only_its_own_jobs(tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# lab keys\nkey-carol\n")

    async def body():
        async with serving(_settings(tmp_path, api_key="key-alice,key-bob", api_keys_file=keys_file)) as client:
            alice, bob, carol = ({"Authorization": f"Bearer key-{n}"} for n in ("alice", "bob", "carol"))
            r = await client.post("/jobs", params={"kind": "predict"}, content=fasta(SHORT), headers={**FASTA, **alice})
            url = r.json()["url"]
            job = await finished(client, url, alice)
            mine = (await client.get("/jobs", headers=alice)).json()["jobs"]
            theirs = [await client.get(url, headers=bob), await client.get(url + "/result", headers=carol),
                      await client.delete(url, headers=bob)]
            lists = [(await client.get("/jobs", headers=h)).json()["jobs"] for h in (bob, carol)]
            anonymous = await client.get(url)
            carol_job = await client.post("/jobs", params={"kind": "predict"}, content=fasta(SHORT),
                                          headers={**FASTA, **carol})
            still = await client.get(url + "/result", headers=alice)
            return job, mine, theirs, lists, anonymous, carol_job, still

    job, mine, theirs, lists, anonymous, carol_job, still = run(body())
    assert job["state"] == "succeeded" and [j["id"] for j in mine] == [job["id"]]
    for resp in theirs:
        assert_error(resp, 404, "not_found")
    assert lists == [[], []]
    assert_error(anonymous, 401, "unauthorized")
    assert carol_job.status_code == 202 and still.status_code == 200
    with sqlite3.connect(tmp_path / "jobs" / "jobs.sqlite3") as db:
        owners = {row[0] for row in db.execute("SELECT owner FROM jobs")}
    assert owners == {hashlib.sha256(k.encode()).hexdigest() for k in ("key-alice", "key-carol")}


def test_jobs_answer_503_where_the_jobs_folder_cannot_be_written(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")

    async def body():
        async with serving(make_settings(small_models_dir(tmp_path, "base"), jobs_dir=blocker / "jobs")) as client:
            return await client.post("/jobs", params={"kind": "predict"}, content=fasta(SHORT), headers=FASTA), \
                await client.get("/jobs")

    post, listing = run(body())
    assert_error(post, 503, "jobs_unavailable")
    assert_error(listing, 503, "jobs_unavailable")
    assert str(blocker) not in post.text


def test_the_offline_commands_run_on_a_server(tmp_path, capsys):
    data = tmp_path / "in.fa.gz"
    data.write_bytes(gzip.compress(fasta(RECORDS[:60])))
    genome_file = tmp_path / "genome.fa"
    genome_file.write_bytes(fasta(GENOME))
    with ThreadedServer(_settings(tmp_path, api_key="k")) as server:
        base = ["--server", server.base, "--api-key", "k", "--quiet"]
        assert cli_main(["predict", str(data), "--task", "promoter", "-o", str(tmp_path / "p.tsv"), *base]) == 0
        assert cli_main(["scan", str(genome_file), "--stride", "70", "--format", "bed", *base]) == 0
        scanned = capsys.readouterr().out
        assert cli_main(["predict", str(data), "--task", "promoter", "--model", "nope", *base]) == 2
        error = capsys.readouterr().err
        import httpx

        with httpx.Client(base_url=server.base, headers={"Authorization": "Bearer k"}, timeout=60) as client:
            sync_tsv = client.post("/predict/promoter", params={"format": "tsv"}, content=data.read_bytes(),
                                   headers=FASTA).content
            sync_bed = client.post("/scan/promoter", params={"format": "bed", "stride": 70},
                                   content=genome_file.read_bytes(), headers=FASTA).text
    assert (tmp_path / "p.tsv").read_bytes() == sync_tsv
    assert scanned == sync_bed
    assert "model_not_found" in error and "nope" in error
    assert not (tmp_path / "p.tsv.part").exists()
