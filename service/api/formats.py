"""Response formats: JSON (default), CSV and TSV with a header row."""

from __future__ import annotations

import csv
import io
from typing import Literal

from fastapi import Request

from service.api.protocol import LncRnaResponse, PromoterResponse
from service.contract.errors import DnabertError

Format = Literal["json", "csv", "tsv"]
MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8",
         "tsv": "text/tab-separated-values; charset=utf-8"}


class UnsupportedFormat(DnabertError):
    code = "unsupported_format"
    http_status = 406


def choose_format(request: Request, requested: str | None) -> Format:
    """``format=`` wins; else the Accept header; else JSON."""
    if requested is not None:
        value = requested.lower()
        if value not in MEDIA:
            raise UnsupportedFormat(f"format must be one of json, csv, tsv (got {requested!r})")
        return value  # type: ignore[return-value]
    accept = request.headers.get("accept", "").lower()
    if "text/csv" in accept:
        return "csv"
    if "text/tab-separated-values" in accept:
        return "tsv"
    return "json"


def _table(rows: list[list], header: list[str], fmt: Format) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _num(x: float) -> str:
    return repr(float(x))  # shortest round-tripping text: no precision lost


def promoter_table(resp: PromoterResponse, fmt: Format) -> str:
    variants = sorted(resp.results[0].variant_probabilities or {}) if resp.results else []
    header = ["id", "length", "probability", "label", "model", *[f"p_{v}" for v in variants],
              "truncated", "ambiguous_bases", "flags"]
    rows = [[r.id, r.length, _num(r.probability), r.label, r.model,
             *[_num((r.variant_probabilities or {})[v]) for v in variants],
             str(r.truncated).lower(), r.ambiguous_bases, ";".join(r.flags)] for r in resp.results]
    return _table(rows, header, fmt)


def lncrna_table(resp: LncRnaResponse, fmt: Format) -> str:
    header = ["id", "length", "nucleus", "cytoplasm", "extracellular_vesicle", "locations", "truncated",
              "ambiguous_bases", "flags", "model"]
    rows = [[r.id, r.length, _num(r.scores.nucleus), _num(r.scores.cytoplasm),
             _num(r.scores.extracellular_vesicle), ";".join(r.locations), str(r.truncated).lower(),
             r.ambiguous_bases, ";".join(r.flags), r.model] for r in resp.results]
    return _table(rows, header, fmt)
