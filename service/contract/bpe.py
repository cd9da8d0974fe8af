"""DNABERT-2 byte-pair tokenization of normalised sequences with a ``tokenizers`` BPE model.

Both the published DNABERT-2 tokenizer and the ones this project trains are stored as a
``tokenizer.json`` (template ``[CLS] $A [SEP]``, ``[PAD]`` = 3).

Three ways to the same ids, the fastest that applies is used:

1. the project's C encoder (``service.contract._fastbpe``, built with the package where a C
   compiler is at hand): the BPE algorithm of ``tokenizers`` on the model's own merges, without
   strings, offsets or Encoding objects, a batch split over the cores. It takes sequences of the
   characters it knows (the vocabulary's single characters and ``N``, which is the unknown token
   in both); anything else goes to the next path. Checked against ``tokenizers`` when loaded
   (:func:`_fast_bpe`) and in the tests, on every tokenizer in ``models/``;
2. ``encode_batch_fast`` of the bare BPE model (:func:`_bare_bpe`);
3. the full ``tokenizers`` pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import random
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from service.contract.tokens import Encoded, TruncationPolicy, pad_batch

try:
    from service.contract import _fastbpe
except ImportError:  # built without a C compiler: the tokenizers paths below
    _fastbpe = None

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


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
        self._fast = _fast_bpe(tokenizer, self._core, self.unk_id) if self._core is not None else None
        self._threads = _threads()

    @classmethod
    def from_file(cls, path: str | Path, policy: TruncationPolicy | None = None) -> SequenceTokenizer:
        return cls(Tokenizer.from_file(str(path)), policy or TruncationPolicy())

    @property
    def backend(self) -> Tokenizer:
        return self._tok

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path))

    def token_text(self, token_id: int) -> str:
        return self._tok.id_to_token(int(token_id)) or "[UNK]"

    def card_tokenization(self) -> dict[str, Any]:
        """The card's ``tokenization`` entry (no ``kind``: ``bpe`` is the default)."""
        return self.policy.as_card_entry()

    def encode(self, sequences: Sequence[str]) -> list[Encoded]:
        """Encode normalised sequences (see :func:`service.contract.sequence.normalize_sequence`)."""
        clip = self.policy.clip
        clipped = [clip(s) for s in sequences] if self.policy.max_nucleotides is not None else \
            [(s, False) for s in sequences]
        if self._fast is not None:
            try:
                lists = self._fast.encode([s for s, _ in clipped], self.cls_id, self.sep_id, self._threads)
            except ValueError:  # a character the C encoder does not take: the tokenizers path
                lists = None
            if lists is not None:
                return self._finish(lists, clipped)
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
        append = out.append
        for enc, (_, cut) in zip(self._core([s for s, _ in clipped], add_special_tokens=False), clipped,
                                 strict=True):
            ids = enc.ids  # a new list on every access: completed in place
            if len(ids) > limit:
                ids, cut = (ids[:limit] if right else ids[len(ids) - limit :]), True
            ids.insert(0, cls_id)
            ids.append(sep_id)
            append(Encoded(ids, cut))
        return out

    def _finish(self, lists: list[list[int]], clipped: list[tuple[str, bool]]) -> list[Encoded]:
        """``[CLS] ids [SEP]`` lists as Encoded, cut to the policy's length where longer."""
        limit = self.policy.max_tokens
        out = [Encoded(ids, cut) for ids, (_, cut) in zip(lists, clipped, strict=True)]
        if any(len(ids) > limit for ids in lists):
            right = self.policy.truncation_side == "right"
            for i, e in enumerate(out):
                ids = e.ids
                if len(ids) > limit:
                    body = ids[1 : limit - 1] if right else ids[len(ids) - limit + 1 : -1]
                    out[i] = Encoded([self.cls_id, *body, self.sep_id], True)
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


def _threads() -> int:
    """Threads for the C encoder: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _fast_bpe(tokenizer: Tokenizer, core, unk_id: int):
    """The C encoder for ``tokenizer``'s BPE model, or None where it would not give the same ids.

    It applies where :func:`_bare_bpe` does (``core``) and the model has none of the options the
    C encoder leaves out (dropout, subword prefix or suffix, fused unknowns, byte fallback,
    ignore_merges), and no added token could be found inside a sequence of the characters it
    takes. Its ids are then compared with ``core``'s on sequences that exercise every merge
    path; any difference (never seen) leaves it unused, with a warning.
    """
    if _fastbpe is None or os.environ.get("DNABERT_FAST_BPE", "1") == "0":
        return None
    spec = json.loads(tokenizer.to_str())
    model = spec["model"]
    if any(model.get(k) for k in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk",
                                  "byte_fallback", "ignore_merges")):
        return None
    vocab: dict[str, int] = model["vocab"]
    chars = [vocab.get(chr(i), -1) for i in range(128)]
    if "N" not in vocab:
        chars[ord("N")] = unk_id
    taken = {chr(i) for i in range(128) if chars[i] >= 0}
    if any(set(t["content"]) <= taken for t in spec.get("added_tokens", [])):
        return None
    quads = []
    for rank, merge in enumerate(model["merges"]):
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        ids = vocab.get(left), vocab.get(right), vocab.get(left + right)
        if None in ids:
            return None
        quads.append((ids[0], ids[1], rank, ids[2]))
    encoder = _fastbpe.Encoder(struct.pack("<128i", *chars),
                               struct.pack(f"<{4 * len(quads)}i", *(v for q in quads for v in q)))
    rng = random.Random(0)
    alphabet = "".join(sorted(c for c in taken if c != "N")) or "ACGT"
    probe = [
        "",
        "N",
        "NNNN",
        *("".join(rng.choice(alphabet) for _ in range(n)) for n in (1, 2, 3, 7, 64, 300, 301, 1000)),
        *("".join(rng.choice(alphabet + "N" * (k % 2)) for _ in range(200)) for k in range(8)),
        *(c * n for c in alphabet for n in (5, 16, 99)),
        *("".join(rng.choice(alphabet[:2]) for _ in range(150)) for _ in range(4)),
    ]
    got = encoder.encode(probe, -1, -1, 1)
    want = [e.ids for e in core(probe, add_special_tokens=False)]
    if got != want:
        log.warning("the C BPE encoder disagrees with tokenizers on this tokenizer; using tokenizers")
        return None
    return encoder
