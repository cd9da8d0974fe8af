"""The FastAPI application: life cycle, routers, middleware, one error shape."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service import __version__
from service.api.embeddings import document as document_embeddings
from service.api.embeddings import embeddings, openai_error
from service.api.explain import explanations
from service.api.jobs import jobs
from service.api.lifecycle import InFlight
from service.api.middleware import REQUEST_ID, RequestContext
from service.api.probes import catalogue, probes
from service.api.protocol import ErrorBody, ErrorResponse
from service.api.routes import body_schemas, inference
from service.api.scan import scan
from service.api.security import AUTH_RESPONSES, require_api_key
from service.api.v2 import v2, v2_error, v2_probes
from service.api.variants import variants
from service.api.web import web
from service.contract.errors import DnabertError, Overloaded, Unauthorized
from service.metrics import ServiceMetrics
from service.runtime.inference import InferenceService
from service.settings import Settings, get_settings

log = logging.getLogger("dnabert.service")


def error_response(status: int, code: str, message: str, request: Request, *, record_id: str | None = None,
                   line: int | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error body in the shape of the protocol the request spoke: the OpenAI shape under
    ``/v1/``, the Open Inference Protocol's ``{"error": "..."}`` under ``/v2``, ours elsewhere."""
    rid = getattr(request.state, "request_id", None)
    path = request.url.path
    if path.startswith("/v1/"):
        content: dict = openai_error(status, code, message, record_id=record_id, line=line)
    elif path == "/v2" or path.startswith("/v2/"):
        content = v2_error(code, message, record_id=record_id, line=line)
    else:
        content = ErrorResponse(error=ErrorBody(code=code, message=message, record_id=record_id, line=line,
                                                request_id=rid)).model_dump(exclude_none=True)
    return JSONResponse(content, status_code=status, headers=headers)



async def drain(app: FastAPI, grace: float) -> None:
    """Let the requests in progress finish, within ``grace`` seconds (``shutdown_grace_s``).

    ``dnabert-serve serve`` runs this on SIGTERM beside uvicorn's own shutdown, which closes the
    port and the idle connections at once, waits up to ``grace`` seconds
    (``timeout_graceful_shutdown``) for the others, then runs the lifespan's shutdown:

    1. new prediction requests are refused at once: 503 ``shutting_down``;
    2. the requests in progress get until ``grace`` less a margin (a fifth of it, at most 2 s)
       to finish and are answered as usual;
    3. then what is left is answered cleanly, before uvicorn's deadline: bodies still arriving
       stop (503 ``shutting_down``), queued sequences are dropped (503 ``not_ready``, "shutting
       down"), and running batches get half the margin to deliver their rows.
    """
    gate: InFlight = app.state.in_flight
    gate.draining = True
    loop = asyncio.get_running_loop()
    margin = min(2.0, 0.2 * grace)
    end = loop.time() + grace - margin
    while gate.count and loop.time() < end:
        await asyncio.sleep(0.05)
    if not gate.count:
        return
    log.warning("shutting down: %d request(s) still in progress after %.1f s are answered 503",
                gate.count, grace - margin)
    gate.cut_off()
    svc = app.state.service
    await asyncio.gather(*(b.stop(grace=margin / 2) for lm in list(svc.models.values()) for b in lm.batchers))


def create_app(settings: Settings | None = None, service: InferenceService | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = app.state.service
        try:
            await svc.start()
        except DnabertError as exc:
            log.error("start-up failed: %s", exc.message)
            raise
        log.info("ready: %d models, providers %s%s", len(svc.models), svc.providers,
                 f"; not serving {', '.join(f'{t}/{n}' for t, n in sorted(svc.failed))}" if svc.failed else "")
        from service.jobs.runner import Jobs  # the job runner, at background priority

        app.state.jobs = Jobs(svc, settings)
        await app.state.jobs.start()  # resumes the jobs a previous process left unfinished
        try:
            yield
        finally:
            await app.state.jobs.stop()
            await svc.stop()

    # The API documentation's scripts and styles come from the installed fastapi-offline
    # package, served by this app: /docs and /redoc work on a lab server without internet.
    app = FastAPIOffline(
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        title="DNABERT-2 inference service",
        version=__version__,
        description=(
            "Promoter prediction (five DNABERT-2 variants) and lncRNA subcellular localization "
            "from FASTA uploads, dynamically batched onto ONNX Runtime."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = service or InferenceService(settings, ServiceMetrics())
    app.state.in_flight = InFlight(settings.max_requests_in_flight)
    # behind the API key when one is configured
    for router in (inference, catalogue, explanations, variants, scan, embeddings, v2, jobs):
        if settings.api_key is not None:
            app.include_router(router, dependencies=[Depends(require_api_key)], responses=AUTH_RESPONSES)
        else:
            app.include_router(router)
    app.include_router(probes)
    app.include_router(v2_probes)
    app.include_router(web)

    default_openapi = app.openapi

    def openapi() -> dict:
        # The predict routes read their bodies themselves; register the body schemas that their
        # openapi_extra refers to (PredictRequest, FastaText), with this server's limits.
        if app.openapi_schema is None:
            schema = default_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(body_schemas(settings))
            document_embeddings(schema, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    app.add_middleware(RequestContext)
    if settings.cors_origins:  # off unless configured: no CORS headers at all
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
            allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type", REQUEST_ID],
            expose_headers=[REQUEST_ID, "Retry-After"], max_age=600)

    @app.exception_handler(DnabertError)
    async def domain_error(request: Request, exc: DnabertError):
        headers = None
        if isinstance(exc, Overloaded):
            headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
        elif isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": 'Bearer realm="dnabert"'
                       + (', error="invalid_token"' if exc.token_given else "")}
        if exc.http_status >= 500:
            log.error("request %s failed: %s", getattr(request.state, "request_id", "-"), exc)
        return error_response(exc.http_status, exc.code, exc.message, request, record_id=exc.record_id,
                              line=exc.line, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        log.info("request %s: the client disconnected", getattr(request.state, "request_id", "-"))
        return error_response(499, "client_closed_request", "the client closed the connection", request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_parameter", f"{where}: {first.get('msg', 'invalid')}", request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        # exc.headers: the Allow header of a 405, for one
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), request,
                              headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        rid = getattr(request.state, "request_id", None)
        log.exception("unexpected error in request %s", rid or "-")
        # this handler runs in ServerErrorMiddleware, outside the request-id middleware: add the header here
        return error_response(500, "internal_error", "internal error; see the server log", request,
                              headers={REQUEST_ID: rid, "X-Content-Type-Options": "nosniff"} if rid else None)

    return app
