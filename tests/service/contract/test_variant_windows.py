"""Variant windows, references and the variant-effect outputs (no model).

The window rule is checked against the module's own statement of it, written out here by hand
(slices of the reference); the test inputs (:func:`genome`, :func:`variant_vcf`) are built here
and shared with the HTTP and command-line tests, which score them.
"""

from __future__ import annotations

import gzip
import math
import random
from pathlib import Path

import pytest

from service.contract.errors import InvalidSequence
from service.contract.reference import FaidxReference, MemoryReference, ReferenceUnavailable
from service.contract.variant_windows import (
    CLIP,
    VariantEffect,
    VariantReport,
    build_windows,
    flanks,
    strand_effect,
    strongest,
    tsv_lines,
    vcf_header,
    vcf_line,
)
from service.contract.vcf import VcfHeader, read_vcf_bytes, split_alleles
from service.contract.windows import reverse_complement

REPO = Path(__file__).resolve().parents[3]
L = 300  # the promoter models' window


# -- test inputs, shared with tests/service/api/test_variants.py and test_variants_cli.py -----------

def promoter_like() -> str:
    """The 300 bp promoter-like record (a TATA box) of the golden fixture."""
    lines = (REPO / "tests/fixtures/golden.fasta").read_text().splitlines()
    return lines[lines.index(">prom_like promoter-like 300 bp with a TATA box") + 1]


PLANT = 850  # 0-based start of the promoter planted in chr1


def genome(seed: int = 13) -> dict[str, str]:
    """Two contigs of random sequence; chr1 holds the promoter-like sequence at [850, 1150)."""
    rng = random.Random(seed)
    chr1 = "".join(rng.choices("ACGT", k=2000))
    chr1 = chr1[:PLANT] + promoter_like() + chr1[PLANT + L:]
    return {"chr1": chr1, "chr2": "".join(rng.choices("ACGT", k=800))}


def fasta_bytes(contigs: dict[str, str], width: int = 60) -> bytes:
    out = []
    for name, seq in contigs.items():
        out.append(f">{name} test contig")
        out += [seq[i:i + width] for i in range(0, len(seq), width)]
    return ("\n".join(out) + "\n").encode()


def other(base: str) -> str:
    return {"A": "C", "C": "G", "G": "T", "T": "A"}[base]


def variant_rows(contigs: dict[str, str]) -> list[tuple[str, int, str, str, str, str]]:
    """(CHROM, POS, ID, REF, ALT, expected flags) of every kind of record the tests need."""
    c1, c2 = contigs["chr1"], contigs["chr2"]
    tata = PLANT + promoter_like().index("TATAAAA") + 2  # 0-based: the second T of TATAAAA

    def at(seq: str, pos: int, n: int = 1) -> str:  # bases at 1-based pos
        return seq[pos - 1:pos - 1 + n]

    return [
        ("chr1", tata + 1, "snv_tata", at(c1, tata + 1), "G", ""),
        ("chr1", 1040, ".", at(c1, 1040, 2), other(at(c1, 1040)) + other(at(c1, 1041)), ""),  # MNV, no ID
        ("chr1", 1100, "ins", at(c1, 1100), at(c1, 1100) + "TATA", ""),
        ("chr1", 1200, "del", at(c1, 1200, 6), at(c1, 1200), ""),
        ("chr1", 700, "multi", at(c1, 700), f"{other(at(c1, 700))},<DEL>,*,{other(other(at(c1, 700)))}",
         ",unsupported_allele,unsupported_allele,"),
        ("chr1", 1400, "mismatch", other(at(c1, 1400)), at(c1, 1400), "ref_mismatch"),
        ("chr1", 40, "edge_left", at(c1, 40), other(at(c1, 40)), "edge"),
        ("chr2", 700, "edge_right", at(c2, 700), other(at(c2, 700)), "edge"),
        ("chrZ", 100, "unknown", "A", "C", "unknown_contig"),
        ("chr2", 300, "bnd", at(c2, 300), f"{at(c2, 300)}]chr1:100]", "unsupported_allele"),
        ("chr2", 400, "noalt", at(c2, 400), ".", "no_alt"),
    ]


def variant_vcf(contigs: dict[str, str], samples: bool = True) -> str:
    """A VCF 4.2 of :func:`variant_rows`, with a sample column, INFO and FORMAT fields."""
    head = ["##fileformat=VCFv4.2", "##source=test", '##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth">',
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
            *(f"##contig=<ID={name},length={len(seq)}>" for name, seq in contigs.items()), "##contig=<ID=chrZ>",
            "#" + "\t".join(["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
                            + (["FORMAT", "S1"] if samples else []))]
    rows = ["\t".join([c, str(p), i, r, a, "50", "PASS", f"DP={10 + k}"] + (["GT", "0/1"] if samples else []))
            for k, (c, p, i, r, a, _) in enumerate(variant_rows(contigs))]
    return "\n".join(head + rows) + "\n"


def expected_windows(contigs: dict[str, str], pos: int, chrom: str, ref: str, alt: str) -> tuple[str, str]:
    """The + strand REF and ALT windows by the documented rule, written out independently:
    ceil((L - n) / 2) reference bases left of an n-base allele, floor((L - n) / 2) right of it."""
    seq, p0 = contigs[chrom], pos - 1
    end = p0 + len(ref)

    def window(allele: str) -> str:
        left = math.ceil((L - len(allele)) / 2)
        right = L - len(allele) - left
        return seq[p0 - left:p0] + allele + seq[end:end + right]

    return window(ref), window(alt)


# -- windows --------------------------------------------------------------------------------------

def _variants(contigs, **kw):
    header, records = read_vcf_bytes(variant_vcf(contigs, **kw).encode())
    return header, records, [v for r in records for v in split_alleles(r)]


def test_the_window_rule_for_snv_mnv_insertion_and_deletion():
    assert [flanks(L, n) for n in (1, 2, 4, 5, L)] == [(150, 149), (149, 149), (148, 148), (148, 147), (0, 0)]
    contigs = genome()
    ref = MemoryReference(contigs)
    _, records, variants = _variants(contigs)
    scored = [v for v in variants if not v.flags and v.record.id not in ("mismatch", "edge_left", "edge_right",
                                                                          "unknown")]
    assert {v.record.id for v in scored} == {"snv_tata", ".", "ins", "del", "multi"}
    for v in scored:
        w = build_windows(v, ref, L)
        exp_ref, exp_alt = expected_windows(contigs, v.record.pos, v.record.chrom, v.record.ref, v.alt)
        assert (w.ref, w.alt) == (exp_ref, exp_alt), v.name
        assert len(w.ref) == len(w.alt) == L
        assert contigs[v.record.chrom][w.start0:w.end0] == w.ref  # the REF window is a genome interval
        assert w.sequences("-") == (reverse_complement(exp_ref), reverse_complement(exp_alt))
    snv = build_windows(next(v for v in scored if v.record.id == "snv_tata"), ref, L)
    assert (snv.start0, snv.end0) == (snv.variant.record.pos - 1 - 150, snv.variant.record.pos - 1 + 150)
    assert snv.ref[150] == snv.variant.record.ref and snv.alt[150] == "G"
    assert snv.ref[:150] == snv.alt[:150] and snv.ref[151:] == snv.alt[151:]
    ins = build_windows(next(v for v in scored if v.record.id == "ins"), ref, L)
    assert ins.alt[(L - 5 + 1) // 2:][:5] == ins.variant.alt  # the 5-base ALT re-centred


def test_flags_mismatch_edge_unknown_contig_and_unsupported_alleles():
    contigs = genome()
    _, _, variants = _variants(contigs)
    got = {(v.record.id, v.alt): build_windows(v, MemoryReference(contigs), L).flags for v in variants}
    for _chrom, _pos, vid, _ref, alt, flags in variant_rows(contigs):
        for a, f in zip(alt.split(","), flags.split(",") if "," in flags else [flags] * len(alt.split(","))):
            assert got[(vid, a)] == ((f,) if f else ()), (vid, a)
    assert all(not w.scorable for w in (build_windows(v, MemoryReference(contigs), L) for v in variants if v.flags))


def test_edge_is_exact_at_both_contig_ends():
    seq = "".join(random.Random(1).choices("ACGT", k=L + 9))
    ref = MemoryReference({"c": seq})

    def flags(pos: int, r: str, a: str) -> tuple[str, ...]:
        vcf = f"##fileformat=VCFv4.3\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nc\t{pos}\t.\t{r}\t{a}\t.\t.\t.\n"
        return build_windows(split_alleles(read_vcf_bytes(vcf.encode())[1][0])[0], ref, L).flags

    base = lambda pos, n=1: seq[pos - 1:pos - 1 + n]  # noqa: E731
    assert flags(151, base(151), other(base(151))) == ()  # 150 bases on its left: fits
    assert flags(150, base(150), other(base(150))) == ("edge",)
    last = len(seq) - 149  # 149 bases on its right: fits
    assert flags(last, base(last), other(base(last))) == ()
    assert flags(last + 1, base(last + 1), other(base(last + 1))) == ("edge",)
    # a deletion needs more flank on the ALT side than on the REF side: at POS 150 a 3-base REF
    # has its 149 left bases, the 1-base ALT lacks its 150th
    assert flags(150, base(150, 3), base(150)) == ("edge",)
    assert flags(151, base(151, 3), base(151)) == ()
    assert flags(len(seq) + 1, "A", "C") == ("ref_mismatch", "edge")  # beyond the end


def test_allele_longer_than_the_window_is_flagged():
    seq = "A" * 2000
    vcf = (f"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
           f"c\t500\t.\t{'A' * (L + 1)}\tA\t.\t.\t.\n").encode()
    variant = split_alleles(read_vcf_bytes(vcf)[1][0])[0]
    assert build_windows(variant, MemoryReference({"c": seq}), L).flags == ("allele_too_long",)


# -- values ---------------------------------------------------------------------------------------

def test_strand_effect_and_clipping():
    e = strand_effect(0.2, 0.6)
    assert e.delta == pytest.approx(0.4) and e.delta == e.alt_probability - e.ref_probability
    assert e.log_odds_ratio == pytest.approx(math.log(0.6 / 0.4) - math.log(0.2 / 0.8))
    saturated = strand_effect(0.0, 1.0)
    top = math.log((1 - CLIP) / CLIP)
    assert saturated.log_odds_ratio == pytest.approx(2 * top) and math.isfinite(saturated.log_odds_ratio)
    assert strongest({"+": strand_effect(0.5, 0.6), "-": strand_effect(0.5, 0.3)}) == "-"
    assert strongest({"+": strand_effect(0.5, 0.6), "-": strand_effect(0.5, 0.4)}) == "+"  # tie: +


# -- references -------------------------------------------------------------------------------------

def test_memory_reference_normalises_and_names_bad_lines():
    ref = MemoryReference.from_fasta_bytes(gzip.compress(b">c1 x\nacgtRYn\nACGU\n"), max_bytes=1 << 20)
    assert ref.contigs == {"c1": 11} and ref.fetch("c1", 0, 11) == "ACGTNNNACGT"
    with pytest.raises(InvalidSequence) as exc:
        MemoryReference.from_fasta_bytes(b">c1\nACGT\nAC-T\n", max_bytes=1 << 20)
    assert exc.value.line == 3 and "c1" in exc.value.message
    with pytest.raises(IndexError):
        ref.fetch("c1", 5, 12)


def test_faidx_reference_reads_what_the_memory_reference_holds(tmp_path):
    contigs = genome()
    path = tmp_path / "ref.fa"
    path.write_bytes(fasta_bytes(contigs).lower())  # soft-masked: read upper-case
    faidx = FaidxReference(path)
    try:
        assert dict(faidx.contigs) == {k: len(v) for k, v in contigs.items()}
        assert faidx.length("chrZ") is None
        for chrom, start, end in (("chr1", 0, 2000), ("chr1", 845, 1153), ("chr2", 799, 800), ("chr2", 5, 5)):
            assert faidx.fetch(chrom, start, end) == contigs[chrom][start:end]
        assert (tmp_path / "ref.fa.fai").is_file()  # pyfaidx wrote its index beside the FASTA
    finally:
        faidx.close()


def test_faidx_reference_indexes_elsewhere_when_it_cannot_write_beside(tmp_path):
    """A .fai that cannot be written (here a folder in its place, which stops root too, unlike
    a read-only mode): the index is built in a temporary folder, removed on close."""
    path = tmp_path / "ref.fa"
    path.write_bytes(fasta_bytes(genome()))
    (tmp_path / "ref.fa.fai").mkdir()
    faidx = FaidxReference(path)
    tmp = faidx._tmp
    try:
        assert tmp is not None and (tmp / "ref.fa.fai").is_file()
        assert faidx.fetch("chr2", 10, 20) == genome()["chr2"][10:20]
    finally:
        faidx.close()
    assert not tmp.exists()


def test_faidx_reference_refuses_what_it_cannot_index(tmp_path):
    with pytest.raises(ReferenceUnavailable):
        FaidxReference(tmp_path / "missing.fa")
    bad = tmp_path / "ragged.fa"
    bad.write_text(">c\nACGTACGT\nACG\nACGTACGT\n")  # a short line inside a record
    with pytest.raises(ReferenceUnavailable):
        FaidxReference(bad)


# -- outputs ---------------------------------------------------------------------------------------

def _report(contigs, strand="both") -> VariantReport:
    """A report with made-up values (the scoring is the runtime's), to check the writers."""
    header, records, variants = _variants(contigs)
    ref = MemoryReference(contigs)
    effects = []
    for k, v in enumerate(variants):
        w = build_windows(v, ref, L)
        per = {s: strand_effect(0.1 * (k % 7), 0.05 * (k % 5)) for s in (("+", "-") if strand == "both" else strand)}
        effects.append(VariantEffect.of(w, per if w.scorable else None, both=strand == "both"))
    return VariantReport(header, records, effects, "base", strand, L)


def test_vcf_output_reads_back_with_pysam(tmp_path):
    pysam = pytest.importorskip("pysam")
    report = _report(genome())
    path = tmp_path / "out.vcf"
    path.write_text(report.vcf("test"))
    with pysam.VariantFile(str(path)) as vcf:
        info = vcf.header.info
        assert info["DNABERT_DELTA_MINUS"].type == "Float" and info["DNABERT_DELTA_MINUS"].number == "A"
        assert info["DNABERT_FLAGS"].type == "String" and info["DNABERT_FLAGS"].number == "A"
        rows = list(vcf)
    assert len(rows) == len(report.records)
    by_id = {e.id: e for e in report.effects}
    multi = next(r for r in rows if r.id == "multi")
    assert len(multi.info["DNABERT_DELTA"]) == 4 and isinstance(multi.info["DNABERT_DELTA"][0], float)
    assert multi.info["DNABERT_DELTA"][1] is None and multi.info["DNABERT_FLAGS"][1] == "unsupported_allele"
    assert multi.info["DP"] == 14 and multi.samples["S1"]["GT"] == (0, 1)  # the input's fields kept
    snv = next(r for r in rows if r.id == "snv_tata")
    assert snv.info["DNABERT_REF_P"][0] == pytest.approx(by_id["snv_tata"].ref_probability, abs=1e-8)
    assert "DNABERT_REF_P" not in next(r for r in rows if r.id == "noalt").info


def test_vcf_output_replaces_earlier_dnabert_fields():
    report = _report(genome(), strand="+")
    again = report.vcf("test")
    header, records = read_vcf_bytes(again.encode())
    rewritten = VariantReport(header, records, report.effects, "base", "+", L).vcf("test")
    assert rewritten == again  # the annotations of the first run are replaced, not repeated
    assert sum(line.startswith("##INFO=<ID=DNABERT_DELTA,") for line in again.splitlines()) == 1
    assert "DNABERT_DELTA_PLUS" not in again  # per-strand fields only with strand=both


def test_vcf_line_of_a_record_without_info():
    header = VcfHeader(["##fileformat=VCFv4.2"], ["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"])
    text = "##fileformat=VCFv4.2\n" + header.column_line + "\nc\t1\t.\tA\tG\t.\t.\t.\n"
    record = read_vcf_bytes(text.encode())[1][0]
    effect = VariantEffect.of(build_windows(split_alleles(record)[0], MemoryReference({"c": "A"}), L))
    line = vcf_line(record, [effect], "+")
    assert line.split("\t")[7].startswith("DNABERT_REF_P=.;") and "DNABERT_FLAGS=edge" in line
    assert vcf_header(header, "base", "+", L, "x").count("##INFO=") == 6


def test_tsv_output():
    report = _report(genome())
    lines = "".join(tsv_lines(report.effects, "both")).splitlines()
    header = lines[0].split("\t")
    assert header[:3] == ["id", "chrom", "pos"] and header[-1] == "flags" and "delta_minus" in header
    assert all(len(line.split("\t")) == len(header) for line in lines)
    assert len(lines) == 1 + len(report.effects)
    assert report.tsv(header=False) == "\n".join(lines[1:]) + "\n"
