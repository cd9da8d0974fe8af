"""Non-transformer baselines of the promoter study: one-hot CNN, BiGRU and CNN-GRU.

They read one token per base (the k = 1 vocabulary of :class:`service.contract.kmer.KmerTokenizer`, no
special tokens): each id becomes a one-hot vector over A, C, G, T through a fixed table, and
``N``, ``[UNK]`` and ``[PAD]`` become the zero vector. Like the DNABERT-2 heads in
:mod:`training.models.heads`, every model reads each sequence's own valid positions only, so a
sequence scores the same alone or padded inside any batch:

* after every convolution the padded positions are set back to zero, so the next convolution
  at a sequence's last bases sees the same zeros it would see alone (zero padding);
* pooling by ``p`` first appends ``p - 1`` zero positions, so the last, partial window exists
  alone and in a batch alike; the pooled length is ``ceil(length / p)``;
* global max pooling reads valid positions only (features are >= 0 after ReLU, padded ones are 0);
* the bidirectional GRU is two GRUs: one reads each sequence forwards, the other reads each
  sequence's own bases backwards (reversed inside its length); both are read at the last valid
  step. This equals the final states ``h_n`` of a packed ``nn.GRU(bidirectional=True)``,
  exports to two plain ONNX GRU nodes and needs no packed sequences.

Variants (names are prefixed ``onehot_`` because ``cnn`` is already a DNABERT-2 head):

* ``onehot_cnn_gru`` — the study's CNN-GRU: 2 convolution layers, 1 bidirectional GRU,
  5 linear layers (157,618 parameters);
* ``onehot_cnn`` — 3 convolution blocks, global max pooling, one dense layer;
* ``onehot_gru`` — a bidirectional GRU over the bases, then 2 linear layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ONEHOT_VARIANTS = ("onehot_cnn_gru", "onehot_cnn", "onehot_gru")
ARCHITECTURE = "onehot"
MAX_TOKENS = 2048  # = bases: one token per base, no special tokens

LONG_INPUT_NOTE = (
    "One token per base, no special tokens; at most 2,048 bases. Longer input is truncated "
    "deliberately, keeping the 5' start, and flagged 'truncated', as the DNABERT-2 promoter models "
    "do (their 512 BPE tokens cover about 2,000-2,500 bases). The convolutions and the GRU accept "
    "any length, but the models were trained on 300 bp windows: split long sequences yourself to "
    "score windows."
)


@dataclass
class BaselineConfig:
    """Sizes of the baselines (one config serves all three; each uses the fields it needs)."""

    vocab_size: int = 9
    base_ids: tuple[int, int, int, int] = (5, 7, 8, 6)  # ids of A, C, G, T in the k = 1 vocabulary
    conv_channels: tuple[int, ...] = (64, 64)
    conv_kernels: tuple[int, ...] = (9, 5)
    pool: int = 2
    gru_hidden: int = 64
    linear: tuple[int, ...] = (256, 128, 128, 16)  # hidden widths of the CNN-GRU's 5 linear layers
    cnn_channels: tuple[int, ...] = (64, 96, 128)
    cnn_kernels: tuple[int, ...] = (9, 7, 5)
    cnn_bins: int = 10  # max over this many bins of each sequence's own length (1: global max)
    gru_only_hidden: int = 64
    gru_only_linear: int = 64
    dropout: float = 0.2

    def __post_init__(self) -> None:
        for name in ("base_ids", "conv_channels", "conv_kernels", "linear", "cnn_channels", "cnn_kernels"):
            setattr(self, name, tuple(getattr(self, name)))
        if len(self.base_ids) != 4:
            raise ValueError("base_ids needs the ids of A, C, G and T")
        if len(self.conv_channels) != len(self.conv_kernels) or len(self.cnn_channels) != len(self.cnn_kernels):
            raise ValueError("one kernel size per convolution layer")
        if any(k % 2 == 0 for k in (*self.conv_kernels, *self.cnn_kernels)):
            raise ValueError("kernel sizes must be odd (same-length convolutions)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


PRESETS: dict[str, BaselineConfig] = {
    "small": BaselineConfig(),
    "tiny": BaselineConfig(conv_channels=(8, 8), gru_hidden=8, linear=(16, 16, 8, 8),
                           cnn_channels=(8, 8, 8), gru_only_hidden=8, gru_only_linear=8),
}


def binned_max(x: torch.Tensor, lengths: torch.Tensor, bins: int) -> torch.Tensor:
    """Max of (B, C, T) features over ``bins`` equal parts of each sequence's own length -> (B, C, bins).

    Position ``t < length`` falls into bin ``t * bins // length``: the bins follow each sequence's
    length (a fixed-size, position-aware summary, like flattening for sequences of one length),
    and padding falls in none. Features must be >= 0 (after ReLU): an empty bin gives 0.
    """
    T = x.shape[2]
    pos = torch.arange(T, device=x.device)[None, :]
    length = lengths[:, None].clamp(min=1)
    which = torch.div(pos * bins, length, rounding_mode="floor")  # (B, T)
    member = (which[..., None] == torch.arange(bins, device=x.device)) & (pos < length)[..., None]
    return (x[..., None] * member[:, None].to(x.dtype)).amax(dim=2)


def make_tokenizer(max_tokens: int = MAX_TOKENS):
    """One token per base (k = 1, standard DNABERT-style vocabulary, no special tokens)."""
    from service.contract.kmer import KmerTokenizer
    from service.contract.tokenization import TruncationPolicy

    return KmerTokenizer.for_k(1, special_tokens=False, policy=TruncationPolicy(max_tokens, "right"))


def config_for(tok, preset: str = "small") -> BaselineConfig:
    """A preset with the tokenizer's vocabulary size and the ids of A, C, G, T."""
    if preset not in PRESETS:
        raise ValueError(f"unknown baseline preset {preset!r}; choose from {', '.join(PRESETS)}")
    ids = {t: i for i, t in enumerate(tok.vocab)}
    return BaselineConfig.from_dict({**PRESETS[preset].to_dict(), "vocab_size": tok.vocab_size,
                                     "base_ids": [ids[b] for b in "ACGT"]})


def lengths_of(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(dim=1)


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Set positions at or past each sequence's length to zero; x is (B, C, T)."""
    pos = torch.arange(x.shape[2], device=x.device)
    return x * (pos[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]


def pool_windows(x: torch.Tensor, lengths: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over windows of ``p`` positions of (B, C, T) -> (B, C, ceil(T / p)), with lengths.

    ``p - 1`` zero positions are appended first, so a sequence's last partial window is the same
    alone (its own zero tail) and in a batch (zeroed padding). Written as pad + reshape + amax so
    the exported graph keeps a dynamic sequence axis.
    """
    if p == 1:
        return x, lengths
    B, C, _ = x.shape
    x = F.pad(x, (0, p - 1))
    n = x.shape[2] // p
    x = x[..., : n * p].reshape(B, C, n, p).amax(dim=-1)
    return x, torch.div(lengths + (p - 1), p, rounding_mode="floor")


class BiGru(nn.Module):
    """Final states of a bidirectional GRU, each direction over each sequence's own steps."""

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.hidden_size = hidden
        self.forward_gru = nn.GRU(input_size, hidden, batch_first=True)
        self.backward_gru = nn.GRU(input_size, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), lengths (B,) >= 1 -> (B, 2 * hidden): [forward h_n, backward h_n]."""
        B, T, C = x.shape
        idx = (lengths - 1).clamp(min=0)
        rows = torch.arange(B, device=x.device)
        t = torch.arange(T, device=x.device)[None, :]
        rev = lengths[:, None] - 1 - t  # position read at step t of the backward pass
        rev = torch.where(rev >= 0, rev, t)  # past the length: padding, never read
        x_rev = x.gather(1, rev[..., None].expand(B, T, C))
        fwd = self.forward_gru(x)[0][rows, idx]
        bwd = self.backward_gru(x_rev)[0][rows, idx]
        return torch.cat([fwd, bwd], dim=-1)

    @classmethod
    def from_bidirectional(cls, gru: nn.GRU) -> BiGru:
        """The same weights as a one-layer ``nn.GRU(bidirectional=True, batch_first=True)``."""
        out = cls(gru.input_size, gru.hidden_size)
        with torch.no_grad():
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                getattr(out.forward_gru, name).copy_(getattr(gru, name))
                getattr(out.backward_gru, name).copy_(getattr(gru, name + "_reverse"))
        return out


class OneHot(nn.Module):
    """Token ids -> (B, 4, T) one-hot over A, C, G, T; every other id is the zero vector."""

    def __init__(self, vocab_size: int, base_ids: tuple[int, ...]):
        super().__init__()
        table = torch.zeros(vocab_size, 4)
        for channel, token in enumerate(base_ids):
            table[token, channel] = 1.0
        self.register_buffer("table", table, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.table).transpose(1, 2)


class ConvBlock(nn.Module):
    """Conv1d (same length) -> BatchNorm -> ReLU -> zero the padding -> dropout."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.norm = nn.BatchNorm1d(c_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.dropout(zero_padding(F.relu(self.norm(self.conv(x))), lengths))


class _Baseline(nn.Module):
    architecture = ARCHITECTURE

    def __init__(self, config: BaselineConfig, variant: str, head_dropout: float | None):
        super().__init__()
        self.config = config
        self.variant = variant
        self.head_dropout = config.dropout if head_dropout is None else head_dropout
        self.onehot = OneHot(config.vocab_size, config.base_ids)

    def describe(self) -> dict[str, Any]:
        return {"variant": self.variant, "head_dropout": self.head_dropout,
                "head_class": type(self).__name__, "parameters": sum(p.numel() for p in self.parameters())}


class CnnGru(_Baseline):
    """2 x (conv, BN, ReLU, max-pool), BiGRU final states, 5 linear layers."""

    def __init__(self, config: BaselineConfig, variant: str = "onehot_cnn_gru", head_dropout: float | None = None):
        super().__init__(config, variant, head_dropout)
        chans = (4, *config.conv_channels)
        self.convs = nn.ModuleList(ConvBlock(a, b, k, config.dropout)
                                   for a, b, k in zip(chans[:-1], chans[1:], config.conv_kernels))
        self.gru = BiGru(chans[-1], config.gru_hidden)
        widths = (2 * config.gru_hidden, *config.linear, 2)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers += [nn.ReLU(), nn.Dropout(self.head_dropout)]
        self.head = nn.Sequential(*layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = lengths_of(attention_mask)
        x = self.onehot(input_ids)
        for conv in self.convs:
            x, lengths = pool_windows(conv(x, lengths), lengths, self.config.pool)
        return self.head(self.gru(x.transpose(1, 2), lengths.clamp(min=1)))


class Cnn(_Baseline):
    """3 x (conv, BN, ReLU), max-pool 2 between, max over bins of each sequence's length, one dense layer."""

    def __init__(self, config: BaselineConfig, variant: str = "onehot_cnn", head_dropout: float | None = None):
        super().__init__(config, variant, head_dropout)
        chans = (4, *config.cnn_channels)
        self.convs = nn.ModuleList(ConvBlock(a, b, k, config.dropout)
                                   for a, b, k in zip(chans[:-1], chans[1:], config.cnn_kernels))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(self.head_dropout), nn.Linear(chans[-1] * config.cnn_bins, 2))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = lengths_of(attention_mask)
        x = self.onehot(input_ids)
        for i, conv in enumerate(self.convs):
            x = conv(x, lengths)
            if i < len(self.convs) - 1:
                x, lengths = pool_windows(x, lengths, self.config.pool)
        return self.head(binned_max(x, lengths, self.config.cnn_bins))


class Gru(_Baseline):
    """BiGRU over the one-hot bases, final states, linear -> ReLU -> dropout -> linear."""

    def __init__(self, config: BaselineConfig, variant: str = "onehot_gru", head_dropout: float | None = None):
        super().__init__(config, variant, head_dropout)
        self.gru = BiGru(4, config.gru_only_hidden)
        self.head = nn.Sequential(nn.Linear(2 * config.gru_only_hidden, config.gru_only_linear), nn.ReLU(),
                                  nn.Dropout(self.head_dropout), nn.Linear(config.gru_only_linear, 2))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = lengths_of(attention_mask).clamp(min=1)
        return self.head(self.gru(self.onehot(input_ids).transpose(1, 2), lengths))


_CLASSES = {"onehot_cnn_gru": CnnGru, "onehot_cnn": Cnn, "onehot_gru": Gru}


def build_baseline(config: BaselineConfig, variant: str, head_dropout: float | None = None) -> _Baseline:
    if variant not in _CLASSES:
        raise ValueError(f"unknown baseline {variant!r}; choose from {', '.join(ONEHOT_VARIANTS)}")
    return _CLASSES[variant](config, variant, head_dropout)
