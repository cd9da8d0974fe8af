"""A strict VCF 4.x reader for variant-effect scoring (standard library only).

What it reads: a VCF 4.0 to 4.5 file, plain or bgzip (bgzip is a series of gzip members, read
with :class:`service.contract.fasta.StreamingGunzip`, so plain ``gzip`` works as well), from an
iterable of byte chunks: a request body in memory or a file read piece by piece (the offline
command never holds the whole VCF). Every problem is an :class:`InvalidVcf` (422) that names the
1-based line of the (decompressed) file.

What it checks, after the VCF specification (section 1.6):

* the first line is ``##fileformat=VCFv4.x``; meta lines start with ``##``; then one column
  header line ``#CHROM POS ID REF ALT QUAL FILTER INFO`` (tab-separated, optionally ``FORMAT``
  and sample names); a line starting with ``#`` after it, or a record before it, is refused;
* each record has as many tab-separated columns as the header; ``POS`` is an integer >= 0 (0 and
  contig length + 1 are the telomeres); ``REF`` is one or more of ``A C G T N`` (any case);
  ``ALT`` is ``.`` (no alternative allele) or a comma-separated list of alleles, each bases,
  ``*`` (an allele missing because of an upstream deletion), a symbolic allele ``<ID>`` or a
  breakend (``G]17:198982]``, ``.A``, ``A.``); ``QUAL`` is ``.`` or a number; ``ID``, ``FILTER``
  and ``INFO`` hold no whitespace, and ``INFO`` is ``.`` or ``;``-separated ``KEY[=VALUE]``
  entries; empty lines are refused (the line break that ends the file is not a line);
* a line ends with ``\\n`` or ``\\r\\n``; the text is UTF-8 without NUL bytes.

Records are kept verbatim (:attr:`VcfRecord.fields`) so that an annotated VCF writes them back
unchanged but for ``INFO``. Each ALT is a variant of its own (:func:`split_alleles`); symbolic
alleles, breakends and ``*`` are not sequence changes a window can show: they are reported with
the flag ``unsupported_allele`` and not scored, as is a record without ALT (``no_alt``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain

from service.contract.errors import DnabertError, InvalidFasta, PayloadTooLarge, TooManyRecords
from service.contract.fasta import StreamingGunzip, id_problem, looks_gzipped

__all__ = [
    "FIXED_COLUMNS",
    "InvalidVcf",
    "VcfHeader",
    "VcfReader",
    "VcfRecord",
    "Variant",
    "iter_lines",
    "read_vcf_bytes",
    "split_alleles",
]

FIXED_COLUMNS = ("CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")
_FILEFORMAT = re.compile(r"##fileformat=VCFv4\.[0-5]$")
_BASES = re.compile(r"[ACGTNacgtn]+")
_SYMBOLIC = re.compile(r"<[^<>\s,]+>")
_BREAKEND = re.compile(r"[ACGTNacgtn]*[\[\]][^\[\]\s,]+[\[\]][ACGTNacgtn]*|\.[ACGTNacgtn]+|[ACGTNacgtn]+\.")
_INFO_KEY = re.compile(r"[A-Za-z_][0-9A-Za-z_.]*|1000G")
_WHITESPACE = re.compile(r"\s")

UNSUPPORTED_ALLELE = "unsupported_allele"
"""Flag of a symbolic (``<DEL>``), breakend (``N[chr2:5[``) or ``*`` allele: not scored."""
NO_ALT = "no_alt"
"""Flag of a record whose ALT is ``.``: nothing to score."""


class InvalidVcf(DnabertError):
    """The VCF cannot be read: the message and :attr:`line` name the line (1-based)."""

    code = "invalid_vcf"
    http_status = 422

    def __init__(self, message: str, line: int | None = None):
        super().__init__((f"VCF line {line}: " if line is not None else "VCF: ") + message, line=line)


@dataclass
class VcfHeader:
    """The header as read: the ``##`` meta lines verbatim and the column names."""

    meta: list[str]
    columns: list[str]

    @property
    def version(self) -> str:
        return self.meta[0].split("=", 1)[1]

    @property
    def samples(self) -> list[str]:
        return self.columns[9:]

    @property
    def column_line(self) -> str:
        return "#" + "\t".join(self.columns)


@dataclass(frozen=True)
class VcfRecord:
    """One data line: its 1-based line number and its columns, verbatim."""

    line: int
    fields: tuple[str, ...]

    @property
    def chrom(self) -> str:
        return self.fields[0]

    @property
    def pos(self) -> int:
        """1-based position of the first base of REF, as in the file."""
        return int(self.fields[1])

    @property
    def id(self) -> str:
        return self.fields[2]

    @property
    def ref(self) -> str:
        return self.fields[3]

    @property
    def alts(self) -> tuple[str, ...]:
        """The ALT alleles (empty for ``.``)."""
        alt = self.fields[4]
        return () if alt == "." else tuple(alt.split(","))

    @property
    def info(self) -> str:
        return self.fields[7]


@dataclass(frozen=True)
class Variant:
    """One ALT of one record: what is scored and reported (one JSON entry, one TSV row)."""

    record: VcfRecord
    alt_index: int  # 0-based index among the record's ALTs; -1 for a record without ALT
    alt: str  # as written ('.' for a record without ALT)
    flags: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """The VCF ID, or ``CHROM:POS:REF:ALT`` where it is ``.``."""
        rec = self.record
        return rec.id if rec.id != "." else f"{rec.chrom}:{rec.pos}:{rec.ref}:{self.alt}"


def split_alleles(record: VcfRecord) -> list[Variant]:
    """One :class:`Variant` per ALT; symbolic/breakend/``*`` ALTs flagged ``unsupported_allele``,
    a record without ALT gives one variant flagged ``no_alt``."""
    alts = record.alts
    if not alts:
        return [Variant(record, -1, ".", (NO_ALT,))]
    return [Variant(record, i, alt, () if _BASES.fullmatch(alt) else (UNSUPPORTED_ALLELE,))
            for i, alt in enumerate(alts)]


# ------------------------------------------------------------------------------------------
# bytes -> lines


def _decoded(chunks: Iterable[bytes], max_bytes: int | None) -> Iterator[bytes]:
    """The bytes of ``chunks``, gunzipped (every member) when they start with the gzip magic;
    at most ``max_bytes`` after decompression (:class:`PayloadTooLarge` beyond)."""
    limit = (1 << 62) if max_bytes is None else max_bytes  # StreamingGunzip adds 1: within ssize_t
    pieces = iter(chunks)
    head = b""
    for chunk in pieces:  # enough bytes to tell gzip by its two magic bytes
        head += chunk
        if len(head) >= 2:
            break
    if looks_gzipped(head):
        gunzip = StreamingGunzip(limit)
        try:
            yield gunzip.feed(head)
            for chunk in pieces:
                yield gunzip.feed(chunk)
            gunzip.finish()
        except InvalidFasta:  # StreamingGunzip's word for a corrupt stream
            raise InvalidVcf("the gzip (bgzip) stream is truncated or corrupt") from None
        return
    size = 0
    for chunk in chain([head], pieces):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the VCF is larger than the limit of {limit} bytes")
        yield chunk


def iter_lines(chunks: Iterable[bytes], max_bytes: int | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a VCF given as byte chunks, plain or gzip; the
    final line break does not start a line. UTF-8, no NUL byte; ``\\r\\n`` is a line break."""
    pending = b""
    number = 0
    for data in _decoded(chunks, max_bytes):
        if not data:
            continue
        pending += data
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            number += 1
            yield number, _text(raw, number)
    if pending:
        yield number + 1, _text(pending, number + 1)


def _text(raw: bytes, number: int) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if b"\x00" in raw:
        raise InvalidVcf("binary data, not VCF text: the line holds a NUL byte", number)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidVcf(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}", number) from None


# ------------------------------------------------------------------------------------------
# lines -> header and records


class VcfReader:
    """Reads the header at once, then the records lazily (iterate the reader).

    ``max_variants`` bounds the number of variants (one per ALT): beyond it,
    :class:`TooManyRecords` (413) naming the line.
    """

    def __init__(self, lines: Iterable[tuple[int, str]], max_variants: int | None = None):
        self._lines = iter(lines)
        self.max_variants = max_variants
        self.variants = 0
        self.header = self._read_header()

    def _read_header(self) -> VcfHeader:
        first = next(self._lines, None)
        if first is None:
            raise InvalidVcf("the file is empty: a VCF starts with a '##fileformat=VCFv4.x' line", 1)
        number, text = first
        if not _FILEFORMAT.match(text.lstrip("\ufeff")):
            raise InvalidVcf(f"a VCF starts with '##fileformat=VCFv4.0' to 'VCFv4.5', not {_preview(text)}", number)
        meta = [text.lstrip("\ufeff")]
        for number, text in self._lines:
            if text.startswith("##"):
                meta.append(text)
                continue
            if text.startswith("#"):
                return VcfHeader(meta, _columns(text, number))
            raise InvalidVcf(f"a record (or other text) before the '#CHROM' header line: {_preview(text)}", number)
        raise InvalidVcf("the '#CHROM POS ID REF ALT QUAL FILTER INFO' header line is missing", number + 1)

    def __iter__(self) -> Iterator[VcfRecord]:
        width = len(self.header.columns)
        for number, text in self._lines:
            record = _record(text, number, width)
            self.variants += max(1, len(record.alts))
            if self.max_variants is not None and self.variants > self.max_variants:
                raise TooManyRecords(f"VCF line {number}: more than {self.max_variants} variants (one per ALT) "
                                     "in one request", line=number)
            yield record


def _preview(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _columns(text: str, number: int) -> list[str]:
    columns = text[1:].split("\t")
    if tuple(columns[:8]) != FIXED_COLUMNS:
        raise InvalidVcf("the header line must be '#CHROM POS ID REF ALT QUAL FILTER INFO', tab-separated "
                         f"(then optionally FORMAT and the samples), not {_preview(text, 60)}", number)
    if len(columns) > 8 and columns[8] != "FORMAT":
        raise InvalidVcf(f"the ninth header column must be FORMAT, not {_preview(columns[8])}", number)
    if len(columns) == 9:
        raise InvalidVcf("a FORMAT column without sample columns", number)
    return columns


def _record(text: str, number: int, width: int) -> VcfRecord:
    if not text.strip():
        raise InvalidVcf("empty line (a VCF has no blank lines)", number)
    if text.startswith("#"):
        raise InvalidVcf("a '#' line after the '#CHROM' header line", number)
    fields = tuple(text.split("\t"))
    if len(fields) != width:
        raise InvalidVcf(f"{len(fields)} tab-separated columns where the header has {width}", number)
    chrom, pos, vid, ref, alt, qual, filt, info = fields[:8]
    for name, value in (("CHROM", chrom), ("ID", vid), ("FILTER", filt), ("INFO", info)):
        if not value or _WHITESPACE.search(value):
            raise InvalidVcf(f"{name} is empty or holds whitespace: {_preview(value)}", number)
        problem = id_problem(value)
        if problem is not None:  # CHROM and ID are echoed in JSON and TSV answers
            raise InvalidVcf(f"{name} {_preview(value)} holds a {problem}", number)
    if not pos.isascii() or not pos.isdigit():
        raise InvalidVcf(f"POS must be an integer >= 0, not {_preview(pos)}", number)
    if not _BASES.fullmatch(ref):
        raise InvalidVcf(f"REF must be one or more of A, C, G, T, N, not {_preview(ref)}", number)
    if alt != ".":
        for allele in alt.split(","):
            if not (_BASES.fullmatch(allele) or allele == "*" or _SYMBOLIC.fullmatch(allele)
                    or _BREAKEND.fullmatch(allele)):
                raise InvalidVcf(f"ALT allele {_preview(allele)} is neither bases (A, C, G, T, N), '*', a symbolic "
                                 "allele <ID> nor a breakend", number)
    if qual != ".":
        try:
            float(qual)
        except ValueError:
            raise InvalidVcf(f"QUAL must be a number or '.', not {_preview(qual)}", number) from None
    if info != ".":
        for entry in info.split(";"):
            key = entry.split("=", 1)[0]
            if not _INFO_KEY.fullmatch(key):
                raise InvalidVcf(f"INFO entry {_preview(entry)} has no valid key (KEY or KEY=VALUE, "
                                 "';'-separated)", number)
    return VcfRecord(number, fields)


def read_vcf_bytes(data: bytes, *, max_bytes: int | None = None,
                   max_variants: int | None = None) -> tuple[VcfHeader, list[VcfRecord]]:
    """The header and every record of a VCF held in memory (plain or bgzip)."""
    reader = VcfReader(iter_lines([data], max_bytes), max_variants)
    return reader.header, list(reader)
