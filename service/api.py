"""HTTP routes only: each handler reads its input, calls the service, renders the result."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.errors import DnabertError
from service.formats import MEDIA, choose_format, lncrna_table, promoter_table
from service.inputs import read_records
from service.model_folder import available_providers
from service.protocol import (
    ErrorResponse,
    Health,
    LncRnaResponse,
    ModelInfo,
    ModelsResponse,
    PromoterResponse,
)
from service.serving import ALL, TASK_LNCRNA, TASK_PROMOTER, InferenceService
from service.settings import Settings

router = APIRouter()


def get_service(request: Request) -> InferenceService:
    return request.app.state.service


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[InferenceService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

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
        503: "Not ready: models are loading or warming up",
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
            "text/plain": {"schema": {"type": "string"}, "example": ">seq1\nACGTTGCA...\n"},
            "text/x-fasta": {"schema": {"type": "string"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
        },
    }
}

FormatQuery = Annotated[str | None, Query(description="json (default), csv or tsv; or use the Accept header",
                                          pattern="^(json|csv|tsv|JSON|CSV|TSV)$")]


def _render(result, fmt: str, table) -> Response:
    if fmt == "json":
        return JSONResponse(result.model_dump(mode="json"))
    return PlainTextResponse(table(result, fmt), media_type=MEDIA[fmt])


@router.post("/predict/promoter", response_model=PromoterResponse, responses=_ERRORS, openapi_extra=_BODY,
             tags=["predict"], summary="Promoter probability of each sequence")
async def predict_promoter(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    model: Annotated[str | None, Query(max_length=64, description=(
        "base, cnn, bilstm, cnn_bilstm_max, cnn_bilstm_avg, or all (every variant plus their mean); "
        "default from DNABERT_DEFAULT_PROMOTER_MODEL"))] = None,
    threshold: Annotated[float | None, Query(ge=0.0, le=1.0, description="probability for label 'promoter'")] = None,
    format: FormatQuery = None,
) -> Response:
    label = model or settings.default_promoter_model
    with _refusals_counted(service, TASK_PROMOTER, TASK_PROMOTER, label):
        fmt = choose_format(request, format)
        service.resolve(TASK_PROMOTER, model)  # unknown model or not ready: answer before reading the body
        records = await read_records(request, settings)
    result = await _counted(service, TASK_PROMOTER, label, len(records),
                            service.predict_promoter(records, model, threshold))
    return _render(result, fmt, promoter_table)


@router.post("/predict/lncrna-localization", response_model=LncRnaResponse, responses=_ERRORS,
             openapi_extra=_BODY, tags=["predict"],
             summary="Nucleus, cytoplasm and extracellular-vesicle scores of each lncRNA")
async def predict_lncrna(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    model: Annotated[str | None, Query(max_length=64)] = None,
    threshold_nucleus: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    threshold_cytoplasm: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    threshold_extracellular_vesicle: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    format: FormatQuery = None,
) -> Response:
    with _refusals_counted(service, TASK_LNCRNA, TASK_LNCRNA, model or "lncrna"):
        fmt = choose_format(request, format)
        service.resolve(TASK_LNCRNA, model)
        records = await read_records(request, settings)
    given = {"nucleus": threshold_nucleus, "cytoplasm": threshold_cytoplasm,
             "extracellular_vesicle": threshold_extracellular_vesicle}
    thresholds = {k: v for k, v in given.items() if v is not None}
    result = await _counted(service, TASK_LNCRNA, model or "lncrna", len(records),
                            service.predict_lncrna(records, model, thresholds))
    return _render(result, fmt, lncrna_table)


@contextmanager
def _refusals_counted(service: InferenceService, endpoint: str, task: str, model: str) -> Iterator[None]:
    """Count a request refused before inference (bad input, unknown model, not ready) by status."""
    try:
        yield
    except DnabertError as exc:
        known = model == ALL or model in service.task_models(task)
        label = model if known else "unknown"  # never a client-chosen label value
        service.metrics.requests.labels(endpoint, label, str(exc.http_status)).inc()
        raise


async def _counted(service: InferenceService, endpoint: str, model: str, n: int, work):
    m = service.metrics
    try:
        result = await work
    except DnabertError as exc:
        m.requests.labels(endpoint, model, str(exc.http_status)).inc()
        m.sequences.labels(endpoint, model, str(exc.http_status)).inc(n)
        if exc.http_status == 429:
            m.rejected.labels(endpoint, "overloaded").inc()
        raise
    m.requests.labels(endpoint, model, "200").inc()
    m.sequences.labels(endpoint, model, "200").inc(n)
    return result


@router.get("/models", response_model=ModelsResponse, tags=["service"], summary="Loaded models and their cards")
async def models(service: ServiceDep, settings: SettingsDep) -> ModelsResponse:
    return ModelsResponse(
        models=[ModelInfo(task=lm.task, name=lm.name, providers=lm.model.providers, precision=lm.precision,
                          ready=lm.ready, card=lm.model.card.model_dump(mode="json"))
                for lm in service.models.values()],
        available_providers=available_providers(),
        default_promoter_model=settings.default_promoter_model,
    )


@router.get("/healthz", response_model=Health, tags=["service"], summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["service"], responses={503: {"model": Health}},
            summary="Ready once every model has run a warm-up batch")
async def readyz(service: ServiceDep) -> Response:
    detail = {f"{lm.task}/{lm.name}": lm.ready for lm in service.models.values()}
    ready = service.ready
    body = Health(status="ready" if ready else "not_ready", detail=detail)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> Response:
    for lm in service.models.values():
        service.metrics.queue_depth.labels(f"{lm.task}/{lm.name}").set(lm.batcher.queue_depth)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
