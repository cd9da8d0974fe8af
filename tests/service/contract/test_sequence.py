"""Input normalisation shared by training and serving (hand-written expectations)."""

from __future__ import annotations

import pytest

from service.contract.errors import InvalidSequence
from service.contract.sequence import normalize_sequence


@pytest.mark.parametrize(
    ("raw", "expected", "ambiguous"),
    [
        ("ACGT", "ACGT", 0),
        ("acgt", "ACGT", 0),  # lowercase -> upper
        ("ACGU", "ACGT", 0),  # RNA U -> T
        ("acgu", "ACGT", 0),
        ("AC GT\r\nAC\tGT\n", "ACGTACGT", 0),  # whitespace and CRLF removed
        ("ACNNGT", "ACNNGT", 2),
        ("ACRYKMSWBDHVNT", "ACNNNNNNNNNNNT", 11),  # every IUPAC ambiguity code -> N
        ("nnnn", "NNNN", 4),
        ("ACRYNn", "ACNNNN", 4),  # n_codes counts R and Y only (see test_codes_other_than_n)
    ],
)
def test_normalisation(raw, expected, ambiguous):
    norm = normalize_sequence(raw, "r1")
    assert norm.sequence == expected
    assert norm.n_ambiguous == ambiguous
    assert len(norm) == len(expected)


@pytest.mark.parametrize(
    ("raw", "bad", "position"),
    [
        ("ACGT1ACGT", "1", 5),
        ("ACG-T", "-", 4),  # alignment gaps are not sequence
        ("ACG.T", ".", 4),
        ("MKTAYIAKQRQISFVKSHFSRQ", "I", 6),  # protein: I is not a nucleotide code
        ("ACGTE", "E", 5),
        ("ACGT*", "*", 5),
        ("ACGTé", "é", 5),
        ("ACGß", "ß", 4),  # checked before upper-casing: "ß".upper() is "SS"
        ("ACſT", "ſ", 3),  # "ſ".upper() is "S", an IUPAC code
        ("ﬆACGT", "ﬆ", 1),  # "ﬆ".upper() is "ST"
    ],
)
def test_invalid_characters_name_record_and_position(raw, bad, position):
    with pytest.raises(InvalidSequence) as info:
        normalize_sequence(raw, "seq_7")
    err = info.value
    assert err.record_id == "seq_7"
    assert err.position == position
    assert "seq_7" in str(err) and repr(bad) in str(err) and f"position {position}" in str(err)


@pytest.mark.parametrize("raw", ["", "   ", "\r\n\t"])
def test_empty_sequence_is_an_error(raw):
    with pytest.raises(InvalidSequence, match="empty") as info:
        normalize_sequence(raw, "empty_one")
    assert info.value.record_id == "empty_one"


def test_codes_other_than_n_are_counted_apart():
    norm = normalize_sequence("ACRYNnkm", "r1")
    assert (norm.n_ambiguous, norm.n_codes) == (6, 4)
    assert normalize_sequence(norm.sequence) == norm  # n_codes is not part of equality
    assert normalize_sequence(norm.sequence).n_codes == 0
