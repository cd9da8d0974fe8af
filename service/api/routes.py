"""The inference routes: each handler declares its parameters, hands the work to the serving
layer through the one request lifecycle (:mod:`service.api.lifecycle`) and names its renderer.

The request body is read by the lifecycle, not by FastAPI, so its OpenAPI description is written
here (:data:`_BODY`, and :func:`body_schemas` for the parts that state the configured limits):
the forms it may take and every constraint on them that JSON Schema can state.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from service.api.formats import lncrna_table, promoter_table
from service.api.inputs import MAX_MULTIPART_PARTS
from service.api.lifecycle import Call
from service.api.negotiation import FORMATS
from service.api.protocol import ErrorResponse, LncRnaResponse, PredictRequest, PromoterResponse
from service.contract.fasta import MAX_ID_LENGTH
from service.contract.tasks import LNCRNA, PROMOTER
from service.settings import Settings

inference = APIRouter(tags=["predict"])
"""Predictions: behind the API key when one is configured."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Malformed FASTA (with line number) or empty input",
        404: "Unknown model (the names are listed by GET /models)",
        406: "Output format not offered: format= other than json, csv or tsv, or an Accept header "
             "that accepts none of application/json, text/csv, text/tab-separated-values",
        413: "Upload, record count or decompressed size over the limit",
        408: "The request body did not arrive within DNABERT_BODY_TIMEOUT_S (body_timeout)",
        415: "Unsupported content type",
        422: "Invalid characters, a sequence over the length limit (naming the record), invalid JSON, "
             "or an invalid or unknown query parameter",
        429: "Overloaded: the queue is full; retry after the Retry-After header's seconds",
        500: "Inference failed for the batch that held this request",
        503: "Not ready (models loading or warming up), the model failed to load at start-up, or the "
             "service is shutting down (shutting_down)",
        504: "The request's deadline passed before its sequences ran",
    }.items()
}

_FASTA_FILE_TYPES = "text/x-fasta, text/plain, application/gzip, application/octet-stream"
_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            "The records, in one of these forms:\n\n"
            "* a multipart upload (`multipart/form-data`) with the FASTA file in the field `file`, "
            "plain or gzip (recognised by its first bytes, whatever the file is called); other fields "
            "are ignored;\n"
            "* a raw FASTA body: `text/plain` or `text/x-fasta` (also accepted: `application/x-fasta`, "
            "`application/fasta`), gzip with `Content-Encoding: gzip` or recognised by its first bytes;\n"
            "* `application/octet-stream` (also `application/gzip`, `application/x-gzip`) or no "
            "Content-Type at all: the body is read as FASTA, plain or gzip, exactly as `text/x-fasta`;\n"
            "* JSON (`application/json`): `{\"sequences\": [{\"id\": ..., \"sequence\": ...}]}`.\n\n"
            "Record ids are unique in a request. The limits on records, nucleotides and bytes are "
            "stated in the `FastaText` and `PredictRequest` schemas."),
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "maxProperties": MAX_MULTIPART_PARTS,
                           "properties": {"file": {"type": "string", "format": "binary",
                                                   "description": "FASTA, plain or gzip"}},
                           "additionalProperties": {"type": "string", "description": "ignored"}},
                "encoding": {"file": {"contentType": _FASTA_FILE_TYPES}},
            },
            "text/plain": {"schema": {"$ref": "#/components/schemas/FastaText"},
                           "example": ">seq1 a promoter candidate\nTTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC\n"
                                      ">seq2\nACGTTGCAACGTNNACGUUGCA\n"},
            "text/x-fasta": {"schema": {"$ref": "#/components/schemas/FastaText"},
                             "example": ">seq1\nTTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC\n"},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                    "description": "FASTA, plain or gzip (as text/x-fasta)"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
        },
    }
}

_NUCLEOTIDES = "ACGTUNRYSWKMBDHVacgtunryswkmbdhv"
# What :func:`service.contract.fasta.id_problem` refuses in an id: control characters (Cc), line
# and paragraph separators, bidirectional-text controls (lone surrogates too, which no JSON
# Schema regex engine can name).
_ID_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069]+$"


def body_schemas(settings: Settings) -> dict[str, dict]:
    """The schemas the request body refers to, stating the checks the server makes and the
    configured limits: ``PredictRequest`` (and its ``SequenceIn``) and ``FastaText``."""
    body = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas: dict[str, dict] = body.pop("$defs", {})
    schemas["PredictRequest"] = body
    sequences = body["properties"]["sequences"]
    sequences["maxItems"] = settings.max_records
    sequences["description"] = (f"at most {settings.max_records} records, with unique ids; the whole body at most "
                                f"{settings.max_upload_bytes} bytes")
    props = schemas["SequenceIn"]["properties"]
    props["id"].update(maxLength=MAX_ID_LENGTH, pattern=_ID_PATTERN, description=(
        "record identifier, unique in the request; no control, line-separator or bidirectional-text "
        "characters"))
    props["sequence"].update(pattern=f"^\\s*[{_NUCLEOTIDES}][\\s{_NUCLEOTIDES}]*$", description=(
        "DNA or RNA: A, C, G, T/U and IUPAC ambiguity codes, any case, whitespace ignored; at most "
        f"{settings.max_sequence_length} nucleotides. A record that looks like protein (mostly ambiguity "
        "codes other than N) is refused"))
    schemas["FastaText"] = {
        "type": "string", "pattern": "^\\ufeff?\\s*[>;]",
        "description": (
            "FASTA text (UTF-8). Each record is a `>` header line, whose first word is the record id "
            f"(unique in the request, at most {MAX_ID_LENGTH} characters, no control or bidirectional-text "
            "characters), and one or more sequence lines of A, C, G, T/U and IUPAC ambiguity codes (any "
            "case; whitespace ignored). Blank lines and `;` comment lines are ignored anywhere; lines end "
            f"with LF, CRLF or CR. At most {settings.max_records} records of at most "
            f"{settings.max_sequence_length} nucleotides each, and {settings.max_upload_bytes} bytes "
            "(after gzip decompression)."),
    }
    return schemas


_TABLES = {"text/csv": {"schema": {"type": "string"}},
           "text/tab-separated-values": {"schema": {"type": "string"}}}
_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "One result per record, in input order (JSON, or CSV/TSV with format= or Accept)",
          "content": _TABLES},
    **_ERRORS,
}

# Checked by the lifecycle (406 unsupported_format), not by FastAPI (which would answer 422).
FormatQuery = Annotated[str | None, Query(
    description="json (default), csv or tsv (any case); or use the Accept header (application/json, text/csv, "
                "text/tab-separated-values, with q-values). Any other value: 406",
    json_schema_extra={"enum": list(FORMATS)})]


ModelQuery = Annotated[str | None, Query(max_length=64, description=(
    "promoter: base, cnn, bilstm, cnn_bilstm_max, cnn_bilstm_avg, a baseline, or all (the five "
    "DNABERT-2 variants and their mean); default: default_promoter_model of GET /models. "
    "lncrna-localization: the model's name (default: the only one). GET /models lists the models served; "
    "another name: 404"))]
Threshold = Annotated[float | None, Query(ge=0.0, le=1.0)]


@inference.post("/predict/promoter", response_model=PromoterResponse, responses=_PREDICT_RESPONSES,
                openapi_extra=_BODY, summary="Promoter probability of each sequence")
async def predict_promoter(call: Call, model: ModelQuery = None, format: FormatQuery = None,
                           threshold: Annotated[float | None, Query(
                               ge=0.0, le=1.0, description="probability for label 'promoter' (default: "
                               "DNABERT_PROMOTER_THRESHOLD if set, else the model's dev-chosen threshold from "
                               "its card, else 0.5)")] = None) -> Response:
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
