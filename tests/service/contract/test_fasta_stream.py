"""The streaming FASTA reader of the offline scan reads files as ``parse_fasta`` reads request
bodies (same records, same errors at the same lines), one record at a time."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.contract.errors import EmptyInput, InvalidFasta, InvalidSequence
from service.contract.fasta import parse_fasta
from service.contract.fasta_stream import iter_fasta_file
from service.contract.sequence import normalize_sequence

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _expected(text: str) -> list[tuple[str, str, str, int]]:
    return [(r.id, r.description, normalize_sequence(r.sequence, r.id).sequence, r.line) for r in parse_fasta(text)]


def _read(path: Path) -> list[tuple[str, str, str, int]]:
    return [(r.id, r.description, r.sequence, r.line) for r in iter_fasta_file(path)]


@pytest.mark.parametrize("name", ["golden.fasta", "small.fasta", "crlf.fasta"])
def test_the_fixtures_read_as_parse_fasta_reads_them(tmp_path, name):
    data = (FIXTURES / name).read_bytes()
    gz = tmp_path / f"{name}.gz"
    gz.write_bytes(gzip.compress(data))
    expected = _expected(data.decode("utf-8-sig"))
    assert _read(FIXTURES / name) == expected
    assert _read(gz) == expected


_LINES = st.sampled_from(["", ";comment", "   ", "\t"])


@st.composite
def _fasta_text(draw) -> str:
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [draw(_LINES) for _ in range(draw(st.integers(0, 2)))]
    for i in range(draw(st.integers(1, 4))):
        lines.append(draw(st.sampled_from([">", " >", ">  "])) + f"r{i}" + draw(st.sampled_from(["", " desc", "\tx=1"])))
        seq = draw(st.text(alphabet="ACGTUNacgtunRYkm", min_size=1, max_size=200))
        width = draw(st.integers(1, 80))
        for j in range(0, len(seq), width):
            lines.append(seq[j : j + width] + draw(st.sampled_from(["", " ", "  \t"])))
            if draw(st.integers(0, 9)) == 0:
                lines.append(draw(_LINES))
    return newline.join(lines) + draw(st.sampled_from(["", newline]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_fasta_text())
def test_any_valid_fasta_reads_as_parse_fasta_reads_it(tmp_path, text):
    path = tmp_path / "x.fa"
    path.write_bytes(text.encode())
    assert _read(path) == _expected(text)


@pytest.mark.parametrize(("text", "error", "line", "words"), [
    ("", EmptyInput, None, "no FASTA records"),
    ("\n;only a comment\n", EmptyInput, None, "no FASTA records"),
    ("ACGT\n>a\nACGT\n", InvalidFasta, 1, "before the first"),
    (">a\nACGT\n>\nACGT\n", InvalidFasta, 3, "without an identifier"),
    (">a\nACGT\n>b\n\n>c\nAC\n", InvalidFasta, 3, "has no sequence"),
    (">a\nACGT\n>a\nACGT\n", InvalidFasta, 3, "duplicate record id 'a' (first at line 1)"),
    (">a\nACGT\nAC\x00GT\n", InvalidFasta, 3, "NUL byte"),
    (">a\nACGTACGT\n\nACGTX\n", InvalidSequence, 4, "'X' at position 13"),
    (">a\nACGT\r\nACéGT\r\n", InvalidSequence, 3, "position 7"),
    (">p\n" + "MKVHRSWYD" * 10 + "\n", InvalidSequence, 1, "protein"),
    (">a\u202eb\nACGT\n", InvalidFasta, 1, "bidirectional"),
])
def test_errors_name_the_line(tmp_path, text, error, line, words):
    path = tmp_path / "bad.fa"
    path.write_bytes(text.encode())
    with pytest.raises(error) as caught:
        list(iter_fasta_file(path))
    assert words in caught.value.message and caught.value.line == line


def test_bad_bytes_and_a_truncated_gzip(tmp_path):
    path = tmp_path / "latin1.fa"
    path.write_bytes(b">a\nACGT\n>b \xe9\nACGT\n")
    with pytest.raises(InvalidFasta, match="not UTF-8") as caught:
        list(iter_fasta_file(path))
    assert caught.value.line == 3
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(gzip.compress(b">a\n" + b"ACGT" * 5000 + b"\n")[:-30])
    with pytest.raises(InvalidFasta, match="truncated or corrupt"):
        list(iter_fasta_file(cut))


def test_records_come_one_at_a_time(tmp_path):
    """A record is yielded before the next one is read (an error further on comes later)."""
    path = tmp_path / "x.fa"
    path.write_text(">a\nACGT\n>b\nAC*GT\n")
    records = iter_fasta_file(path)
    assert next(records).sequence == "ACGT"
    with pytest.raises(InvalidSequence):
        next(records)
