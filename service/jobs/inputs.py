"""A job's spooled FASTA read back in groups of whole records, as the synchronous reader reads it.

The upload was written to disk as it arrived (gzip already decompressed). Here it is read line by
line and cut before a header line into groups of at most :data:`GROUP_RECORDS` records and about
:data:`GROUP_BYTES` bytes (a longer record is a group of its own). Each group is decoded and
parsed by the very functions that read a request body (:func:`service.contract.fasta.decode_body`
and :func:`~service.contract.fasta.parse_fasta`), so the records (raw sequence, id, description)
and every error (its code, message, record and line) are those of the synchronous endpoint. Line
numbers are counted over the whole file, and a record id is unique in the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from service.contract.errors import DnabertError, InvalidFasta
from service.contract.fasta import FastaRecord, decode_body, parse_fasta

GROUP_RECORDS = 512
GROUP_BYTES = 8 << 20
_NO_LIMIT = 1 << 62


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines without their breaks; ``\\n``, ``\\r\\n`` and a lone ``\\r`` end a line,
    as :func:`~service.contract.fasta.parse_fasta` counts them."""
    with path.open("rb") as handle:
        for raw in handle:
            body = raw.removesuffix(b"\n")
            if b"\r" in body:
                parts = body.split(b"\r")
                if len(parts) > 1 and parts[-1] == b"":  # '\r\n', or a '\r' that ends the file
                    parts.pop()
                yield from parts
            else:
                yield body


def _is_header(line: bytes) -> bool:
    return line.lstrip()[:1] == b">"


def _shift(record: FastaRecord, offset: int) -> FastaRecord:
    layout = tuple(v + offset if i % 3 == 1 else v for i, v in enumerate(record.layout))
    return FastaRecord(record.id, record.description, record.sequence, record.line + offset, layout)


def _groups(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(lines before the group, its lines), cut before a header line."""
    group: list[bytes] = []
    start = headers = size = 0
    for line in _lines(path):
        if _is_header(line) and headers and (headers >= GROUP_RECORDS or size >= GROUP_BYTES):
            yield start, group
            start += len(group)
            group, headers, size = [], 0, 0
        headers += _is_header(line)
        size += len(line) + 1
        group.append(line)
    yield start, group


def iter_fasta(path: str | Path, *, max_sequence_length: int | None = None) -> Iterator[list[FastaRecord]]:
    """The file's records, a group at a time; errors as the synchronous reader raises them."""
    seen: dict[str, int] = {}
    for offset, lines in _groups(Path(path)):
        data = b"\n".join(lines) + b"\n"
        try:
            records = parse_fasta(decode_body(data, max_bytes=_NO_LIMIT), max_sequence_length=max_sequence_length)
        except DnabertError as exc:
            _earlier_duplicate(lines, offset, seen, exc.line)
            _shift_error(exc, offset)
            raise
        out = []
        for record in records:
            record = _shift(record, offset) if offset else record
            first = seen.setdefault(record.id, record.line)
            if first != record.line:
                raise InvalidFasta(f"duplicate record id {record.id!r} (first at line {first})", line=record.line,
                                   record_id=record.id)
            out.append(record)
        yield out


def _shift_error(exc: DnabertError, offset: int) -> None:
    """An error of a group, at its line in the whole file (also in the message's ``line N:``)."""
    if exc.line is None or not offset:
        return
    prefix = f"line {exc.line}: "
    exc.line += offset
    if exc.message.startswith(prefix):
        exc.message = f"line {exc.line}: " + exc.message[len(prefix):]
        exc.args = (exc.message,)


def _earlier_duplicate(lines: list[bytes], offset: int, seen: dict[str, int], before: int | None) -> None:
    """The file-wide duplicate id that comes before an error the group's parser found, if any:
    the synchronous reader, which sees the whole file, would report that one first."""
    for i, line in enumerate(lines[: before - 1 if before else len(lines)]):
        if _is_header(line):
            words = line.lstrip()[1:].split(None, 1)
            rid = words[0].decode("utf-8", "replace") if words else ""
            if rid in seen:
                raise InvalidFasta(f"duplicate record id {rid!r} (first at line {seen[rid]})", line=offset + i + 1,
                                   record_id=rid)


def iter_records(path: str | Path, *, max_sequence_length: int | None = None) -> Iterator[FastaRecord]:
    """The file's records one by one (read a group at a time)."""
    for group in iter_fasta(path, max_sequence_length=max_sequence_length):
        yield from group
