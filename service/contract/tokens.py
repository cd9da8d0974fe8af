"""What every tokenizer of the project shares: the truncation policy, the encoded row, the
interface the service and training rely on, and right-padding into ``input_ids`` /
``attention_mask``.

The truncation policy of a model is part of its card and is applied identically in training
and serving:

* ``max_nucleotides`` / ``nucleotide_truncation_side``: keep only that many bases, from the
  chosen end, before tokenization (iLoc-lncRNA-BERT keeps the last 2,292 nt: side ``left``
  drops the 5' start and keeps the 3' end);
* ``max_tokens`` / ``truncation_side``: cut the token sequence, special tokens included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

Side = Literal["left", "right"]


@dataclass(frozen=True, slots=True)
class TruncationPolicy:
    max_tokens: int = 512
    truncation_side: Side = "right"
    max_nucleotides: int | None = None
    nucleotide_truncation_side: Side = "left"

    def clip(self, seq: str) -> tuple[str, bool]:
        """Keep at most ``max_nucleotides`` bases from the chosen end; and whether any were cut."""
        limit = self.max_nucleotides
        if limit is None or len(seq) <= limit:
            return seq, False
        if self.nucleotide_truncation_side == "left":
            return seq[-limit:], True
        return seq[:limit], True

    def as_card_entry(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "truncation_side": self.truncation_side,
                "max_nucleotides": self.max_nucleotides,
                "nucleotide_truncation_side": self.nucleotide_truncation_side}


@dataclass(frozen=True, slots=True)
class Encoded:
    ids: list[int]
    truncated: bool


class SequenceTokenizerLike(Protocol):
    """What the service and training need from a tokenizer (BPE or k-mer)."""

    kind: str
    file_name: str
    special_tokens: bool
    policy: TruncationPolicy
    pad_id: int
    cls_id: int
    sep_id: int
    unk_id: int
    mask_id: int
    vocab_size: int

    def encode(self, sequences: Sequence[str]) -> list[Encoded]: ...

    def pad(self, batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]: ...

    def token_text(self, token_id: int) -> str:
        """A token id's text in the vocabulary (``[UNK]`` for an id outside it)."""
        ...

    def save(self, path: str | Path) -> None: ...

    def card_tokenization(self) -> dict[str, Any]: ...


def pad_batch(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token ids to the longest; return ``input_ids`` and ``attention_mask`` (int64)."""
    if not batch:
        raise ValueError("empty batch")
    width = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask
