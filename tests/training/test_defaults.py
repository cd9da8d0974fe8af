"""The build's choice of the default promoter model (``dnabert-train choose-default``) on a
temporary models folder whose five DNABERT-2 variants link to the embedded ones (one a copy
with a threshold written into its card); never on ``models/`` itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.contract.card import ModelCard
from service.contract.taskfile import TASK_FILE, TaskFile
from service.contract.tasks import ALL, PROMOTER_VARIANTS
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from tests.training.conftest import promoter_sample
from training.calibration import choose_threshold, mcc_at
from training.cli import main as train_cli
from training.data import Dataset
from training.defaults import choose_default, pick_best

MODELS = Path(__file__).resolve().parents[2] / "models"
PRESENT = all((MODELS / "promoter" / v / "card.json").is_file() for v in PROMOTER_VARIANTS)
needs_variants = pytest.mark.skipif(not PRESENT, reason=f"the five DNABERT-2 promoter folders are not all in {MODELS}")
BASE_THRESHOLD = 0.7


def promoter_models(root: Path, copy: tuple[str, ...] = ()) -> Path:
    """``root/promoter/<variant>``: links to the embedded folders, real copies for ``copy``."""
    (root / "promoter").mkdir(parents=True)
    for v in PROMOTER_VARIANTS:
        if v in copy:
            shutil.copytree(MODELS / "promoter" / v, root / "promoter" / v)
        else:
            (root / "promoter" / v).symlink_to(MODELS / "promoter" / v, target_is_directory=True)
    return root


def adopt_threshold(folder: Path, value: float) -> None:
    card = ModelCard.load(folder)
    card.calibration = {"splits": {"dev": {"n": 1}}, "threshold": {
        "value": value, "adopted": True, "chosen_on": "dev", "dev_mcc_at_0_5": 0.0, "dev_mcc_at_threshold": 0.0}}
    card.save(folder)


def test_the_best_dev_mcc_wins_and_ties_go_to_a_single_model_first():
    order = ["base", "cnn", "all"]
    assert pick_best({"base": 0.5, "cnn": 0.6, "all": 0.55}, order) == "cnn"
    assert pick_best({"base": 0.6, "cnn": 0.6, "all": 0.6}, order) == "base"
    assert pick_best({"base": 0.5, "cnn": 0.6, "all": 0.6}, order) == "cnn"
    assert pick_best({"base": 0.5, "cnn": 0.5, "all": 0.7}, order) == "all"


@pytest.fixture(scope="module")
def small_promoter(shared_dir) -> Dataset:
    """Dev and both test parts of the real split, cut down so that the file stays fast."""
    return promoter_sample(shared_dir, dev=250, hl_test=30, gue_test=80)


@needs_variants
def test_choose_default_scores_dev_and_writes_the_task_file(tmp_path, small_promoter):
    models = promoter_models(tmp_path / "models", copy=("base",))
    adopt_threshold(models / "promoter" / "base", BASE_THRESHOLD)
    chosen = choose_default(models, data=small_promoter, threads=1)

    written = TaskFile.load(models, "promoter")
    assert (models / "promoter" / TASK_FILE).is_file()
    assert written is not None and written.model_dump() == chosen.model_dump()
    assert written.split == "dev" and written.n == 250 and written.data == "promoter_300bp"
    assert list(written.dev_mcc) == [*PROMOTER_VARIANTS, ALL]

    # the same figures, computed here on the service's scores
    dev = small_promoter["dev"]
    y = np.array([e.label for e in dev])
    probs = {v: predict_sequences(OnnxModel(models / "promoter" / v), [e.sequence for e in dev]).scores
             for v in PROMOTER_VARIANTS}
    mean = np.mean([probs[v] for v in PROMOTER_VARIANTS], axis=0)
    ensemble = choose_threshold(y, mean)
    want_thresholds = {v: BASE_THRESHOLD if v == "base" else 0.5 for v in PROMOTER_VARIANTS}
    want_thresholds[ALL] = ensemble.in_force
    assert written.thresholds == want_thresholds  # base at its card's threshold, the others at 0.5
    want = {v: mcc_at(y, probs[v], want_thresholds[v]) for v in PROMOTER_VARIANTS}
    want[ALL] = mcc_at(y, mean, ensemble.in_force)
    for name, value in want.items():
        assert written.dev_mcc[name] == pytest.approx(value, abs=1e-6), name
    assert written.default_model == pick_best(want, [*PROMOTER_VARIANTS, ALL])
    assert "dev MCC" in written.rule and "0.5" in written.rule
    uncalibrated = [v for v in PROMOTER_VARIANTS if ModelCard.load(models / "promoter" / v).calibration is None]
    if uncalibrated:  # cards without a calibration section are named
        assert all(v in written.rule.split("taken at 0.5")[1] for v in uncalibrated)
    else:
        assert "taken at 0.5" not in written.rule

    # the ensemble's calibration: every split, the threshold chosen on dev
    cal = written.all
    assert list(cal.splits) == ["dev", "hl_test", "gue_test"]
    assert [cal.splits[s].n for s in cal.splits] == [250, 30, 80]
    assert (cal.threshold.value, cal.threshold.adopted) == (ensemble.value, ensemble.adopted)
    raw = json.loads((models / "promoter" / TASK_FILE).read_text())
    assert set(raw) >= {"default_model", "rule", "dev_mcc", "split", "all"}


@needs_variants
def test_a_missing_variant_is_named(tmp_path):
    models = promoter_models(tmp_path / "models")
    (models / "promoter" / "bilstm").unlink()
    with pytest.raises(ValueError, match="bilstm"):
        choose_default(models)  # refused before any data is read
    assert not (models / "promoter" / TASK_FILE).exists()
    assert train_cli(["choose-default", "--models", str(models)]) == 2  # the CLI's error exit


def test_a_task_without_an_ensemble_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no ensemble"):
        choose_default(tmp_path, "lncrna-localization")


def test_an_invalid_task_file_is_an_error_that_names_it(tmp_path):
    (tmp_path / "promoter").mkdir()
    assert TaskFile.load(tmp_path, "promoter") is None
    (tmp_path / "promoter" / TASK_FILE).write_text('{"rule": "no default_model"}')
    with pytest.raises(ValueError, match="task.json"):
        TaskFile.load(tmp_path, "promoter")
