"""Many clients at once against the ASGI app: no record lost or mixed, scores independent of the
batch a sequence lands in, and overload answered with 429 while the service keeps serving.

Everything runs in-process (httpx.AsyncClient over ASGITransport, one event loop per test) on the
model folders in ``DNABERT_TEST_MODELS_DIR`` (default: the repository's ``models/``). The expected
scores are never hard-coded: they come from the offline path (:func:`service.cli.predict_file`)
or from the same sequence sent alone.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

MODELS_DIR = Path(os.environ.get("DNABERT_TEST_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))
if not (MODELS_DIR / "promoter").is_dir():
    pytest.skip(f"no promoter models in {MODELS_DIR} (set DNABERT_TEST_MODELS_DIR)", allow_module_level=True)
HAS_LNCRNA = (MODELS_DIR / "lncrna-localization").is_dir()

import httpx  # noqa: E402

from service.api.app import create_app  # noqa: E402
from service.cli import predict_file  # noqa: E402
from service.contract.tasks import TASKS  # noqa: E402
from service.runtime.inference import InferenceService  # noqa: E402
from service.settings import Settings  # noqa: E402

PROMOTER = "promoter"
LNCRNA = "lncrna-localization"
LNCRNA_LABELS = ("nucleus", "cytoplasm", "extracellular_vesicle")
TEST_TIMEOUT = 120.0
FORMS = ("multipart", "multipart_gzip", "raw", "raw_gzip", "x-fasta", "json")


def make_settings(**overrides) -> Settings:
    """Small batches and one ONNX thread per session: the tests share the CPU with other work."""
    values = dict(models_dir=MODELS_DIR, max_wait_ms=5, max_batch_size=32, intra_op_threads=1,
                  tokenizer_threads=1, request_timeout_s=120.0,
                  default_promoter_model=TASKS["promoter"].default_model)  # one variant, whatever task.json says
    values.update(overrides)
    return Settings(**values)


def run(coro):
    """Run one test coroutine with a hard ceiling, so a bug fails the test instead of hanging."""
    async def guarded():
        return await asyncio.wait_for(coro, TEST_TIMEOUT)
    return asyncio.run(guarded())


# -- inputs -------------------------------------------------------------------------------------

def random_sequence(rng: random.Random, length: int) -> str:
    """DNA of ``length`` nt; some lowercase, some written as RNA (U), some with N / IUPAC codes."""
    seq = rng.choices("ACGT", k=length)
    kind = rng.random()
    if kind < 0.15:
        for _ in range(rng.randint(1, 5)):
            seq[rng.randrange(length)] = rng.choice("NNNRY")
    text = "".join(seq)
    if 0.15 <= kind < 0.3:
        text = text.replace("T", "U")
    elif 0.3 <= kind < 0.45:
        text = text.lower()
    return text


def make_records(rng: random.Random, prefix: str, n: int, lo: int, hi: int,
                 log_uniform: bool = False) -> list[tuple[str, str]]:
    records = []
    for i in range(n):
        if log_uniform:
            length = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        else:
            length = rng.randint(lo, hi)
        records.append((f"{prefix}_{i}", random_sequence(rng, length)))
    return records


def to_fasta(records: list[tuple[str, str]], width: int = 60) -> bytes:
    lines = []
    for rid, seq in records:
        lines.append(f">{rid} test record of {len(seq)} nt")
        lines.extend(seq[i : i + width] for i in range(0, len(seq), width))
    return ("\n".join(lines) + "\n").encode()


def path_of(task: str) -> str:
    return f"/predict/{task}"


async def post(client: httpx.AsyncClient, task: str, model: str | None, records: list[tuple[str, str]],
               form: str = "raw", fmt: str = "json") -> httpx.Response:
    params = {}
    if model is not None:
        params["model"] = model
    headers = {}
    if fmt != "json":
        if len(records) % 2:  # both ways of asking for a table
            params["format"] = fmt
        else:
            headers["Accept"] = "text/csv" if fmt == "csv" else "text/tab-separated-values"
    fasta = to_fasta(records)
    url = path_of(task)
    if form == "multipart":
        return await client.post(url, params=params, headers=headers,
                                 files={"file": ("upload.fasta", fasta, "text/x-fasta")})
    if form == "multipart_gzip":
        return await client.post(url, params=params, headers=headers,
                                 files={"file": ("upload.fa.gz", gzip.compress(fasta), "application/gzip")})
    if form == "raw":
        return await client.post(url, params=params, content=fasta,
                                 headers={**headers, "Content-Type": "text/plain"})
    if form == "raw_gzip":
        return await client.post(url, params=params, content=gzip.compress(fasta),
                                 headers={**headers, "Content-Type": "text/plain", "Content-Encoding": "gzip"})
    if form == "x-fasta":
        return await client.post(url, params=params, content=fasta,
                                 headers={**headers, "Content-Type": "text/x-fasta"})
    if form == "json":
        body = json.dumps({"sequences": [{"id": rid, "sequence": seq} for rid, seq in records]})
        return await client.post(url, params=params, content=body,
                                 headers={**headers, "Content-Type": "application/json"})
    raise AssertionError(form)


# -- outputs: one shape for JSON, CSV and TSV, and for the offline results -----------------------

@dataclass
class Row:
    id: str
    length: int
    scores: dict[str, float]  # promoter: probability (+ p_<variant>); lncRNA: the three labels
    flags: list[str]
    ambiguous_bases: int


def rows_from_results(task: str, results: list[dict]) -> list[Row]:
    rows = []
    for r in results:
        if task == PROMOTER:
            scores = {"probability": r["probability"]}
            for v, p in (r.get("variant_probabilities") or {}).items():
                scores[f"p_{v}"] = p
        else:
            scores = dict(r["scores"])
        rows.append(Row(r["id"], r["length"], scores, list(r["flags"]), r["ambiguous_bases"]))
    return rows


def rows_from_response(task: str, response: httpx.Response, fmt: str) -> list[Row]:
    if fmt == "json":
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["count"] == len(body["results"])
        return rows_from_results(task, body["results"])
    media = "text/csv" if fmt == "csv" else "text/tab-separated-values"
    assert response.headers["content-type"].startswith(media)
    reader = csv.DictReader(io.StringIO(response.text), delimiter="," if fmt == "csv" else "\t")
    rows = []
    for rec in reader:
        if task == PROMOTER:
            scores = {"probability": float(rec["probability"])}
            scores.update({k: float(v) for k, v in rec.items() if k.startswith("p_")})
        else:
            scores = {k: float(rec[k]) for k in LNCRNA_LABELS}
        flags = rec["flags"].split(";") if rec["flags"] else []
        rows.append(Row(rec["id"], int(rec["length"]), scores, flags, int(rec["ambiguous_bases"])))
    return rows


def assert_same_rows(got: list[Row], want: list[Row], tol: float, what: str) -> None:
    assert [r.id for r in got] == [r.id for r in want], f"{what}: ids, order or count differ"
    for g, w in zip(got, want):
        assert g.length == w.length, f"{what}: {g.id}: length"
        assert sorted(g.flags) == sorted(w.flags), f"{what}: {g.id}: flags"
        assert g.ambiguous_bases == w.ambiguous_bases, f"{what}: {g.id}: ambiguous_bases"
        assert set(g.scores) == set(w.scores), f"{what}: {g.id}: score columns {sorted(g.scores)}"
        for k in w.scores:
            assert abs(g.scores[k] - w.scores[k]) <= tol, (
                f"{what}: {g.id}: {k} = {g.scores[k]!r}, expected {w.scores[k]!r} (tolerance {tol})")


async def offline_reference(tmp_path: Path, task: str, model: str | None,
                            records: list[tuple[str, str]], settings: Settings) -> dict[str, Row]:
    """Scores of the offline path (``dnabert-serve predict``'s own function) for these records."""
    path = tmp_path / f"reference-{task}-{model or 'default'}.fasta"
    path.write_bytes(to_fasta(records))
    result = await predict_file(path, task, model, settings, progress=False)
    rows = rows_from_results(task, result.model_dump(mode="json")["results"])
    assert [r.id for r in rows] == [rid for rid, _ in records]
    return {r.id: r for r in rows}


def endpoints() -> list[tuple[str, str | None]]:
    found = [(PROMOTER, None), (PROMOTER, "all")]
    if HAS_LNCRNA:
        found.append((LNCRNA, None))
    return found


def asgi_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                             timeout=TEST_TIMEOUT)


# -- a. many different uploads at once -------------------------------------------------------------

@dataclass
class Client:
    name: str
    task: str
    model: str | None
    form: str
    fmt: str
    records: list[tuple[str, str]]


def test_concurrent_clients_get_exactly_their_own_records(tmp_path):
    rng = random.Random(1234)
    eps = endpoints()
    clients = []
    for c in range(40):
        task, model = eps[c % len(eps)]
        n = rng.randint(1, 60)
        clients.append(Client(f"client{c}", task, model, FORMS[c % len(FORMS)],
                              rng.choice(("json", "json", "csv", "tsv")),
                              make_records(rng, f"c{c:02d}", n, 50, 600)))
    rng.shuffle(clients)  # arrival order unrelated to endpoint or form
    settings = make_settings()

    async def main():
        reference: dict[tuple[str, str | None], dict[str, Row]] = {}
        for task, model in eps:  # one offline run per endpoint over the union of its clients' records
            records = [r for cl in clients if (cl.task, cl.model) == (task, model) for r in cl.records]
            reference[(task, model)] = await offline_reference(tmp_path, task, model, records, settings)

        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with asgi_client(app) as client:
                start = asyncio.Event()

                async def one(cl: Client):
                    await start.wait()  # every client posts in the same instant
                    return await post(client, cl.task, cl.model, cl.records, cl.form, cl.fmt)

                tasks = [asyncio.create_task(one(cl)) for cl in clients]
                await asyncio.sleep(0)
                start.set()
                responses = await asyncio.gather(*tasks)
                metrics = (await client.get("/metrics")).text
        return reference, responses, metrics

    reference, responses, metrics = run(main())
    for cl, response in zip(clients, responses):
        what = f"{cl.name} ({cl.task}, model={cl.model}, {cl.form}, {cl.fmt}, {len(cl.records)} records)"
        assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"
        got = rows_from_response(cl.task, response, cl.fmt)
        want = [reference[(cl.task, cl.model)][rid] for rid, _ in cl.records]
        assert_same_rows(got, want, 1e-6, what)
        if cl.task == PROMOTER and cl.model == "all":
            variants = [k for k in got[0].scores if k.startswith("p_")]
            assert len(variants) >= 2, f"{what}: no per-variant probabilities"
    # the sequences of different requests really did share batches
    sizes = [float(m) for m in re.findall(r'^dnabert_batch_size_sum\{model="promoter/[^"]+"\} (\S+)$',
                                          metrics, re.M)]
    counts = [float(m) for m in re.findall(r'^dnabert_batch_size_count\{model="promoter/[^"]+"\} (\S+)$',
                                           metrics, re.M)]
    assert sum(sizes) > 0 and sum(sizes) / sum(counts) > 1.0


# -- b. a score does not depend on the batch ---------------------------------------------------------

CASES = [
    pytest.param(PROMOTER, None, 300, id="promoter-default"),
    pytest.param(PROMOTER, "all", 80, id="promoter-all"),
    pytest.param(LNCRNA, None, 300, id="lncrna",
                 marks=pytest.mark.skipif(not HAS_LNCRNA, reason="no lncRNA model")),
]


@pytest.mark.parametrize(("task", "model", "n_big"), CASES)
def test_score_alone_equals_score_inside_large_mixed_upload(task, model, n_big):
    rng = random.Random(f"{task}-{model}-{n_big}")
    big = make_records(rng, "bulk", n_big, 20, 3000, log_uniform=True)
    probes = [(f"probe_{length}", random_sequence(rng, length)) for length in (35, 180, 700, 2600)]
    for probe in probes:
        big.insert(rng.randrange(len(big) + 1), probe)
    settings = make_settings()

    async def main():
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with asgi_client(app) as client:
                alone = []
                for probe in probes:
                    r = await post(client, task, model, [probe], "raw")
                    assert r.status_code == 200, r.text
                    alone.append(r)
                inside = await post(client, task, model, big, "multipart")
                assert inside.status_code == 200, inside.text[:300]
        return alone, inside

    alone, inside = run(main())
    rows = rows_from_response(task, inside, "json")
    assert [r.id for r in rows] == [rid for rid, _ in big]
    by_id = {r.id: r for r in rows}
    for response in alone:
        (single,) = rows_from_response(task, response, "json")
        assert_same_rows([by_id[single.id]], [single], 1e-5, f"{single.id} inside {len(big)} records")
    if model == "all":
        assert len([k for k in rows[0].scores if k.startswith("p_")]) >= 2


# -- c. overload -----------------------------------------------------------------------------------

def test_overload_answers_429_and_keeps_serving(tmp_path):
    rng = random.Random(99)
    settings = make_settings(max_queue=50, max_batch_size=8)
    uploads = [make_records(rng, f"load{i}", 45, 50, 300) for i in range(6)]
    after = make_records(rng, "after", 3, 50, 300)
    slow = {"on": False}
    real_runner = InferenceService.batch_runner

    def slow_runner(model):
        run_batch = real_runner(model)

        def slowed(batch):
            if slow["on"]:
                time.sleep(0.2)
            return run_batch(batch)

        return slowed

    async def main():
        reference = await offline_reference(
            tmp_path, PROMOTER, None, [r for up in uploads for r in up] + after, make_settings())
        app = create_app(settings)
        # the app's service only: its batchers get the slowed-down run function
        app.state.service.batch_runner = slow_runner
        async with app.router.lifespan_context(app):
            slow["on"] = True
            async with asgi_client(app) as client:
                responses = await asyncio.gather(*(post(client, PROMOTER, None, up) for up in uploads))
                svc = app.state.service
                assert all(lm.batcher.queue_depth == 0 for lm in svc.models.values())
                later = await post(client, PROMOTER, None, after)
                metrics = (await client.get("/metrics")).text
                model = settings.default_promoter_model
        return reference, responses, later, metrics, model

    reference, responses, later, metrics, model = run(main())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert 429 in statuses and 200 in statuses, statuses
    for up, response in zip(uploads, responses):
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "overloaded"
        else:
            got = rows_from_response(PROMOTER, response, "json")
            assert_same_rows(got, [reference[rid] for rid, _ in up], 1e-6, up[0][0])
    assert later.status_code == 200, later.text
    assert_same_rows(rows_from_response(PROMOTER, later, "json"), [reference[rid] for rid, _ in after],
                     1e-6, "request after the overload")

    def counter(name: str, labels: str) -> float:
        m = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", metrics, re.M)
        return float(m.group(1)) if m else 0.0

    n429 = statuses.count(429)
    assert counter("dnabert_requests_total", f'endpoint="promoter",model="{model}",status="429"') == n429
    assert counter("dnabert_requests_total", f'endpoint="promoter",model="{model}",status="200"') == (
        statuses.count(200) + 1)
    assert counter("dnabert_rejected_requests_total", 'endpoint="promoter",reason="overloaded"') == n429


def test_model_all_refused_by_one_variant_leaves_no_work_on_the_others():
    rng = random.Random(7)
    settings = make_settings(max_queue=50, max_batch_size=8)
    fill = make_records(rng, "fill", 45, 50, 200)
    probe = make_records(rng, "all", 45, 50, 200)
    ran: dict[str, int] = {}
    slow = {"on": False}
    real_runner = InferenceService.batch_runner

    def counting_runner(model):
        run_batch = real_runner(model)
        name = model.folder.name

        def counted(batch):
            if slow["on"]:
                ran[name] = ran.get(name, 0) + len(batch)
                time.sleep(0.2)
            return run_batch(batch)

        return counted

    async def main():
        app = create_app(settings)
        app.state.service.batch_runner = counting_runner
        async with app.router.lifespan_context(app):
            slow["on"] = True
            svc = app.state.service
            async with asgi_client(app) as client:
                # fill the default variant's queue, then ask every variant for 45 more sequences
                busy = asyncio.create_task(post(client, PROMOTER, None, fill))
                while svc.models[(PROMOTER, settings.default_promoter_model)].batcher.queue_depth == 0:
                    await asyncio.sleep(0.005)
                refused = await post(client, PROMOTER, "all", probe)
                assert (await busy).status_code == 200
                # let whatever was left queued on the other variants run out
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and any(
                        lm.batcher.queue_depth or lm.batcher._inflight for lm in svc.models.values()):
                    await asyncio.sleep(0.05)
        return refused

    refused = run(main())
    assert refused.status_code == 429, refused.text
    others = [v for v in ran if v != settings.default_promoter_model]
    assert others, ran
    # at most the batches (one per worker) a scheduler may already have cut before the refusal
    # was known
    assert all(ran[v] <= settings.max_batch_size * settings.workers for v in others), ran
