"""Variant windows and what a variant-effect run writes (pure logic: no model, no web).

**The windows.** The promoter models were trained on 300 bp windows (their cards'
``training.data.name`` is ``promoter_300bp``): the window length ``L`` is the model's, read from
its card by :func:`service.contract.windows.window_length`, the rule the scan uses too (the
strand names and the reverse complement are also the scan's). For a variant whose REF
covers the 0-based interval ``[p, p + r)`` (``p = POS - 1``), an allele of ``n`` bases is placed
in a window of ``L`` bases with ``ceil((L - n) / 2)`` reference bases on its left and
``floor((L - n) / 2)`` on its right (:func:`flanks`):

* the REF window is the reference ``[p - ceil((L - r) / 2), p + r + floor((L - r) / 2))``: for
  an SNV at ``L = 300``, 150 bases, the variant, 149 bases;
* the ALT window is the same rule applied to the ALT allele: the allele re-centred, flanked by
  the reference bases just left of ``p`` and just right of ``p + r``, so that an insertion or a
  deletion gives a window of exactly ``L`` bases too (the flanks shrink or grow by half the
  length change each). For SNVs and MNVs both windows cover the same genome interval.

Alleles are taken as written (the VCF anchor base of an indel included, no left-alignment or
trimming); REF and ALT are upper-cased. On the ``-`` strand both windows are reverse-complemented
(:func:`service.contract.windows.reverse_complement`): the same genome interval, read as the
other strand.

**Flags** (a flagged variant is reported, not scored; the others go on): ``unsupported_allele``
(symbolic, breakend or ``*`` ALT), ``no_alt`` (ALT ``.``), ``allele_too_long`` (REF or ALT longer
than the window), ``unknown_contig`` (the reference has no such contig), ``ref_mismatch`` (REF
differs from the reference there, or lies beyond the contig's end), ``edge`` (too close to a
contig end for a full window on either allele). Scored variants may also carry the flags of
:class:`service.contract.prepare.Prepared` for their windows (``ambiguous_bases`` ...;
``no_informative_bases``: an all-``N`` window, reported without values).

**The values** (:func:`strand_effect`): ``ref_probability`` and ``alt_probability`` (P(promoter)
of each window, exactly what ``/predict/promoter`` answers for that window's sequence),
``delta = alt - ref`` and ``log_odds_ratio = logit(alt) - logit(ref)``, with both probabilities
clipped to ``[1e-7, 1 - 1e-7]`` (:data:`CLIP`) so that a saturated probability gives a finite
log-odds ratio (at most about +-32). With ``strand=both`` each strand is reported
(``per_strand``) and the top-level values are those of the strand whose ``|delta|`` is the
larger (``+`` on a tie), named in ``strand``: every top-level quadruple is one strand's real
numbers, so ``delta == alt - ref`` always holds, and the larger of the two effects is the one
shown.

**The outputs**: JSON (:class:`VariantsResponse`), TSV (:func:`tsv_lines`) and VCF (the input
records, INFO extended with ``DNABERT_*`` fields declared in the header: :func:`vcf_header`,
:func:`vcf_line`). Coordinates: ``pos`` is 1-based, as in the VCF; ``window_start`` and
``window_end`` are 0-based half-open (BED-style) genome coordinates of the REF window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from service.contract.reference import Reference
from service.contract.vcf import NO_ALT, UNSUPPORTED_ALLELE, Variant, VcfHeader, VcfRecord
from service.contract.windows import reverse_complement

__all__ = [
    "CLIP",
    "StrandEffect",
    "VariantEffect",
    "VariantReport",
    "VariantWindows",
    "VariantsResponse",
    "build_windows",
    "flanks",
    "strand_effect",
    "tsv_lines",
    "vcf_header",
    "vcf_line",
]

CLIP = 1e-7
"""Probabilities are clipped to ``[CLIP, 1 - CLIP]`` before the logit of the log-odds ratio."""
Strand = Literal["+", "-", "both"]

REF_MISMATCH = "ref_mismatch"
UNKNOWN_CONTIG = "unknown_contig"
EDGE = "edge"
ALLELE_TOO_LONG = "allele_too_long"
FLAGS_DOC = (f"'{UNSUPPORTED_ALLELE}' (symbolic, breakend or '*' ALT), '{NO_ALT}' (ALT '.'), "
             f"'{ALLELE_TOO_LONG}' (REF or ALT longer than the window), '{UNKNOWN_CONTIG}', '{REF_MISMATCH}' "
             f"(REF differs from the reference, or lies beyond the contig), '{EDGE}' (too close to a contig end "
             "for a full window): not scored. Scored windows may add 'ambiguous_bases', 'mostly_ambiguous' and "
             "'no_informative_bases' (an all-N window: no values)")

def flanks(length: int, allele: int) -> tuple[int, int]:
    """Reference bases left and right of an ``allele``-base allele centred in ``length`` bases."""
    left = (length - allele + 1) // 2
    return left, length - allele - left


# ------------------------------------------------------------------------------------------
# windows


@dataclass(frozen=True)
class VariantWindows:
    """One variant's REF and ALT windows on the ``+`` strand (None when it is not scored)."""

    variant: Variant
    flags: tuple[str, ...]
    start0: int | None = None  # the REF window, 0-based half-open genome coordinates
    end0: int | None = None
    ref: str | None = None
    alt: str | None = None

    @property
    def scorable(self) -> bool:
        return self.ref is not None

    def sequences(self, strand: str) -> tuple[str, str]:
        """(REF window, ALT window) as read on ``strand`` (``+`` or ``-``)."""
        assert self.ref is not None and self.alt is not None
        if strand == "-":
            return reverse_complement(self.ref), reverse_complement(self.alt)
        return self.ref, self.alt


def build_windows(variant: Variant, reference: Reference, length: int) -> VariantWindows:
    """The windows of ``variant`` (module docstring), or the flags that say why there are none."""
    if variant.flags:
        return VariantWindows(variant, variant.flags)
    rec = variant.record
    ref, alt = rec.ref.upper(), variant.alt.upper()
    if max(len(ref), len(alt)) > length:
        return VariantWindows(variant, (ALLELE_TOO_LONG,))
    size = reference.length(rec.chrom)
    if size is None:
        return VariantWindows(variant, (UNKNOWN_CONTIG,))
    p0 = rec.pos - 1
    end = p0 + len(ref)
    ref_left, ref_right = flanks(length, len(ref))
    alt_left, alt_right = flanks(length, len(alt))
    lo, hi = p0 - max(ref_left, alt_left), end + max(ref_right, alt_right)
    flags = []
    if p0 < 0 or end > size or reference.fetch(rec.chrom, p0, end) != ref:
        flags.append(REF_MISMATCH)
    if lo < 0 or hi > size:
        flags.append(EDGE)
    if flags:
        return VariantWindows(variant, tuple(flags))
    left = reference.fetch(rec.chrom, lo, p0)
    right = reference.fetch(rec.chrom, end, hi)
    return VariantWindows(variant, (), p0 - ref_left, end + ref_right,
                          left[len(left) - ref_left:] + ref + right[:ref_right],
                          left[len(left) - alt_left:] + alt + right[:alt_right])


# ------------------------------------------------------------------------------------------
# values


class StrandEffect(BaseModel):
    """The effect of the ALT allele read on one strand."""

    ref_probability: float = Field(description="P(promoter) of the REF window")
    alt_probability: float = Field(description="P(promoter) of the ALT window")
    delta: float = Field(description="alt_probability - ref_probability")
    log_odds_ratio: float = Field(description="logit(alt) - logit(ref), probabilities clipped to [1e-7, 1 - 1e-7]")


def _logit(p: float) -> float:
    p = min(max(p, CLIP), 1.0 - CLIP)
    return math.log(p) - math.log1p(-p)


def strand_effect(ref_probability: float, alt_probability: float) -> StrandEffect:
    ref, alt = float(ref_probability), float(alt_probability)
    return StrandEffect(ref_probability=ref, alt_probability=alt, delta=alt - ref,
                        log_odds_ratio=_logit(alt) - _logit(ref))


def strongest(per_strand: Mapping[str, StrandEffect]) -> str:
    """The strand whose ``|delta|`` is the largest (the first given on a tie)."""
    return max(per_strand, key=lambda s: abs(per_strand[s].delta))


class VariantEffect(BaseModel):
    """One VCF record and ALT allele."""

    id: str = Field(description="the VCF ID, or CHROM:POS:REF:ALT where it is '.'")
    chrom: str
    pos: int = Field(description="1-based position of REF's first base, as in the VCF")
    ref: str
    alt: str
    line: int = Field(description="the record's line in the (decompressed) VCF")
    window_start: int | None = Field(None, description="REF window, 0-based half-open genome coordinates (BED-style)")
    window_end: int | None = None
    strand: Literal["+", "-"] | None = Field(
        None, description="the strand of the values: the one asked for, or with strand=both the one with the larger "
                    "|delta|; null when not scored")
    ref_probability: float | None = None
    alt_probability: float | None = None
    delta: float | None = None
    log_odds_ratio: float | None = None
    per_strand: dict[Literal["+", "-"], StrandEffect] | None = Field(
        None, description="with strand=both: the values of each strand")
    flags: list[str] = Field(description=FLAGS_DOC)

    @classmethod
    def of(cls, windows: VariantWindows, per_strand: Mapping[str, StrandEffect] | None = None,
           extra_flags: Sequence[str] = (), both: bool = False) -> VariantEffect:
        """The entry of ``windows`` with the values of each strand scored (None: not scored)."""
        variant, rec = windows.variant, windows.variant.record
        values: dict = {}
        if per_strand:
            chosen = strongest(per_strand)
            values = {"strand": chosen, **per_strand[chosen].model_dump()}
            if both:
                values["per_strand"] = dict(per_strand)
        return cls(id=variant.name, chrom=rec.chrom, pos=rec.pos, ref=rec.ref, alt=variant.alt, line=rec.line,
                   window_start=windows.start0, window_end=windows.end0,
                   flags=[*windows.flags, *extra_flags], **values)


class VariantsResponse(BaseModel):
    task: Literal["promoter"] = "promoter"
    model: str
    strand: Strand
    window: int = Field(description="window length in bases (the model's input length)")
    results: list[VariantEffect] = Field(description="one entry per VCF record and ALT allele, in file order")
    count: int


# ------------------------------------------------------------------------------------------
# TSV and VCF

_VALUES = ("ref_probability", "alt_probability", "delta", "log_odds_ratio")
_INFO_NAMES = {"ref_probability": "REF_P", "alt_probability": "ALT_P", "delta": "DELTA", "log_odds_ratio": "LOR"}
_INFO_TEXT = {"ref_probability": "P(promoter) of the REF window", "alt_probability": "P(promoter) of the ALT window",
              "delta": "ALT_P - REF_P", "log_odds_ratio": "logit(ALT_P) - logit(REF_P), P clipped to [1e-7, 1-1e-7]"}
_STRAND_SUFFIX = {"+": "PLUS", "-": "MINUS"}
PREFIX = "DNABERT_"


def _cell(text: str) -> str:
    """A text cell no spreadsheet reads as a formula (VCF text holds no tab or control character)."""
    return "'" + text if text.startswith(("=", "+", "-", "@")) else text


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def tsv_lines(effects: Iterable[VariantEffect], strand: str, header: bool = True) -> Iterator[str]:
    """TSV with a header row: ``pos`` 1-based (VCF), windows 0-based half-open; with
    ``strand=both`` also each strand's four values (``_plus``, ``_minus`` columns)."""
    per = [f"{v}_{s}" for s in ("plus", "minus") for v in _VALUES] if strand == "both" else []
    if header:
        yield "\t".join(["id", "chrom", "pos", "ref", "alt", "window_start", "window_end", "strand", *_VALUES,
                         *per, "flags"]) + "\n"
    for e in effects:
        cells = [_cell(e.id), _cell(e.chrom), str(e.pos), e.ref, e.alt,
                 "" if e.window_start is None else str(e.window_start),
                 "" if e.window_end is None else str(e.window_end), e.strand or "",
                 *(_num(getattr(e, v)) for v in _VALUES)]
        if per:
            cells += [_num(getattr(e.per_strand[s], v)) if e.per_strand else "" for s in ("+", "-") for v in _VALUES]
        yield "\t".join([*cells, ";".join(e.flags)]) + "\n"


def _info_fields(strand: str) -> list[tuple[str, str, str, Callable[[VariantEffect], str]]]:
    """(name, Type, Description, value of one ALT) of every INFO field written, all Number=A."""
    fields: list[tuple[str, str, str, Callable[[VariantEffect], str]]] = [
        (PREFIX + _INFO_NAMES[v], "Float", _INFO_TEXT[v], lambda e, v=v: _vcf_float(getattr(e, v)))
        for v in _VALUES]
    fields.append((PREFIX + "STRAND", "String", "strand of the DNABERT_ values (+ or -)", lambda e: e.strand or "."))
    if strand == "both":
        fields += [(f"{PREFIX}{_INFO_NAMES[v]}_{_STRAND_SUFFIX[s]}", "Float", f"{_INFO_TEXT[v]}, {s} strand",
                    lambda e, v=v, s=s: _vcf_float(getattr(e.per_strand[s], v) if e.per_strand else None))
                   for s in ("+", "-") for v in _VALUES]
    fields.append((PREFIX + "FLAGS", "String", "why the allele is not scored, or notes on its windows: "
                                               "'|'-separated flags, '.' for none", lambda e: "|".join(e.flags) or "."))
    return fields


def vcf_header(header: VcfHeader, model: str, strand: str, window: int, source: str) -> str:
    """The input header without earlier ``DNABERT_`` lines, plus one ``##INFO`` line per value
    (Number=A: one value per ALT) and the run's model, strand and window length."""
    kept = [line for line in header.meta
            if not line.startswith((f"##INFO=<ID={PREFIX}", f"##{PREFIX}"))]
    info = [f'##INFO=<ID={name},Number=A,Type={kind},Description="{text}">'
            for name, kind, text, _ in _info_fields(strand)]
    run = [f"##{PREFIX}model={model}", f"##{PREFIX}strand={strand}", f"##{PREFIX}window={window}",
           f"##{PREFIX}source={source}"]
    return "\n".join([*kept, *info, *run, header.column_line]) + "\n"


def _vcf_float(value: float | None) -> str:
    return "." if value is None else format(value, ".9g")


def vcf_line(record: VcfRecord, effects: Sequence[VariantEffect], strand: str) -> str:
    """``record`` as read, with its ``DNABERT_`` INFO fields (earlier ones replaced); ``effects``
    are its ALTs' entries in ALT order. A record without ALT is written unchanged."""
    fields = list(record.fields)
    kept = [e for e in record.info.split(";") if record.info != "." and not e.startswith(PREFIX)]
    if record.alts:
        for name, _, _, value in _info_fields(strand):
            kept.append(f"{name}={','.join(value(e) for e in effects)}")
    fields[7] = ";".join(kept) or "."
    return "\t".join(fields) + "\n"



@dataclass
class VariantReport:
    """What one run found: the VCF's header and records, one effect per record and ALT (in
    order: a record without ALT has one), and the run's model, strand and window length. The
    three outputs are rendered from it; a stream of reports (the offline command's batches)
    renders with ``header=False`` after the first."""

    header: VcfHeader
    records: list[VcfRecord]
    effects: list[VariantEffect]
    model: str
    strand: str
    window: int

    def response(self) -> VariantsResponse:
        return VariantsResponse(model=self.model, strand=self.strand, window=self.window,  # type: ignore[arg-type]
                                results=self.effects, count=len(self.effects))

    def tsv(self, header: bool = True) -> str:
        return "".join(tsv_lines(self.effects, self.strand, header))

    def vcf(self, source: str, header: bool = True) -> str:
        out = [vcf_header(self.header, self.model, self.strand, self.window, source)] if header else []
        at = 0
        for record in self.records:
            n = max(1, len(record.alts))
            out.append(vcf_line(record, self.effects[at:at + n], self.strand))
            at += n
        return "".join(out)
