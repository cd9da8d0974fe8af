"""Strict FASTA reading for the inference service (standard library only).

The reader turns a request body into :class:`FastaRecord` objects and reports every problem as
a :mod:`service.contract.errors` exception that names the line and, where there is one, the record:

* :func:`decode_body` undoes the transfer encoding (gzip or identity; gzip is also recognised by
  its magic bytes, so an uploaded ``.fa.gz`` works without a ``Content-Encoding`` header),
  enforces the size limit on the *decompressed* text and decodes strict UTF-8;
* :func:`parse_fasta` splits the text into records. It keeps the raw sequence text (whitespace
  removed, case kept): checking the characters and normalising them is the job of
  :func:`service.contract.sequence.normalize_sequence`, later;
* :func:`read_fasta_bytes` does both;
* :class:`StreamingGunzip` is the bounded gzip decoder, usable while a request body streams in.

Lines end with ``\\n``, ``\\r\\n`` or a lone ``\\r`` (old Mac files); line numbers are 1-based
and count those three line breaks only, as text editors do. Other Unicode line separators
(form feed, ``U+2028`` ...) are treated as whitespace, not as line breaks. Each record remembers
which line of the file holds each part of its sequence (:meth:`FastaRecord.line_of`), so that an
invalid character found later is reported at its own line.

Record ids (:func:`id_problem`, shared with the JSON input) are at most :data:`MAX_ID_LENGTH`
characters and hold no control character, no bidirectional-text control (``U+202E`` ...), no
line or paragraph separator and no lone surrogate: ids are echoed in JSON, CSV and TSV answers
and in error messages, where such characters break rows or disguise what is shown.
"""

from __future__ import annotations

import codecs
import sys
import unicodedata
import zlib
from dataclasses import dataclass, field

from service.contract.errors import EmptyInput, InvalidFasta, PayloadTooLarge, SequenceTooLong, TooManyRecords

__all__ = [
    "MAX_ID_LENGTH",
    "FastaRecord",
    "StreamingGunzip",
    "decode_body",
    "id_preview",
    "id_problem",
    "looks_gzipped",
    "parse_fasta",
    "read_fasta_bytes",
]

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
_IDENTITY_ENCODINGS = frozenset({"", "identity"})
_CORRUPT_GZIP = "gzip stream is truncated or corrupt"

# Input is handed to zlib in slices that start small for each gzip member and double while the
# member goes on. zlib copies the input left over after a member ends (``unused_data``), so the
# slices keep that copy proportional to the member just read: a body made of many tiny members
# costs linear time, not quadratic.
_FIRST_SLICE = 256
_MAX_SLICE = 1 << 20


MAX_ID_LENGTH = 1000  # characters of a record id, FASTA or JSON
_ID_PREVIEW = 40  # characters of an over-long or hostile id shown in an error message

# Bidirectional-text controls (Unicode Bidi_Control): they reorder what a reader sees.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Control characters, lone surrogates, line and paragraph separators.
_REFUSED_CATEGORIES = {"Cc": "control character", "Cs": "lone surrogate", "Zl": "line separator",
                       "Zp": "paragraph separator"}


def id_problem(record_id: str) -> str | None:
    """What makes ``record_id`` unacceptable as a record id (other than its length), or None."""
    if record_id.isascii() and record_id.isprintable():
        return None  # the common case
    for char in record_id:
        kind = _REFUSED_CATEGORIES.get(unicodedata.category(char))
        if kind is None and char in _BIDI_CONTROLS:
            kind = "bidirectional-text control"
        if kind is not None:
            return f"{kind} U+{ord(char):04X}"
    return None


def id_preview(record_id: str) -> str:
    """An id as error messages show it: quoted, escaped, cut after :data:`_ID_PREVIEW` characters."""
    if len(record_id) <= _ID_PREVIEW:
        return repr(record_id)  # repr escapes every non-printable character
    return f"{record_id[:_ID_PREVIEW]!r}... ({len(record_id)} characters)"


@dataclass(frozen=True, slots=True)
class FastaRecord:
    """One FASTA record, as written in the input."""

    id: str  # first whitespace-delimited word of the header, after '>'
    description: str  # the full header text after '>' (stripped); starts with the id
    sequence: str  # the sequence lines joined, all whitespace removed; not upper-cased, not validated
    line: int  # 1-based line number of the header (0: not read from a file, e.g. JSON)
    # Where the sequence lies in the file, as runs of consecutive lines of one width: a flat tuple
    # (start, first_line, width, start, first_line, width, ...) with ``start`` the 0-based offset
    # in ``sequence`` of the run's first base. A wrapped record has two runs, whatever its length.
    layout: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def line_of(self, position: int) -> int:
        """1-based line of the file that holds the 1-based ``position`` of :attr:`sequence`; the
        header line when the layout is not known."""
        layout, offset = self.layout, position - 1
        for k in range(len(layout) - 3, -1, -3):
            if layout[k] <= offset:
                return layout[k + 1] + (offset - layout[k]) // layout[k + 2]
        return self.line


def _layout(pieces: list[str], lines: list[int]) -> tuple[int, ...]:
    """:attr:`FastaRecord.layout` of a record's sequence lines and their line numbers."""
    if len(pieces) == 1:
        return (0, lines[0], len(pieces[0]) or 1)
    runs: list[int] = []
    start = 0
    width = prev_line = -1
    for piece, line in zip(pieces, lines):
        n = len(piece)
        if n != width or line != prev_line + 1:
            runs += (start, line, n)
            width = n
        prev_line = line
        start += n
    return tuple(runs)


# --------------------------------------------------------------------------------------------
# gzip


def looks_gzipped(data: bytes) -> bool:
    """Whether ``data`` starts with the gzip magic bytes ``1f 8b``."""
    return bytes(data[:2]) == GZIP_MAGIC


class StreamingGunzip:
    """Incremental gzip decoder with a hard limit on the decompressed size.

    Feed the compressed body chunk by chunk with :meth:`feed`, which returns the text decoded so
    far, then call :meth:`finish`, which checks that the stream ended cleanly. Concatenated gzip
    members (``cat a.gz b.gz``, bgzip files) are decoded one after the other; zero bytes after a
    complete member are ignored, as ``gzip -d`` does; anything else after a member must be
    another member.

    :class:`~service.contract.errors.PayloadTooLarge` is raised as soon as the decompressed output would
    exceed ``max_bytes``: zlib is never asked for more than the remaining budget plus one byte,
    so a gzip bomb is not expanded in memory beyond the limit. A truncated or corrupt stream
    raises :class:`~service.contract.errors.InvalidFasta`. After an error, the decoder keeps raising it.
    """

    __slots__ = ("max_bytes", "_inflater", "_members", "_bytes_in", "_bytes_out", "_error", "_finished")

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._inflater: zlib._Decompress | None = None  # the member being decoded, if any
        self._members = 0  # members decoded completely
        self._bytes_in = 0
        self._bytes_out = 0
        self._error: Exception | None = None
        self._finished = False

    @property
    def bytes_in(self) -> int:
        """Compressed bytes fed so far."""
        return self._bytes_in

    @property
    def bytes_out(self) -> int:
        """Decompressed bytes returned so far."""
        return self._bytes_out

    @property
    def members(self) -> int:
        """gzip members decoded completely so far."""
        return self._members

    def feed(self, chunk: bytes) -> bytes:
        """Decode one more chunk of compressed data; return the bytes it completes."""
        self._check_usable()
        self._bytes_in += len(chunk)
        try:
            return self._inflate(memoryview(chunk).cast("B"))
        except (InvalidFasta, PayloadTooLarge) as exc:
            self._error = exc
            raise

    def finish(self) -> bytes:
        """Check that the stream ended at the end of a gzip member; return ``b""``.

        Every byte that can be decoded is already returned by :meth:`feed`; this only raises
        :class:`~service.contract.errors.InvalidFasta` when the input stopped inside a member or held no
        member at all.
        """
        self._check_usable()
        self._finished = True
        if self._inflater is not None or self._members == 0:
            self._error = InvalidFasta(_CORRUPT_GZIP)
            raise self._error
        return b""

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            raise RuntimeError("StreamingGunzip.finish() was already called")

    def _inflate(self, view: memoryview) -> bytes:
        out: list[bytes] = []
        pos, end = 0, len(view)
        step = _FIRST_SLICE
        while pos < end:
            inflater = self._inflater
            if inflater is None:
                if self._members:
                    # Zero padding after a complete member is allowed (gzip -d ignores it).
                    while pos < end:
                        block = bytes(view[pos : pos + 65536])
                        padding = len(block) - len(block.lstrip(b"\x00"))
                        pos += padding
                        if padding < len(block):
                            break
                    if pos == end:
                        break
                inflater = self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                step = _FIRST_SLICE
            piece_in = view[pos : pos + step]
            budget = self.max_bytes - self._bytes_out + 1  # >= 1; 0 would mean "no limit"
            try:
                piece_out = inflater.decompress(piece_in, budget)
            except zlib.error as exc:
                raise InvalidFasta(_CORRUPT_GZIP) from exc
            if piece_out:
                self._bytes_out += len(piece_out)
                if self._bytes_out > self.max_bytes:
                    raise PayloadTooLarge(
                        f"the decompressed request body is larger than the limit of {self.max_bytes} bytes"
                    )
                out.append(piece_out)
            if inflater.eof:
                pos += len(piece_in) - len(inflater.unused_data)
                self._inflater = None
                self._members += 1
            else:
                # Output stopped short of the budget, so zlib consumed all input it could use.
                pos += len(piece_in) - len(inflater.unconsumed_tail)
                if step < _MAX_SLICE:
                    step *= 2
        return b"".join(out)


# --------------------------------------------------------------------------------------------
# bytes -> text


def _wants_gzip(content_encoding: str | None) -> bool:
    """Read a Content-Encoding header value: True for gzip, False for identity; else raise."""
    if content_encoding is None:
        return False
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c not in _IDENTITY_ENCODINGS]
    if not codings:
        return False
    if len(codings) == 1 and codings[0] in _GZIP_ENCODINGS:
        return True
    raise InvalidFasta(
        f"unsupported Content-Encoding {content_encoding.strip()!r}: only gzip and identity are accepted"
    )


def _line_at(data: bytes, offset: int) -> int:
    """1-based line of the byte at ``offset``, counting \\n, \\r\\n and lone \\r as line breaks."""
    head = data[:offset]
    return head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1


def _nul_error(data: bytes, offset: int) -> InvalidFasta:
    return InvalidFasta(
        "binary data, not FASTA text: the input contains a NUL byte", line=_line_at(data, offset)
    )


def _decode_utf8(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    nul = data.find(b"\x00")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if 0 <= nul < exc.start:
            raise _nul_error(data, nul) from None
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            detail = "it starts with a UTF-16 byte-order mark"
        else:
            detail = f"byte 0x{data[exc.start]:02x} is not valid UTF-8"
        raise InvalidFasta(
            f"not UTF-8 text: {detail}; send FASTA as UTF-8 or ASCII text",
            line=_line_at(data, exc.start),
        ) from None
    if nul >= 0:
        raise _nul_error(data, nul)
    return text


def decode_body(data: bytes, *, max_bytes: int, content_encoding: str | None = None) -> str:
    """Turn a request body into text.

    The body is gunzipped when ``content_encoding`` says gzip (``gzip``/``x-gzip``, any case) or
    when it starts with the gzip magic bytes; any other encoding than gzip or identity is
    rejected. ``max_bytes`` limits the decompressed size. The text must be UTF-8 (a leading
    byte-order mark is dropped) without NUL bytes.

    Raises :class:`~service.contract.errors.PayloadTooLarge` or :class:`~service.contract.errors.InvalidFasta`.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    gzip_declared = _wants_gzip(content_encoding)
    if not data:
        return ""  # an empty body is empty input, whatever its declared encoding
    if gzip_declared or looks_gzipped(data):
        gunzip = StreamingGunzip(max_bytes)
        raw = gunzip.feed(data)
        gunzip.finish()
    else:
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"the request body is {len(data)} bytes, larger than the limit of {max_bytes} bytes"
            )
        raw = bytes(data)
    return _decode_utf8(raw)


# --------------------------------------------------------------------------------------------
# text -> records


def _check_limit(name: str, value: int | None) -> int:
    if value is None:
        return sys.maxsize
    if value < 0:
        raise ValueError(f"{name} must be >= 0 or None, got {value}")
    return value


def _check_id(record_id: str, line: int) -> None:
    if len(record_id) > MAX_ID_LENGTH:
        raise InvalidFasta(f"record id {id_preview(record_id)} is longer than {MAX_ID_LENGTH} characters",
                           line=line)
    problem = id_problem(record_id)
    if problem is not None:
        raise InvalidFasta(f"record id {id_preview(record_id)} holds a {problem}; ids are echoed in "
                           "JSON, CSV and TSV answers and may not contain control or "
                           "bidirectional-text characters", line=line)


def parse_fasta(
    text: str, *, max_records: int | None = None, max_sequence_length: int | None = None
) -> list[FastaRecord]:
    """Parse FASTA text strictly; see the module docstring for line handling.

    Blank lines and ``;`` comment lines are ignored anywhere, leading and trailing whitespace of
    a line is insignificant, and all whitespace inside sequence lines is removed. Raises

    * :class:`~service.contract.errors.EmptyInput` when there is no record at all;
    * :class:`~service.contract.errors.InvalidFasta` for sequence text before the first header, a header
      without an identifier, a record without sequence, a duplicate record id, an id longer
      than :data:`MAX_ID_LENGTH` characters and an id with a control character (:func:`id_problem`);
    * :class:`~service.contract.errors.TooManyRecords` as soon as header ``max_records + 1`` is read;
    * :class:`~service.contract.errors.SequenceTooLong` as soon as a record grows past
      ``max_sequence_length`` characters.
    """
    record_limit = _check_limit("max_records", max_records)
    length_limit = _check_limit("max_sequence_length", max_sequence_length)
    if not text or text.isspace():
        raise EmptyInput("no FASTA records: the input is empty")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")

    records: list[FastaRecord] = []
    first_line: dict[str, int] = {}  # record id -> line of its header
    n_headers = 0
    rec_id: str | None = None  # the record being read
    rec_desc = ""
    rec_line = 0
    pieces: list[str] = []
    piece_lines: list[int] = []
    length = 0

    def finish_record() -> None:
        if not pieces:
            raise InvalidFasta(f"record {rec_id!r} has no sequence", line=rec_line, record_id=rec_id)
        sequence = pieces[0] if len(pieces) == 1 else "".join(pieces)
        records.append(FastaRecord(rec_id, rec_desc, sequence, rec_line,  # type: ignore[arg-type]
                                   _layout(pieces, piece_lines)))

    lineno = 0
    for line in text.split("\n"):
        lineno += 1
        lead = line[:1]
        if lead == ">":
            header = line
        elif lead == ";":
            continue
        else:
            words = line.split()
            if not words:
                continue  # blank line
            first = words[0][0]
            if first == ";":
                continue
            if first == ">":
                header = line.strip()  # indented header
            else:
                if rec_id is None:
                    raise InvalidFasta("sequence data before the first '>' header", line=lineno)
                piece = words[0] if len(words) == 1 else "".join(words)
                length += len(piece)
                if length > length_limit:
                    raise SequenceTooLong(
                        f"record {rec_id!r} is longer than {max_sequence_length} nt",
                        record_id=rec_id,
                        line=rec_line,
                    )
                pieces.append(piece)
                piece_lines.append(lineno)
                continue

        # A header line.
        if rec_id is not None:
            finish_record()
        n_headers += 1
        if n_headers > record_limit:
            raise TooManyRecords(f"more than {max_records} records")
        rec_desc = header[1:].strip()
        if not rec_desc:
            raise InvalidFasta("header without an identifier", line=lineno)
        rec_id = rec_desc.split(None, 1)[0]
        _check_id(rec_id, lineno)
        previous = first_line.get(rec_id)
        if previous is not None:
            raise InvalidFasta(
                f"duplicate record id {rec_id!r} (first at line {previous})", line=lineno, record_id=rec_id
            )
        first_line[rec_id] = lineno
        rec_line = lineno
        pieces = []
        piece_lines = []
        length = 0

    if rec_id is None:
        raise EmptyInput("no FASTA records: the input holds only blank lines and ';' comments")
    finish_record()
    return records


def read_fasta_bytes(
    data: bytes,
    *,
    max_bytes: int,
    max_records: int | None = None,
    max_sequence_length: int | None = None,
    content_encoding: str | None = None,
) -> list[FastaRecord]:
    """:func:`decode_body` then :func:`parse_fasta`."""
    text = decode_body(data, max_bytes=max_bytes, content_encoding=content_encoding)
    return parse_fasta(text, max_records=max_records, max_sequence_length=max_sequence_length)
