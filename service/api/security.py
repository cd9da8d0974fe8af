"""The API key: ``Authorization: Bearer <key>`` on the protected routes when one is configured."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.protocol import ErrorResponse
from service.contract.errors import Unauthorized

log = logging.getLogger("dnabert.service")

_bearer = HTTPBearer(auto_error=False, description="the API key (DNABERT_API_KEY) as a bearer token")

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid API key (Authorization: Bearer <key>)"},
}


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
