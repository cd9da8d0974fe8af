"""Classification heads on the DNABERT-2 backbone and the full classifiers.

Promoter heads follow the DNABERT-2_CNN_BiLSTM study; the lncRNA head follows
iLoc-lncRNA-BERT. Unlike the study's code, every head reads each sequence's *own* valid
positions (its last valid LSTM step, its own pooled length, its own mean), so a sequence scores
the same alone or padded inside any batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from service.contract.tasks import LNCRNA_VARIANT, PROMOTER_VARIANTS
from training.models.dnabert2 import DnaBertConfig, DnaBertModel

ALL_VARIANTS = (*PROMOTER_VARIANTS, LNCRNA_VARIANT)

LSTM_HIDDEN = 128  # per direction, as in the study


def last_valid_step(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Bidirectional LSTM output at each sequence's own last valid step (B, 2*hidden).

    The forward direction is causal, so its output at ``length - 1`` does not see the padding
    after it. The backward direction of a packed BiLSTM starts at the last valid step: there its
    output is the backward LSTM applied to that one step alone, which is what we compute.
    This is exact, exports to a plain ONNX LSTM, and needs no packed sequences.
    """
    B = x.shape[0]
    idx = (lengths - 1).clamp(min=0)
    rows = torch.arange(B, device=x.device)
    out, _ = lstm(x)  # (B, T, 2h)
    forward = out[rows, idx, : lstm.hidden_size]
    last = x[rows, idx].unsqueeze(1)  # (B, 1, D)
    backward = lstm(last)[0][:, 0, lstm.hidden_size :]
    return torch.cat([forward, backward], dim=-1)


def pool_pairs(x: torch.Tensor, mode: str) -> torch.Tensor:
    """MaxPool1d(2) / AvgPool1d(2) over (B, C, T) -> (B, C, T // 2), written as a reshape so that
    the exported graph keeps a dynamic sequence axis (nn.MaxPool1d makes torch.export
    specialise it)."""
    B, C, T = x.shape
    pairs = x[..., : (T // 2) * 2].reshape(B, C, T // 2, 2)
    return pairs.amax(dim=-1) if mode == "max" else pairs.mean(dim=-1)


class BaseHead(nn.Module):
    """DNABERT-2's sequence classifier: pooler (in the backbone), dropout, linear."""

    def __init__(self, hidden: int, dropout: float, num_labels: int = 2):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, hidden, mask, pooled):
        return self.classifier(self.dropout(pooled))


class ConvBlock(nn.Module):
    """Conv1d(H->2H, k=3, pad=1), ReLU, pool(2), BatchNorm1d(2H), dropout on (B, T, H)."""

    def __init__(self, hidden: int, dropout: float, pool: str):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', not {pool!r}")
        self.conv = nn.Conv1d(hidden, 2 * hidden, kernel_size=3, padding=1)
        self.pool = pool
        self.norm = nn.BatchNorm1d(2 * hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Padded positions are zero (backbone output), so the convolution at a sequence's last
        # valid token sees the same zero it would see alone. Pooled steps below length // 2
        # only cover valid tokens: that is each sequence's own pooled length.
        x = F.relu(self.conv(hidden.transpose(1, 2)))  # (B, 2H, T)
        x = self.dropout(self.norm(pool_pairs(x, self.pool)))  # (B, 2H, T//2)
        lengths = mask.sum(dim=1) // 2
        return x.transpose(1, 2), lengths  # (B, T//2, 2H), (B,)


class CnnHead(nn.Module):
    def __init__(self, hidden: int, dropout: float, num_labels: int = 2):
        super().__init__()
        self.block = ConvBlock(hidden, dropout, "max")
        self.classifier = nn.Linear(2 * hidden, num_labels)

    def forward(self, hidden, mask, pooled):
        x, _ = self.block(hidden, mask)
        return self.classifier(x[:, 0])


class BiLstmHead(nn.Module):
    def __init__(self, hidden: int, dropout: float, num_labels: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(hidden, LSTM_HIDDEN, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * LSTM_HIDDEN, num_labels)

    def forward(self, hidden, mask, pooled):
        return self.classifier(last_valid_step(self.lstm, hidden, mask.sum(dim=1)))


class CnnBiLstmHead(nn.Module):
    def __init__(self, hidden: int, dropout: float, pool: str, num_labels: int = 2):
        super().__init__()
        self.block = ConvBlock(hidden, dropout, pool)
        self.lstm = nn.LSTM(2 * hidden, LSTM_HIDDEN, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * LSTM_HIDDEN, num_labels)

    def forward(self, hidden, mask, pooled):
        x, lengths = self.block(hidden, mask)
        return self.classifier(last_valid_step(self.lstm, x, lengths))


class LncRnaHead(nn.Module):
    """iLoc-lncRNA-BERT: masked mean, dropout, H->64, dropout, 64->3 (sigmoid outside)."""

    def __init__(self, hidden: int, dropout: float, num_labels: int = 3):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, 64)
        self.classifier = nn.Linear(64, num_labels)

    def forward(self, hidden, mask, pooled):
        m = mask[..., None].to(hidden.dtype)
        mean = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return self.classifier(self.dropout(self.dense(self.dropout(mean))))


def build_head(variant: str, hidden: int, dropout: float) -> nn.Module:
    if variant == "base":
        return BaseHead(hidden, dropout)
    if variant == "cnn":
        return CnnHead(hidden, dropout)
    if variant == "bilstm":
        return BiLstmHead(hidden, dropout)
    if variant in ("cnn_bilstm_max", "cnn_bilstm_avg"):
        return CnnBiLstmHead(hidden, dropout, variant.rsplit("_", 1)[1])
    if variant == LNCRNA_VARIANT:
        return LncRnaHead(hidden, dropout)
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(ALL_VARIANTS)}")


class SequenceClassifier(nn.Module):
    """Backbone + head: ``(input_ids, attention_mask) -> logits``."""

    def __init__(self, config: DnaBertConfig, variant: str, head_dropout: float = 0.1):
        super().__init__()
        self.variant = variant
        self.head_dropout = head_dropout
        self.bert = DnaBertModel(config, add_pooler=True)
        self.head = build_head(variant, config.hidden_size, head_dropout)

    @property
    def config(self) -> DnaBertConfig:
        return self.bert.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden, pooled = self.bert(input_ids, attention_mask)
        return self.head(hidden, attention_mask, pooled)

    def describe(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "head_dropout": self.head_dropout,
            "head_class": type(self.head).__name__,
            "parameters": sum(p.numel() for p in self.parameters()),
        }
