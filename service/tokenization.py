"""Tokenization of normalised sequences with a ``tokenizers`` BPE tokenizer.

Both the published DNABERT-2 tokenizer and the ones this project trains are stored as a
``tokenizer.json`` (template ``[CLS] $A [SEP]``, ``[PAD]`` = 3). The truncation policy of a model
is part of its card and is applied here, identically in training and serving:

* ``max_nucleotides`` / ``nucleotide_truncation_side``: keep only that many bases, from the
  chosen end, before tokenization (iLoc-lncRNA-BERT keeps the last 2,292 nt: side ``left``
  drops the 5' start and keeps the 3' end);
* ``max_tokens`` / ``truncation_side``: cut the token sequence, special tokens included.

The card's ``tokenization`` entry says which tokenizer a model folder uses: ``kind`` ``"bpe"``
(the default, so cards without ``kind`` load as before) reads ``tokenizer.json`` with
:class:`SequenceTokenizer`; ``kind`` ``"kmer"`` (with ``k`` and ``special_tokens``) reads a
DNABERT ``vocab.txt`` with :class:`service.kmer.KmerTokenizer`. :func:`tokenizer_for_card` builds
either one, for the service and for training alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

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

    def save(self, path: str | Path) -> None: ...

    def card_tokenization(self) -> dict[str, Any]: ...


class SequenceTokenizer:
    """A DNABERT-2 style tokenizer with a fixed truncation policy."""

    kind = "bpe"
    file_name = "tokenizer.json"
    special_tokens = True

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
        self._core = _bare_bpe(tokenizer, self.cls_id, self.sep_id)

    @classmethod
    def from_file(cls, path: str | Path, policy: TruncationPolicy | None = None) -> SequenceTokenizer:
        return cls(Tokenizer.from_file(str(path)), policy or TruncationPolicy())

    @property
    def backend(self) -> Tokenizer:
        return self._tok

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path))

    def card_tokenization(self) -> dict[str, Any]:
        """The card's ``tokenization`` entry (no ``kind``: ``bpe`` is the default)."""
        return self.policy.as_card_entry()

    def encode(self, sequences: Sequence[str]) -> list[Encoded]:
        """Encode normalised sequences (see :func:`service.sequence.normalize_sequence`)."""
        clipped = [self.policy.clip(s) for s in sequences]
        if self._core is None:
            encodings = self._encode_batch([s for s, _ in clipped], add_special_tokens=True)
            return [
                Encoded(enc.ids, cut or bool(enc.overflowing))
                for enc, (_, cut) in zip(encodings, clipped, strict=True)
            ]
        # The same ids as the full pipeline, with the template and truncation done here.
        cls_id, sep_id, limit = self.cls_id, self.sep_id, self.policy.max_tokens - 2
        right = self.policy.truncation_side == "right"
        out = []
        for enc, (_, cut) in zip(self._core([s for s, _ in clipped], add_special_tokens=False), clipped,
                                 strict=True):
            ids = enc.ids
            if len(ids) > limit:
                ids, cut = (ids[:limit] if right else ids[len(ids) - limit :]), True
            out.append(Encoded([cls_id, *ids, sep_id], cut))
        return out

    def pad(self, batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        return pad_batch(batch, self.pad_id)


def _bare_bpe(tokenizer: Tokenizer, cls_id: int, sep_id: int):
    """``encode_batch_fast`` of a copy of ``tokenizer`` without pre-tokenizer, post-processor and
    truncation, when that gives the same ids on normalised input; else None.

    Normalised sequences hold only A, C, G, T and N, so a whitespace pre-tokenizer (the published
    DNABERT-2 tokenizer has one) leaves them whole, and a ``[CLS] $A [SEP]`` template with
    right or left truncation is a list operation. Skipping those stages in the Rust pipeline,
    and building the template here, is measurably faster for 300 bp inputs.
    """
    spec = json.loads(tokenizer.to_str())
    pre = (spec.get("pre_tokenizer") or {}).get("type")
    post = spec.get("post_processor") or {}
    single = [next(iter(piece.values())).get("id") for piece in post.get("single", [])]
    if (spec.get("normalizer") is not None or pre not in (None, "Whitespace", "WhitespaceSplit")
            or post.get("type") != "TemplateProcessing" or single != ["[CLS]", "A", "[SEP]"]
            or spec.get("model", {}).get("type") != "BPE" or spec["model"].get("dropout")
            or not hasattr(tokenizer, "encode_batch_fast")):
        return None
    ids = post.get("special_tokens", {})
    if ids.get("[CLS]", {}).get("ids") != [cls_id] or ids.get("[SEP]", {}).get("ids") != [sep_id]:
        return None
    core = Tokenizer.from_str(tokenizer.to_str())
    core.no_truncation()
    core.no_padding()
    core.pre_tokenizer = None
    core.post_processor = None
    return core.encode_batch_fast


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


TOKENIZATION_KINDS = ("bpe", "kmer")
_POLICY_KEYS = ("max_tokens", "truncation_side", "max_nucleotides", "nucleotide_truncation_side")
_INFO_KEYS = ("note",)  # free text for people (e.g. why long input is cut); not interpreted


def tokenizer_from_entry(path: str | Path, tokenization: dict[str, Any]) -> SequenceTokenizerLike:
    """A tokenizer from a tokenizer file and a card's ``tokenization`` entry.

    Raises ``ValueError`` naming what is wrong: an unknown ``kind`` or key, a ``k`` outside
    1..6, a vocabulary that does not match ``k``.
    """
    entry = dict(tokenization)
    kind = entry.pop("kind", "bpe")
    if kind not in TOKENIZATION_KINDS:
        raise ValueError(f"unknown tokenization kind {kind!r}; expected one of {', '.join(TOKENIZATION_KINDS)}")
    k = entry.pop("k", None)
    special = entry.pop("special_tokens", None)
    for key in _INFO_KEYS:
        entry.pop(key, None)
    unknown = sorted(set(entry) - set(_POLICY_KEYS))
    if unknown:
        raise ValueError(f"unknown tokenization keys {unknown}")
    policy = TruncationPolicy(**entry)
    if kind == "bpe":
        if k is not None or special is not None:
            raise ValueError("'k' and 'special_tokens' belong to kind 'kmer', not 'bpe'")
        return SequenceTokenizer.from_file(path, policy)
    from service.kmer import KmerTokenizer

    if not isinstance(k, int) or isinstance(k, bool):
        raise ValueError(f"kind 'kmer' needs an integer 'k' (1 to 6), got {k!r}")
    return KmerTokenizer.from_file(path, k, True if special is None else bool(special), policy)


def tokenizer_for_card(folder: str | Path, card) -> SequenceTokenizerLike:
    """The tokenizer of an exported model folder, as its card describes it.

    Problems are reported as :class:`service.errors.ModelArtifactError` naming the folder.
    """
    from service.errors import ModelArtifactError

    folder = Path(folder)
    name = card.files["tokenizer"]
    try:
        return tokenizer_from_entry(folder / name, card.tokenization)
    except FileNotFoundError as exc:
        raise ModelArtifactError(f"{folder}: tokenizer file {name} is missing") from exc
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception types
        raise ModelArtifactError(f"{folder}: cannot build the tokenizer from {name} and the card's "
                                 f"tokenization entry: {exc}") from exc
