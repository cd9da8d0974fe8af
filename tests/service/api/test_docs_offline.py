"""/docs and /redoc load nothing from outside the server: a lab server often has no internet,
and a page whose scripts come from a CDN is blank there. Every asset the pages reference is
fetched from the app itself."""

from __future__ import annotations

import re

import pytest

from ..robustness import make_settings, needs_models, run, serving

ASSET = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


def _references(html: str) -> list[str]:
    return [a or b for a, b in ASSET.findall(html)]


@needs_models
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_documentation_pages_reference_only_the_server_itself(page):
    async def go():
        async with serving(make_settings(), start=False) as client:
            resp = await client.get(page)
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
            refs = _references(resp.text)
            assert refs, resp.text  # the page does load scripts: from here
            outside = [r for r in refs if re.match(r"(?i)^(https?:)?//", r)]
            assert outside == [], outside
            fetched = {}
            for ref in refs:
                asset = await client.get(ref)
                fetched[ref] = asset.status_code
                assert asset.status_code == 200, (ref, asset.status_code)
                assert len(asset.content) > 0
            assert any(ref.endswith(".js") for ref in fetched), fetched
            assert "/openapi.json" in fetched
            return fetched

    run(go())


@needs_models
def test_swagger_ui_asks_no_outside_validator():
    async def go():
        async with serving(make_settings(), start=False) as client:
            return (await client.get("/docs")).text

    html = run(go())
    assert '"validatorUrl": null' in html
    assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html
