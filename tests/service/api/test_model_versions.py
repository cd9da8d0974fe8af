"""Model versions (``<task>/<name>/<N>/``) and ``POST /models/reload``: versions listed and
selectable with ``name@N``; a reload under steady load swaps in the new version with no failed
request; a broken version is refused and reported while the old one goes on serving."""

from __future__ import annotations

import asyncio
import shutil

from tests.service.robustness import (
    FASTA,
    MODELS_DIR,
    fasta,
    make_settings,
    needs_models,
    no_leak,
    run,
    serving,
)

pytestmark = needs_models
BODY = fasta([(f"s{i}", "TTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC" * (i + 2)) for i in range(4)])


def _models(tmp_path):
    root = tmp_path / "models"
    shutil.copytree(MODELS_DIR / "promoter" / "base", root / "promoter" / "base")  # version 1 (the card beside it)
    return root


def _settings(root):
    return make_settings(root, default_promoter_model="base")


async def _probabilities(client, model: str) -> list[float]:
    r = await client.post("/predict/promoter", params={"model": model}, content=BODY, headers=FASTA)
    assert r.status_code == 200, r.text
    return [x["probability"] for x in r.json()["results"]]


def test_versions_are_listed_and_selectable(tmp_path):
    root = _models(tmp_path)
    shutil.copytree(MODELS_DIR / "promoter" / "bilstm", root / "promoter" / "base" / "2")

    async def body():
        async with serving(_settings(root)) as client:
            listed = (await client.get("/models")).json()["models"]
            plain, one, two = [await _probabilities(client, m) for m in ("base", "base@1", "base@2")]
            missing = await client.post("/predict/promoter", params={"model": "base@3"}, content=BODY, headers=FASTA)
            bad = await client.post("/predict/promoter", params={"model": "base@x"}, content=BODY, headers=FASTA)
        async with serving(make_settings(MODELS_DIR, default_promoter_model="bilstm")) as client:
            bilstm_alone = await _probabilities(client, "bilstm")
        return listed, plain, one, two, missing, bad, bilstm_alone

    listed, plain, one, two, missing, bad, bilstm_alone = run(body())
    (base,) = [m for m in listed if m["name"] == "base"]
    assert base["version"] == 2 and [(v["version"], v["serving"]) for v in base["versions"]] == [(1, False), (2, True)]
    assert plain == two != one  # the plain name is the newest version
    assert max(abs(a - b) for a, b in zip(two, bilstm_alone)) < 1e-6  # version 2 is the bilstm export
    assert missing.status_code == 404 and "base@1, base@2" in missing.json()["error"]["message"]
    assert bad.status_code == 404


def test_reload_under_load_swaps_in_the_new_version_and_refuses_a_broken_one(tmp_path):
    root = _models(tmp_path)
    statuses: list[int] = []

    async def load(client, stop: asyncio.Event):
        while not stop.is_set():
            r = await client.post("/predict/promoter", content=BODY, headers=FASTA)
            statuses.append(r.status_code)

    async def body():
        async with serving(_settings(root)) as client:
            before = await _probabilities(client, "base")
            stop = asyncio.Event()
            clients = [asyncio.ensure_future(load(client, stop)) for _ in range(3)]
            await asyncio.sleep(0.3)
            shutil.copytree(MODELS_DIR / "promoter" / "bilstm", root / "promoter" / "base" / "2")
            first = await client.post("/models/reload")
            after = await _probabilities(client, "base")
            broken = root / "promoter" / "base" / "3"
            shutil.copytree(MODELS_DIR / "promoter" / "cnn", broken)
            (broken / "model.onnx").write_bytes(b"not an onnx graph")
            second = await client.post("/models/reload")
            still = await _probabilities(client, "base")
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*clients)
            listed = (await client.get("/models")).json()["models"]
            ready = await client.get("/readyz")
            old = await _probabilities(client, "base@1")
            return before, first.json(), after, second, still, listed, ready, old

    before, first, after, second, still, listed, ready, old = run(body())
    assert len(statuses) > 10 and set(statuses) == {200}, sorted(set(statuses))  # no failed request
    assert first == {"loaded": ["promoter/base@2"], "refused": {}, "unchanged": ["promoter/base@1"]}
    assert after != before and old == before  # new requests on version 2; version 1 still selectable
    assert second.status_code == 200
    report = second.json()
    assert report["loaded"] == [] and list(report["refused"]) == ["promoter/base@3"]
    assert "sha256" in report["refused"]["promoter/base@3"]
    no_leak(second.text, root)
    assert still == after  # version 2 goes on serving
    (base,) = [m for m in listed if m["name"] == "base"]
    assert base["version"] == 2
    assert [(v["version"], v["ready"], v["error"] is not None) for v in base["versions"]] == [
        (1, True, False), (2, True, False), (3, False, True)]
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_reload_needs_the_api_key(tmp_path):
    async def body():
        async with serving(make_settings(_models(tmp_path), default_promoter_model="base", api_key="k")) as client:
            return await client.post("/models/reload"), await client.post("/models/reload",
                                                                          headers={"Authorization": "Bearer k"})

    anonymous, keyed = run(body())
    assert anonymous.status_code == 401
    assert keyed.status_code == 200 and keyed.json()["unchanged"] == ["promoter/base@1"]
