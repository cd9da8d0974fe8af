"""Input defects a new user and a hostile client ran into, checked without models: records of
only N, protein written with IUPAC letters, the line of an invalid character, non-ASCII
letters, control characters and over-long FASTA ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from service.contract.errors import InvalidFasta, InvalidSequence
from service.contract.fasta import MAX_ID_LENGTH, id_problem, parse_fasta, read_fasta_bytes
from service.contract.prepare import prepare, records_of
from service.contract.sequence import (
    MOSTLY_AMBIGUOUS_FRACTION,
    PROTEIN_CODE_FRACTION,
    PROTEIN_MIN_CODES,
    looks_like_protein,
    normalize_sequence,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@dataclass
class _Encoded:
    ids: list[int]
    truncated: bool = False


class _Tokenizer:
    """Stands in for a real tokenizer: one id per base."""

    def encode(self, sequences):
        return [_Encoded([1] * len(s)) for s in sequences]


def _prepare(records):
    return prepare(records, _Tokenizer())


# --------------------------------------------------------------------------------------------
# 1. records without an informative base


def test_a_record_of_only_n_is_not_scored_and_flagged():
    prep = _prepare(records_of(["N" * 300, "nrykmswbdhv", "ACGT" + "N" * 5, "ACGTAC" + "N" * 4, "ACGT"],
                               ["all_n", "all_codes", "mostly", "half_or_less", "clean"]))
    assert [prep.scored(i) for i in range(5)] == [False, False, True, True, True]
    assert prep.flags(0) == ["ambiguous_bases", "no_informative_bases"]
    assert prep.flags(1) == ["ambiguous_bases", "no_informative_bases"]
    assert prep.flags(2) == ["ambiguous_bases", "mostly_ambiguous"]  # 5 of 9 > 0.5
    assert prep.flags(3) == ["ambiguous_bases"]  # 4 of 10, not more than half
    assert prep.flags(4) == []
    assert [prep.mostly_ambiguous(i) for i in range(5)] == [False, False, True, False, False]
    assert MOSTLY_AMBIGUOUS_FRACTION == 0.5


def test_exactly_half_ambiguous_is_not_mostly_ambiguous():
    prep = _prepare(records_of(["ACGTNNNN"]))
    assert prep.flags(0) == ["ambiguous_bases"]


# --------------------------------------------------------------------------------------------
# 2. protein written with letters that are also IUPAC codes

PEPTIDE = "MKVHRSWYDKMNGTAVHDRSWYKMKVHRSWYDGAMKVDHKRSWM"  # no E F I L P Q: every letter is an IUPAC code


def test_protein_made_of_iupac_letters_is_refused():
    norm = normalize_sequence(PEPTIDE, "pep")  # the normaliser alone accepts it (training data path)
    assert looks_like_protein(norm)
    with pytest.raises(InvalidSequence, match="looks like a protein") as info:
        _prepare(records_of([PEPTIDE], ["pep"]))
    assert info.value.record_id == "pep" and info.value.code == "invalid_sequence"
    assert info.value.line is None  # a JSON-like record: no line


def test_protein_in_fasta_names_the_header_line():
    records = parse_fasta(f">ok\nACGT\n>pep a peptide\n{PEPTIDE[:20]}\n{PEPTIDE[20:]}\n")
    with pytest.raises(InvalidSequence, match="protein") as info:
        _prepare(records)
    assert (info.value.record_id, info.value.line) == ("pep", 3)


@pytest.mark.parametrize(("codes", "length", "refused"), [
    (PROTEIN_MIN_CODES - 1, PROTEIN_MIN_CODES, False),  # nearly all codes, but fewer than the minimum
    (PROTEIN_MIN_CODES, PROTEIN_MIN_CODES * 4, False),  # exactly 25%: not more than the fraction
    (PROTEIN_MIN_CODES, PROTEIN_MIN_CODES * 4 - 1, True),
    (100, 1000, False),  # 10%: an honest, very ambiguous record
])
def test_protein_rule_thresholds(codes, length, refused):
    assert PROTEIN_CODE_FRACTION == 0.25 and PROTEIN_MIN_CODES == 20
    seq = "R" * codes + "A" * (length - codes)
    assert looks_like_protein(normalize_sequence(seq)) is refused
    # N (unknown base, or asparagine) does not count towards the rule
    assert not looks_like_protein(normalize_sequence("N" * length))


def test_honest_iupac_fixtures_still_pass():
    for name in ("small.fasta", "golden.fasta"):
        records = read_fasta_bytes((FIXTURES / name).read_bytes(), max_bytes=1 << 24)
        prep = _prepare(records)
        iupac = prep.ids.index("iupac")
        assert prep.scored(iupac) and "ambiguous_bases" in prep.flags(iupac)


# --------------------------------------------------------------------------------------------
# 5. the line of an invalid character


def test_invalid_character_error_names_its_own_line():
    text = ">good\nACGT\n>bad_one with description\nACGTAC\n\n; a comment\nGTXACGT\nACGT\n"
    with pytest.raises(InvalidSequence) as info:
        _prepare(parse_fasta(text))
    err = info.value
    assert (err.record_id, err.position, err.line) == ("bad_one", 9, 7)
    assert "'X'" in err.message and "position 9" in err.message


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_invalid_character_line_in_a_wrapped_record(newline):
    lines = [">r1", "A" * 60, "A" * 60, "A" * 17 + "Z" + "A" * 42, "A" * 10]
    text = newline.join(lines) + newline
    with pytest.raises(InvalidSequence) as info:
        _prepare(read_fasta_bytes(text.encode(), max_bytes=1 << 20))
    assert (info.value.position, info.value.line) == (138, 4)


def test_line_of_every_position():
    text = ">a\nACG\n\nTTTT\nTTTT\nCC\n; c\nG\n"
    (record,) = parse_fasta(text)
    assert record.sequence == "ACGTTTTTTTTCCG"
    expected = [2] * 3 + [4] * 4 + [5] * 4 + [6] * 2 + [8]
    assert [record.line_of(p) for p in range(1, len(record.sequence) + 1)] == expected


# --------------------------------------------------------------------------------------------
# 16. non-ASCII letters: checked before case mapping


@pytest.mark.parametrize(("raw", "bad", "position"), [
    ("ACGß", "ß", 4),  # "ß".upper() == "SS": was an IndexError (500)
    ("ßACGT", "ß", 1),
    ("ACſT", "ſ", 3),  # "ſ".upper() == "S", an IUPAC code: was accepted
    ("ACGTﬆ", "ﬆ", 5),  # "ﬆ".upper() == "ST"
    ("ACı", "ı", 3),  # dotless i -> "I"
    ("ACG\u212a", "\u212a", 4),  # Kelvin sign K (U+212A).lower() == "k"
    ("AC GT\nﬀ", "ﬀ", 5),  # whitespace is not counted in positions
])
def test_non_ascii_letters_are_invalid_at_their_position(raw, bad, position):
    with pytest.raises(InvalidSequence) as info:
        normalize_sequence(raw, "r")
    err = info.value
    assert err.position == position
    assert repr(bad) in err.message and f"U+{ord(bad):04X}" in err.message and f"position {position}" in err.message


# --------------------------------------------------------------------------------------------
# 18. control characters and bidi overrides in FASTA ids


@pytest.mark.parametrize("rid", ["a\x01b", "a\x7fb", "evil\u202egpj.exe", "a\u2066b", "a\x9bb", "x\u200fy"])
def test_fasta_ids_with_control_characters_are_refused(rid):
    text = f">ok\nACGT\n>{rid} desc\nACGT\n"
    with pytest.raises(InvalidFasta) as info:
        parse_fasta(text)
    err = info.value
    assert err.line == 3 and "line 3" in err.message and err.code == "invalid_fasta"
    assert rid not in err.message  # escaped, never echoed raw
    assert id_problem(rid) is not None


@pytest.mark.parametrize("rid", ["plain", "gène_1", "chr1:100-200|+", "=SUM(1)", "id with space", "日本"])
def test_ordinary_ids_have_no_problem(rid):
    assert id_problem(rid) is None


# --------------------------------------------------------------------------------------------
# 20. FASTA ids: the same 1,000-character limit as JSON


def test_fasta_id_at_the_limit_is_accepted():
    (record,) = parse_fasta(">" + "x" * MAX_ID_LENGTH + " desc\nACGT\n")
    assert len(record.id) == MAX_ID_LENGTH == 1000


def test_fasta_id_over_the_limit_is_refused_without_echoing_it():
    rid = "y" * 1_000_000
    with pytest.raises(InvalidFasta) as info:
        parse_fasta(f">ok\nACGT\n\n>{rid}\nACGT\n")
    err = info.value
    assert err.line == 4 and "line 4" in err.message and "1000 characters" in err.message
    assert len(err.message) < 300 and err.record_id is None
