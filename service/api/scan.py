"""``POST /scan/promoter``: promoter probability along long sequences, on both strands.

The records (FASTA, plain, gzip or multipart, or JSON: as for ``/predict``, up to
``max_scan_bases`` nucleotides in all) are cut into windows of the model's input length every
``stride`` bases and scored through the one prediction path (:mod:`service.runtime.scan`), so a
window's probability is what ``/predict/promoter`` answers for its sequence (its reverse
complement on ``-``). The answer is JSON, bedGraph, BED or NDJSON, the last streamed as the
windows are scored; coordinates are 0-based, half-open (see :mod:`service.contract.windows`).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from service.api.inputs import read_records
from service.api.lifecycle import Call, InFlight, Offer
from service.api.negotiation import choose_format
from service.api.routes import _BODY, _ERRORS
from service.contract.errors import DnabertError, SequenceTooLong
from service.contract.fasta import FastaRecord
from service.contract.tasks import PROMOTER
from service.contract.windows import (
    DEFAULT_MAX_N_FRACTION,
    DEFAULT_STRIDE,
    WRITERS,
    Collected,
    NdjsonWriter,
    ScanTooLarge,
    check_scan_size,
    strands_of,
)
from service.runtime.scan import Scanner, ScanOptions, Target, refuse_lncrna, write
from service.settings import Settings

log = logging.getLogger("dnabert.service")

scan = APIRouter(tags=["scan"])
"""Genome-scale analyses: behind the API key when one is configured."""

MEDIA = {name: writer.media_type for name, writer in WRITERS.items()}
_CONTENT_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson",
                  "bedgraph": "text/x-bedgraph; charset=utf-8", "bed": "text/x-bed; charset=utf-8"}


class ScanWindow(BaseModel):
    start: int = Field(description="0-based genome position of the window's first base")
    end: int = Field(description="0-based, exclusive")
    strand: Literal["+", "-"] = Field(description="'-': the window's reverse complement was scored")
    probability: float = Field(description="P(promoter); with model=all the mean of the five variants")


class ScanRegion(BaseModel):
    start: int
    end: int
    strand: Literal["+", "-"]
    score: float = Field(description="the best window's probability")
    mean: float = Field(description="the mean probability of the merged windows")
    windows: int = Field(description="windows merged")


class ScanResult(BaseModel):
    id: str
    chrom: str = Field(description="the region's chromosome for a samtools region id (chr1:10001-20000), "
                                   "else the id")
    offset: int = Field(description="0-based genome position of the record's first base")
    length: int
    windows: list[ScanWindow] = Field(description="by start, then strand")
    regions: list[ScanRegion] = Field(description="windows at or over threshold merged per strand")
    windows_scored: int
    skipped_windows: int = Field(description="windows not scored: more than max_n_fraction N (per strand)")
    flags: list[str] = Field(description="'shorter_than_window' (scored whole, as one window), "
                                         "'region_length_mismatch' (the id's region is not the record's length)")


class ScanResponse(BaseModel):
    model: str
    window: int = Field(description="window length in bases (the model's input length)")
    stride: int
    strand: Literal["both", "+", "-"]
    threshold: float
    min_windows: int
    max_n_fraction: float
    coordinates: str = Field(description="always '0-based, half-open'")
    results: list[ScanResult] = Field(description="one per record, in input order")
    count: int


_BODY_DOC = copy.deepcopy(_BODY)
_BODY_DOC["requestBody"]["description"] = _BODY["requestBody"]["description"].replace(
    "The limits on records, nucleotides and bytes are stated in the `FastaText` and `PredictRequest` schemas.",
    "Records may be of any length, up to DNABERT_MAX_SCAN_BASES nucleotides in all (413 over it); the "
    "limits on records and bytes are those of /predict. A record whose id is a samtools region "
    "(`chr1:10001-20000`, 1-based inclusive) is placed there on the genome.")
_TEXT = {"schema": {"type": "string"}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSON (one result per record), bedGraph (one track per strand), BED6 (the regions) or "
                         "NDJSON (windows streamed as they are scored; a last line of type 'error' if the scan "
                         "fails half-way); 0-based half-open coordinates",
          "content": {"text/x-bedgraph": _TEXT, "text/x-bed": _TEXT, "application/x-ndjson": _TEXT}},
    **_ERRORS,
    406: {**_ERRORS[406], "description": "Output format not offered: format= other than json, bedgraph, bed or "
                                         "ndjson, or an Accept header that accepts none of their media types"},
    413: {**_ERRORS[413], "description": "Upload or record count over the limit, or more nucleotides than "
                                         "DNABERT_MAX_SCAN_BASES in all"},
    422: {**_ERRORS[422], "description": "Invalid characters (naming the record), invalid JSON, an invalid or "
                                         "unknown query parameter, or a lncRNA model (not_scannable)"},
}


async def read_scan_records(request: Request, settings: Settings) -> list[FastaRecord]:
    """The request's records (any form /predict reads), up to ``max_scan_bases`` nucleotides."""
    limit = settings.max_scan_bases
    try:
        records = await read_records(request, settings.model_copy(update={"max_sequence_length": limit}))
    except SequenceTooLong as exc:
        raise ScanTooLarge(f"{exc.message}: over the limit of {limit} nucleotides per scan request "
                           "(DNABERT_MAX_SCAN_BASES); scan it offline with 'dnabert-serve scan'",
                           record_id=exc.record_id, line=exc.line) from None
    check_scan_size(records, limit)
    return records


def _negotiated(fmt: str | None, request: Request) -> str | None:
    """The format the lifecycle will choose (None: it will refuse the request with 406)."""
    try:
        return choose_format(fmt, request.headers.get("accept"), MEDIA)
    except DnabertError:
        return None


async def _scan(call: Call, model: str | None, options: ScanOptions, fmt: str | None,
                records: list[FastaRecord]) -> str | tuple[Scanner, list[Target], InFlight]:
    scanner = Scanner(call.service, model, options)
    targets = await scanner.targets(records)
    if fmt == "ndjson":  # scored while it streams
        return scanner, targets, call.gate
    collected = Collected()
    async with aclosing(write(scanner, targets, WRITERS[fmt or "json"](scanner.meta))) as pieces:
        async for text in pieces:  # a disconnect cancels this, and closing the scan withdraws its windows
            collected.add(text)
    return collected.text()


async def _stream(scanner: Scanner, targets: list[Target], gate: InFlight, request_id: str | None
                  ) -> AsyncIterator[str]:
    """NDJSON lines as the windows are scored, holding an in-flight slot until the last; a
    failure half-way ends the stream with an ``{"type": "error"}`` line (the status is sent)."""
    try:
        with gate.admit():
            async with aclosing(write(scanner, targets, NdjsonWriter(scanner.meta))) as pieces:
                async for now, _ in pieces:
                    if now:
                        yield now
    except DnabertError as exc:
        yield json.dumps({"type": "error", "error": {"code": exc.code, "message": exc.message,
                                                      "request_id": request_id}}) + "\n"
    except Exception:  # noqa: BLE001 - a bug: logged, and the client told the stream is cut
        log.exception("scan stream of request %s failed", request_id or "-")
        yield json.dumps({"type": "error", "error": {"code": "internal_error", "message": "internal error; see "
                                                     "the server log", "request_id": request_id}}) + "\n"


def _offers(request: Request) -> dict[str, Offer]:
    rid = getattr(request.state, "request_id", None)
    offers = {name: Offer(MEDIA[name], lambda text: text, _CONTENT_TYPES[name]) for name in WRITERS}
    offers["ndjson"] = Offer(MEDIA["ndjson"], lambda job: StreamingResponse(
        _stream(*job, rid), media_type=_CONTENT_TYPES["ndjson"]))
    return offers


@scan.post("/scan/promoter", response_model=ScanResponse, responses=_RESPONSES, openapi_extra=_BODY_DOC,
           summary="Promoter probability along long sequences, in windows on both strands")
async def scan_promoter(
    call: Call,
    model: Annotated[str | None, Query(max_length=64, description=(
        "a promoter model (GET /models) or all (the mean of the five DNABERT-2 variants); default: "
        "default_promoter_model of GET /models. The lncRNA model cannot scan: 422 not_scannable"))] = None,
    format: Annotated[str | None, Query(
        description="json (default), bedgraph, bed or ndjson (streamed); or the Accept header "
                    "(application/json, text/x-bedgraph, text/x-bed, application/x-ndjson). Any other value: 406",
        json_schema_extra={"enum": list(WRITERS)})] = None,
    stride: Annotated[int, Query(ge=1, le=10**9, description="bases between window starts")] = DEFAULT_STRIDE,
    strand: Annotated[str, Query(description="both, + (or plus) or -: the reverse complement (or minus)",
                                 json_schema_extra={"enum": ["both", "+", "-", "plus", "minus"]})] = "both",
    max_n_fraction: Annotated[float, Query(ge=0.0, le=1.0, description=(
        "windows with more N (or other ambiguity codes) than this fraction are skipped and counted"))
    ] = DEFAULT_MAX_N_FRACTION,
    threshold: Annotated[float | None, Query(ge=0.0, le=1.0, description=(
        "windows at or over it make regions (default: DNABERT_PROMOTER_THRESHOLD if set, else the "
        "model's dev-chosen threshold from its card, else 0.5)"))] = None,
    min_windows: Annotated[int, Query(ge=1, le=10**9, description="regions of fewer windows are dropped")] = 1,
) -> Response:
    refuse_lncrna(call.service, model)
    options = ScanOptions(stride, strands_of(strand), max_n_fraction, threshold, min_windows)
    fmt = _negotiated(format, call.request)
    return await call.run(PROMOTER, model, format, lambda records: _scan(call, model, options, fmt, records),
                          offers=_offers(call.request), endpoint="scan/promoter", read=read_scan_records)
