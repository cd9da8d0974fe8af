"""The DNABERT (v1) and one-hot models in models/promoter/: complete, small, served, as their cards say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.metrics import binary_metrics

MODELS = Path(__file__).resolve().parents[2] / "models" / "promoter"
NEW = ["dnabert1_linear1", "dnabert1_linear2", "onehot_cnn_gru", "onehot_cnn", "onehot_gru"]
PRESENT = [v for v in NEW if (MODELS / v / "card.json").is_file()]

pytestmark = pytest.mark.skipif(not PRESENT, reason="no DNABERT (v1) or one-hot models in models/promoter")


@pytest.mark.parametrize("variant", PRESENT)
def test_folder_loads_is_small_and_says_what_it_is(variant):
    model = OnnxModel(MODELS / variant)  # sha256 and graph inputs/outputs checked against the card
    card = model.card
    assert card.variant == card.name == variant
    assert card.architecture == ("dnabert1" if variant.startswith("dnabert1") else "onehot")
    assert card.files["tokenizer"] == "vocab.txt" and card.tokenization.kind == "kmer"
    assert card.tokenization.k == (6 if variant.startswith("dnabert1") else 1)
    assert card.tokenization.note
    assert (MODELS / variant / "model.onnx").stat().st_size <= 6 * 1024 * 1024
    assert card.export.parity_vs_pytorch.max_abs_diff <= 1e-4
    assert card.training.command == "dnabert-train compare" and card.training.data["split"]
    assert {"dev", "test", "hl_test", "gue_test"} <= set(card.metrics)
    seqs = ["ACGTTGCA" * 37, "TATAAAAGGCGCGC" * 5, "ACGTN" * 20]
    fp16 = OnnxModel(MODELS / variant, precision="fp16")
    np.testing.assert_allclose(predict_sequences(fp16, seqs).scores, predict_sequences(model, seqs).scores, atol=2e-2)


@pytest.mark.slow
@pytest.mark.parametrize("variant", PRESENT)
def test_reproduces_its_card_on_the_hearing_loss_test(variant, shared_dir):
    from training.data import read_csv

    model = OnnxModel(MODELS / variant)
    test = read_csv(shared_dir / "data/promoter/hearing_loss_300/test.csv")
    got = binary_metrics(np.array([e.label for e in test]), predict_sequences(model, [e.sequence for e in test]).scores)
    want = model.card.metrics["hl_test"].model_dump()
    for key in ("accuracy", "mcc", "auroc", "f1"):
        assert got[key] == pytest.approx(want[key], abs=1e-3), key
