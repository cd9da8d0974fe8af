"""int8 graphs: written into a model folder, listed in the card, measured against fp32, gated, served."""

from __future__ import annotations

import numpy as np
import pytest

from service.contract.card import ModelCard, file_sha256
from service.contract.tokenization import SequenceTokenizer, TruncationPolicy
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.data import Example
from training.export.onnx import export_model_folder
from training.export.quantize import INT8_FILE, INT8_PLAIN_FILE, GateFailed, accuracy_gate, add_int8
from training.tokenizer import train_bpe_tokenizer

from ..models.test_heads import make_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 120)) for _ in range(40)]
    tok = SequenceTokenizer(train_bpe_tokenizer(seqs, vocab_size=64), TruncationPolicy(max_tokens=128))
    out = tmp_path_factory.mktemp("quant") / "base"
    export_model_folder(make_model("base"), tok, out, name="base", task="promoter",
                        training={}, metrics={}, fp16=False)
    examples = [Example(str(i), s, i % 2) for i, s in enumerate(seqs)]
    figures = add_int8(out, examples, speed_seconds=0)
    return out, figures, seqs


def test_int8_graph_is_listed_in_the_card_with_its_checksum_and_figures(folder):
    out, figures, _ = folder
    card = ModelCard.load(out)
    assert card.files["graph_int8"] == INT8_FILE
    assert card.sha256[INT8_FILE] == file_sha256(out / INT8_FILE)
    assert card.export.int8["op_types"] == ["MatMul", "Gemm"]
    assert card.export.int8["test_sequences"] == 40
    # fused attention, with the plain int8 graph as its fallback, also checked against fp32
    assert card.files["graph_int8_plain"] == INT8_PLAIN_FILE
    assert card.sha256[INT8_PLAIN_FILE] == file_sha256(out / INT8_PLAIN_FILE)
    assert card.export.int8["attention"]["attention_layers"] == 2 and card.export.int8["per_channel"] is True
    assert card.export.int8["fallback_max_abs_diff_scores_vs_fp32"] < 0.05
    gate = card.export.int8["gate"]
    assert gate["metric"] == "mcc" and gate["passed"] and gate["abs_diff"] <= gate["tolerance"] == 0.01
    assert figures["written"] is True
    assert {"test_metrics_fp32", "test_metrics_int8"} <= set(card.export.int8)
    assert figures["max_abs_diff_scores_vs_fp32"] == card.export.int8["max_abs_diff_scores_vs_fp32"]
    # the rest of the card is as exported
    assert card.export.parity_vs_pytorch.max_abs_diff <= 1e-4 and card.task == "promoter"


def test_int8_graph_runs_quantized_operators_and_stays_close_to_fp32(folder):
    out, figures, seqs = folder
    int8 = OnnxModel(out, precision="int8")
    fp32 = OnnxModel(out, precision="fp32")
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / INT8_FILE)).graph.node}
    assert "DynamicQuantizeLinear" in ops or "DynamicQuantizeMatMul" in ops or "MatMulInteger" in ops
    diff = np.abs(predict_sequences(int8, seqs).scores - predict_sequences(fp32, seqs).scores)
    assert diff.max() == pytest.approx(figures["max_abs_diff_scores_vs_fp32"], abs=1e-6)
    assert 0 < diff.max() < 0.05


def test_serving_precision_falls_back_to_fp32_only_for_a_missing_int8_graph(folder, tmp_path):
    out, _, _ = folder
    assert ModelCard.load(out).serving_precision("int8") == "int8"
    card = ModelCard.load(out)
    del card.files["graph_int8"]
    plain = tmp_path / "plain"
    plain.mkdir()
    card.save(plain)
    assert ModelCard.load(plain).serving_precision("int8") == "fp32"
    assert ModelCard.load(plain).serving_precision("fp16") == "fp16"  # required graphs never fall back


def test_int8_graph_has_fused_attention_and_per_channel_scales(folder):
    import onnx

    out, _, _ = folder
    fused = onnx.load(str(out / INT8_FILE))
    assert [n.op_type for n in fused.graph.node].count("MultiHeadAttention") == 2
    assert "MultiHeadAttention" not in {n.op_type for n in onnx.load(str(out / INT8_PLAIN_FILE)).graph.node}
    # per-channel: the weight scales of the integer products are vectors, one per output column
    inits = {t.name: t for t in fused.graph.initializer}
    weights = [n.input[1] for n in fused.graph.node if n.op_type == "MatMulInteger" and n.input[1] in inits]
    scales = [inits[w.removesuffix("_quantized") + "_scale"] for w in weights]
    assert weights and all(len(s.dims) == 1 and s.dims[0] == inits[w].dims[1] > 1 for s, w in zip(scales, weights))


def test_a_failing_gate_leaves_the_folder_unchanged(folder, tmp_path):
    import shutil

    out, _, seqs = folder
    copy = tmp_path / "base"
    shutil.copytree(out, copy)
    before = {p.name: file_sha256(p) for p in copy.iterdir()}
    examples = [Example(str(i), s, i % 2) for i, s in enumerate(seqs)]
    with pytest.raises(GateFailed, match="folder is unchanged"):
        add_int8(copy, examples, speed_seconds=0, tolerance=-1.0)  # no graph can pass
    assert {p.name: file_sha256(p) for p in copy.iterdir()} == before


def test_accuracy_gate_compares_mcc_or_macro_auroc():
    assert accuracy_gate("promoter", {"mcc": 0.50}, {"mcc": 0.495})["passed"]
    assert not accuracy_gate("promoter", {"mcc": 0.50}, {"mcc": 0.48})["passed"]
    lnc = accuracy_gate("lncrna-localization", {"macro_auroc": 0.70, "mcc": 0.0}, {"macro_auroc": 0.68, "mcc": 0.0})
    assert lnc["metric"] == "macro_auroc" and not lnc["passed"]
    assert not accuracy_gate("promoter", {"mcc": None}, {"mcc": 0.5})["passed"]  # undefined never passes
