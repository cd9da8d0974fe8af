"""The strict VCF reader: header, records, ALT splitting, bgzip, and errors that name the line."""

from __future__ import annotations

import gzip

import pytest

from service.contract.errors import PayloadTooLarge, TooManyRecords
from service.contract.vcf import InvalidVcf, VcfReader, iter_lines, read_vcf_bytes, split_alleles
from tests.service.contract.test_variant_windows import genome, variant_rows, variant_vcf

HEAD = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def test_header_records_and_alleles():
    text = variant_vcf(genome())
    header, records = read_vcf_bytes(text.encode())
    assert header.version == "VCFv4.2" and header.samples == ["S1"]
    assert header.meta[1] == "##source=test" and header.column_line == text.splitlines()[len(header.meta)]
    rows = variant_rows(genome())
    assert [(r.chrom, r.pos, r.id, r.ref) for r in records] == [row[:4] for row in rows]
    assert [r.line for r in records] == list(range(len(header.meta) + 2, len(header.meta) + 2 + len(rows)))
    multi = next(r for r in records if r.id == "multi")
    variants = split_alleles(multi)
    assert tuple(v.alt for v in variants) == multi.alts and [v.alt_index for v in variants] == [0, 1, 2, 3]
    assert [v.flags for v in variants] == [(), ("unsupported_allele",), ("unsupported_allele",), ()]
    mnv = next(r for r in records if r.id == ".")
    assert split_alleles(mnv)[0].name == f"chr1:1040:{mnv.ref}:{mnv.alts[0]}"  # ID '.': CHROM:POS:REF:ALT
    noalt = next(r for r in records if r.id == "noalt")
    assert noalt.alts == () and [(v.alt, v.flags) for v in split_alleles(noalt)] == [(".", ("no_alt",))]


def test_bgzip_gzip_members_crlf_and_odd_chunks_read_alike(tmp_path):
    pysam = pytest.importorskip("pysam")
    text = variant_vcf(genome())
    plain = read_vcf_bytes(text.encode())
    src = tmp_path / "v.vcf"
    src.write_text(text)
    pysam.tabix_compress(str(src), str(tmp_path / "v.vcf.gz"))
    bgzip = (tmp_path / "v.vcf.gz").read_bytes()
    half = len(text) // 2
    members = gzip.compress(text[:half].encode()) + gzip.compress(text[half:].encode())  # split mid-line
    crlf = text.replace("\n", "\r\n").encode()
    for data in (bgzip, members, crlf):
        assert read_vcf_bytes(data) == plain
    one_byte_chunks = VcfReader(iter_lines(bgzip[i:i + 1] for i in range(len(bgzip))))
    assert (one_byte_chunks.header, list(one_byte_chunks)) == plain


def test_a_file_without_final_newline_and_a_header_only_file():
    header, records = read_vcf_bytes((HEAD + "c\t1\t.\tA\tG\t.\t.\t.").encode())
    assert len(records) == 1 and records[0].line == 3
    assert read_vcf_bytes(HEAD.encode())[1] == []


BAD = [
    ("", 1, "empty"),
    ("##fileformat=VCFv3.3\n", 1, "fileformat"),
    ("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n", 1, "fileformat"),
    ("##fileformat=VCFv4.2\n##x=1\n", 3, "header line is missing"),
    ("##fileformat=VCFv4.2\nc\t1\t.\tA\tG\t.\t.\t.\n", 2, "before the '#CHROM'"),
    ("##fileformat=VCFv4.2\n#CHROM POS ID REF ALT QUAL FILTER INFO\n", 2, "tab-separated"),
    ("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tS1\n", 2, "FORMAT"),
    (HEAD + "c\t1\t.\tA\tG\t.\t.\n", 3, "7 tab-separated columns"),
    (HEAD + "c\t1\t.\tA\tG\t.\t.\t.\nc\tx\t.\tA\tG\t.\t.\t.\n", 4, "POS"),
    (HEAD + "c\t-5\t.\tA\tG\t.\t.\t.\n", 3, "POS"),
    (HEAD + "c\t1\t.\tAX\tG\t.\t.\t.\n", 3, "REF"),
    (HEAD + "c\t1\t.\t.\tG\t.\t.\t.\n", 3, "REF"),
    (HEAD + "c\t1\t.\tA\tG,\t.\t.\t.\n", 3, "ALT allele ''"),
    (HEAD + "c\t1\t.\tA\tG-T\t.\t.\t.\n", 3, "ALT allele 'G-T'"),
    (HEAD + "c\t1\t.\tA\tG\tlow\t.\t.\n", 3, "QUAL"),
    (HEAD + "c\t1\t.\tA\tG\t.\t.\tDP=1;;X\n", 3, "INFO entry"),
    (HEAD + "c\t1\t.\tA\tG\t.\t.\t=1\n", 3, "INFO entry"),
    (HEAD + "c\t1\tid one\tA\tG\t.\t.\t.\n", 3, "ID"),
    (HEAD + "c\t1\tid\x1b[31m\tA\tG\t.\t.\t.\n", 3, "control character"),
    (HEAD + "\tx\t.\tA\tG\t.\t.\t.\n", 3, "CHROM"),
    (HEAD + "c\t1\t.\tA\tG\t.\t.\t.\n\nc\t2\t.\tA\tG\t.\t.\t.\n", 4, "empty line"),
    (HEAD + "c\t1\t.\tA\tG\t.\t.\t.\n#late comment\n", 4, "after the '#CHROM'"),
    (HEAD + "c\t1\t.\tA\tG\t.\t.\tNOTE=\xe9\n", None, None),  # UTF-8 text is fine
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD)
def test_errors_name_the_line(text, line, fragment):
    if line is None:
        read_vcf_bytes(text.encode())
        return
    with pytest.raises(InvalidVcf) as exc:
        read_vcf_bytes(text.encode())
    assert exc.value.line == line and exc.value.http_status == 422 and exc.value.code == "invalid_vcf"
    assert exc.value.message.startswith(f"VCF line {line}: ") and fragment in exc.value.message, exc.value.message


@pytest.mark.parametrize(("data", "line", "fragment"), [
    ((HEAD + "c\t1\t.\tA\tG\t.\t.\tX=\x00\n").encode(), 3, "NUL"),
    (HEAD.encode() + b"c\t1\t.\tA\tG\t.\t.\tX=\xff\n", 3, "UTF-8"),
    (gzip.compress(HEAD.encode())[:-6], None, "truncated or corrupt"),
])
def test_binary_and_corrupt_input(data, line, fragment):
    with pytest.raises(InvalidVcf) as exc:
        read_vcf_bytes(data)
    assert exc.value.line == line and fragment in exc.value.message


def test_limits_on_size_and_variants():
    text = HEAD + "".join(f"c\t{i}\t.\tA\tG,T\t.\t.\t.\n" for i in range(1, 6))
    with pytest.raises(TooManyRecords) as exc:
        read_vcf_bytes(text.encode(), max_variants=9)  # two per record: the fifth record is over
    assert exc.value.line == 7 and "more than 9 variants" in exc.value.message
    assert len(read_vcf_bytes(text.encode(), max_variants=10)[1]) == 5
    with pytest.raises(PayloadTooLarge):
        read_vcf_bytes(text.encode(), max_bytes=100)
    with pytest.raises(PayloadTooLarge):
        read_vcf_bytes(gzip.compress(text.encode()), max_bytes=100)


def test_symbolic_breakend_and_star_alleles_are_read_but_flagged():
    alts = ["<DEL>", "<INS:ME:ALU>", "G]17:198982]", "]13:123456]T", "C[2:321682[", "[17:198983[A", ".A", "G.", "*"]
    record = read_vcf_bytes((HEAD + f"c\t5\t.\tG\t{','.join(alts)}\t.\t.\t.\n").encode())[1][0]
    assert [v.flags for v in split_alleles(record)] == [("unsupported_allele",)] * len(alts)
