"""Our DNABERT-2 against the published fixture and an independent reference implementation."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from training.cli import main as train_cli
from training.models.dnabert2 import (
    PRESETS,
    DnaBertConfig,
    DnaBertModel,
    alibi_slopes,
    find_weights,
    load_backbone_state,
    read_state_dict,
)
from training.parity import run_parity


# --- the published fixture --------------------------------------------------------------------
def test_parity_with_published_fixture(parity_dir, tmp_path):
    out = tmp_path / "out.npz"
    diffs = run_parity(parity_dir, out)
    assert diffs["input_ids"] == 0.0
    for key in ("last_hidden_state", "pooled_output", "classifier_logits"):
        assert diffs[key] is not None and diffs[key] < 1e-4, (key, diffs[key])
    saved = np.load(out)
    assert set(saved.files) >= {"input_ids", "last_hidden_state", "pooled_output", "classifier_logits"}
    assert np.all(saved["last_hidden_state"][saved["attention_mask"] == 0] == 0)


def test_check_parity_cli_fails_on_a_wrong_checkpoint(parity_dir, tmp_path, capsys):
    assert train_cli(["check-parity", str(parity_dir)]) == 0
    broken = tmp_path / "broken"
    shutil.copytree(parity_dir, broken)
    state = load_file(str(broken / "model.safetensors"))
    state["bert.encoder.layer.1.mlp.wo.bias"] += 1e-2
    save_file(state, str(broken / "model.safetensors"))
    (broken / "classifier.safetensors").unlink()
    assert train_cli(["check-parity", str(broken)]) == 1
    assert "FAIL" in capsys.readouterr().out


# --- checkpoint loading -----------------------------------------------------------------------
def _tiny_config(**kw) -> DnaBertConfig:
    base = dict(vocab_size=64, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                intermediate_size=40, hidden_dropout_prob=0.0)
    base.update(kw)
    return DnaBertConfig(**base)


def _forward(model, ids, mask=None):
    model.eval()
    with torch.no_grad():
        return model(ids, mask)


@pytest.mark.parametrize("prefix", ["bert.", ""])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_checkpoint_loads_with_and_without_prefix(tmp_path, prefix, fmt):
    cfg = _tiny_config()
    src = DnaBertModel(cfg)
    state = {f"{prefix}{k}": v for k, v in src.state_dict().items() if not k.startswith("pooler.")}
    state["cls.predictions.transform.dense.weight"] = torch.zeros(24, 24)  # ignored
    (tmp_path / "config.json").write_text(
        '{"vocab_size": 64, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3,'
        ' "intermediate_size": 40, "alibi_starting_size": 512, "architectures": ["BertForMaskedLM"]}'
    )
    if fmt == "safetensors":
        save_file(state, str(tmp_path / "model.safetensors"))
    else:
        torch.save(state, tmp_path / "pytorch_model.bin")
    model = DnaBertModel(DnaBertConfig.from_json(tmp_path / "config.json"))
    initialised = load_backbone_state(model, read_state_dict(find_weights(tmp_path)))
    assert initialised == ["pooler.dense.weight", "pooler.dense.bias"]  # missing pooler is initialised
    ids = torch.randint(5, 64, (2, 9))
    torch.testing.assert_close(_forward(model, ids)[0], _forward(src, ids)[0], rtol=0, atol=0)


def test_checkpoint_of_another_architecture_is_rejected():
    model = DnaBertModel(_tiny_config())
    state = {f"bert.{k}": v for k, v in model.state_dict().items()}
    del state["bert.encoder.layer.0.mlp.gated_layers.weight"]
    state["bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(40, 24)
    with pytest.raises(ValueError, match="does not match"):
        load_backbone_state(DnaBertModel(_tiny_config()), state)


# --- ALiBi ------------------------------------------------------------------------------------
def test_alibi_slopes_power_of_two():
    assert alibi_slopes(8) == pytest.approx([2.0 ** -(i + 1) for i in range(8)])
    assert alibi_slopes(4) == pytest.approx([2.0 ** -(2 * (i + 1)) for i in range(4)])


def test_alibi_slopes_for_head_counts_that_are_not_a_power_of_two():
    # 12 heads (DNABERT-2-117M): the 8 slopes of 8 heads, then every other slope of 16 heads.
    sixteen = [2.0 ** -(0.5 * (i + 1)) for i in range(16)]
    assert alibi_slopes(12) == pytest.approx([2.0 ** -(i + 1) for i in range(8)] + sixteen[0::2][:4])
    # 3 heads: 2 heads' slopes (1/16, 1/256) then the first of 4 heads' (1/4).
    assert alibi_slopes(3) == pytest.approx([2.0**-4, 2.0**-8, 2.0**-2])
    assert len(alibi_slopes(6)) == 6 and len(alibi_slopes(5)) == 5


def reference_encoder(model: DnaBertModel, ids: torch.Tensor) -> torch.Tensor:
    """An independent, unpadded reference of MosaicBERT for ONE sequence (T,) -> (T, H)."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    T, H, nh = ids.shape[0], cfg.hidden_size, cfg.num_attention_heads
    hd = H // nh

    def ln(x, prefix):
        return torch.nn.functional.layer_norm(x, (H,), sd[prefix + ".weight"], sd[prefix + ".bias"], cfg.layer_norm_eps)

    x = sd["embeddings.word_embeddings.weight"][ids] + sd["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, "embeddings.LayerNorm")
    slopes = alibi_slopes(nh)
    for layer in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{layer}."
        qkv = x @ sd[p + "attention.self.Wqkv.weight"].T + sd[p + "attention.self.Wqkv.bias"]
        q, k, v = qkv[:, :H], qkv[:, H : 2 * H], qkv[:, 2 * H :]
        heads = []
        for h in range(nh):
            sl = slice(h * hd, (h + 1) * hd)
            scores = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
            for i in range(T):
                for j in range(T):
                    scores[i, j] -= slopes[h] * abs(i - j)
            heads.append(scores.softmax(-1) @ v[:, sl])
        ctx = torch.cat(heads, dim=-1)
        x = ln(ctx @ sd[p + "attention.output.dense.weight"].T + sd[p + "attention.output.dense.bias"] + x,
               p + "attention.output.LayerNorm")
        g = x @ sd[p + "mlp.gated_layers.weight"].T
        inter = cfg.intermediate_size
        h_ = torch.nn.functional.gelu(g[:, :inter]) * g[:, inter:]
        x = ln(h_ @ sd[p + "mlp.wo.weight"].T + sd[p + "mlp.wo.bias"] + x, p + "mlp.layernorm")
    return x


@pytest.mark.parametrize(("heads", "hidden", "lengths"), [(3, 24, (7, 4)), (6, 36, (13, 9, 2)), (5, 40, (11, 10))])
def test_matches_reference_for_other_sizes_and_head_counts(heads, hidden, lengths):
    torch.manual_seed(heads)
    model = DnaBertModel(_tiny_config(num_attention_heads=heads, hidden_size=hidden, num_hidden_layers=3)).eval()
    # Larger random weights than the init so that the ALiBi bias and the padding mask matter.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    rows = [torch.randint(5, 64, (n,)) for n in lengths]
    ids = torch.full((len(rows), max(lengths)), 3)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    hidden_states, _ = _forward(model, ids, mask)
    for i, r in enumerate(rows):
        ref = reference_encoder(model, r).float()
        torch.testing.assert_close(hidden_states[i, : len(r)], ref, atol=1e-4, rtol=0)
        assert torch.all(hidden_states[i, len(r) :] == 0)


def test_alibi_has_no_fixed_size_table_past_512_tokens():
    torch.manual_seed(0)
    model = DnaBertModel(_tiny_config(num_hidden_layers=1)).eval()
    bias = model.encoder.alibi(700, torch.device("cpu"))
    assert bias.shape == (1, 3, 700, 700)
    slopes = torch.tensor(alibi_slopes(3))
    assert torch.allclose(bias[0, :, 0, 699], -slopes * 699)
    assert torch.allclose(bias[0, :, 650, 600], -slopes * 50)
    ids = torch.randint(5, 64, (1, 700))
    hidden, pooled = _forward(model, ids)
    assert hidden.shape == (1, 700, 24) and torch.isfinite(hidden).all()
    # a sequence of 520 tokens padded to 700 gives the same states as alone
    mask = torch.ones_like(ids)
    mask[0, 520:] = 0
    alone, _ = _forward(model, ids[:, :520])
    padded, _ = _forward(model, ids, mask)
    torch.testing.assert_close(padded[:, :520], alone, atol=1e-5, rtol=0)


def test_mini_preset_is_the_embedded_dnabert1_shape():
    """The README compares DNABERT-2 and DNABERT (v1) "at the same size": `mini` must stay the
    shape of the DNABERT preset the embedded 6-mer models were trained with."""
    from training.models.dnabert1 import PRESETS as DNABERT1_PRESETS

    v1, v2 = DNABERT1_PRESETS["small"], PRESETS["mini"]
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        assert getattr(v2, field) == getattr(v1, field), field
    assert PRESETS["deep"].hidden_size == PRESETS["small"].hidden_size
    assert PRESETS["deep"].num_hidden_layers == 2 * PRESETS["small"].num_hidden_layers
