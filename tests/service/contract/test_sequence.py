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
