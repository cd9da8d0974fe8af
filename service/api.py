"""HTTP routes only: each handler reads its input, calls the service, renders the result."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.errors import ClientClosed, DnabertError, Overloaded, Unauthorized
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

log = logging.getLogger("dnabert.service")
T = TypeVar("T")

router = APIRouter()
"""Probes, metrics: always open."""
protected = APIRouter()
"""Predictions and the model list: behind the API key when one is configured."""


def get_service(request: Request) -> InferenceService:
    return request.app.state.service


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[InferenceService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

_bearer = HTTPBearer(auto_error=False, description="the API key (DNABERT_API_KEY) as a bearer token")


async def require_api_key(request: Request,
                          credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """``Authorization: Bearer <key>`` must carry the configured key (compared in constant time)."""
    key = request.app.state.settings.api_key
    if key is None:
        return
    given = credentials.credentials if credentials is not None else None
    if not given:
        raise Unauthorized("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
    if not hmac.compare_digest(given.encode("utf-8"), key.get_secret_value().encode("utf-8")):
        log.warning("request %s: invalid API key", getattr(request.state, "request_id", "-"))
        raise Unauthorized("the API key is not valid", token_given=True)


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid API key (Authorization: Bearer <key>)"},
}

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


def _render(result, fmt: str, table) -> Response:
    if fmt == "json":
        return JSONResponse(result.model_dump(mode="json"))
    return PlainTextResponse(table(result, fmt), media_type=MEDIA[fmt])


@protected.post("/predict/promoter", response_model=PromoterResponse, responses=_PREDICT_RESPONSES,
                openapi_extra=_BODY, tags=["predict"], summary="Promoter probability of each sequence")
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
    with ExitStack() as admitted:
        with _refusals_counted(service, TASK_PROMOTER, TASK_PROMOTER, label):
            fmt = choose_format(request, format)
            service.resolve(TASK_PROMOTER, model)  # unknown model or not ready: answer before reading the body
            admitted.enter_context(_in_flight(request))
            records = await read_records(request, settings)
        result = await _counted(service, TASK_PROMOTER, label, len(records),
                                _unless_disconnected(request, service.predict_promoter(records, model, threshold)))
    return _render(result, fmt, promoter_table)


@protected.post("/predict/lncrna-localization", response_model=LncRnaResponse, responses=_PREDICT_RESPONSES,
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
    given = {"nucleus": threshold_nucleus, "cytoplasm": threshold_cytoplasm,
             "extracellular_vesicle": threshold_extracellular_vesicle}
    thresholds = {k: v for k, v in given.items() if v is not None}
    with ExitStack() as admitted:
        with _refusals_counted(service, TASK_LNCRNA, TASK_LNCRNA, model or "lncrna"):
            fmt = choose_format(request, format)
            service.resolve(TASK_LNCRNA, model)
            admitted.enter_context(_in_flight(request))
            records = await read_records(request, settings)
        result = await _counted(service, TASK_LNCRNA, model or "lncrna", len(records),
                                _unless_disconnected(request, service.predict_lncrna(records, model, thresholds)))
    return _render(result, fmt, lncrna_table)


class InFlight:
    """Prediction requests between admission and their answer (one event loop: no lock needed)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0


@contextmanager
def _in_flight(request: Request) -> Iterator[None]:
    """Admit the request, or refuse it with 429 before its body is read."""
    gate: InFlight = request.app.state.in_flight
    if gate.count >= gate.limit:
        raise Overloaded(f"{gate.limit} prediction requests are already in progress; retry in 1 s",
                         retry_after=1.0)
    gate.count += 1
    try:
        yield
    finally:
        gate.count -= 1


async def _watch_disconnect(request: Request) -> None:
    """Return once the client has gone away (the body is read, so only a disconnect can come)."""
    for _ in range(1000):  # a well-behaved server sends nothing but http.disconnect from here on
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
    await asyncio.Event().wait()  # never: stop polling a server that keeps sending empty messages


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (its queued sequences are dropped
    from the batcher, unrun) and raise :class:`ClientClosed`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_watch_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    log.info("request %s: the client disconnected while waiting; its work was withdrawn",
             getattr(request.state, "request_id", "-"))
    raise ClientClosed("the client closed the connection before the answer was ready")


@contextmanager
def _refusals_counted(service: InferenceService, endpoint: str, task: str, model: str) -> Iterator[None]:
    """Count a request refused before inference (bad input, unknown model, not ready) by status."""
    try:
        yield
    except DnabertError as exc:
        known = model == ALL or model in service.task_models(task)
        label = model if known else "unknown"  # never a client-chosen label value
        service.metrics.requests.labels(endpoint, label, str(exc.http_status)).inc()
        if exc.http_status == 429:
            service.metrics.rejected.labels(endpoint, "overloaded").inc()
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


@protected.get("/models", response_model=ModelsResponse, tags=["service"],
               summary="Loaded models and their cards (and any that failed to load)")
async def models(service: ServiceDep, settings: SettingsDep) -> ModelsResponse:
    infos = [ModelInfo(task=lm.task, name=lm.name, providers=lm.model.providers, precision=lm.precision,
                       ready=lm.ready, card=lm.model.card.model_dump(mode="json"))
             for lm in service.models.values()]
    infos += [ModelInfo(task=task, name=name, providers=[], precision="", ready=False, card={}, error=reason)
              for (task, name), reason in sorted(service.failed.items())]
    return ModelsResponse(
        models=infos,
        available_providers=available_providers(),
        default_promoter_model=settings.default_promoter_model,
    )


@router.get("/healthz", response_model=Health, tags=["service"], summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["service"], responses={503: {"model": Health}},
            summary="Ready once every model has run a warm-up batch")
async def readyz(service: ServiceDep) -> Response:
    """200 ``ready``: every model serves. 200 ``degraded``: some model folders failed at start-up
    (``allow_partial_start``) and are listed in ``errors``; the others, the default promoter model
    among them, serve. 503 ``not_ready``: starting, stopping, or the default promoter model is not
    available."""
    detail = {f"{lm.task}/{lm.name}": lm.ready and service.started for lm in service.models.values()}
    detail.update({f"{task}/{name}": False for task, name in service.failed})
    errors = {f"{task}/{name}": reason for (task, name), reason in sorted(service.failed.items())} or None
    if service.ready:
        status = "ready"
    elif service.serving:
        status = "degraded"
    else:
        status = "not_ready"
    body = Health(status=status, detail=detail, errors=errors)
    return JSONResponse(body.model_dump(), status_code=503 if status == "not_ready" else 200)


@router.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> Response:
    for lm in service.models.values():
        service.metrics.queue_depth.labels(f"{lm.task}/{lm.name}").set(lm.batcher.queue_depth)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
