"""The FastAPI application: life cycle, middleware, one error shape."""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.api import AUTH_RESPONSES, InFlight, protected, require_api_key, router
from service.errors import DnabertError, Overloaded, Unauthorized
from service.metrics import ServiceMetrics
from service.protocol import ErrorBody, ErrorResponse, PredictRequest
from service.serving import InferenceService
from service.settings import Settings, get_settings

log = logging.getLogger("dnabert.service")
access_log = logging.getLogger("dnabert.access")

REQUEST_ID = "X-Request-ID"
MAX_REQUEST_ID = 200


def error_response(status: int, code: str, message: str, request: Request, *, record_id: str | None = None,
                   line: int | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    body = ErrorResponse(error=ErrorBody(code=code, message=message, record_id=record_id, line=line, request_id=rid))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is short printable text, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            rid = value.decode("latin-1")
            if rid and len(rid) <= MAX_REQUEST_ID and rid.isprintable() and rid.strip() == rid:
                return rid
            break
    return uuid.uuid4().hex


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


class RequestContext:
    """Pure ASGI middleware: a request id for every request (``X-Request-ID``, echoed or
    generated), on the response, in ``request.state`` and in one access-log line per request.

    A response sent before the request body was read to its end (413, 401, 404, ...) carries
    ``Connection: close``: the server then closes the connection instead of reading and
    discarding the rest of an oversized or unwanted upload.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = 0
        body_done = not _has_body(scope)

        async def receive_counted() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID] = rid
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if not body_done:
                    headers["Connection"] = "close"
            await send(message)

        try:
            await self.app(scope, receive_counted, send_with_id)
        finally:
            # the path is client text: %r keeps control characters out of the log line
            access_log.info("request %s: %s %r -> %s in %.1f ms", rid, scope.get("method"), scope.get("path"),
                            status or "500", (time.perf_counter() - start) * 1000)


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
    app.state.in_flight = InFlight(settings.max_requests_in_flight)
    if settings.api_key is not None:
        app.include_router(protected, dependencies=[Depends(require_api_key)], responses=AUTH_RESPONSES)
    else:
        app.include_router(protected)
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
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        rid = getattr(request.state, "request_id", None)
        log.exception("unexpected error in request %s", rid or "-")
        # this handler runs in ServerErrorMiddleware, outside the request-id middleware: add the header here
        return error_response(500, "internal_error", "internal error; see the server log", request,
                              headers={REQUEST_ID: rid, "X-Content-Type-Options": "nosniff"} if rid else None)

    return app
