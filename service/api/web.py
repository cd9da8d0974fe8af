"""The web page at ``/`` (and, for API clients, the JSON index of the API).

A browser (``Accept`` naming ``text/html``) gets the page; any other client gets the JSON index,
as before. The page's scripts, styles and example files are package data under ``static/``,
served here under ``/ui/`` by this app: no second server, no CDN, no build step. The page talks
to the public API only (``/models``, ``/predict``, ``/scan``, ``/explain``, ``/jobs``), with the
same requests a script would send.

Every file is read once, at import, with a strong ``ETag`` (its sha256) and ``Cache-Control:
no-cache``: a browser keeps it and asks again each time, and gets ``304 Not Modified`` until the
service is upgraded. The page carries a strict Content-Security-Policy: everything from this
origin only, no inline script or style, no framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from service import __version__

web = APIRouter(include_in_schema=False)

STATIC = Path(__file__).with_name("static")
ASSET_PATH = "/ui/"
PAGE = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".fasta": "text/x-fasta; charset=utf-8",
    ".gz": "application/gzip",
    ".txt": "text/plain; charset=utf-8",
}
"""What is served, by suffix; any other file under ``static/`` is not served."""

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'"))
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class Asset:
    """One file of the page, held in memory."""

    body: bytes
    media_type: str
    etag: str

    def response(self, if_none_match: str | None, headers: dict[str, str] | None = None) -> Response:
        """The file, or ``304`` when the browser's copy (``If-None-Match``) is this one."""
        common = {"ETag": self.etag, "Cache-Control": "no-cache", **(headers or {})}
        if if_none_match and self.etag in {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}:
            return Response(status_code=304, headers=common)
        return Response(self.body, media_type=self.media_type, headers=common)


def load_assets(folder: Path = STATIC) -> dict[str, Asset]:
    """Every servable file under ``folder``, by its path relative to it (``js/main.js``)."""
    assets = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        media = CONTENT_TYPES.get(path.suffix.lower())
        if not path.is_file() or media is None or any(part.startswith(".") for part in rel.parts):
            continue
        body = path.read_bytes()
        assets[rel.as_posix()] = Asset(body, media, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return assets


ASSETS = load_assets()


def wants_html(accept: str | None) -> bool:
    """Whether ``Accept`` names an HTML type with a quality above 0 (a browser navigating here)."""
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in _HTML_TYPES:
            continue
        q = next((p.partition("=")[2] for p in params if p.replace(" ", "").lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            continue
    return False


def api_index(request: Request) -> dict:
    """Where to start for an API client: the documentation and the main endpoints."""
    app = request.app
    return {"service": app.title, "version": __version__, "docs": "/docs", "redoc": "/redoc",
            "openapi": app.openapi_url, "health": "/healthz", "ready": "/readyz", "models": "/models",
            "predict": ["/predict/promoter", "/predict/lncrna-localization"], "web": "/"}


@web.get("/")
async def index(request: Request) -> Response:
    """The web page for a browser; the JSON index of the API for other clients."""
    vary = {"Vary": "Accept"}
    if wants_html(request.headers.get("accept")) and PAGE in ASSETS:
        return ASSETS[PAGE].response(request.headers.get("if-none-match"), {**PAGE_HEADERS, **vary})
    return JSONResponse(api_index(request), headers=vary)


@web.get(ASSET_PATH + "{name:path}")
async def asset(name: str, request: Request) -> Response:
    """A script, style sheet, icon or example file of the page."""
    found = ASSETS.get(name)
    if found is None:
        raise HTTPException(status_code=404, detail="no such file of the web page")
    return found.response(request.headers.get("if-none-match"), {"Content-Security-Policy": CONTENT_SECURITY_POLICY})
