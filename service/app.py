"""The FastAPI application: life cycle, middleware, one error shape."""

from __future__ import annotations

import logging
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.api import router
from service.errors import DnabertError, Overloaded
from service.metrics import ServiceMetrics
from service.protocol import ErrorBody, ErrorResponse, PredictRequest
from service.serving import InferenceService
from service.settings import Settings, get_settings

log = logging.getLogger("dnabert.service")

REQUEST_ID = "X-Request-ID"


def error_response(status: int, code: str, message: str, request: Request, *, record_id: str | None = None,
                   line: int | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    body = ErrorResponse(error=ErrorBody(code=code, message=message, record_id=record_id, line=line, request_id=rid))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def create_app(settings: Settings | None = None, service: InferenceService | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = app.state.service
        await svc.start()
        log.info("ready: %d models, providers %s", len(svc.models), svc.providers)
        try:
            yield
        finally:
            await svc.stop()

    app = FastAPI(
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
    app.include_router(router)
    default_openapi = app.openapi

    def openapi() -> dict:
        # The predict routes read their bodies themselves; register the JSON body's schema that
        # their openapi_extra refers to (#/components/schemas/PredictRequest).
        if app.openapi_schema is None:
            schema = default_openapi()
            body = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["PredictRequest"] = body
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        rid = request.headers.get(REQUEST_ID)
        if not rid or len(rid) > 200 or not rid.isprintable():
            rid = uuid.uuid4().hex
        request.state.request_id = rid
        response = await call_next(request)
        response.headers[REQUEST_ID] = rid
        return response

    @app.exception_handler(DnabertError)
    async def domain_error(request: Request, exc: DnabertError):
        headers = None
        if isinstance(exc, Overloaded):
            headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
        if exc.http_status >= 500:
            log.error("request %s failed: %s", getattr(request.state, "request_id", "-"), exc)
        return error_response(exc.http_status, exc.code, exc.message, request, record_id=exc.record_id,
                              line=exc.line, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_parameter", f"{where}: {first.get('msg', 'invalid')}", request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        rid = getattr(request.state, "request_id", None)
        log.exception("unexpected error in request %s", rid or "-")
        # this handler runs in ServerErrorMiddleware, outside the request-id middleware: add the header here
        return error_response(500, "internal_error", "internal error; see the server log", request,
                              headers={REQUEST_ID: rid} if rid else None)

    return app
