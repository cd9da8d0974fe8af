"""Which tokenizer a model folder uses, built from its card.

The card's ``tokenization`` entry says it: ``kind`` ``"bpe"`` (the default, so cards without
``kind`` load as before) reads ``tokenizer.json`` with :class:`~service.contract.bpe.SequenceTokenizer`;
``kind`` ``"kmer"`` (with ``k`` and ``special_tokens``) reads a DNABERT ``vocab.txt`` with
:class:`~service.contract.kmer.KmerTokenizer`. :func:`tokenizer_for_card` builds either one, for
the service and for training alike. The names below are also re-exported here, so that callers
need one import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.contract.bpe import SPECIAL_TOKENS, SequenceTokenizer
from service.contract.errors import ModelArtifactError
from service.contract.kmer import KmerTokenizer
from service.contract.tokens import Encoded, SequenceTokenizerLike, Side, TruncationPolicy, pad_batch

__all__ = [
    "SPECIAL_TOKENS",
    "Encoded",
    "KmerTokenizer",
    "SequenceTokenizer",
    "SequenceTokenizerLike",
    "Side",
    "TruncationPolicy",
    "pad_batch",
    "tokenizer_for_card",
    "tokenizer_from_entry",
]

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
    if not isinstance(k, int) or isinstance(k, bool):
        raise ValueError(f"kind 'kmer' needs an integer 'k' (1 to 6), got {k!r}")
    return KmerTokenizer.from_file(path, k, True if special is None else bool(special), policy)


def tokenizer_for_card(folder: str | Path, card) -> SequenceTokenizerLike:
    """The tokenizer of an exported model folder, as its card describes it.

    Problems are reported as :class:`service.contract.errors.ModelArtifactError` naming the folder.
    """
    folder = Path(folder)
    name = card.files["tokenizer"]
    try:
        return tokenizer_from_entry(folder / name, card.tokenization)
    except FileNotFoundError as exc:
        raise ModelArtifactError(f"{folder}: tokenizer file {name} is missing") from exc
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception types
        raise ModelArtifactError(f"{folder}: cannot build the tokenizer from {name} and the card's "
                                 f"tokenization entry: {exc}") from exc
