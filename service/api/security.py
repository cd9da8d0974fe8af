"""The API key: ``Authorization: Bearer <key>`` on the protected routes when one is configured.

Several keys may be configured (``DNABERT_API_KEY`` as a comma-separated list, and/or
``DNABERT_API_KEYS_FILE``); any of them is accepted. The key a request was accepted with is
remembered, as a hash only (:func:`key_owner`), on ``request.state.key_owner``: jobs are visible
to the key that created them and to no other.
"""

from __future__ import annotations

import hashlib
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


def key_owner(key: str) -> str:
    """What is stored of a key as a job's owner: its SHA-256, never the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _matches(given: bytes, keys: list[str]) -> bool:
    """Whether ``given`` is one of ``keys``; every key is compared, each in constant time."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode("utf-8"))
    return found


async def require_api_key(request: Request,
                          credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """``Authorization: Bearer <key>`` must carry one of the configured keys."""
    keys = request.app.state.settings.api_keys()
    if not keys:
        return
    given = credentials.credentials if credentials is not None else None
    if not given:
        raise Unauthorized("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
    if not _matches(given.encode("utf-8"), keys):
        log.warning("request %s: invalid API key", getattr(request.state, "request_id", "-"))
        raise Unauthorized("the API key is not valid", token_given=True)
    request.state.key_owner = key_owner(given)
