"""The backbone graph (embedding.onnx): export, parity, masking, dynamic axes, the card section,
recovery of a backbone from a classifier graph, refusals, and the committed model folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from service.contract.card import EMBEDDING_OUTPUT, EMBEDDING_ROLE, Embedding, ModelCard, file_sha256
from service.contract.errors import ModelArtifactError
from service.contract.fasta import parse_fasta
from service.contract.tokenization import SequenceTokenizer, TruncationPolicy, tokenizer_for_card
from service.runtime.model import OnnxModel
from service.runtime.session import Session
from training.cli import main as train_cli
from training.export.embedding import (
    EMBEDDING_FILE,
    RECOVERED,
    BackboneHiddenStates,
    EmbeddingRefused,
    add_embedding,
    backbone_hidden_states,
    export_embedding,
    recover_classifier,
    verify_against_classifier,
)
from training.export.onnx import OPSET, ExportParityError, export_model_folder
from training.models import baselines, dnabert1
from training.models.dnabert2 import PRESETS, DnaBertConfig
from training.models.heads import SequenceClassifier
from training.tokenizer import train_bpe_tokenizer

REPO = Path(__file__).resolve().parents[3]
MODELS = REPO / "models"
BACKBONE_FOLDERS = [MODELS / "promoter" / v for v in
                    ("base", "cnn", "bilstm", "cnn_bilstm_max", "cnn_bilstm_avg", "dnabert1_linear1",
                     "dnabert1_linear2")] + [MODELS / "lncrna-localization" / "lncrna"]
ONEHOT_FOLDERS = [MODELS / "promoter" / v for v in baselines.ONEHOT_VARIANTS]

TINY2 = DnaBertConfig.from_dict({**PRESETS["tiny"].to_dict(), "vocab_size": 64})


def small_bpe(max_tokens: int) -> SequenceTokenizer:
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 200)) for _ in range(50)]
    return SequenceTokenizer(train_bpe_tokenizer(seqs, vocab_size=64), TruncationPolicy(max_tokens=max_tokens))


@pytest.fixture(scope="module")
def bpe() -> SequenceTokenizer:
    return small_bpe(600)  # verification batches past 512 tokens


@pytest.fixture(scope="module")
def bpe_short() -> SequenceTokenizer:
    """At most 130 tokens: shorter verification batches, faster tests."""
    return small_bpe(130)


@pytest.fixture(scope="module")
def kmer():
    return dnabert1.make_tokenizer(3)


@pytest.fixture(scope="module")
def kmer_short():
    return dnabert1.make_tokenizer(3, policy=dnabert1.default_policy(130))


def dnabert2_model(variant: str = "cnn", seed: int = 0) -> SequenceClassifier:
    torch.manual_seed(seed)
    model = SequenceClassifier(TINY2, variant)
    with torch.no_grad():  # non-trivial LayerNorm and BatchNorm parameters
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def dnabert1_model(variant: str = "dnabert1_linear2", seed: int = 0) -> dnabert1.Dnabert1Classifier:
    torch.manual_seed(seed)
    return dnabert1.Dnabert1Classifier(dnabert1.preset("tiny", k=3), variant).eval()


def case(arch: str, bpe, kmer):
    return (dnabert2_model(), bpe) if arch == "dnabert2" else (dnabert1_model(), kmer)


def ragged(tok, lengths=(9, 3, 20)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    rows = [[tok.cls_id, *rng.integers(5, tok.vocab_size, n - 2).tolist(), tok.sep_id] for n in lengths]
    return tok.pad(rows)


def pytorch_hidden(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        if isinstance(model, SequenceClassifier):
            return model.bert(ids_t, mask_t)[0].numpy()
        out = model.bert(input_ids=ids_t, attention_mask=mask_t, token_type_ids=torch.zeros_like(ids_t))
        return out.last_hidden_state.numpy()


@pytest.mark.parametrize("arch", ["dnabert2", "dnabert1"])
def test_exported_graph_is_the_masked_last_hidden_state(arch, bpe, kmer, tmp_path):
    model, tok = case(arch, bpe, kmer)
    section = export_embedding(model, tok, tmp_path)
    path = tmp_path / EMBEDDING_FILE
    graph = onnx.load(str(path))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.graph.output] == [EMBEDDING_OUTPUT]
    assert graph.opset_import[0].version == OPSET
    for value in graph.graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert all(d.dim_param for d in value.type.tensor_type.shape.dim)
    out = graph.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT
    assert [bool(d.dim_param) for d in out.shape.dim] == [True, True, False]
    assert out.shape.dim[2].dim_value == model.config.hidden_size

    parity = section["parity_vs_pytorch"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["atol"] == 1e-4
    assert {c["shape"][0] for c in parity["cases"]} >= {1, 4, 8}
    assert max(c["shape"][1] for c in parity["cases"]) >= 512
    card_section = Embedding.model_validate(section)
    assert (card_section.output, card_section.dim) == (EMBEDDING_OUTPUT, model.config.hidden_size)
    assert card_section.pooling == ["mean", "cls"] and card_section.default_pooling == "mean"
    assert "[CLS] and [SEP] included" in card_section.mean_over

    session = Session(path)
    for lengths in ((9, 3, 20), (4,), (30, 30, 2, 17, 5)):  # batch and sequence axes are dynamic
        ids, mask = ragged(tok, lengths)
        got = session.run({"input_ids": ids, "attention_mask": mask})
        assert got.shape == (len(lengths), max(lengths), model.config.hidden_size)
        assert np.all(got[mask == 0] == 0.0)  # exactly 0 at padding, DNABERT (v1) too
        valid = mask.astype(bool)
        np.testing.assert_allclose(got[valid], pytorch_hidden(model, ids, mask)[valid], atol=1e-4, rtol=0)


def test_the_wrapper_refuses_a_model_without_backbone():
    model = baselines.build_baseline(baselines.config_for(baselines.make_tokenizer(), "tiny"), "onehot_cnn")
    with pytest.raises(EmbeddingRefused, match="no transformer backbone"):
        BackboneHiddenStates(model)


def test_export_fails_loudly_when_the_graph_is_not_the_backbone(bpe_short, tmp_path):
    a, b = dnabert2_model(seed=0), dnabert2_model(seed=1)
    export_model_folder(a, bpe_short, tmp_path / "a", name="cnn", task="promoter", training={}, metrics={},
                        fp16=False)
    export_embedding(b, bpe_short, tmp_path / "b")
    with pytest.raises(ExportParityError, match="differs from the hidden state"):
        verify_against_classifier(tmp_path / "a" / "model.onnx", tmp_path / "b" / EMBEDDING_FILE, bpe_short)


def test_model_folder_lists_the_embedding_graph(bpe_short, tmp_path):
    model = dnabert2_model("lncrna")
    out = tmp_path / "lncrna-localization" / "lncrna"
    card = export_model_folder(model, bpe_short, out, name="lncrna", task="lncrna-localization",
                               training={}, metrics={}, fp16=False)
    assert card.files[EMBEDDING_ROLE] == EMBEDDING_FILE
    assert card.sha256[EMBEDDING_FILE] == file_sha256(out / EMBEDDING_FILE)
    assert card.embedding.dim == TINY2.hidden_size and card.embedding.parity_vs_pytorch.max_abs_diff <= 1e-4
    assert card.embedding.source == "exported from the PyTorch backbone"
    written = json.loads((out / "card.json").read_text())
    assert written["embedding"]["output"] == EMBEDDING_OUTPUT
    assert ModelCard.load(out) == card
    OnnxModel(out)  # the service's sha256 check covers the embedding graph
    (out / EMBEDDING_FILE).write_bytes((out / EMBEDDING_FILE).read_bytes() + b"\0")
    with pytest.raises(ModelArtifactError, match="embedding.onnx does not match the sha256"):
        OnnxModel(out)


def test_onehot_folder_gets_no_embedding(tmp_path):
    tok = baselines.make_tokenizer()
    model = baselines.build_baseline(baselines.config_for(tok, "tiny"), "onehot_gru").eval()
    out = tmp_path / "onehot_gru"
    card = export_model_folder(model, tok, out, name="onehot_gru", task="promoter", training={}, metrics={},
                               fp16=False)
    assert EMBEDDING_ROLE not in card.files and card.embedding is None
    assert not (out / EMBEDDING_FILE).exists() and "embedding" not in json.loads((out / "card.json").read_text())
    with pytest.raises(EmbeddingRefused, match="no transformer backbone"):
        add_embedding(out)


def _drop_embedding(folder: Path) -> None:
    """The folder as it was exported before embedding graphs existed."""
    data = json.loads((folder / "card.json").read_text())
    del data["files"][EMBEDDING_ROLE], data["sha256"][EMBEDDING_FILE], data["embedding"]
    (folder / "card.json").write_text(json.dumps(data, indent=2) + "\n")
    (folder / EMBEDDING_FILE).unlink()


@pytest.mark.parametrize("arch,variant", [("dnabert2", "cnn_bilstm_max"), ("dnabert1", "dnabert1_linear2")])
def test_recovered_backbone_is_the_original(arch, variant, bpe_short, kmer_short, tmp_path):
    """Also where the exporter merged equal parameters (zero biases) into one initializer, and
    with head parameters that it re-arranged (LSTM gates)."""
    model = dnabert2_model(variant) if arch == "dnabert2" else dnabert1_model(variant)
    tok = bpe_short if arch == "dnabert2" else kmer_short
    out = tmp_path / variant
    export_model_folder(model, tok, out, name=variant, task="promoter", training={}, metrics={}, fp16=False)
    _drop_embedding(out)
    # the exporter stored the zero biases once, passed on through Identity nodes
    assert any(node.op_type == "Identity" for node in onnx.load(str(out / "model.onnx")).graph.node)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    old_card = json.loads(before["card.json"])

    recovered, keys = recover_classifier(out)
    original = model.bert.state_dict()
    for key, value in recovered.bert.state_dict().items():
        if key.startswith(("embeddings.", "encoder.")) and value.is_floating_point():
            assert f"bert.{key}" in keys
            assert torch.equal(value, original[key]), key

    card = add_embedding(out)
    assert card.embedding.source == RECOVERED
    assert card.embedding.parity_vs_pytorch.max_abs_diff <= 1e-4
    inner = card.embedding.parity_vs_classifier_graph
    assert inner.max_abs_diff <= 1e-4 and inner.model_extra["tensor"].startswith("/bert/")
    for name, data in before.items():  # graphs and tokenizer untouched
        if name != "card.json":
            assert (out / name).read_bytes() == data, name
    new_card = json.loads((out / "card.json").read_text())
    assert new_card.pop("embedding")["dim"] == model.config.hidden_size
    assert new_card["files"].pop(EMBEDDING_ROLE) == EMBEDDING_FILE
    assert new_card["sha256"].pop(EMBEDDING_FILE) == file_sha256(out / EMBEDDING_FILE)
    assert new_card == old_card  # the rest of the card as it was

    ids, mask = ragged(tok, (12, 5, 31))
    want = pytorch_hidden(model, ids, mask) * mask[..., None]
    got = Session(out / EMBEDDING_FILE).run({"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(backbone_hidden_states(out, ids, mask), want, atol=1e-5, rtol=0)

    with pytest.raises(EmbeddingRefused, match="already lists an embedding graph"):
        add_embedding(out)


def test_recovery_refuses_a_graph_of_another_configuration(bpe_short, tmp_path):
    out = tmp_path / "cnn"
    export_model_folder(dnabert2_model("cnn"), bpe_short, out, name="cnn", task="promoter", training={}, metrics={},
                        fp16=False)
    data = json.loads((out / "card.json").read_text())
    data["backbone"]["num_hidden_layers"] = 3
    (out / "card.json").write_text(json.dumps(data))
    with pytest.raises(ExportParityError, match="does not read an initializer"):
        recover_classifier(out)


def test_cli_refuses_folders_without_backbone_or_with_one(tmp_path, capsys):
    onehot = tmp_path / "onehot_gru"
    shutil.copytree(MODELS / "promoter" / "onehot_gru", onehot)
    before = (onehot / "card.json").read_bytes()
    assert train_cli(["add-embedding", str(onehot)]) == 2
    assert "has no transformer backbone" in capsys.readouterr().err
    assert (onehot / "card.json").read_bytes() == before and not (onehot / EMBEDDING_FILE).exists()
    assert train_cli(["add-embedding", str(MODELS / "promoter" / "base")]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("folder", ONEHOT_FOLDERS, ids=lambda p: p.name)
def test_committed_onehot_baselines_have_no_embedding(folder):
    card = ModelCard.load(folder)
    assert card.embedding is None and EMBEDDING_ROLE not in card.files
    assert not (folder / EMBEDDING_FILE).exists()


@pytest.fixture(scope="module")
def golden_sequences() -> list[str]:
    records = parse_fasta((REPO / "tests" / "fixtures" / "golden.fasta").read_text())
    return [r.sequence for r in records if r.id in ("prom_like", "at_rich", "short", "random_300")]


@pytest.mark.parametrize("folder", BACKBONE_FOLDERS, ids=lambda p: p.name)
def test_committed_folders_have_a_verified_embedding_graph(folder, golden_sequences):
    card = OnnxModel(folder).card  # checks every file's sha256, embedding.onnx included
    assert card.files[EMBEDDING_ROLE] == EMBEDDING_FILE
    emb = card.embedding
    assert emb.output == EMBEDDING_OUTPUT and emb.dim == card.backbone["hidden_size"]
    assert emb.parity_vs_pytorch.max_abs_diff <= 1e-4 and emb.parity_vs_classifier_graph.max_abs_diff <= 1e-4
    tok = tokenizer_for_card(folder, card)
    ids, mask = tok.pad([e.ids for e in tok.encode(golden_sequences)])
    got = Session(folder / EMBEDDING_FILE).run({"input_ids": ids, "attention_mask": mask})
    assert got.shape == (*ids.shape, emb.dim) and np.all(got[mask == 0] == 0.0)
    np.testing.assert_allclose(got, backbone_hidden_states(folder, ids, mask), atol=1e-4, rtol=0)


def test_card_section_is_optional_typed_and_round_trips(tmp_path):
    old = json.loads((MODELS / "promoter" / "onehot_gru" / "card.json").read_text())
    card = ModelCard.model_validate(old)
    assert card.embedding is None and "embedding" not in card.file_json()  # older cards stay as they were
    card.embedding = {"output": EMBEDDING_OUTPUT, "dim": 8, "pooling": ["mean", "cls"], "default_pooling": "cls",
                      "parity_vs_pytorch": {"max_abs_diff": 1e-6, "atol": 1e-4}, "source": "test", "note": "kept"}
    card.save(tmp_path)
    loaded = ModelCard.load(tmp_path)
    assert loaded.embedding.default_pooling == "cls" and loaded.embedding.model_extra == {"note": "kept"}
    assert json.loads((tmp_path / "card.json").read_text())["embedding"] == card.embedding.model_dump(mode="json")
    with pytest.raises(ValueError, match="default_pooling"):
        Embedding(dim=8, pooling=["cls"], default_pooling="mean")
    with pytest.raises(ValueError):
        Embedding(dim=8, pooling=["max"])
