"""Response formats: JSON (default), CSV and TSV with a header row."""

from __future__ import annotations

import csv
import io
import re

from service.api.negotiation import Format  # which format to answer in: service.api.negotiation
from service.api.protocol import LncRnaResponse, PromoterResponse

# Table cells (CSV and TSV): a cell that starts with one of these is read as a formula by
# spreadsheet programs (OWASP "CSV injection"): it gets a leading apostrophe, which they show as
# text. JSON answers keep ids verbatim.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Characters that would break a row or disguise a cell; ids holding them are refused at input
# (service.contract.fasta.id_problem), this is the second line of defence for any text cell.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _text(value: str) -> str:
    """A text cell that no spreadsheet runs as a formula and that cannot break its row."""
    if value.startswith(_FORMULA_START):
        value = "'" + value
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def _table(rows: list[list], header: list[str], fmt: Format) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _num(x: float | None) -> str:
    """Shortest round-tripping text (no precision lost); an empty cell for no value."""
    return "" if x is None else repr(float(x))


def promoter_table(resp: PromoterResponse, fmt: Format) -> str:
    # the variants of model=all, from any scored record (unscored ones have none)
    variants = sorted({v for r in resp.results for v in (r.variant_probabilities or {})})
    header = ["id", "length", "probability", "label", "model", *[f"p_{v}" for v in variants],
              "truncated", "ambiguous_bases", "flags"]
    rows = [[_text(r.id), r.length, _num(r.probability), r.label or "", _text(r.model),
             *[_num((r.variant_probabilities or {}).get(v)) for v in variants],
             str(r.truncated).lower(), r.ambiguous_bases, ";".join(r.flags)] for r in resp.results]
    return _table(rows, header, fmt)


def lncrna_table(resp: LncRnaResponse, fmt: Format) -> str:
    header = ["id", "length", "nucleus", "cytoplasm", "extracellular_vesicle", "locations", "truncated",
              "ambiguous_bases", "flags", "model"]
    rows = [[_text(r.id), r.length, *_lncrna_scores(r), ";".join(r.locations), str(r.truncated).lower(),
             r.ambiguous_bases, ";".join(r.flags), _text(r.model)] for r in resp.results]
    return _table(rows, header, fmt)


def _lncrna_scores(r) -> list[str]:
    if r.scores is None:
        return ["", "", ""]
    return [_num(r.scores.nucleus), _num(r.scores.cytoplasm), _num(r.scores.extracellular_vesicle)]
