"""The six heads: shapes, and the same score for a sequence alone or inside any batch."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from training.models.dnabert2 import DnaBertConfig
from training.models.heads import ALL_VARIANTS, SequenceClassifier, build_head, last_valid_step, pool_pairs

CONFIG = DnaBertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48)


def make_model(variant: str, seed: int = 0) -> SequenceClassifier:
    torch.manual_seed(seed)
    model = SequenceClassifier(CONFIG, variant)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def batch_of(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), 3)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_score_is_the_same_alone_or_in_any_batch(variant):
    model = make_model(variant)
    gen = torch.Generator().manual_seed(1)
    # odd and even lengths (pooled length length // 2), the shortest possible (2), one long
    lengths = [2, 3, 7, 8, 15, 40, 41, 130]
    rows = [torch.randint(5, 64, (n,), generator=gen) for n in lengths]
    with torch.no_grad():
        alone = torch.cat([model(*batch_of([r])) for r in rows])
        together = model(*batch_of(rows))
        reversed_ = model(*batch_of(rows[::-1])).flip(0)
        # the same sequences padded next to an extra-long neighbour
        with_long = model(*batch_of([*rows, torch.randint(5, 64, (300,), generator=gen)]))[:-1]
    for other in (together, reversed_, with_long):
        torch.testing.assert_close(other, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_output_shapes(variant):
    ids, mask = batch_of([torch.randint(5, 64, (n,)) for n in (5, 9)])
    out = make_model(variant)(ids, mask)
    assert out.shape == (2, 3 if variant == "lncrna" else 2)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_pairs_equals_torch_pooling(mode):
    x = torch.randn(3, 4, 11)
    ref = torch.nn.MaxPool1d(2)(x) if mode == "max" else torch.nn.AvgPool1d(2)(x)
    torch.testing.assert_close(pool_pairs(x, mode), ref)


def test_last_valid_step_equals_packed_bilstm():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, batch_first=True, bidirectional=True)
    lengths = torch.tensor([9, 4, 1, 6])
    x = torch.randn(4, 9, 6)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True)
    expected = out[torch.arange(4), lengths - 1]
    torch.testing.assert_close(last_valid_step(lstm, x, lengths), expected, atol=1e-6, rtol=0)


def test_cnn_head_architecture_follows_the_study():
    head = build_head("cnn_bilstm_avg", 32, 0.1)
    assert head.block.conv.in_channels == 32 and head.block.conv.out_channels == 64
    assert head.block.conv.kernel_size == (3,) and head.block.conv.padding == (1,)
    assert head.block.pool == "avg" and build_head("cnn_bilstm_max", 32, 0.1).block.pool == "max"
    assert head.lstm.hidden_size == 128 and head.lstm.bidirectional
    assert head.classifier.in_features == 256
    lnc = build_head("lncrna", 32, 0.1)
    assert (lnc.dense.in_features, lnc.dense.out_features, lnc.classifier.out_features) == (32, 64, 3)
    with pytest.raises(ValueError, match="unknown variant"):
        build_head("transformer_xl", 32, 0.1)
