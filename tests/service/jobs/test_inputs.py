"""A job's spooled FASTA, read back in groups, gives the records and the errors that the
synchronous reader gives for the same bytes (line numbers counted over the whole file)."""

from __future__ import annotations

import pytest

from service.contract.errors import DnabertError
from service.contract.fasta import read_fasta_bytes
from service.jobs import inputs
from service.jobs.inputs import iter_fasta, iter_records


@pytest.fixture(autouse=True)
def small_groups(monkeypatch):
    monkeypatch.setattr(inputs, "GROUP_RECORDS", 2)  # many groups out of a few records


def _same(tmp_path, data: bytes):
    path = tmp_path / "input.fa"
    path.write_bytes(data)
    try:
        expected = read_fasta_bytes(data, max_bytes=1 << 30)
    except DnabertError as exc:
        with pytest.raises(type(exc)) as got:
            list(iter_records(path))
        assert (got.value.code, got.value.message, got.value.line, got.value.record_id) == (
            exc.code, exc.message, exc.line, exc.record_id)
        return exc
    records = list(iter_records(path))
    assert records == expected
    assert [r.line for r in records] == [r.line for r in expected]
    assert [r.layout for r in records] == [r.layout for r in expected]
    return records


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_records_lines_and_layouts_are_the_synchronous_readers(tmp_path, newline):
    text = newline.join([">a first", "ACGT", "acgu", "", "; a comment", ">b", "NNNNACGT", "  >c indented",
                         "ACG TTA", "GG", ">d", "A", ">e", "TTTT", ""])
    records = _same(tmp_path, ("\ufeff" + text).encode())
    assert [r.id for r in records] == ["a", "b", "c", "d", "e"]
    assert records[2].line_of(8) == 10  # the 8th base is on the 10th line of the file


def test_groups_are_cut_before_headers(tmp_path):
    path = tmp_path / "in.fa"
    path.write_bytes(b"".join(f">r{i}\nACGT\n".encode() for i in range(5)))
    assert [len(g) for g in iter_fasta(path)] == [2, 2, 1]


@pytest.mark.parametrize("data", [
    b">a\nACGT\n>b\nACGT\n>c\nACGT\n>d\n\n>e\nAC\n",  # a record without sequence, in a later group
    b">a\nACGT\n>b\nACGT\n>c\nACGT\n>a\nACGT\n",  # a duplicate id across groups
    b">a\nACGT\n>b\nACGT\n>c\nAC\x00GT\n",  # a NUL byte in a later group
    b">a\nACGT\n>b\nACGT\n>c\nAC\xffGT\n",  # not UTF-8
    b">a\nACGT\n>b\nACGT\n>a\nACGT\n>c\n\n",  # the duplicate comes before the group's own error
    b"",
    b"  \n\n",
    b"; only a comment\n",
    b"ACGT\n>a\nACGT\n",
])
def test_errors_are_the_synchronous_readers(tmp_path, data):
    _same(tmp_path, data)


def test_the_length_limit_applies_per_record(tmp_path):
    path = tmp_path / "in.fa"
    path.write_bytes(b">a\nACGT\n>b\nACGT\n>c\nACGTACGTAC\n")
    with pytest.raises(DnabertError) as exc:
        list(iter_records(path, max_sequence_length=8))
    assert exc.value.code == "sequence_too_long" and exc.value.record_id == "c" and exc.value.line == 5
