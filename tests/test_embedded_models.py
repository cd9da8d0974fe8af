"""The embedded default models in models/: complete, checked, small, and what their cards say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.metrics import binary_metrics, multilabel_metrics

MODELS = Path(__file__).resolve().parents[1] / "models"
PROMOTER = ["base", "cnn", "bilstm", "cnn_bilstm_max", "cnn_bilstm_avg"]
FOLDERS = [MODELS / "promoter" / v for v in PROMOTER] + [MODELS / "lncrna-localization" / "lncrna"]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_folder_loads_and_is_small(folder):
    model = OnnxModel(folder)  # checks sha256 and graph inputs/outputs against the card
    card = model.card
    assert card.variant == folder.name
    assert (folder / "model.onnx").stat().st_size <= 10 * 1024 * 1024
    assert card.export.parity_vs_pytorch.max_abs_diff <= 1e-4
    assert card.training.data["split"]
    assert "test" in card.metrics
    fp16 = OnnxModel(folder, precision="fp16")
    seqs = ["ACGTTGCA" * 37, "TATAAAAGGCGCGC" * 5]
    np.testing.assert_allclose(predict_sequences(fp16, seqs).scores, predict_sequences(model, seqs).scores, atol=2e-2)


@pytest.mark.slow
@pytest.mark.parametrize("variant", PROMOTER)
def test_promoter_models_reproduce_their_card_on_the_hearing_loss_test(variant, shared_dir):
    """ONNX Runtime on the held-out hearing-loss test split gives the metrics in the card
    (which were computed with PyTorch at training time)."""
    from training.data import read_csv

    model = OnnxModel(MODELS / "promoter" / variant)
    test = read_csv(shared_dir / "data/promoter/hearing_loss_300/test.csv")
    scores = predict_sequences(model, [e.sequence for e in test]).scores
    got = binary_metrics(np.array([e.label for e in test]), scores)
    want = model.card.metrics["hl_test"].model_dump()
    for key in ("accuracy", "mcc", "auroc", "f1"):
        assert got[key] == pytest.approx(want[key], abs=1e-3), key


@pytest.mark.slow
def test_lncrna_model_reproduces_its_card(shared_dir):
    from training.data import lncrna_dataset

    model = OnnxModel(MODELS / "lncrna-localization" / "lncrna")
    test = lncrna_dataset()["test"]
    scores = predict_sequences(model, [e.sequence for e in test]).scores
    got = multilabel_metrics(np.array([e.label for e in test]), scores, model.card.labels)
    want = model.card.metrics["test"]
    assert got["labels_without_positives"] == ["extracellular_vesicle"]
    assert got["micro_auroc"] == pytest.approx(want.micro_auroc, abs=1e-3)
    assert got["per_label"]["nucleus"]["auroc"] == pytest.approx(want.model_dump()["per_label"]["nucleus"]["auroc"], abs=1e-3)
