"""Output-format negotiation: ``format=`` or the ``Accept`` header (RFC 9110, section 12.5.1).

``format=json|csv|tsv`` (any case) wins. Otherwise the ``Accept`` header's media ranges are
matched against what is offered (``application/json``, ``text/csv``,
``text/tab-separated-values``): each offer takes the q-value of the most specific range that
matches it (``type/subtype`` before ``type/*`` before ``*/*``), ``q=0`` means "not
acceptable", and the acceptable offer with the highest q-value wins, ties going to the first
offered (JSON, then CSV, then TSV): ``*/*`` and ``application/*`` give JSON, ``text/*`` CSV.
No ``Accept`` header (or one with no valid media range in it) means JSON. A ``format=`` that is
not offered, or an ``Accept`` header that rules out every offer, is a 406 listing the offers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from service.contract.errors import DnabertError

Format = Literal["json", "csv", "tsv"]
FORMATS: tuple[Format, ...] = ("json", "csv", "tsv")
"""The formats offered, in order of preference."""
OFFERED = {"json": "application/json", "csv": "text/csv", "tsv": "text/tab-separated-values"}
"""Each format's media type, as matched against ``Accept``."""
MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8",
         "tsv": "text/tab-separated-values; charset=utf-8"}
"""Each format's Content-Type."""


class UnsupportedFormat(DnabertError):
    code = "unsupported_format"
    http_status = 406


def parse_accept(header: str) -> list[tuple[str, str, float]]:
    """The media ranges of an ``Accept`` header as ``(type, subtype, q)``, lower case; ranges
    that are not ``type/subtype`` or whose q-value is not a number in [0, 1] are left out."""
    ranges = []
    for part in header.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        kind, slash, sub = media.lower().partition("/")
        if not slash or not kind or not sub or (kind == "*" and sub != "*"):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
                break  # what follows q are accept-extensions, not media-type parameters
        if 0.0 <= q <= 1.0:
            ranges.append((kind, sub, q))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, str, float]]) -> float:
    """The q-value of ``offer`` under the most specific matching range (0: not acceptable)."""
    kind, _, sub = offer.partition("/")
    best, specificity = 0.0, -1
    for r_kind, r_sub, q in ranges:
        if r_kind == kind and r_sub == sub:
            rank = 2
        elif r_kind == kind and r_sub == "*":
            rank = 1
        elif r_kind == "*":
            rank = 0
        else:
            continue
        if rank > specificity:
            best, specificity = q, rank
    return best


def choose_format(requested: str | None, accept: str | None,
                  offered: Mapping[str, str] | None = None) -> str:
    """``format=`` wins; else the ``Accept`` header; else the first offer. 406 if nothing offered
    fits. ``offered`` maps each format name to its media type, in order of preference (default:
    JSON, CSV, TSV); an endpoint with other outputs (BED, VCF, PNG, ...) passes its own."""
    offered = OFFERED if offered is None else offered
    names = tuple(offered)
    if requested is not None:
        value = requested.lower()
        if value not in offered:
            raise UnsupportedFormat(f"format {requested[:64]!r} is not offered; format must be one of "
                                    f"{', '.join(names)}")
        return value
    ranges = parse_accept(accept or "")
    if not ranges:
        return names[0]
    scored = [(_quality(offered[f], ranges), -i, f) for i, f in enumerate(names)]
    q, _, best = max(scored)
    if q <= 0.0:
        raise UnsupportedFormat(f"the Accept header accepts none of the media types offered: "
                                f"{', '.join(offered.values())} (or use format={'|'.join(names)})")
    return best
