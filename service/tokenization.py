"""Tokenization of normalised sequences with a ``tokenizers`` BPE tokenizer.

Both the published DNABERT-2 tokenizer and the ones this project trains are stored as a
``tokenizer.json`` (template ``[CLS] $A [SEP]``, ``[PAD]`` = 3). The truncation policy of a model
is part of its card and is applied here, identically in training and serving:

* ``max_nucleotides`` / ``nucleotide_truncation_side``: keep only that many bases, from the
  chosen end, before tokenization (iLoc-lncRNA-BERT keeps the last 2,292 nt: side ``left``
  drops the 5' start and keeps the 3' end);
* ``max_tokens`` / ``truncation_side``: cut the token sequence, special tokens included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

Side = Literal["left", "right"]

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


@dataclass(frozen=True, slots=True)
class TruncationPolicy:
    max_tokens: int = 512
    truncation_side: Side = "right"
    max_nucleotides: int | None = None
    nucleotide_truncation_side: Side = "left"


@dataclass(frozen=True, slots=True)
class Encoded:
    ids: list[int]
    truncated: bool


class SequenceTokenizer:
    """A DNABERT-2 style tokenizer with a fixed truncation policy."""

    def __init__(self, tokenizer: Tokenizer, policy: TruncationPolicy):
        if policy.max_tokens < 3:
            raise ValueError("max_tokens must leave room for [CLS], one token and [SEP]")
        self.policy = policy
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.enable_truncation(policy.max_tokens, direction=policy.truncation_side)
        vocab = tokenizer.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}")
        self.pad_id = vocab["[PAD]"]
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.unk_id = vocab["[UNK]"]
        self.mask_id = vocab["[MASK]"]
        self.vocab_size = tokenizer.get_vocab_size()
        # encode_batch_fast (tokenizers >= 0.21) skips character offsets, which are not used
        # here: the same ids, about a quarter faster.
        self._encode_batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    @classmethod
    def from_file(cls, path: str | Path, policy: TruncationPolicy | None = None) -> SequenceTokenizer:
        return cls(Tokenizer.from_file(str(path)), policy or TruncationPolicy())

    @property
    def backend(self) -> Tokenizer:
        return self._tok

    def _clip(self, seq: str) -> tuple[str, bool]:
        limit = self.policy.max_nucleotides
        if limit is None or len(seq) <= limit:
            return seq, False
        if self.policy.nucleotide_truncation_side == "left":
            return seq[-limit:], True
        return seq[:limit], True

    def encode(self, sequences: Sequence[str]) -> list[Encoded]:
        """Encode normalised sequences (see :func:`service.sequence.normalize_sequence`)."""
        clipped = [self._clip(s) for s in sequences]
        encodings = self._encode_batch([s for s, _ in clipped], add_special_tokens=True)
        return [
            Encoded(enc.ids, cut or bool(enc.overflowing))
            for enc, (_, cut) in zip(encodings, clipped, strict=True)
        ]

    def pad(self, batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        return pad_batch(batch, self.pad_id)


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
