"""Embeddings: the backbone's hidden states of a record, pooled or per token.

A model folder with a backbone graph (card role ``embedding``, see
:mod:`service.contract.card`) gives, for each record, the last hidden state of every token
that is not padding: ``[CLS]``, the sequence's tokens, ``[SEP]`` (k-mer and BPE models alike).
What the service answers is made from those rows here, the same way for every endpoint
(``/v1/embeddings``, ``/embed``, the v2 protocol):

* ``mean`` (the default): the mean of every row, ``[CLS]`` and ``[SEP]`` included, as the
  DNABERT-2 authors pool (``torch.mean(hidden_states[0], dim=0)``);
* ``cls``: the ``[CLS]`` row;
* ``tokens``: the rows themselves, each with the span of the sequence it stands for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.contract.card import EMBEDDING_OUTPUT, EMBEDDING_ROLE  # noqa: F401 - defined with the card
from service.contract.tokens import SequenceTokenizerLike

POOLINGS = ("mean", "cls")
DEFAULT_POOLING = "mean"


def pool(hidden: np.ndarray, pooling: str) -> np.ndarray:
    """One record's vector from its ``(tokens, dim)`` hidden states (padding already removed)."""
    if pooling == "mean":
        return hidden.mean(axis=0, dtype=np.float64).astype(np.float32)
    if pooling == "cls":
        return np.array(hidden[0], dtype=np.float32)
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")


def token_spans(tokenizer: SequenceTokenizerLike, sequence: str, n_tokens: int) -> list[tuple[int, int] | None]:
    """The 0-based, half-open span of the normalised ``sequence`` that each of a record's
    ``n_tokens`` tokens stands for (``None`` for ``[CLS]`` and ``[SEP]``).

    The spans follow the card's truncation: with ``max_nucleotides`` only the kept end of the
    sequence is tokenized, and a token limit keeps the first (right truncation) or last tokens.
    """
    policy = tokenizer.policy
    kept, _ = policy.clip(sequence)
    cut = len(sequence) - len(kept)
    offset = cut if cut and policy.nucleotide_truncation_side == "left" else 0
    specials = 2 if tokenizer.special_tokens else 0
    body = n_tokens - specials
    if tokenizer.kind == "kmer":
        k = tokenizer.k  # type: ignore[attr-defined]
        windows = max(len(kept) - k + 1, 0)
        first = windows - body if policy.truncation_side == "left" else 0
        spans: list[tuple[int, int] | None] = [(offset + first + i, offset + first + i + k) for i in range(body)]
        if not specials and windows == 0:  # a sequence shorter than k: one [UNK] for the whole
            spans = [(offset, offset + len(kept))]
    else:
        enc = tokenizer.backend.encode(kept, add_special_tokens=False)  # type: ignore[attr-defined]
        pieces = list(enc.offsets)
        if len(pieces) > body:
            pieces = pieces[len(pieces) - body:] if policy.truncation_side == "left" else pieces[:body]
        spans = [(offset + a, offset + b) for a, b in pieces]
    return [None, *spans, None] if specials else spans


def usage_tokens(token_rows: Sequence[Sequence[int]]) -> int:
    """Tokens the model read for these records (``usage`` of the OpenAI answer)."""
    return sum(len(row) for row in token_rows)
