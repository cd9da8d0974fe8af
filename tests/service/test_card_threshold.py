"""The defaults the build writes next to the models, as the service applies them: the threshold a
card adopted on dev (``calibration.threshold``), the ``all`` ensemble's threshold and the default
model of ``models/promoter/task.json``; the request and the operator's settings still win.

The models folders are temporary: the five DNABERT-2 promoter variants linked from ``models/``,
real copies for the folders whose card a test writes to.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from service.contract.card import ModelCard
from service.contract.errors import ModelArtifactError
from service.contract.taskfile import TASK_FILE, TaskFile
from service.contract.tasks import PROMOTER_VARIANTS, TASKS
from service.runtime.inference import InferenceService
from service.settings import Settings

from .robustness import MODELS_DIR, PROMOTER, make_settings, run, serving

PRESENT = all((MODELS_DIR / "promoter" / v / "card.json").is_file() for v in PROMOTER_VARIANTS)
pytestmark = pytest.mark.skipif(not PRESENT, reason=f"the five DNABERT-2 promoter folders are not all in {MODELS_DIR}")
CARD_T = 0.7  # adopted on dev in base's card
ALL_T = 0.62  # adopted for the ensemble in task.json
SCAN = "/scan/promoter"


def sequences() -> list[str]:
    """300 bp sequences, GC-rich ones among them: base scores some of them between 0.5 and 0.7."""
    rng = random.Random(7)
    return ([''.join(rng.choice("ACGT") for _ in range(300)) for _ in range(10)]
            + [''.join(rng.choice("GCGCGCAT") for _ in range(300)) for _ in range(20)])


BODY = {"sequences": [{"id": f"s{i}", "sequence": s} for i, s in enumerate(sequences())]}


def write_threshold(folder: Path, value: float, adopted: bool) -> None:
    card = ModelCard.load(folder)
    card.calibration = {"splits": {"dev": {"n": 100, "brier": 0.2}}, "threshold": {
        "value": value, "adopted": adopted, "chosen_on": "dev", "dev_mcc_at_0_5": 0.5,
        "dev_mcc_at_threshold": 0.56}}
    card.save(folder)


@pytest.fixture
def models(tmp_path) -> Path:
    """base: threshold 0.7 adopted; cnn: 0.8 found on dev but not adopted; the others: no section."""
    root = tmp_path / "models"
    (root / "promoter").mkdir(parents=True)
    for v in PROMOTER_VARIANTS:
        if v in ("base", "cnn"):
            shutil.copytree(MODELS_DIR / "promoter" / v, root / "promoter" / v)
        else:
            (root / "promoter" / v).symlink_to(MODELS_DIR / "promoter" / v, target_is_directory=True)
    write_threshold(root / "promoter" / "base", CARD_T, adopted=True)
    write_threshold(root / "promoter" / "cnn", 0.8, adopted=False)
    return root


def task_file(root: Path, default: str) -> None:
    TaskFile(default_model=default, rule="test", dev_mcc={"base": 0.6, "all": 0.5},
             all={"splits": {"dev": {"n": 100}}, "threshold": {"value": ALL_T, "adopted": True}}).save(root, "promoter")


def settings(root: Path, **overrides) -> Settings:
    return make_settings(root, **{"default_promoter_model": None, **overrides})


async def predict(client, **params) -> dict:
    resp = await client.post(PROMOTER, params=params, json=BODY)
    assert resp.status_code == 200, resp.text[:300]
    return resp.json()


def check_labels(answer: dict, threshold: float) -> None:
    assert answer["threshold"] == threshold
    for r in answer["results"]:
        assert r["label"] == ("promoter" if r["probability"] >= threshold else "non_promoter"), r


def test_the_cards_threshold_is_the_default_and_the_request_and_the_operator_win(models):
    async def body():
        out = {}
        async with serving(settings(models)) as client:
            out["base"] = await predict(client, model="base")
            out["request"] = await predict(client, model="base", threshold=0.2)
            out["not_adopted"] = await predict(client, model="cnn")
            out["no_section"] = await predict(client, model="bilstm")
            out["all"] = await predict(client, model="all")
            scan = await client.post(SCAN, params={"model": "base", "stride": 100}, json={"sequences": [
                {"id": "x", "sequence": "".join(s["sequence"] for s in BODY["sequences"][10:13])}]})
            out["scan"] = scan.json()
            scan = await client.post(SCAN, params={"model": "base", "threshold": 0.3}, json={"sequences": [
                {"id": "x", "sequence": BODY["sequences"][0]["sequence"]}]})
            out["scan_request"] = scan.json()
        async with serving(settings(models, promoter_threshold=0.4)) as client:
            out["operator"] = await predict(client, model="base")
            out["operator_request"] = await predict(client, model="base", threshold=0.9)
        return out

    out = run(body())
    check_labels(out["base"], CARD_T)
    probs = [r["probability"] for r in out["base"]["results"]]
    if any(0.5 <= p < CARD_T for p in probs):  # the card's threshold changed some labels
        assert any(r["label"] == "non_promoter" and r["probability"] >= 0.5 for r in out["base"]["results"])
    check_labels(out["request"], 0.2)
    check_labels(out["not_adopted"], 0.5)
    check_labels(out["no_section"], 0.5)
    check_labels(out["all"], 0.5)  # no task.json: the ensemble at 0.5
    assert out["scan"]["model"] == "base" and out["scan"]["threshold"] == CARD_T
    (record,) = out["scan"]["results"]
    over = sum(w["probability"] >= CARD_T for w in record["windows"])  # the regions merge exactly these
    assert sum(r["windows"] for r in record["regions"]) == over
    assert all(r["score"] >= CARD_T for r in record["regions"])
    assert out["scan_request"]["threshold"] == 0.3
    check_labels(out["operator"], 0.4)  # DNABERT_PROMOTER_THRESHOLD over the card
    check_labels(out["operator_request"], 0.9)
    assert [r["probability"] for r in out["operator"]["results"]] == pytest.approx(probs, abs=1e-7)


def test_the_task_files_default_model_and_ensemble_threshold(models):
    async def body(**overrides):
        async with serving(settings(models, **overrides)) as client:
            listed = (await client.get("/models")).json()
            return listed["default_promoter_model"], await predict(client), await predict(client, model="all")

    old = run(body())  # no task.json: the project's default
    task_file(models, "base")
    chosen = run(body())
    operator = run(body(default_promoter_model="bilstm"))

    assert old[0] == old[1]["model"] == TASKS["promoter"].default_model
    assert chosen[0] == "base" and chosen[1]["model"] == "base"
    check_labels(chosen[1], CARD_T)  # base answers with its own card's threshold
    assert chosen[2]["model"] == "all"
    check_labels(chosen[2], ALL_T)
    assert operator[0] == "bilstm" and operator[1]["model"] == "bilstm"  # DNABERT_DEFAULT_PROMOTER_MODEL wins
    check_labels(operator[1], 0.5)


def test_a_task_file_naming_all_or_a_missing_model_or_broken(models):
    task_file(models, "all")

    async def default_answer():
        async with serving(settings(models)) as client:
            return (await client.get("/models")).json()["default_promoter_model"], await predict(client)

    name, answer = run(default_answer())
    assert name == "all" and answer["model"] == "all"
    check_labels(answer, ALL_T)

    async def start(**overrides):
        service = InferenceService(settings(models, **overrides))
        try:
            await service.start()
        finally:
            await service.stop()

    task_file(models, "nothing")
    with pytest.raises(ModelArtifactError, match=r"'nothing' \(promoter/task.json\) is not there"):
        run(start())
    (models / "promoter" / TASK_FILE).write_text("{not json")
    with pytest.raises(ModelArtifactError, match="task.json"):
        run(start())


def test_the_settings_are_unset_by_default_and_empty_variables_leave_them_unset(monkeypatch):
    for name in ("DNABERT_PROMOTER_THRESHOLD", "DNABERT_DEFAULT_PROMOTER_MODEL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.promoter_threshold is None and s.default_promoter_model is None
    monkeypatch.setenv("DNABERT_PROMOTER_THRESHOLD", "")
    monkeypatch.setenv("DNABERT_DEFAULT_PROMOTER_MODEL", " ")
    s = Settings()
    assert s.promoter_threshold is None and s.default_promoter_model is None
    monkeypatch.setenv("DNABERT_PROMOTER_THRESHOLD", "0.35")
    monkeypatch.setenv("DNABERT_DEFAULT_PROMOTER_MODEL", "base")
    s = Settings()
    assert s.promoter_threshold == 0.35 and s.default_promoter_model == "base"
    monkeypatch.setenv("DNABERT_PROMOTER_THRESHOLD", "1.5")
    with pytest.raises(ValueError):
        Settings()
