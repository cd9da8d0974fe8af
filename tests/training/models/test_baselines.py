"""The one-hot baselines: sizes, one-hot input, batch invariance, exact BiGRU, ONNX export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.export.onnx import export_graph, export_model_folder, verify
from training.models.baselines import (
    ONEHOT_VARIANTS,
    BiGru,
    OneHot,
    build_baseline,
    config_for,
    make_tokenizer,
    pool_windows,
)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def make(variant: str, preset: str = "small", seed: int = 0):
    torch.manual_seed(seed)
    model = build_baseline(config_for(make_tokenizer(), preset), variant)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def batch_of(rows, pad_id=0):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def test_sizes_follow_the_study():
    counts = {v: make(v).describe()["parameters"] for v in ONEHOT_VARIANTS}
    assert counts["onehot_cnn_gru"] == 157_618  # "~158k parameters"
    m = make("onehot_cnn_gru")
    assert len(m.convs) == 2 and sum(isinstance(x, torch.nn.Linear) for x in m.head) == 5
    assert isinstance(m.gru, BiGru)
    cnn = make("onehot_cnn")
    assert sum(isinstance(x, torch.nn.Linear) for x in cnn.modules()) == 1
    assert counts["onehot_cnn"] < 200_000 and counts["onehot_gru"] < 100_000


def test_one_hot_of_the_k1_vocabulary(tok):
    onehot = OneHot(tok.vocab_size, config_for(tok).base_ids)
    ids = torch.tensor([tok.encode(["ACGTN"])[0].ids + [tok.pad_id]])
    x = onehot(ids)[0].T  # (T, 4)
    assert x.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("variant", ONEHOT_VARIANTS)
def test_score_is_the_same_alone_or_in_any_batch(variant):
    model = make(variant)
    gen = torch.Generator().manual_seed(1)
    lengths = [1, 2, 3, 4, 5, 7, 8, 15, 40, 41, 301]
    rows = [torch.randint(1, 9, (n,), generator=gen) for n in lengths]  # includes [UNK] (N)
    with torch.no_grad():
        alone = torch.cat([model(*batch_of([r])) for r in rows])
        together = model(*batch_of(rows))
        reversed_ = model(*batch_of(rows[::-1])).flip(0)
        with_long = model(*batch_of([*rows, torch.randint(5, 9, (700,), generator=gen)]))[:-1]
    for other in (together, reversed_, with_long):
        torch.testing.assert_close(other, alone, atol=1e-5, rtol=0)


def test_bigru_equals_the_final_states_of_a_packed_bidirectional_gru():
    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 5, batch_first=True, bidirectional=True)
    lengths = torch.tensor([9, 4, 1, 6])
    x = torch.randn(4, 9, 6)
    _, h_n = gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    expected = torch.cat([h_n[0], h_n[1]], dim=-1)
    torch.testing.assert_close(BiGru.from_bidirectional(gru)(x, lengths), expected, atol=1e-6, rtol=0)


def test_pool_windows_keeps_the_last_partial_window():
    x = torch.arange(1.0, 8.0).reshape(1, 1, 7)
    pooled, lengths = pool_windows(x, torch.tensor([7]), 2)
    assert pooled.tolist() == [[[2.0, 4.0, 6.0, 7.0]]] and lengths.tolist() == [4]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ONEHOT_VARIANTS)
def test_onnx_matches_pytorch_with_dynamic_axes(variant, tok, tmp_path):
    model = make(variant, "tiny")
    graph = export_graph(model, tmp_path / "model.onnx")
    dims = {i.name: i for i in onnx.load(str(graph)).graph.input}["input_ids"].type.tensor_type.shape.dim
    assert all(d.dim_param for d in dims)
    report = verify(model, graph, tok)
    assert report["max_abs_diff"] <= 1e-4
    assert {c["shape"][0] for c in report["cases"]} >= {1, 4, 8}
    if variant != "onehot_cnn":
        ops = {n.op_type for n in onnx.load(str(graph)).graph.node}
        assert "GRU" in ops and "Loop" not in ops


@pytest.mark.slow
def test_exported_folder_serves_the_pytorch_scores(tok, tmp_path):
    model = make("onehot_cnn_gru", "tiny")
    out = tmp_path / "promoter" / "onehot_cnn_gru"
    card = export_model_folder(model, tok, out, name="onehot_cnn_gru", task="promoter",
                               training={}, metrics={},
                               tokenization_note="one token per base")
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.fp16.onnx", "model.onnx", "vocab.txt"]
    assert card.architecture == "onehot" and card.files["tokenizer"] == "vocab.txt"
    assert card.tokenization.kind == "kmer" and card.tokenization.k == 1
    assert card.tokenization.special_tokens is False and card.tokenization.note
    served = OnnxModel(out)
    seqs = ["ACGT" * 75, "TATAAA" + "GC" * 40, "ACGTN" * 7, "A", "acgu" * 10]
    pred = predict_sequences(served, seqs)
    from service.contract.sequence import normalize_sequence

    enc = [e.ids for e in tok.encode([normalize_sequence(s).sequence for s in seqs])]
    with torch.no_grad():
        ref = [model(*map(torch.from_numpy, tok.pad([ids]))).softmax(-1)[0, 1].item() for ids in enc]
    np.testing.assert_allclose(pred.scores, ref, atol=1e-5)
    assert [len(t) for t in pred.prepared.tokens] == [300, 86, 35, 1, 40]
    fp16 = OnnxModel(out, precision="fp16")
    np.testing.assert_allclose(predict_sequences(fp16, seqs).scores, ref, atol=5e-3)
