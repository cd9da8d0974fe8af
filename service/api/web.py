"""The web page at ``/`` (and, for API clients, the JSON index of the API)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import __version__

web = APIRouter(include_in_schema=False)


@web.get("/")
async def index(request: Request) -> dict:
    """Where to start: the way to the API's documentation."""
    app = request.app
    return {"service": app.title, "version": __version__, "docs": "/docs", "redoc": "/redoc",
            "openapi": app.openapi_url, "health": "/healthz", "ready": "/readyz", "models": "/models",
            "predict": ["/predict/promoter", "/predict/lncrna-localization"]}
