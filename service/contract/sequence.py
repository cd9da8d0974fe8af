"""Input normalisation shared by training and the service.

The published DNABERT-2 tokenizer has no normaliser: lowercase letters and ``N`` become
``[UNK]``. Every sequence is therefore normalised before tokenization, identically when a
model is trained and when it serves:

* whitespace (spaces, tabs, ``\\r``, ``\\n``) is removed;
* letters are upper-cased;
* RNA ``U`` becomes ``T`` (lncRNA records are often written as RNA);
* IUPAC ambiguity codes (``R Y S W K M B D H V``) and ``N`` become ``N``. Neither tokenizer has
  tokens for them, so each becomes one ``[UNK]`` token: the model sees "a base is here but it is
  unknown", the sequence keeps its length, and BPE merges do not cross it. The number of such
  bases is reported so that callers can flag the record;
* anything else (digits, punctuation, gap characters ``-``/``.``, ``*``, protein letters such
  as ``E F I L P Q``) is an error that names the record and the first offending position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.contract.errors import InvalidSequence

NUCLEOTIDES = frozenset("ACGT")
AMBIGUITY_CODES = frozenset("NRYSWKMBDHV")

_WHITESPACE = re.compile(r"\s+")
_TRANSLATE = str.maketrans({"U": "T", **{c: "N" for c in AMBIGUITY_CODES}})
_INVALID = re.compile(r"[^ACGTN]")
_CLEAN = re.compile(r"[ACGT]+")  # the common case: nothing to change


@dataclass(frozen=True, slots=True)
class NormalizedSequence:
    """A sequence ready for the tokenizer and what normalisation found in it."""

    sequence: str
    n_ambiguous: int  # bases that were N or another IUPAC ambiguity code

    def __len__(self) -> int:
        return len(self.sequence)


def normalize_sequence(raw: str, record_id: str | None = None) -> NormalizedSequence:
    """Normalise one raw sequence; raise :class:`InvalidSequence` naming ``record_id``."""
    if _CLEAN.fullmatch(raw):
        return NormalizedSequence(raw, 0)
    text = _WHITESPACE.sub("", raw)
    if not text:
        raise InvalidSequence(record_id, "the sequence is empty")
    upper = text.upper()
    seq = upper.translate(_TRANSLATE)
    bad = _INVALID.search(seq)
    if bad is not None:
        pos = bad.start()
        raise InvalidSequence(
            record_id,
            f"invalid character {text[pos]!r} at position {pos + 1}; "
            "expected nucleotides A, C, G, T/U or IUPAC ambiguity codes",
            position=pos + 1,
        )
    return NormalizedSequence(seq, seq.count("N"))
