"""Calibration: reliability tables, Brier scores and the dev threshold rule (hand-computed
values), the card's optional ``calibration`` section, and ``calibrate_folder`` /
``dnabert-train calibrate`` on copies of the embedded model folders (never on ``models/``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.contract.card import DEFAULT_THRESHOLD, Calibration, ModelCard, Threshold
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from tests.training.conftest import promoter_sample
from training.calibration import (
    GRID,
    brier_score,
    calibrate_folder,
    choose_threshold,
    mcc_at,
    reliability_table,
)
from training.cli import main as train_cli
from training.data import Dataset
from training.metrics import binary_metrics

MODELS = Path(__file__).resolve().parents[2] / "models"
BASE = MODELS / "promoter" / "base"
LNCRNA = MODELS / "lncrna-localization" / "lncrna"
needs_base = pytest.mark.skipif(not (BASE / "card.json").is_file(), reason=f"no embedded model folder {BASE}")


# ---------------------------------------------------------------------------------------------
# figures, by hand

def uncalibrated_copy(src: Path, dst: Path) -> Path:
    """A copy of a model folder whose card has no calibration section (as before calibrate)."""
    shutil.copytree(src, dst)
    card = json.loads((dst / "card.json").read_text())
    card.pop("calibration", None)
    (dst / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return dst

def test_reliability_table_by_hand():
    y = [0, 0, 1, 1, 1, 0]
    p = [0.05, 0.15, 0.15, 0.95, 1.0, 0.1]  # 0.1 opens bin 1; 1.0 closes the last bin
    table = reliability_table(y, p)
    assert len(table) == 10
    assert [(b["lo"], b["hi"]) for b in table] == [(i / 10, (i + 1) / 10) for i in range(10)]
    assert [b["n"] for b in table] == [1, 3, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table[0]["mean_predicted"] == pytest.approx(0.05) and table[0]["observed_frequency"] == 0.0
    assert table[1]["mean_predicted"] == pytest.approx((0.15 + 0.15 + 0.1) / 3, abs=1e-6)  # 6 decimals
    assert table[1]["observed_frequency"] == pytest.approx(1 / 3, abs=1e-6)
    assert table[9]["mean_predicted"] == pytest.approx(0.975) and table[9]["observed_frequency"] == 1.0
    assert table[2] == {"lo": 0.2, "hi": 0.3, "n": 0, "mean_predicted": None, "observed_frequency": None}
    assert len(reliability_table(y, p, bins=4)) == 4
    with pytest.raises(ValueError):
        reliability_table([0, 1], [0.2, 1.2])
    with pytest.raises(ValueError):
        reliability_table([0, 1], [0.2])


def test_brier_score_by_hand():
    assert brier_score([0, 1], [0.2, 0.6]) == pytest.approx((0.04 + 0.16) / 2)
    assert brier_score([1, 0], [1.0, 0.0]) == 0.0


def test_mcc_matches_the_projects_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.35 * y + rng.random(300) * 0.65, 0, 1)
    for t in (0.05, 0.3, 0.5, 0.62, 0.95):
        assert mcc_at(y, p, t) == pytest.approx(binary_metrics(y, p, t)["mcc"], abs=1e-12)
    assert mcc_at([0, 1], [0.9, 0.9], 0.5) == 0.0  # degenerate: everything positive


def test_a_far_and_clearly_better_threshold_is_adopted():
    # perfect for 0.65 < t <= 0.80; ties go to the grid point closest to 0.5: 0.66
    y = [0, 0, 0, 0, 0, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.55, 0.6, 0.65, 0.8, 0.9]
    choice = choose_threshold(y, p)
    assert choice.value == 0.66 and choice.adopted and choice.in_force == 0.66
    assert choice.dev_mcc_at_threshold == pytest.approx(1.0)
    # at 0.5: TP 2, FP 3, TN 3, FN 0
    assert choice.dev_mcc_at_0_5 == pytest.approx(6 / np.sqrt(5 * 2 * 6 * 3))
    section = choice.section()
    assert isinstance(section, Threshold) and section.in_force == 0.66 and section.chosen_on == "dev"
    assert "0.1" in section.rule and "0.01" in section.rule


def test_a_threshold_near_0_5_is_not_adopted():
    y = [0, 0, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.52, 0.56, 0.8, 0.9]  # best for 0.52 < t <= 0.56: 0.53, only 0.03 from 0.5
    choice = choose_threshold(y, p)
    assert choice.value == 0.53 and choice.dev_mcc_at_threshold == pytest.approx(1.0)
    assert choice.dev_mcc_at_threshold - choice.dev_mcc_at_0_5 > 0.1  # much better, but too close
    assert not choice.adopted and choice.in_force == DEFAULT_THRESHOLD


def test_a_far_threshold_with_a_tiny_gain_is_not_adopted():
    y = [0] * 500 + [1] * 500 + [0]
    p = [0.2] * 500 + [0.9] * 500 + [0.6]  # one false positive at 0.5
    choice = choose_threshold(y, p)
    assert choice.value == 0.61 and abs(choice.value - 0.5) >= 0.1
    assert 0 < choice.dev_mcc_at_threshold - choice.dev_mcc_at_0_5 < 0.01
    assert not choice.adopted and choice.in_force == 0.5


def test_the_grid():
    assert GRID[0] == 0.05 and GRID[-1] == 0.95 and len(GRID) == 91 and 0.5 in GRID


# ---------------------------------------------------------------------------------------------
# the card section
def test_every_committed_card_round_trips_without_a_calibration_section():
    cards = sorted(MODELS.glob("*/*/card.json"))
    if not cards:
        pytest.skip(f"no model folders in {MODELS}")
    for path in cards:
        card = ModelCard.load(path.parent)
        assert card.file_json() == json.loads(path.read_text()), path
        if card.calibration is None:
            assert card.threshold_in_force() == DEFAULT_THRESHOLD


def test_the_section_is_typed_and_round_trips(tmp_path):
    if not (MODELS / "promoter" / "onehot_gru" / "card.json").is_file():
        pytest.skip("no onehot_gru model folder")
    original = json.loads((MODELS / "promoter" / "onehot_gru" / "card.json").read_text())
    original.pop("calibration", None)
    card = ModelCard.model_validate(original)
    card.calibration = {"splits": {"dev": {"n": 2, "brier": 0.1, "reliability": [
        {"lo": 0.0, "hi": 0.5, "n": 0, "mean_predicted": None, "observed_frequency": None},
        {"lo": 0.5, "hi": 1.0, "n": 2, "mean_predicted": 0.7, "observed_frequency": 0.5}]}},
        "threshold": {"value": 0.7, "adopted": True, "dev_mcc_at_0_5": 0.1, "dev_mcc_at_threshold": 0.3},
        "note": "kept"}
    card.save(tmp_path)
    saved = json.loads((tmp_path / "card.json").read_text())
    assert {k: v for k, v in saved.items() if k != "calibration"} == original  # nothing else changed
    loaded = ModelCard.load(tmp_path)
    assert loaded.file_json() == saved and loaded.calibration.model_extra == {"note": "kept"}
    assert loaded.threshold_in_force() == 0.7
    assert saved["calibration"]["splits"]["dev"]["reliability"][0]["mean_predicted"] is None
    loaded.calibration.threshold.adopted = False
    assert loaded.threshold_in_force() == 0.5
    with pytest.raises(ValueError):
        Calibration(splits={"dev": {"brier": 0.1}})  # n is required


# ---------------------------------------------------------------------------------------------
# model folders (copies), through the service's path
@pytest.fixture(scope="module")
def small_promoter(shared_dir) -> Dataset:
    """Dev and both test parts of the real split, cut down so that the file stays fast."""
    return promoter_sample(shared_dir, dev=200, hl_test=40, gue_test=120)


@needs_base
def test_calibrate_folder_writes_the_section_from_the_services_scores(tmp_path, small_promoter):
    folder = uncalibrated_copy(BASE, tmp_path / "base")
    before = json.loads((folder / "card.json").read_text())
    card = calibrate_folder(folder, small_promoter, threads=1)

    after = json.loads((folder / "card.json").read_text())
    assert {k: v for k, v in after.items() if k != "calibration"} == before  # only the new section
    model = OnnxModel(folder)  # the folder still passes the service's checks
    cal = model.card.calibration
    assert cal is not None and cal.model_dump(mode="json") == card.calibration.model_dump(mode="json")
    assert list(cal.splits) == ["dev", "hl_test", "gue_test"]
    parts = {"dev": small_promoter["dev"],
             "hl_test": [e for e in small_promoter["test"] if e.source == "hl_test"],
             "gue_test": [e for e in small_promoter["test"] if e.source == "gue_test"]}
    for name, exs in parts.items():
        y = np.array([e.label for e in exs])
        p = predict_sequences(model, [e.sequence for e in exs]).scores
        figures = cal.splits[name]
        assert figures.n == len(exs) == sum(b.n for b in figures.reliability)
        assert figures.brier == pytest.approx(brier_score(y, p), abs=1e-6)
        assert [b.n for b in figures.reliability] == [b["n"] for b in reliability_table(y, p)]
        if name == "dev":
            want = choose_threshold(y, p)
            assert (cal.threshold.value, cal.threshold.adopted) == (want.value, want.adopted)
            assert cal.threshold.dev_mcc_at_0_5 == pytest.approx(binary_metrics(y, p)["mcc"], abs=1e-6)
    assert cal.threshold.chosen_on == "dev" and cal.data == "promoter_300bp"


@needs_base
def test_a_model_trained_on_other_data_is_refused(tmp_path, small_promoter):
    folder = uncalibrated_copy(BASE, tmp_path / "base")
    card = ModelCard.load(folder)
    card.training.data = {**(card.training.data or {}), "name": "someone_elses_data"}
    card.save(folder)
    with pytest.raises(ValueError, match="someone_elses_data"):
        calibrate_folder(folder, small_promoter)
    assert ModelCard.load(folder).calibration is None


@pytest.mark.skipif(not (LNCRNA / "card.json").is_file(), reason=f"no model folder {LNCRNA}")
def test_lncrna_gets_a_brier_score_per_label_and_no_threshold(tmp_path, shared_dir):
    from training.data import lncrna_dataset

    data = lncrna_dataset(shared_dir)
    small = Dataset({"train": [], "dev": data["dev"][:12], "test": data["test"][:12]}, data.description)
    folder = tmp_path / "lncrna"
    shutil.copytree(LNCRNA, folder)
    cal = calibrate_folder(folder, small, threads=1).calibration
    assert list(cal.splits) == ["dev", "test"] and cal.threshold is None
    labels = list(ModelCard.load(folder).labels)
    for name, exs in (("dev", small["dev"]), ("test", small["test"])):
        y = np.array([e.label for e in exs])
        s = predict_sequences(OnnxModel(folder), [e.sequence for e in exs]).scores
        assert list(cal.splits[name].per_label_brier) == labels
        for j, label in enumerate(labels):
            assert cal.splits[name].per_label_brier[label] == pytest.approx(brier_score(y[:, j], s[:, j]), abs=1e-6)
    written = json.loads((folder / "card.json").read_text())["calibration"]
    assert "threshold" not in written and "bins" not in written  # no nulls written


@needs_base
def test_the_command_calibrates_only_the_folders_named(tmp_path, shared_dir, capsys):
    models = tmp_path / "models"
    for name in ("base", "onehot_gru"):
        if (MODELS / "promoter" / name).is_dir():
            uncalibrated_copy(MODELS / "promoter" / name, models / "promoter" / name)
    assert train_cli(["calibrate", "--models", str(models), "--only", "promoter/base", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary) == ["promoter/base"] and set(summary["promoter/base"]["brier"]) == {"dev", "hl_test",
                                                                                           "gue_test"}
    assert ModelCard.load(models / "promoter" / "base").calibration is not None
    if (models / "promoter" / "onehot_gru").is_dir():
        assert ModelCard.load(models / "promoter" / "onehot_gru").calibration is None
    assert train_cli(["calibrate", "--models", str(models), "--only", "promoter/nothing"]) == 2
