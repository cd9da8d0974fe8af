"""Request context for every request: the request id and the access-log line."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("dnabert.access")

REQUEST_ID = "X-Request-ID"
MAX_REQUEST_ID = 200


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
