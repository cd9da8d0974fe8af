"""``dnabert-train embedded --quick``: every stage of the build on tiny models, in seconds per
training, into a temporary ``models/``; and a second run resumes (it trains nothing again)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.contract.card import ModelCard
from service.contract.tasks import LNCRNA, PROMOTER, PROMOTER_VARIANTS
from training.distill import TEACHERS, DistillationSet
from training.embedded import build_embedded

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.shared]


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("embedded")
    models = root / "models"
    for teacher in TEACHERS:  # the teachers come from the models folder, as in the real build
        shutil.copytree(REPO / "models" / PROMOTER / teacher, models / PROMOTER / teacher)
    build_embedded(models, root / "runs", quick=True, images=root / "images")
    return root


def test_every_variant_is_exported_with_its_training_story(built):
    for variant in PROMOTER_VARIANTS:
        card = ModelCard.load(built / "models" / PROMOTER / variant)
        distillation = card.training.config["extra"]["distillation"]
        assert distillation["teachers"] == list(TEACHERS) and distillation["sequences"] == 96
        assert card.training.command == "dnabert-train embedded"
        assert card.calibration is not None and card.calibration.threshold is not None
        assert {"dev", "hl_test", "gue_test"} <= set(card.calibration.splits)
        start = card.training.initialised_from
        assert start == ("masked-LM pre-trained small backbone" if variant == "base"
                         else "backbone of the distilled base model (promoter-adapted)")
    lnc = ModelCard.load(built / "models" / LNCRNA / "lncrna")
    assert set(lnc.training.selection.dev_scores) == {  # --quick: the first two temperature pairs
        "lncrna-localization-lncrna", "lncrna-localization-lncrna-tp1-tn1",
        "lncrna-localization-lncrna-from-promoter", "lncrna-localization-lncrna-head-only"}
    kept = json.loads((built / "runs" / lnc.training.selection.kept / "config.json").read_text())["train"]
    assert (lnc.training.config["tp"], lnc.training.config["tn"]) == (kept["tp"], kept["tn"])
    assert lnc.training.selection.kept == max(lnc.training.selection.dev_scores, key=lnc.training.selection.dev_scores.get)


def test_the_default_model_is_the_best_on_dev_and_written_for_the_service(built):
    task = json.loads((built / "models" / PROMOTER / "task.json").read_text())
    assert set(task["dev_mcc"]) == {*PROMOTER_VARIANTS, "all"}
    assert task["dev_mcc"][task["default_model"]] == max(task["dev_mcc"].values())


def test_the_distillation_set_and_the_curves_are_there(built):
    made = DistillationSet.load(built / "runs" / "distill.npz")
    assert len(made.sequences) == 96 and ((made.probabilities >= 0) & (made.probabilities <= 1)).all()
    pictures = sorted(p.name for p in (built / "images").glob("curve_*.png"))
    assert pictures == sorted(f"curve_{PROMOTER}_{v}.png" for v in PROMOTER_VARIANTS)


def test_a_second_run_resumes_without_training_again(built, capsys):
    runs = built / "runs"
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/model/model.safetensors")}
    assert len(stamps) == 5 + 4
    build_embedded(built / "models", runs, quick=True, images=None)
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/model/model.safetensors")} == stamps
