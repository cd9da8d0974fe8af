"""DNABERT-2 (MosaicBERT) encoder in plain PyTorch.

Numerically the same as the published ``bert_layers.py`` of DNABERT-2-117M:

* token + token-type embeddings, LayerNorm, dropout; **no** position embeddings;
* ALiBi attention bias ``-slope_h * |i - j|`` computed for the length that arrives, so any
  length works, also past 512 tokens and inside an exported ONNX graph;
* fused ``Wqkv`` projection, post-LayerNorm residual blocks;
* GEGLU feed-forward: ``gated_layers`` (no bias) -> ``gelu(gate) * value`` -> ``wo``;
* additive padding mask ``(1 - mask) * -10000`` (as published) and zeros at padded positions of
  the last hidden state (the published model unpads and re-pads with zeros);
* pooler: dense + tanh on the first ([CLS]) token.

The module and parameter names follow the published checkpoint (``bert.*`` keys), so a
``pytorch_model.bin`` or ``model.safetensors`` of DNABERT-2-117M loads with
:func:`load_backbone_state`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DnaBertConfig:
    """The fields of DNABERT-2's ``config.json`` that define the architecture."""

    vocab_size: int = 4096
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 3

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DnaBertConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, path: str | Path) -> DnaBertConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Presets: the published size, and a small one that trains on two CPU cores.
PRESETS: dict[str, DnaBertConfig] = {
    "dnabert2-117m": DnaBertConfig(),
    "small": DnaBertConfig(
        hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256
    ),
    # A somewhat larger backbone (about 4x the matrix-multiply work of "small" per token), tried
    # for the embedded promoter models: at an equal time budget on 2 CPU cores it did not beat
    # "small" (README, "Embedded models and their metrics").
    "medium": DnaBertConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=512
    ),
    # Two shapes measured against the embedded models (README, "Embedded models and their
    # metrics"): six layers at the small width, and the shape of the embedded DNABERT (v1)
    # models, to compare the two architectures at an equal size and recipe.
    "deep": DnaBertConfig(
        hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=256
    ),
    "mini": DnaBertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256
    ),
    # For tests and CI smoke runs; 3 heads exercise the non-power-of-2 ALiBi slopes.
    "tiny": DnaBertConfig(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=64
    ),
}


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi head slopes, with the published rule for head counts that are not a power of 2."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_2(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


class BertEmbeddings(nn.Module):
    def __init__(self, config: DnaBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: DnaBertConfig):
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.Wqkv(x).view(B, T, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, T, hd)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + bias
        probs = F.dropout(scores.softmax(dim=-1), self.dropout_p, self.training)
        ctx = torch.matmul(probs, v)  # (B, nh, T, hd)
        return ctx.transpose(1, 2).reshape(B, T, C)


class BertSelfOutput(nn.Module):
    def __init__(self, config: DnaBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: DnaBertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class BertGatedLinearUnitMLP(nn.Module):
    """GEGLU feed-forward with post-LayerNorm, as in MosaicBERT."""

    def __init__(self, config: DnaBertConfig):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.act = nn.GELU(approximate="none")
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gated_layers(x)
        gated, non_gated = h[..., : self.intermediate_size], h[..., self.intermediate_size :]
        h = self.dropout(self.act(gated) * non_gated)
        return self.layernorm(self.wo(h) + x)


class BertLayer(nn.Module):
    def __init__(self, config: DnaBertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.mlp = BertGatedLinearUnitMLP(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attention(x, bias))


class BertEncoder(nn.Module):
    def __init__(self, config: DnaBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.register_buffer(
            "slopes", torch.tensor(alibi_slopes(config.num_attention_heads)), persistent=False
        )

    def alibi(self, length: int | torch.SymInt, device: torch.device) -> torch.Tensor:
        """(1, nh, T, T) bias ``-slope * |i - j|`` for the length that arrives."""
        pos = torch.arange(length, device=device)
        distance = (pos[None, :] - pos[:, None]).abs().to(self.slopes.dtype)
        return (-self.slopes[:, None, None] * distance)[None]

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Additive mask as published: 0 where attended, -10000 at padding keys.
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        bias = mask_bias + self.alibi(x.shape[1], x.device).to(x.dtype)  # (B, nh, T, T)
        for layer in self.layer:
            x = layer(x, bias)
        return x


class BertPooler(nn.Module):
    def __init__(self, config: DnaBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden[:, 0]))


class DnaBertModel(nn.Module):
    """The DNABERT-2 backbone: ``(input_ids, attention_mask) -> (last_hidden_state, pooled)``."""

    def __init__(self, config: DnaBertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooler else None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        x = self.encoder(x, attention_mask)
        x = x * attention_mask[..., None].to(x.dtype)  # zeros at padding, as published
        pooled = self.pooler(x) if self.pooler is not None else None
        return x, pooled


class BertMLMHead(nn.Module):
    """``cls.predictions`` of BertForMaskedLM, decoder tied to the word embeddings."""

    def __init__(self, config: DnaBertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform_dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.word_embeddings = word_embeddings

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.transform_norm(F.gelu(self.transform_dense(hidden)))
        return F.linear(h, self.word_embeddings.weight, self.decoder_bias)


# --------------------------------------------------------------------------------------------
# Checkpoint loading


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``*.safetensors`` or a torch ``*.bin`` (tensors only, no code executed)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def find_weights(directory: str | Path) -> Path:
    directory = Path(directory)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"{directory}: no model.safetensors or pytorch_model.bin (a DNABERT-2 checkpoint "
        "directory holds config.json, tokenizer.json and one of those)"
    )


def backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the backbone keys of a published state dict, without the ``bert.`` prefix.

    ``cls.predictions.*`` (the MLM head) and a classifier are dropped; keys with and without
    the ``bert.`` prefix are both accepted.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("bert."):
            key = key[len("bert.") :]
        if key.split(".", 1)[0] in ("embeddings", "encoder", "pooler"):
            out[key] = value
    return out


def load_backbone_state(model: DnaBertModel, state: dict[str, torch.Tensor]) -> list[str]:
    """Load published weights into ``model``; return the names that were initialised instead.

    Only the pooler may be missing (the pretrained MLM checkpoint has none): it keeps its
    initialisation. Anything else missing or unexpected is an error.
    """
    weights = backbone_state(state)
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
    # position_ids and similar buffers of other BERTs are not ours; anything else is a mismatch.
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the DNABERT-2 architecture: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}"
        )
    return [k for k in result.missing_keys if k.startswith("pooler.")]
