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
  as ``E F I L P Q``, any non-ASCII character) is an error that names the record and the first
  offending position. The raw characters are checked *before* any case mapping: Unicode
  upper-casing can change a string's length (``"ß".upper() == "SS"``) or turn a non-ASCII letter
  into an ASCII one (``"ſ".upper() == "S"``), so checking afterwards would report the wrong
  character or position, or accept what is not a nucleotide.

What the service does with a normalised record beyond that (:mod:`service.contract.prepare`):

* :func:`looks_like_protein`: more than :data:`PROTEIN_CODE_FRACTION` of the bases, and at least
  :data:`PROTEIN_MIN_CODES` of them, are ambiguity codes other than ``N``: the record is refused
  (a peptide written only with letters that are also IUPAC codes, ``MKVHRSWYD...``). Training
  does not apply this rule (its data are curated nucleotide sets);
* a record with no ``A C G T`` left is not scored (flag ``no_informative_bases``); one with more
  than :data:`MOSTLY_AMBIGUOUS_FRACTION` of its bases ambiguous is scored and flagged
  ``mostly_ambiguous`` (:class:`service.contract.prepare.Prepared`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from service.contract.errors import InvalidSequence

NUCLEOTIDES = frozenset("ACGT")
AMBIGUITY_CODES = frozenset("NRYSWKMBDHV")

# A record is refused as "looks like protein" when its ambiguity codes other than N are more
# than this fraction of its bases AND at least this many (short honest IUPAC records pass:
# ``ACGTRYKMSWBDHVN`` has 10 of 15).
PROTEIN_CODE_FRACTION = 0.25
PROTEIN_MIN_CODES = 20
# A record whose N and other ambiguity codes are more than this fraction of its bases is scored
# but flagged ``mostly_ambiguous``; one with no A, C, G or T at all is not scored.
MOSTLY_AMBIGUOUS_FRACTION = 0.5

_WHITESPACE = re.compile(r"\s+")
_TRANSLATE = str.maketrans({"U": "T", **{c: "N" for c in AMBIGUITY_CODES}})
_ALLOWED = "ACGTU" + "".join(sorted(AMBIGUITY_CODES))
_INVALID_RAW = re.compile(f"[^{_ALLOWED}{_ALLOWED.lower()}]")  # checked before any case mapping
_CLEAN = re.compile(r"[ACGT]+")  # the common case: nothing to change


@dataclass(frozen=True, slots=True)
class NormalizedSequence:
    """A sequence ready for the tokenizer and what normalisation found in it."""

    sequence: str
    n_ambiguous: int  # bases that were N or another IUPAC ambiguity code
    # ambiguity codes other than N (R Y S W K M B D H V). Not part of equality: normalising the
    # normalised sequence again sees only N.
    n_codes: int = field(default=0, compare=False)

    def __len__(self) -> int:
        return len(self.sequence)


def _describe(char: str) -> str:
    """``'ß' (U+00DF)`` for a non-ASCII or non-printable character, ``'1'`` otherwise."""
    if char.isascii() and char.isprintable():
        return repr(char)
    return f"{char!r} (U+{ord(char):04X})"


def normalize_sequence(raw: str, record_id: str | None = None) -> NormalizedSequence:
    """Normalise one raw sequence; raise :class:`InvalidSequence` naming ``record_id``.

    Positions in errors are 1-based and count the characters of the sequence without whitespace.
    """
    if _CLEAN.fullmatch(raw):
        return NormalizedSequence(raw, 0)
    text = _WHITESPACE.sub("", raw)
    if not text:
        raise InvalidSequence(record_id, "the sequence is empty")
    bad = _INVALID_RAW.search(text)
    if bad is not None:
        pos = bad.start()
        raise InvalidSequence(
            record_id,
            f"invalid character {_describe(text[pos])} at position {pos + 1}; "
            "expected nucleotides A, C, G, T/U or IUPAC ambiguity codes",
            position=pos + 1,
        )
    # Only ASCII letters are left, so case mapping keeps the length and every position.
    seq = text.upper().translate(_TRANSLATE)
    n_ambiguous = seq.count("N")
    return NormalizedSequence(seq, n_ambiguous, n_ambiguous - text.count("N") - text.count("n"))


def looks_like_protein(norm: NormalizedSequence) -> bool:
    """More than :data:`PROTEIN_CODE_FRACTION` of the bases, and at least :data:`PROTEIN_MIN_CODES`,
    are ambiguity codes other than N: a peptide, not a nucleotide sequence."""
    return norm.n_codes >= PROTEIN_MIN_CODES and norm.n_codes > PROTEIN_CODE_FRACTION * len(norm)


def protein_error(norm: NormalizedSequence, record_id: str | None) -> InvalidSequence:
    share = norm.n_codes / len(norm)
    return InvalidSequence(
        record_id,
        f"this looks like a protein sequence, not DNA or RNA: {norm.n_codes} of its {len(norm)} "
        f"characters ({share:.0%}) are IUPAC ambiguity codes other than N (R Y S W K M B D H V); "
        f"records where they are more than {PROTEIN_CODE_FRACTION:.0%} of the bases and at least "
        f"{PROTEIN_MIN_CODES} are refused",
    )
