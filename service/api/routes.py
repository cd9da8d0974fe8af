"""The inference routes: each handler declares its parameters, hands the work to the serving
layer through the one request lifecycle (:mod:`service.api.lifecycle`) and names its renderer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from service.api.formats import lncrna_table, promoter_table
from service.api.lifecycle import Call
from service.api.protocol import ErrorResponse, LncRnaResponse, PromoterResponse
from service.contract.tasks import LNCRNA, PROMOTER

inference = APIRouter(tags=["predict"])
"""Predictions: behind the API key when one is configured."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Malformed FASTA (with line number) or empty input",
        404: "Unknown model",
        406: "Unsupported output format",
        413: "Upload, record count or decompressed size over the limit",
        415: "Unsupported content type",
        422: "Invalid characters, a sequence over the length limit (naming the record), invalid JSON or parameters",
        429: "Overloaded: the queue is full; retry after the Retry-After header's seconds",
        500: "Inference failed for the batch that held this request",
        503: "Not ready (models loading or warming up), or the model failed to load at start-up",
        504: "The request's deadline passed before its sequences ran",
    }.items()
}

_BODY = {
    "requestBody": {
        "required": True,
        "description": "FASTA as a multipart upload (field `file`, plain or gzip), as a raw body "
                       "(text/plain or text/x-fasta, gzip with Content-Encoding), or JSON.",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
            "text/plain": {"schema": {"type": "string"},
                           "example": ">seq1 a promoter candidate\nTTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC\n"
                                      ">seq2\nACGTTGCAACGTNNACGUUGCA\n"},
            "text/x-fasta": {"schema": {"type": "string"},
                             "example": ">seq1\nTTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC\n"},
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
        },
    }
}

_TABLES = {"text/csv": {"schema": {"type": "string"}},
           "text/tab-separated-values": {"schema": {"type": "string"}}}
_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "One result per record, in input order (JSON, or CSV/TSV with format= or Accept)",
          "content": _TABLES},
    **_ERRORS,
}

FormatQuery = Annotated[str | None, Query(description="json (default), csv or tsv; or use the Accept header",
                                          pattern="^(json|csv|tsv|JSON|CSV|TSV)$")]


ModelQuery = Annotated[str | None, Query(max_length=64, description=(
    "promoter: base, cnn, bilstm, cnn_bilstm_max, cnn_bilstm_avg, a baseline, or all (the five "
    "DNABERT-2 variants and their mean); default from DNABERT_DEFAULT_PROMOTER_MODEL. "
    "lncrna-localization: the model's name (default: the only one)"))]
Threshold = Annotated[float | None, Query(ge=0.0, le=1.0)]


@inference.post("/predict/promoter", response_model=PromoterResponse, responses=_PREDICT_RESPONSES,
                openapi_extra=_BODY, summary="Promoter probability of each sequence")
async def predict_promoter(call: Call, model: ModelQuery = None, format: FormatQuery = None,
                           threshold: Annotated[float | None, Query(
                               ge=0.0, le=1.0, description="probability for label 'promoter'")] = None) -> Response:
    thresholds = {} if threshold is None else {"promoter": threshold}
    return await call.run(PROMOTER, model, format,
                          lambda records: call.service.predict(PROMOTER, records, model, thresholds),
                          promoter_table)


@inference.post("/predict/lncrna-localization", response_model=LncRnaResponse, responses=_PREDICT_RESPONSES,
                openapi_extra=_BODY, summary="Nucleus, cytoplasm and extracellular-vesicle scores of each lncRNA")
async def predict_lncrna(call: Call, model: ModelQuery = None, format: FormatQuery = None,
                         threshold_nucleus: Threshold = None, threshold_cytoplasm: Threshold = None,
                         threshold_extracellular_vesicle: Threshold = None) -> Response:
    given = {"nucleus": threshold_nucleus, "cytoplasm": threshold_cytoplasm,
             "extracellular_vesicle": threshold_extracellular_vesicle}
    thresholds = {k: v for k, v in given.items() if v is not None}
    return await call.run(LNCRNA, model, format,
                          lambda records: call.service.predict(LNCRNA, records, model, thresholds),
                          lncrna_table)
