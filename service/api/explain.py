"""The explanation routes: ``POST /explain/promoter`` and ``POST /explain/lncrna-localization``.

In-silico mutagenesis of each record (:mod:`service.runtime.explain`): the reference and every
single-base mutant scored through the one prediction path, answered as JSON (the L x 4 change
matrices), a bedGraph of the per-position importance, or a PNG/SVG picture of one record
(:mod:`service.contract.plots`, drawn in a worker thread, off the event loop). Records go up to
the model's input length (promoter: 300 bp, lncRNA: 2,292 nt), and one request scores at most
``max_mutants`` mutants (``DNABERT_MAX_MUTANTS``).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from service.api.lifecycle import Call, Offer
from service.api.negotiation import choose_format
from service.api.protocol import ErrorResponse
from service.api.routes import _BODY, ModelQuery
from service.api.routes import _ERRORS as PREDICT_ERRORS
from service.contract.fasta import FastaRecord
from service.contract.plots import IMAGE_FORMATS, render_explanations, require_one_record
from service.contract.tasks import LNCRNA, PROMOTER, TASKS
from service.runtime.explain import explain

explanations = APIRouter(tags=["explain"])
"""In-silico mutagenesis: behind the API key when one is configured."""

MEDIA_TYPES = {"json": "application/json", "bedgraph": "text/x-bedgraph", "png": "image/png",
               "svg": "image/svg+xml"}
"""Each format's media type, as matched against ``Accept`` (JSON first: the default)."""
_CONTENT_TYPES = {"bedgraph": "text/x-bedgraph; charset=utf-8", "svg": "image/svg+xml; charset=utf-8"}

_ERRORS: dict[int | str, dict[str, Any]] = {**PREDICT_ERRORS, **{
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        406: "Output format not offered: format= other than json, bedgraph, png or svg, or an Accept header "
             "that accepts none of their media types",
        413: "Upload, record count or decompressed size over the limit, or more single-base mutants in all "
             "than DNABERT_MAX_MUTANTS (too_many_mutants, naming the limit and the count)",
        422: "Invalid characters; a record longer than the model's input length (sequence_too_long, naming "
             "the record and the limit: promoter 300 bp, lncRNA 2,292 nt); png or svg asked for with more "
             "than one record (one_record_per_image); an invalid or unknown query parameter",
        504: "The deadline of a chunk of mutants passed before it ran",
    }.items()
}}
"""The predict routes' errors, with what explanations add."""

_BODY_DOC = copy.deepcopy(_BODY)
_BODY_DOC["requestBody"]["description"] += (
    " For an explanation each record is at most the model's input length (promoter: 300 bp; lncRNA: 2,292 nt), "
    "the records have at most DNABERT_MAX_MUTANTS single-base mutants in all (3 per base, 4 per N), and png or "
    "svg take one record.")


class PromoterExplanation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    length: int = Field(description="nucleotides after normalisation")
    sequence: str = Field(description="the normalised sequence (upper case, U as T, ambiguity codes as N)")
    mutants: int = Field(description="single-base mutants scored: 3 per base, 4 per N")
    reference: float | None = Field(description="P(promoter) of the record as /predict/promoter answers it "
                                                "(null: no A, C, G or T, not scored)")
    changes: list[list[float]] | None = Field(description="L x 4, columns A, C, G, T: P(mutant) - P(reference); "
                                                          "0 at the reference base")
    importance: list[float] | None = Field(description="per position: the largest |change|")
    mean_change: list[float] | None = Field(description="per position: the mean change of its substitutions")
    ambiguous_positions: list[int] = Field(description="0-based positions that are N (all four bases substituted)")
    flags: list[str]


class LncRnaExplanation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    length: int
    sequence: str
    mutants: int
    reference: dict[str, float] | None = Field(description="label -> score, as /predict/lncrna-localization")
    changes: dict[str, list[list[float]]] | None = Field(description="label -> L x 4 (A, C, G, T) changes")
    importance: dict[str, list[float]] | None
    mean_change: dict[str, list[float]] | None
    ambiguous_positions: list[int]
    flags: list[str]


class PromoterExplainResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    model: str = Field(description="the model's name, or all (the mean of the five DNABERT-2 variants)")
    bases: list[str] = Field(description="the column order of every matrix: A, C, G, T")
    count: int
    results: list[PromoterExplanation]


class LncRnaExplainResponse(PromoterExplainResponse):
    results: list[LncRnaExplanation]  # type: ignore[assignment]


def _responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": "JSON (default), bedGraph of the importance (0-based half-open, "
                  "chrom = record id, one track per record and label), or a PNG/SVG picture of one record",
                  "content": {"text/x-bedgraph": {"schema": {"type": "string"}},
                              "image/png": {"schema": {"type": "string", "format": "binary"}},
                              "image/svg+xml": {"schema": {"type": "string"}}}},
            **_ERRORS}


ExplainFormat = Annotated[str | None, Query(
    description="json (default), bedgraph, png or svg (png and svg: one record per request); or use the Accept "
                "header (application/json, text/x-bedgraph, image/png, image/svg+xml). Any other value: 406",
    json_schema_extra={"enum": list(MEDIA_TYPES)})]


def _offers() -> dict[str, Offer]:
    """Each format, rendered by the work (in a worker thread): the answer is its body."""
    return {fmt: Offer(media, lambda body: body, _CONTENT_TYPES.get(fmt)) for fmt, media in MEDIA_TYPES.items()}


async def _explain(call: Call, task: str, model: str | None, fmt: str | None, label: str | None,
                   records: list[FastaRecord]) -> str | bytes:
    # The lifecycle has negotiated the format already (406 before the body): the same inputs give
    # the same answer here, where the body is rendered off the event loop (a picture of 2,292 nt
    # takes seconds, the JSON of 30,000 mutants a tenth of one).
    chosen = choose_format(fmt, call.request.headers.get("accept"), MEDIA_TYPES)
    if chosen in IMAGE_FORMATS:
        require_one_record(len(records))
    explained = await explain(call.service, task, records, model, max_mutants=call.settings.max_mutants)
    return await asyncio.to_thread(render_explanations, explained.explanations, explained.task, explained.model,
                                   chosen, label)


@explanations.post("/explain/promoter", response_model=PromoterExplainResponse,
                   responses=_responses(PromoterExplainResponse), openapi_extra=_BODY_DOC,
                   summary="In-silico mutagenesis: how each base changes the promoter probability")
async def explain_promoter(call: Call, model: ModelQuery = None, format: ExplainFormat = None) -> Response:
    """Each record (up to 300 bp, the promoter models' input length) and its 3 L single-base
    mutants (4 at an N) scored as /predict/promoter scores them; for each position and base,
    P(mutant) - P(reference). At most DNABERT_MAX_MUTANTS mutants per request; png and svg:
    one record."""
    return await call.run(PROMOTER, model, format, lambda records: _explain(call, PROMOTER, model, format, None, records),
                          offers=_offers(), endpoint="explain/promoter")


LabelQuery = Annotated[Literal[TASKS[LNCRNA].labels] | None, Query(  # type: ignore[valid-type]
    description="png, svg: the label drawn (default: nucleus); bedgraph: the only label written (default: a track "
                "per label)")]


@explanations.post("/explain/lncrna-localization", response_model=LncRnaExplainResponse,
                   responses=_responses(LncRnaExplainResponse), openapi_extra=_BODY_DOC,
                   summary="In-silico mutagenesis: how each base changes each localization score")
async def explain_lncrna(call: Call, model: ModelQuery = None, format: ExplainFormat = None,
                         label: LabelQuery = None) -> Response:
    """Each record (up to 2,292 nt, the model's input length) and its 3 L single-base mutants
    (4 at an N) scored as /predict/lncrna-localization scores them; for each label, position and
    base, score(mutant) - score(reference). At most DNABERT_MAX_MUTANTS mutants per request; png
    and svg: one record, one label."""
    return await call.run(LNCRNA, model, format, lambda records: _explain(call, LNCRNA, model, format, label, records),
                          offers=_offers(), endpoint="explain/lncrna-localization")
