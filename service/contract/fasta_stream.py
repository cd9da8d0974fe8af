"""Reading a FASTA file record by record, for offline work on genomes.

:func:`service.contract.fasta.parse_fasta` reads a request body that is already in memory;
:func:`iter_fasta_file` reads a file of any size (plain, gzip or bgzip, recognised by its first
bytes) and holds one record at a time, stored as it is normalised (one byte per base), so a
genome is never in memory, only its longest chromosome. It follows the same rules as
``parse_fasta``: lines end with ``\\n``, ``\\r\\n`` or a lone ``\\r`` and are numbered from 1;
blank lines and ``;`` comments are ignored; the id is the header's first word, checked as for
requests, and unique in the file; every record has a sequence. Each sequence line is
normalised (:func:`service.contract.sequence.normalize_sequence`) as it is read, so an invalid
character is reported with its own line and its position in the record; a record that looks
like protein is refused at its header line.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

from service.contract.errors import EmptyInput, InvalidFasta, InvalidSequence
from service.contract.fasta import GZIP_MAGIC, FastaRecord, _check_id
from service.contract.sequence import (
    NormalizedSequence,
    looks_like_protein,
    normalize_sequence,
    protein_error,
)

_BOM = "\ufeff"


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its line break) of a plain or gzip file."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == GZIP_MAGIC
    opener = gzip.open if gzipped else open
    lineno = 0
    try:
        with opener(path, "rb") as handle:
            for raw in handle:
                raw = raw.removesuffix(b"\n").removesuffix(b"\r")
                for part in raw.split(b"\r") if b"\r" in raw else (raw,):  # old Mac line breaks
                    lineno += 1
                    yield lineno, part
    except (OSError, EOFError, zlib.error) as exc:
        if not gzipped or isinstance(exc, FileNotFoundError):
            raise
        raise InvalidFasta(f"gzip stream is truncated or corrupt after line {lineno}") from None


def _text(line: bytes, lineno: int) -> str:
    if b"\x00" in line:
        raise InvalidFasta("binary data, not FASTA text: the input contains a NUL byte", line=lineno)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidFasta(f"not UTF-8 text: byte 0x{line[exc.start]:02x} is not valid UTF-8", line=lineno) from None
    return text.removeprefix(_BOM) if lineno == 1 else text


class _Record:
    """The record being read: its normalised bases, appended line by line."""

    def __init__(self, rid: str, description: str, line: int):
        self.id, self.description, self.line = rid, description, line
        self.bases = bytearray()
        self.ambiguous = 0
        self.codes = 0

    def add(self, piece: str, lineno: int) -> None:
        try:
            norm = normalize_sequence(piece, self.id)
        except InvalidSequence as exc:  # the position in the record, not in the line
            if exc.position is not None:
                at = len(self.bases) + exc.position
                exc.message = exc.message.replace(f"at position {exc.position};", f"at position {at};")
                exc.args, exc.position = (exc.message,), at
            exc.line = lineno
            raise
        self.bases += norm.sequence.encode("ascii")
        self.ambiguous += norm.n_ambiguous
        self.codes += norm.n_codes

    def done(self) -> FastaRecord:
        if not self.bases:
            raise InvalidFasta(f"record {self.id!r} has no sequence", line=self.line, record_id=self.id)
        sequence = self.bases.decode("ascii")
        self.bases = bytearray()
        norm = NormalizedSequence(sequence, self.ambiguous, self.codes)
        if looks_like_protein(norm):
            exc = protein_error(norm, self.id)
            exc.line = self.line
            raise exc
        return FastaRecord(self.id, self.description, sequence, self.line)


def iter_fasta_file(path: str | Path) -> Iterator[FastaRecord]:
    """The records of a FASTA file, one at a time, their sequences normalised (upper case
    ``A C G T N``); errors are :mod:`service.contract.errors` exceptions naming the line."""
    seen: dict[str, int] = {}
    record: _Record | None = None
    for lineno, raw in _lines(Path(path)):
        line = _text(raw, lineno)
        words = line.split()
        if not words or words[0][0] == ";":
            continue
        if words[0][0] != ">":
            if record is None:
                raise InvalidFasta("sequence data before the first '>' header", line=lineno)
            record.add(words[0] if len(words) == 1 else "".join(words), lineno)
            continue
        if record is not None:
            yield record.done()
        description = line.strip()[1:].strip()
        if not description:
            raise InvalidFasta("header without an identifier", line=lineno)
        rid = description.split(None, 1)[0]
        _check_id(rid, lineno)
        if rid in seen:
            raise InvalidFasta(f"duplicate record id {rid!r} (first at line {seen[rid]})", line=lineno, record_id=rid)
        seen[rid] = lineno
        record = _Record(rid, description, lineno)
    if record is None:
        raise EmptyInput("no FASTA records: the file holds only blank lines and ';' comments")
    yield record.done()
