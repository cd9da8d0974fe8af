"""ONNX export of every head: dynamic axes, parity with PyTorch, fp16 graph, model folder."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from service.contract.card import ModelCard, file_sha256
from service.contract.errors import ModelArtifactError
from service.contract.tokenization import SequenceTokenizer, TruncationPolicy
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.export.onnx import ExportParityError, export_graph, export_model_folder, verify
from training.models.heads import ALL_VARIANTS
from training.tokenizer import train_bpe_tokenizer

from ..models.test_heads import CONFIG, make_model


@pytest.fixture(scope="module")
def tokenizer() -> SequenceTokenizer:
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 200)) for _ in range(50)]
    tok = train_bpe_tokenizer(seqs, vocab_size=64)
    return SequenceTokenizer(tok, TruncationPolicy(max_tokens=600))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_onnx_matches_pytorch_on_several_batch_sizes_and_lengths(variant, tokenizer, tmp_path):
    model = make_model(variant)
    graph = export_graph(model, tmp_path / "model.onnx")
    # dynamic batch and sequence axes
    inputs = {i.name: i for i in onnx.load(str(graph)).graph.input}
    dims = inputs["input_ids"].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, True]
    report = verify(model, graph, tokenizer)
    assert report["max_abs_diff"] <= 1e-4
    assert {tuple(c["shape"])[0] for c in report["cases"]} >= {1, 4, 8}
    assert max(c["shape"][1] for c in report["cases"]) > 512  # past the ALiBi starting size


def test_verify_fails_loudly_on_a_wrong_graph(tokenizer, tmp_path):
    a, b = make_model("base", seed=0), make_model("base", seed=1)
    graph = export_graph(a, tmp_path / "a.onnx")
    with pytest.raises(ExportParityError, match="differs from PyTorch"):
        verify(b, graph, tokenizer)


@pytest.mark.slow
def test_model_folder_is_self_describing_and_checked(tokenizer, tmp_path):
    model = make_model("cnn_bilstm_max")
    out = tmp_path / "promoter" / "cnn_bilstm_max"
    card = export_model_folder(model, tokenizer, out, name="cnn_bilstm_max", task="promoter",
                               training={"data": {"name": "test"}},
                               metrics={"test": {"mcc": 0.0}})
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "embedding.onnx", "model.fp16.onnx", "model.onnx",
                                                      "tokenizer.json"]
    loaded = ModelCard.load(out)
    assert loaded == card
    assert loaded.export.opset >= 17 and loaded.export.parity_vs_pytorch.max_abs_diff <= 1e-4
    assert (loaded.labels, loaded.activation, loaded.positive_index) == (["non_promoter", "promoter"], "softmax", 1)
    assert loaded.backbone["hidden_size"] == CONFIG.hidden_size
    assert set(loaded.sha256) == {"model.onnx", "model.fp16.onnx", "tokenizer.json", "embedding.onnx"}

    onnx_model = OnnxModel(out)
    seqs = ["ACGT" * 20, "TTGACA" * 7, "ACG"]
    pred = predict_sequences(onnx_model, seqs)
    enc = [e.ids for e in tokenizer.encode(seqs)]
    with torch.no_grad():
        ref = [model(*map(torch.from_numpy, tokenizer.pad([ids]))).softmax(-1)[0, 1].item() for ids in enc]
    np.testing.assert_allclose(pred.scores, ref, atol=1e-5)

    fp16 = OnnxModel(out, precision="fp16")
    np.testing.assert_allclose(predict_sequences(fp16, seqs).scores, ref, atol=5e-3)

    # a tampered graph is refused, naming the folder
    original = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(original + b"\0")
    with pytest.raises(ModelArtifactError, match="sha256"):
        OnnxModel(out)
    # ... and so is a corrupt one whose card was updated to match it
    card_json = json.loads((out / "card.json").read_text())
    card_json["sha256"]["model.onnx"] = file_sha256(out / "model.onnx")
    (out / "card.json").write_text(json.dumps(card_json))
    with pytest.raises(ModelArtifactError, match="cannot load model.onnx"):
        OnnxModel(out)
    # a graph whose inputs are not the card's
    (out / "model.onnx").write_bytes(original)
    card_json["sha256"]["model.onnx"] = file_sha256(out / "model.onnx")
    card_json["inputs"] = ["ids", "mask"]
    (out / "card.json").write_text(json.dumps(card_json))
    with pytest.raises(ModelArtifactError, match="do not match the card"):
        OnnxModel(out)
    (out / "card.json").unlink()
    with pytest.raises(ModelArtifactError, match=str(out)):
        OnnxModel(out)


