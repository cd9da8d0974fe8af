"""Fused attention: the rewrite of the exported graph, its parity with PyTorch, the plain fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from service.contract.card import ModelCard, file_sha256
from service.contract.tokenization import SequenceTokenizer, TruncationPolicy
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from service.runtime.session import FALLBACK_KEY, Session, fallback_graph, graph_metadata
from training.export.attention import (
    ATTENTION_WITH_PROJECTION,
    MULTI_HEAD,
    contrib_ops,
    fuse_graph,
    fuse_graph_file,
    fuse_model_graph,
)
from training.export.onnx import (
    BackboneHiddenStates,
    ExportParityError,
    export_fp16,
    export_graph,
    export_model_folder,
    verification_batches,
    verify,
)
from training.models.dnabert2 import PRESETS
from training.models.heads import SequenceClassifier

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tokenizer() -> SequenceTokenizer:
    return SequenceTokenizer.from_file(REPO / "models" / "promoter" / "base" / "tokenizer.json",
                                       TruncationPolicy(max_tokens=600))


def sharp_model(preset: str, variant: str = "base", seed: int = 0) -> SequenceClassifier:
    """A classifier whose attention is far from uniform (random weights at initialisation give
    near-equal scores, which would hide a wrong bias or mask): the ``Wqkv`` weights scaled up."""
    torch.manual_seed(seed)
    model = SequenceClassifier(PRESETS[preset], variant).eval()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.Wqkv.weight.mul_(6.0)
            layer.attention.self.Wqkv.bias.normal_(0, 0.5)
    return model


def hidden_graph(model: SequenceClassifier, path: Path) -> tuple[BackboneHiddenStates, Path]:
    backbone = BackboneHiddenStates(model).eval()
    return backbone, export_graph(backbone, path, output="last_hidden_state", output_axes={0: "batch", 1: "sequence"})


def attention_is_peaked(model: SequenceClassifier, tokenizer: SequenceTokenizer) -> float:
    """Largest attention probability of the first layer on a verification batch."""
    ids, mask = verification_batches(tokenizer)[3]
    captured = {}

    def hook(module, inputs, output):
        x, bias = inputs
        B, T, _ = x.shape
        qkv = module.Wqkv(x).view(B, T, 3, module.n_heads, module.head_dim).permute(2, 0, 3, 1, 4)
        scores = qkv[0] @ qkv[1].transpose(-1, -2) / module.head_dim ** 0.5 + bias
        captured["p"] = scores.softmax(-1).max().item()

    handle = model.bert.encoder.layer[0].attention.self.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.from_numpy(ids), torch.from_numpy(mask))
    handle.remove()
    return captured["p"]


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("form", [MULTI_HEAD, ATTENTION_WITH_PROJECTION])
def test_fused_graph_matches_pytorch_at_every_position(preset, form, tokenizer, tmp_path):
    model = sharp_model(preset)
    assert attention_is_peaked(model, tokenizer) > 0.5  # the check below can see a wrong bias
    backbone, plain = hidden_graph(model, tmp_path / "plain.onnx")
    report = fuse_graph_file(plain, tmp_path / "fused.onnx", form)
    layers = PRESETS[preset].num_hidden_layers
    assert (report.attention_layers, report.padding) == (layers, "key_padding_mask")
    assert report.split_products == layers  # GEGLU's gate and value products
    ops = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert ops.count("MultiHeadAttention" if form == MULTI_HEAD else "Attention") == layers
    assert "Softmax" not in ops and "Split" not in ops and "Transpose" not in ops
    parity = verify(backbone, tmp_path / "fused.onnx", tokenizer)  # raises above 1e-4
    assert parity["max_abs_diff"] <= 1e-4
    assert max(c["shape"][1] for c in parity["cases"]) > 512 and {c["shape"][0] for c in parity["cases"]} >= {1, 4, 8}


def test_a_fused_graph_without_the_alibi_bias_fails_the_parity_check(tokenizer, tmp_path):
    model = sharp_model("tiny")
    backbone, plain = hidden_graph(model, tmp_path / "plain.onnx")
    graph = onnx.load(str(plain))
    fuse_graph(graph)
    for node in graph.graph.node:
        if node.op_type == "MultiHeadAttention":
            node.input[5] = ""  # drop the ALiBi attention_bias
    onnx.save(graph, str(tmp_path / "broken.onnx"))
    with pytest.raises(ExportParityError, match="differs from PyTorch"):
        verify(backbone, tmp_path / "broken.onnx", tokenizer)


def test_fp16_graph_is_fused_and_stays_close_to_fp32(tokenizer, tmp_path):
    model = sharp_model("tiny")
    plain16 = export_fp16(BackboneHiddenStates(model), tmp_path / "plain16.onnx")
    report = fuse_graph_file(plain16, tmp_path / "fused16.onnx")
    assert report.attention_layers == 2
    fp32, fp16 = Session(tmp_path / "plain16.onnx"), Session(tmp_path / "fused16.onnx")
    for ids, mask in verification_batches(tokenizer)[:4]:
        feeds = {"input_ids": ids, "attention_mask": mask}
        a, b = fp32.run(feeds).astype(np.float32), fp16.run(feeds).astype(np.float32)
        assert np.abs(a - b).max() < 0.05 * max(1.0, float(np.abs(a).max()))


def test_graphs_without_dnabert2_attention_are_left_alone(tmp_path):
    # A graph with no attention subgraph: the rewrite finds nothing and writes nothing.
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    graph = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(graph, str(tmp_path / "model.onnx"))
    before = file_sha256(tmp_path / "model.onnx")
    files = {"graph": "model.onnx"}
    assert fuse_model_graph(tmp_path, "model.onnx", files, "graph") is None
    assert files == {"graph": "model.onnx"} and file_sha256(tmp_path / "model.onnx") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_runtime_without_the_fused_operator_loads_the_plain_fallback(tokenizer, tmp_path):
    model = sharp_model("tiny")
    _, plain = hidden_graph(model, tmp_path / "model.onnx")
    files = {"graph": "model.onnx"}
    record = fuse_model_graph(tmp_path, "model.onnx", files, "graph")
    assert record["fallback"] == "model.plain.onnx" and files["graph_plain"] == "model.plain.onnx"
    assert graph_metadata(tmp_path / "model.onnx")[FALLBACK_KEY] == "model.plain.onnx"
    assert fallback_graph(tmp_path / "model.onnx") == tmp_path / "model.plain.onnx"
    assert "MultiHeadAttention" in contrib_ops(tmp_path / "model.onnx") and not contrib_ops(tmp_path / "model.plain.onnx")
    fused = Session(tmp_path / "model.onnx")
    assert fused.fallback is None and fused.path.name == "model.onnx"

    # The same fused graph, its attention renamed to an operator no runtime has.
    graph = onnx.load(str(tmp_path / "model.onnx"))
    for node in graph.graph.node:
        if node.op_type == "MultiHeadAttention":
            node.op_type = "MultiHeadAttentionThatDoesNotExist"
    onnx.save(graph, str(tmp_path / "model.onnx"))
    session = Session(tmp_path / "model.onnx")
    assert session.path.name == "model.plain.onnx" and "lacks" in session.fallback
    ids, mask = verification_batches(tokenizer)[2]
    feeds = {"input_ids": ids, "attention_mask": mask}
    np.testing.assert_array_equal(session.run(feeds), Session(tmp_path / "model.plain.onnx").run(feeds))

    (tmp_path / "model.plain.onnx").unlink()  # no fallback on disk: the load error stands
    with pytest.raises(Exception, match="not a registered function/op"):
        Session(tmp_path / "model.onnx")


def test_model_folder_with_fused_attention_lists_and_serves_both_graphs(tokenizer, tmp_path):
    model = sharp_model("tiny", variant="cnn")
    out = tmp_path / "promoter" / "cnn"
    card = export_model_folder(model, tokenizer, out, name="cnn", task="promoter", training={}, metrics={},
                               fused_attention=True)
    assert {"graph_plain": "model.plain.onnx", "graph_fp16_plain": "model.fp16.plain.onnx"}.items() <= card.files.items()
    assert set(card.sha256) == set(card.files.values())
    attention = ModelCard.load(out).export.model_extra["attention"]
    assert attention["graph"]["attention_layers"] == 2 and attention["graph"]["check"]["max_abs_diff"] <= 1e-4
    assert attention["graph_fp16"]["fallback"] == "model.fp16.plain.onnx"
    seqs = ["ACGT" * 20, "TTGACA" * 30, "ACG"]
    enc = [e.ids for e in tokenizer.encode(seqs)]
    with torch.no_grad():
        ref = [model(*map(torch.from_numpy, tokenizer.pad([ids]))).softmax(-1)[0, 1].item() for ids in enc]
    np.testing.assert_allclose(predict_sequences(OnnxModel(out), seqs).scores, ref, atol=1e-5)
    np.testing.assert_allclose(predict_sequences(OnnxModel(out, precision="fp16"), seqs).scores, ref, atol=5e-3)
    # The plain graph of the folder gives the same scores.
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    card = ModelCard.load(plain)
    card.files["graph"] = "model.plain.onnx"
    card.save(plain)
    np.testing.assert_allclose(predict_sequences(OnnxModel(plain), seqs).scores, ref, atol=1e-5)
