"""The web page at ``/`` in a real headless browser: Debian's ``chromium`` driven by Playwright
for Python, against a real ``dnabert-serve`` process on a free loopback port.

The page is opened, the bundled example loaded, and each view run. Every number the page shows
must equal, exactly, the API's answer to the request the page sent (read off the network), and
every download must be byte for byte the API's answer to the page's request for it; the page's
requests are checked to carry the parameters chosen, and the answers to agree with the test's
own requests to the API (to 1e-6: the dynamic batcher may pad a window differently from one
request to the next). An invalid FASTA must show the API's error with the record and the line it
names. Every request the page makes goes through a route handler: one to any other origin is
aborted and fails the test.

Without ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) the
browser tests are skipped, except in CI (``CI`` set), where they fail.

``python -m tests.web.test_page --screenshots`` writes the screenshots of every view at 1280 and
390 px wide to ``docs/images/web_<view>_<width>.png``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from service.api.web import ASSETS, CONTENT_TYPES
from tests.service.robustness import HAS_LNCRNA, MODELS_DIR, ServerProcess, needs_models

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("DNABERT_CHROMIUM", "/usr/bin/chromium"))
IN_CI = bool(os.environ.get("CI"))
EXAMPLES = REPO / "service" / "api" / "static" / "examples"
PROMOTER_EXAMPLE = (EXAMPLES / "promoter.fasta").read_text()
LNCRNA_EXAMPLE = (EXAMPLES / "lncrna.fasta").read_text()
IMAGES = REPO / "docs" / "images"
WAIT_MS = 60_000
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name in the scripts, never fetched

pytestmark = [pytest.mark.slow, needs_models]
needs_lncrna = pytest.mark.skipif(not HAS_LNCRNA, reason=f"no lncRNA model in {MODELS_DIR}")


def browser_problem() -> str | None:
    if not CHROMIUM.is_file():
        return f"no browser at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    return None


# ---- helpers ------------------------------------------------------------------------------------


def fasta_records(text: str) -> dict[str, str]:
    """Each record of FASTA text, by id, as FASTA text of its own."""
    out: dict[str, str] = {}
    for block in text.split(">")[1:]:
        out[block.split()[0]] = ">" + block
    return out


def api(server: ServerProcess, path: str, body: str | bytes | None = None, params: dict | None = None,
        method: str = "POST", key: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "text/x-fasta"} if body is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, server.base + path, params=params, content=body, headers=headers, timeout=120)


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
TOL = 1e-6


def same_output(got: bytes | str, want: bytes | str) -> None:
    """The same text but for the last digits of its numbers (within TOL)."""
    got = got.decode() if isinstance(got, bytes) else got
    want = want.decode() if isinstance(want, bytes) else want
    assert NUMBER.sub("#", got) == NUMBER.sub("#", want)
    for a, b in zip(NUMBER.findall(got), NUMBER.findall(want), strict=True):
        assert math.isclose(float(a), float(b), rel_tol=TOL, abs_tol=TOL), (a, b)


def query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(url).query).items()}


class PageUnderTest:
    """One browser context on the page: requests to any other origin are aborted and recorded,
    uncaught script errors recorded; :meth:`close` fails on either."""

    def __init__(self, browser, base: str, width: int = 1280, height: int = 900):
        self.base = base
        self.context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _route(self, route) -> None:
        url = route.request.url
        if url == self.base or url.startswith(self.base + "/"):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def open(self, view: str = "predict") -> None:
        self.page.goto(f"{self.base}/#{view}")
        self.page.wait_for_selector("body.ready")

    def finished(self) -> int:
        return int(self.page.evaluate("Number(document.body.dataset.finished || 0)"))

    def run(self, selector: str) -> None:
        """Click a control that sends a request, and wait until it has ended."""
        before = self.finished()
        self.page.click(selector)
        wait_until(self.page, "Number(document.body.dataset.finished || 0) > arg", before)

    def run_answer(self, selector: str, path: str):
        """Click, wait until the request has ended, and return the API's response to it."""
        with self.page.expect_response(lambda r: urlparse(r.url).path == path, timeout=WAIT_MS) as answer:
            self.run(selector)
        return answer.value

    def download(self, selector: str) -> bytes:
        """A download made from what the page holds (no request)."""
        with self.page.expect_download(timeout=WAIT_MS) as info:
            self.page.click(selector)
        return Path(info.value.path()).read_bytes()

    def download_answer(self, selector: str, path: str) -> tuple[bytes, bytes, dict[str, str]]:
        """A download that asks the API: the file saved, the API's answer and the query sent."""
        with self.page.expect_response(lambda r: urlparse(r.url).path == path, timeout=WAIT_MS) as answer, \
                self.page.expect_download(timeout=WAIT_MS) as info:
            self.page.click(selector)
        return Path(info.value.path()).read_bytes(), answer.value.body(), query(answer.value.url)

    def tab(self, name: str) -> None:
        self.page.click(f"#tab-{name}")
        self.page.wait_for_selector(f"#panel-{name}:not([hidden])")

    def close(self) -> None:
        self.context.close()
        assert self.foreign == [], f"the page requested other hosts: {self.foreign}"
        assert self.errors == [], f"script errors in the page: {self.errors}"


def wait_until(page, condition: str, arg=None, timeout: int = WAIT_MS) -> None:
    """Wait until the JavaScript ``condition`` (of ``arg``) holds. A function, not an expression:
    the page's Content-Security-Policy forbids the eval that an expression would need."""
    page.wait_for_function(f"arg => ({condition})", arg=arg, timeout=timeout)


ROWS_JS = """rows => rows.map(tr => Object.fromEntries([...tr.cells].map(td =>
    [td.dataset.col, {text: td.innerText.trim(), value: td.dataset.value ?? null}])))"""


def table_rows(page) -> list[dict]:
    return page.eval_on_selector_all("#predict-table tbody tr", ROWS_JS)


def assert_shown(cell: dict, value: float | None) -> None:
    """A bar cell shows the API's number: exactly in data-value, to four decimals as text."""
    if value is None:
        assert cell["value"] is None and "not scored" in cell["text"], cell
    else:
        assert float(cell["value"]) == value, (cell, value)
        assert cell["text"] == f"{value:.4f}", (cell, value)


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("web") / "server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    problem = browser_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem}: CI must run the browser tests")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def ui(browser, server):
    session = PageUnderTest(browser, server.base)
    session.open()
    yield session
    session.close()


# ---- the page and its files -----------------------------------------------------------------------


def test_root_is_the_page_for_browsers_and_the_json_index_for_api_clients(server):
    for accept in (None, "application/json", "*/*", "text/html;q=0, application/json"):
        r = httpx.get(server.base + "/", headers={"Accept": accept} if accept else {})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), accept
        assert r.json()["docs"] == "/docs" and "Accept" in r.headers["vary"]
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
    page = httpx.get(server.base + "/", headers={"Accept": browser_accept})
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert "frame-ancestors 'none'" in csp and page.headers["x-frame-options"] == "DENY"
    # no inline script, style or event handler: everything is a file of this origin
    html = page.text
    assert re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S) == [""]
    assert not re.search(r"\sstyle=|\son[a-z]+=|<style\b", html, flags=re.I)
    again = httpx.get(server.base + "/", headers={"Accept": "text/html", "If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and not again.content


def test_the_files_of_the_page_are_served_with_their_types_and_cache_headers(server):
    assert {"index.html", "app.css", "js/main.js", "examples/promoter.fasta", "examples/lncrna.fasta"} <= set(ASSETS)
    for name, asset in ASSETS.items():
        r = httpx.get(f"{server.base}/ui/{name}")
        assert r.status_code == 200, name
        assert r.content == (REPO / "service" / "api" / "static" / name).read_bytes()
        assert r.headers["content-type"] == CONTENT_TYPES[Path(name).suffix], name
        assert r.headers["cache-control"] == "no-cache" and r.headers["etag"] == asset.etag
        assert httpx.get(f"{server.base}/ui/{name}", headers={"If-None-Match": asset.etag}).status_code == 304
        if r.headers["content-type"].startswith(("text/javascript", "text/css", "text/html", "image/svg")):
            urls = set(re.findall(r"[a-z]+://[^\s\"'`)]+", r.text)) - {SVG_NAMESPACE}
            assert urls == set(), f"{name} names other hosts: {urls}"
    for bad in ("nope.js", "../web.py", "..%2Fweb.py", "%2e%2e/app.py", "js/../../web.py"):
        r = httpx.get(f"{server.base}/ui/{bad}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", bad


# ---- Predict --------------------------------------------------------------------------------------


def test_predict_shows_the_apis_numbers_sorts_filters_and_downloads_its_answers(ui, server):
    page = ui.page
    ui.run("#example")
    assert page.input_value("#fasta") == PROMOTER_EXAMPLE
    default = api(server, "/models", method="GET").json()["default_promoter_model"]
    answer = ui.run_answer("#predict-run", "/predict/promoter")
    assert query(answer.url) == {"model": default}
    assert answer.request.post_data_buffer == PROMOTER_EXAMPLE.encode()
    want = answer.json()
    same_output(answer.body(), api(server, "/predict/promoter", PROMOTER_EXAMPLE).content)
    rows = table_rows(page)
    assert [r["id"]["text"] for r in rows] == [x["id"] for x in want["results"]]
    for row, res in zip(rows, want["results"]):
        assert int(row["length"]["value"]) == res["length"] and row["length"]["text"] == f"{res['length']:,}"
        assert_shown(row["probability"], res["probability"])
        assert row["label"]["text"] == (res["label"] or "not scored")
        assert row["flags"]["text"] == ", ".join(res["flags"])
    summary = page.inner_text("#predict-summary")
    assert f"model {want['model']}" in summary and f"threshold {want['threshold']}" in summary

    # sorted by probability (highest first), then filtered by id and by label
    page.click("#predict-table th[data-col=probability] button")
    shown = [float(r["probability"]["value"]) for r in table_rows(page)]
    assert shown == sorted((x["probability"] for x in want["results"]), reverse=True)
    assert page.get_attribute("#predict-table th[data-col=probability]", "aria-sort") == "descending"
    page.fill("#predict-filter", "hl_promoter")
    assert {r["id"]["text"] for r in table_rows(page)} == {"hl_promoter_plus", "hl_promoter_minus"}
    page.fill("#predict-filter", "")
    page.select_option("#predict-label", "non_promoter")
    assert {r["id"]["text"] for r in table_rows(page)} == {
        x["id"] for x in want["results"] if x["label"] == "non_promoter"}

    # the downloads are the API's answers to the same request, byte for byte
    for fmt in ("csv", "tsv"):
        got, body, sent = ui.download_answer(f"#predict-{fmt}", "/predict/promoter")
        assert got == body and sent == {"model": default, "format": fmt}, fmt
        same_output(got, api(server, "/predict/promoter", PROMOTER_EXAMPLE, {"format": fmt}).content)
    assert ui.download("#predict-json") == answer.body()


def test_predict_with_all_shows_each_variant_and_the_threshold_given(ui, server):
    page = ui.page
    ui.run("#example")
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    models = api(server, "/models", method="GET").json()
    assert options == ["all"] + [m["name"] for m in models["models"] if m["task"] == "promoter"]
    assert page.input_value("#model") == models["default_promoter_model"]
    page.select_option("#model", "all")
    page.fill("#threshold", "0.3")
    answer = ui.run_answer("#predict-run", "/predict/promoter")
    params = {"model": "all", "threshold": "0.3"}
    assert query(answer.url) == params
    want = answer.json()
    same_output(answer.body(), api(server, "/predict/promoter", PROMOTER_EXAMPLE, params).content)
    assert want["threshold"] == 0.3
    variants = sorted({v for r in want["results"] for v in (r["variant_probabilities"] or {})})
    assert len(variants) == 5
    columns = page.eval_on_selector_all("#predict-table thead th", "ths => ths.map(th => th.dataset.col)")
    assert columns == ["id", "length", "probability", "label", *[f"p_{v}" for v in variants], "flags"]
    for row, res in zip(table_rows(page), want["results"], strict=True):
        assert_shown(row["probability"], res["probability"])
        assert row["label"]["text"] == res["label"]
        for v in variants:
            assert_shown(row[f"p_{v}"], res["variant_probabilities"][v])
    got, body, sent = ui.download_answer("#predict-csv", "/predict/promoter")
    assert got == body and sent == {**params, "format": "csv"}
    assert got.decode().splitlines()[0].split(",")[5:10] == [f"p_{v}" for v in variants]


def test_a_gzip_file_and_a_dropped_file_are_sent_as_they_are(ui, server):
    page = ui.page
    packed = gzip.compress(PROMOTER_EXAMPLE.encode())
    page.set_input_files("#file", files=[{"name": "example.fa.gz", "mimeType": "application/gzip", "buffer": packed}])
    wait_until(page, "document.getElementById('file-info').textContent.includes('gzip')")
    assert page.input_value("#fasta") == PROMOTER_EXAMPLE  # shown unpacked
    answer = ui.run_answer("#predict-run", "/predict/promoter")
    assert answer.request.post_data_buffer == packed  # sent packed
    want = answer.json()
    same_output(answer.body(), api(server, "/predict/promoter", PROMOTER_EXAMPLE).content)
    for row, res in zip(table_rows(page), want["results"], strict=True):
        assert row["id"]["text"] == res["id"]
        assert_shown(row["probability"], res["probability"])

    records = fasta_records(PROMOTER_EXAMPLE)
    dropped = records["at_rich"] + records["mixed_case"]
    page.evaluate("""([name, text]) => {
        const data = new DataTransfer();
        data.items.add(new File([text], name, {type: "text/plain"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    }""", ["dropped.fasta", dropped])
    wait_until(page, "document.getElementById('file-info').textContent.startsWith('dropped.fasta')")
    assert page.input_value("#fasta") == dropped
    answer = ui.run_answer("#predict-run", "/predict/promoter")
    assert answer.request.post_data_buffer == dropped.encode()
    assert [r["id"]["text"] for r in table_rows(page)] == ["at_rich", "mixed_case"]
    for row, res in zip(table_rows(page), answer.json()["results"], strict=True):
        assert_shown(row["probability"], res["probability"])


@needs_lncrna
def test_lncrna_prediction_shows_three_score_bars_and_the_called_locations(ui, server):
    page = ui.page
    page.select_option("#task", "lncrna-localization")
    assert page.is_visible("#thr-lncrna") and not page.is_visible("#thr-promoter")
    ui.run("#example")
    assert page.input_value("#fasta") == LNCRNA_EXAMPLE
    page.fill("#threshold-nucleus", "0.3")
    page.fill("#threshold-extracellular_vesicle", "0.05")
    answer = ui.run_answer("#predict-run", "/predict/lncrna-localization")
    params = {"threshold_nucleus": "0.3", "threshold_extracellular_vesicle": "0.05"}
    assert query(answer.url) == {"model": "lncrna", **params} or set(query(answer.url)) == {"model", *params}
    want = answer.json()
    same_output(answer.body(), api(server, "/predict/lncrna-localization", LNCRNA_EXAMPLE, params).content)
    labels = ["nucleus", "cytoplasm", "extracellular_vesicle"]
    columns = page.eval_on_selector_all("#predict-table thead th", "ths => ths.map(th => th.dataset.col)")
    assert columns == ["id", "length", *labels, "locations", "flags"]
    rows = table_rows(page)
    assert [r["id"]["text"] for r in rows] == [x["id"] for x in want["results"]]
    for row, res in zip(rows, want["results"]):
        for label in labels:
            assert_shown(row[label], res["scores"][label])
        assert row["locations"]["text"] == ", ".join(res["locations"])
        assert row["flags"]["text"] == ", ".join(res["flags"])
    assert any(res["locations"] for res in want["results"])
    got, body, sent = ui.download_answer("#predict-tsv", "/predict/lncrna-localization")
    assert got == body and sent["format"] == "tsv"
    same_output(got, api(server, "/predict/lncrna-localization", LNCRNA_EXAMPLE, {**params, "format": "tsv"}).content)


# ---- Scan -----------------------------------------------------------------------------------------


def scan_results(ndjson: bytes) -> list[dict]:
    """The records of a streamed scan, as the JSON answer holds them."""
    windows: dict[str, list] = {}
    records = []
    for line in ndjson.decode().splitlines():
        item = json.loads(line)
        if item["type"] == "window":
            windows.setdefault(item["id"], []).append({k: item[k] for k in ("start", "end", "strand", "probability")})
        elif item["type"] == "record":
            records.append({k: v for k, v in item.items() if k != "type"} | {"windows": windows.pop(item["id"], [])})
    return records


def test_scan_draws_both_strands_lists_the_called_regions_zooms_and_downloads_bed_and_bedgraph(ui, server):
    page = ui.page
    ui.run("#example")
    ui.tab("scan")
    default = api(server, "/models", method="GET").json()["default_promoter_model"]
    answer = ui.run_answer("#scan-run", "/scan/promoter")
    params = {"model": default, "stride": "50", "strand": "both", "min_windows": "1"}
    assert query(answer.url) == {**params, "format": "ndjson"}  # streamed: the windows scored so far show
    results = scan_results(answer.body())
    want = api(server, "/scan/promoter", PROMOTER_EXAMPLE, params).json()
    same_output(json.dumps(results), json.dumps([{k: r[k] for k in results[0]} for r in want["results"]]))
    record = results[int(page.input_value("#scan-record"))]
    assert record["id"] == "synthetic_locus:10001-16000"  # the record with the most windows is shown first
    assert len(record["regions"]) == 2, "the example's locus holds two planted promoters, one on each strand"
    regions = page.eval_on_selector_all("#scan-regions tbody tr", """rows => rows.map(tr => ({
        strand: tr.dataset.strand,
        ...Object.fromEntries([...tr.querySelectorAll('td[data-col]')].map(td => [td.dataset.col, Number(td.dataset.value)])),
        texts: [...tr.cells].map(td => td.innerText.trim())}))""")
    assert [{k: v for k, v in r.items() if k != "texts"} for r in regions] == [
        {k: r[k] for k in ("strand", "start", "end", "score", "mean", "windows")} for r in record["regions"]]
    for shown, r in zip(regions, record["regions"]):
        assert shown["texts"][1:7] == [f"{r['start']:,}", f"{r['end']:,}", f"{r['end'] - r['start']:,}",
                                       f"{r['score']:.4f}", f"{r['mean']:.4f}", str(r["windows"])]
    total = sum(len(r["regions"]) for r in results)
    assert f"{total} called region" in page.inner_text("#scan-summary")
    drawn = {g["strand"]: g for g in page.eval_on_selector_all(
        "#scan-plot g.strand", "gs => gs.map(g => ({strand: g.dataset.strand, windows: Number(g.dataset.windows), "
                               "visible: Number(g.dataset.visible)}))")}
    for strand in ("+", "-"):
        n = sum(1 for w in record["windows"] if w["strand"] == strand)
        assert n > 100 and drawn[strand]["windows"] == drawn[strand]["visible"] == n
    assert page.eval_on_selector_all("#scan-plot rect.region:not(.band)", "rs => rs.length") == len(record["regions"])

    # zoom to the first region, back to the whole record, by dragging across the plot, and by typing
    first = record["regions"][0]
    pad = max(50, (first["end"] - first["start"] + 1) // 2)
    page.click("#scan-regions tbody tr:first-child button")
    assert (int(page.input_value("#scan-from")), int(page.input_value("#scan-to"))) == (
        first["start"] - pad, first["end"] + pad)
    visible = page.eval_on_selector("#scan-plot g.strand", "g => Number(g.dataset.visible)")
    assert 0 < visible < len(record["windows"]) // 2
    page.click("#scan-reset")
    assert (int(page.input_value("#scan-from")), int(page.input_value("#scan-to"))) == (
        record["offset"], record["offset"] + record["length"])
    box = page.locator("#scan-plot svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    lo, hi = int(page.input_value("#scan-from")), int(page.input_value("#scan-to"))
    assert record["offset"] < lo < hi < record["offset"] + record["length"] and hi - lo < record["length"] / 3
    page.fill("#scan-from", "12000")
    page.fill("#scan-to", "13000")
    page.press("#scan-to", "Enter")
    ticks = page.eval_on_selector_all("#scan-plot .axes text:not(.axis-title)", "ts => ts.map(t => t.textContent)")
    positions = [int(t.replace(",", "")) for t in ticks[5:]]  # after the five probability labels
    assert positions[0] == 12000 and all(12000 <= x <= 13000 for x in positions) and len(positions) >= 3

    for fmt in ("bed", "bedgraph", "json"):
        got, body, sent = ui.download_answer(f"#scan-{fmt}", "/scan/promoter")
        assert got == body and sent == {**params, "format": fmt}, fmt
        same_output(got, api(server, "/scan/promoter", PROMOTER_EXAMPLE, {**params, "format": fmt}).content)


def test_a_long_request_shows_its_progress_and_can_be_cancelled(ui, server):
    page = ui.page
    page.fill("#fasta", fasta_records(PROMOTER_EXAMPLE)["synthetic_locus:10001-16000"])
    ui.tab("scan")
    page.fill("#scan-stride", "1")  # 11,402 windows: some seconds
    before = ui.finished()
    page.click("#scan-run")
    wait_until(page, "document.getElementById('busy-bar').value > 0")
    progress = page.inner_text("#busy-text")
    assert re.search(r"[\d,]+ of 11,402 windows", progress), progress
    page.click("#cancel")
    wait_until(page, "Number(document.body.dataset.finished) > arg", before)
    assert page.is_hidden("#busy") and page.is_hidden("#scan-out")
    assert "cancelled" in page.inner_text("#status")


# ---- Explain --------------------------------------------------------------------------------------


def explained_plot(page) -> dict:
    return page.evaluate("""() => ({
        bars: [...document.querySelectorAll('#explain-plot .bars rect')].map(r => Number(r.dataset.value)),
        cells: [...document.querySelectorAll('#explain-plot .grid rect')].map(r => [Number(r.dataset.pos), r.dataset.base,
                                                                                   Number(r.dataset.value)]),
        sequence: [...document.querySelectorAll('#explain-plot .seq text.base')].map(t => t.textContent).join(''),
        reference: document.querySelector('#explain-summary .reference').dataset.value,
        shown: document.querySelector('#explain-summary .reference').textContent})""")


def assert_explanation(page, importance: list[float], changes: list[list[float]], sequence: str, reference: float):
    got = explained_plot(page)
    assert got["bars"] == importance
    assert got["sequence"] == sequence
    assert got["cells"] == [[i, b, changes[i][j]] for i in range(len(sequence)) for j, b in enumerate("ACGT")]
    assert float(got["reference"]) == reference and got["shown"] == f"{reference:.4f}"


def test_explain_draws_the_importance_of_the_chosen_record_with_its_sequence(ui, server):
    page = ui.page
    ui.run("#example")
    ui.tab("explain")
    page.select_option("#explain-record", label="hl_promoter_minus (300 nt)")
    answer = ui.run_answer("#explain-run", "/explain/promoter")
    record = fasta_records(PROMOTER_EXAMPLE)["hl_promoter_minus"]
    assert answer.request.post_data_buffer == record.encode()  # the chosen record alone
    want = answer.json()["results"][0]
    same_output(answer.body(), api(server, "/explain/promoter", record).content)
    assert_explanation(page, want["importance"], want["changes"], want["sequence"], want["reference"])
    # the sequence is readable: one letter per 14 px column, 13 px bold monospace
    size = page.eval_on_selector("#explain-plot .seq text.base", "t => getComputedStyle(t).fontSize")
    assert float(size.removesuffix("px")) >= 12
    page.focus("#explain-plot .explain-scroll")  # scrolled sideways from the keyboard
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    # the browser scrolls asynchronously (smoothly, and later on a loaded machine): wait for it
    for _ in range(100):
        if page.eval_on_selector("#explain-plot .explain-scroll", "s => s.scrollLeft") > 0:
            break
        page.wait_for_timeout(100)
    assert page.eval_on_selector("#explain-plot .explain-scroll", "s => s.scrollLeft") > 0
    assert ui.download("#explain-json") == answer.body()
    got, body, sent = ui.download_answer("#explain-bedgraph", "/explain/promoter")
    assert got == body and sent["format"] == "bedgraph"
    same_output(got, api(server, "/explain/promoter", record, {"format": "bedgraph"}).content)


@needs_lncrna
def test_explain_lncrna_shows_the_chosen_location(ui, server):
    page = ui.page
    page.select_option("#task", "lncrna-localization")
    ui.run("#example")
    ui.tab("explain")
    page.select_option("#explain-record", label="lnc_mixed_case (71 nt)")
    page.select_option("#explain-label", "cytoplasm")
    answer = ui.run_answer("#explain-run", "/explain/lncrna-localization")
    res = answer.json()["results"][0]
    same_output(answer.body(), api(server, "/explain/lncrna-localization",
                                   fasta_records(LNCRNA_EXAMPLE)["lnc_mixed_case"]).content)
    for label in ("cytoplasm", "nucleus"):
        page.select_option("#explain-label", label)  # drawn again from the same answer
        assert_explanation(page, res["importance"][label], res["changes"][label], res["sequence"], res["reference"][label])


# ---- errors ---------------------------------------------------------------------------------------


BAD = ">ok first record\nACGTACGTAC\n>bad second record\nACGTACGT\nACGTXACGT\n>after\nACGT\n"


def shown_error(page) -> dict:
    page.wait_for_selector("#input-error:not([hidden])")
    return page.evaluate("""() => ({
        title: document.querySelector('#input-error .error-title').textContent,
        message: document.querySelector('#input-error .error-message').textContent,
        record: document.querySelector('#input-error .error-record')?.textContent ?? null,
        line: Number(document.querySelector('#input-error .error-line')?.textContent ?? 0) || null,
        text: document.querySelector('#input-error .line-text')?.textContent ?? null})""")


def test_an_invalid_fasta_shows_the_apis_error_with_its_record_and_line(ui, server):
    page = ui.page
    page.fill("#fasta", BAD)
    want = ui.run_answer("#predict-run", "/predict/promoter").json()["error"]
    assert want == {**api(server, "/predict/promoter", BAD).json()["error"], "request_id": want["request_id"]}
    assert want["line"] == 5 and want["record_id"] == "bad"
    got = shown_error(page)
    assert got["message"] == want["message"] and got["record"] == want["record_id"] and got["line"] == want["line"]
    assert f"422 {want['code']}" in got["title"] and got["text"] == "ACGTXACGT"
    assert want["request_id"] in page.inner_text("#input-error")
    assert page.is_hidden("#predict-out")
    page.click("#input-error button")  # "Show line 5 in the input"
    focused, start, end = page.evaluate("() => [document.activeElement.id, document.activeElement.selectionStart, "
                                        "document.activeElement.selectionEnd]")
    assert focused == "fasta" and BAD[start:end] == "ACGTXACGT"

    # an explanation sends the record alone; its line is still counted in the whole input
    ui.tab("explain")
    page.select_option("#explain-record", label="bad (17 nt)")
    alone = ui.run_answer("#explain-run", "/explain/promoter").json()["error"]
    assert alone["line"] == 3 and alone["record_id"] == "bad"
    got = shown_error(page)
    assert got["record"] == "bad" and got["line"] == 5 and got["text"] == "ACGTXACGT"

    # a malformed file: a record with no sequence
    ui.tab("predict")
    page.fill("#fasta", ">empty\n\n>next\nACGT\n")
    want = ui.run_answer("#predict-run", "/predict/promoter").json()["error"]
    assert want["code"] == "invalid_fasta"
    got = shown_error(page)
    assert (got["message"], got["record"], got["line"]) == (want["message"], want["record_id"], want["line"])
    assert f"400 {want['code']}" in got["title"]


# ---- Models -----------------------------------------------------------------------------------------


def test_models_shows_each_models_card_with_its_data_split_and_test_metrics(ui, server):
    page = ui.page
    ui.tab("models")
    catalogue = api(server, "/models", method="GET").json()
    assert page.locator("#models-list article.card").count() == len(catalogue["models"])
    for info in catalogue["models"]:
        card = page.locator(f'#models-list article[data-model="{info["task"]}/{info["name"]}"]')
        text = card.inner_text()
        data = info["card"]["training"]["data"]
        assert info["card"]["description"] in text and data["split"] in text
        assert all(f"{split} {n:,}" in text for split, n in data["sizes"].items())
        metrics = info["card"]["metrics"]["test"]
        keys = ("accuracy", "mcc", "auroc", "n") if info["task"] == "promoter" else ("macro_auroc", "micro_auroc", "n")
        for key in keys:
            cell = card.locator(f'td[data-metric="test.{key}"]')
            assert float(cell.get_attribute("data-value")) == metrics[key]
            assert cell.inner_text() == (f"{metrics[key]:,}" if key == "n" else f"{metrics[key]:.3f}")


# ---- Jobs -------------------------------------------------------------------------------------------


def has_jobs(server) -> bool:
    return "/jobs" in api(server, "/openapi.json", method="GET").json()["paths"]


def job_state(page, job: str) -> str | None:
    return page.get_attribute(f'#jobs-table tr[data-job="{job}"]', "data-state")


def test_jobs_that_the_server_does_not_run_are_said_plainly(ui, server):
    page = ui.page
    if has_jobs(server):  # answer as a server without jobs does
        page.route(lambda url: urlparse(url).path == "/jobs", lambda route: route.fulfill(
            status=404, json={"error": {"code": "not_found", "message": "Not Found"}}))
    ui.run("#example")
    ui.tab("jobs")
    ui.run("#job-submit")
    assert page.is_visible("#jobs-unavailable")
    assert "does not run jobs (POST /jobs answered 404)" in page.inner_text("#jobs-unavailable")
    assert page.is_hidden("#input-error")


def test_jobs_run_show_their_progress_and_their_result_downloads(ui, server):
    if not has_jobs(server):
        pytest.skip("this server has no /jobs endpoints in its OpenAPI; the Jobs view's answer to a 404 is "
                    "checked by test_jobs_that_the_server_does_not_run_are_said_plainly")
    page = ui.page
    ui.run("#example")
    ui.tab("jobs")
    page.select_option("#job-kind", "predict")
    page.select_option("#job-format", "csv")
    answer = ui.run_answer("#job-submit", "/jobs")
    assert answer.status == 202 and query(answer.url)["kind"] == "predict" and query(answer.url)["format"] == "csv"
    assert answer.request.post_data_buffer == PROMOTER_EXAMPLE.encode()
    job = answer.json()["id"]
    wait_until(page, "document.querySelector(`#jobs-table tr[data-job='${arg}']`)?.dataset.state === 'succeeded'", job)
    state = api(server, f"/jobs/{job}", method="GET").json()
    assert state["state"] == "succeeded"
    progress = page.locator(f'#jobs-table tr[data-job="{job}"] td[data-done]')
    assert int(progress.get_attribute("data-done")) == state["progress"]["done"]
    assert progress.get_attribute("data-total") == str(state["progress"]["total"])
    got, body, _ = ui.download_answer(f'#jobs-table tr[data-job="{job}"] button.download', f"/jobs/{job}/result")
    assert got == body == api(server, f"/jobs/{job}/result", method="GET").content
    same_output(got, api(server, "/predict/promoter", PROMOTER_EXAMPLE, {"format": "csv"}).content)
    page.click(f'#jobs-table tr[data-job="{job}"] button.delete')
    page.wait_for_selector(f'#jobs-table tr[data-job="{job}"]', state="detached")
    assert api(server, f"/jobs/{job}", method="GET").status_code == 404

    # a long scan job, cancelled
    page.fill("#fasta", fasta_records(PROMOTER_EXAMPLE)["synthetic_locus:10001-16000"])
    ui.tab("scan")
    page.fill("#scan-stride", "1")
    ui.tab("jobs")
    page.select_option("#job-kind", "scan")
    answer = ui.run_answer("#job-submit", "/jobs")
    assert query(answer.url)["stride"] == "1" and query(answer.url)["kind"] == "scan"
    job = answer.json()["id"]
    page.click(f'#jobs-table tr[data-job="{job}"] button.cancel')
    wait_until(page, "document.querySelector(`#jobs-table tr[data-job='${arg}']`).dataset.state === 'cancelled'", job)
    assert api(server, f"/jobs/{job}", method="GET").json()["state"] == "cancelled"


# ---- the API key, the keyboard, the widths ------------------------------------------------------------


def test_the_api_key_is_asked_for_sent_and_kept_for_the_browser_session_only(browser, tmp_path):
    models = tmp_path / "models" / "promoter"
    models.mkdir(parents=True)
    (models / "cnn_bilstm_max").symlink_to(MODELS_DIR / "promoter" / "cnn_bilstm_max")
    key = "s3cret-lab-key"
    env = {"DNABERT_MODELS_DIR": str(tmp_path / "models"), "DNABERT_API_KEY": key,
           "DNABERT_DEFAULT_PROMOTER_MODEL": "cnn_bilstm_max"}
    with ServerProcess(tmp_path / "server.log", env=env) as server:
        first = PageUnderTest(browser, server.base)
        page = first.page
        first.open()
        page.wait_for_selector("#key-box:not([hidden])")
        page.fill("#api-key", "not-the-key")
        page.press("#api-key", "Enter")
        wait_until(page, "document.getElementById('key-note').textContent.includes('did not accept')")
        page.fill("#api-key", key)
        page.click("#key-save")
        page.wait_for_selector("#model option[value=cnn_bilstm_max]", state="attached")
        page.fill("#fasta", PROMOTER_EXAMPLE)
        answer = first.run_answer("#predict-run", "/predict/promoter")
        assert answer.request.headers["authorization"] == f"Bearer {key}"
        for row, res in zip(table_rows(page), answer.json()["results"], strict=True):
            assert_shown(row["probability"], res["probability"])
        same_output(answer.body(), api(server, "/predict/promoter", PROMOTER_EXAMPLE, key=key).content)
        assert page.evaluate("sessionStorage.getItem('dnabert-api-key')") == key
        assert page.evaluate("localStorage.length") == 0 and key not in page.evaluate("document.cookie")
        first.close()

        later = PageUnderTest(browser, server.base)  # another browser session: no key
        later.open()
        later.page.wait_for_selector("#key-box:not([hidden])")
        assert later.page.evaluate("sessionStorage.getItem('dnabert-api-key')") is None
        later.close()


UNLABELLED_JS = """() => [...document.querySelectorAll('input, select, textarea, button')].filter(c => {
    const named = (c.labels && [...c.labels].some(l => l.textContent.trim())) || c.getAttribute('aria-label')
        || (c.getAttribute('aria-labelledby') || '').split(' ').some(id => document.getElementById(id)?.textContent.trim())
        || (c.tagName === 'BUTTON' && c.textContent.trim());
    return !named;
}).map(c => c.outerHTML.slice(0, 120))"""


def test_every_control_is_labelled_and_the_page_works_from_the_keyboard(ui, server):
    page = ui.page
    # from the top of the page, Tab reaches the text box, the example button and Predict; Enter runs them
    reached = []
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
        if reached[-1] == "predict-run":
            break
    assert reached.index("fasta") < reached.index("example") < reached.index("tab-predict") < reached.index("predict-run")
    page.focus("#example")
    before = ui.finished()
    page.keyboard.press("Enter")
    wait_until(page, "Number(document.body.dataset.finished) > arg", before)
    page.focus("#predict-run")
    before = ui.finished()
    page.keyboard.press("Enter")
    wait_until(page, "Number(document.body.dataset.finished) > arg", before)
    assert len(table_rows(page)) == len(fasta_records(PROMOTER_EXAMPLE))
    page.focus("#predict-table th[data-col=length] button")
    page.keyboard.press("Enter")
    assert page.get_attribute("#predict-table th[data-col=length]", "aria-sort") == "descending"

    # the tabs: arrow keys, Home and End
    page.focus("#tab-predict")
    for key, tab in (("ArrowRight", "scan"), ("ArrowRight", "explain"), ("End", "models"), ("Home", "predict"),
                     ("ArrowLeft", "models"), ("Home", "predict"), ("ArrowRight", "scan")):
        page.keyboard.press(key)
        assert page.evaluate("document.activeElement.id") == f"tab-{tab}"
        assert page.get_attribute(f"#tab-{tab}", "aria-selected") == "true" and page.is_visible(f"#panel-{tab}")

    # every control, those drawn with the results too, has a name
    ui.run("#scan-run")
    page.click("#scan-regions tbody tr:first-child button")
    assert page.evaluate(UNLABELLED_JS) == []


@pytest.mark.parametrize("width", [1280, 390])
def test_every_view_fits_the_width_of_the_window(browser, server, width):
    session = PageUnderTest(browser, server.base, width=width, height=900)
    page = session.page
    session.open()
    session.run("#example")
    session.run("#predict-run")
    for view in ("scan", "explain"):
        session.tab(view)
        session.run(f"#{view}-run")
    for view in ("predict", "scan", "explain", "jobs", "models"):
        session.tab(view)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, view
        for tab in page.locator("[role=tab]").all():
            box = tab.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, view
        size = page.eval_on_selector(f"#panel-{view} .help", "p => parseFloat(getComputedStyle(p).fontSize)")
        assert size >= 12, view
    session.close()


# ---- screenshots ----------------------------------------------------------------------------------------


def shoot(page, path: Path, element: str = "#views", whole: bool = True) -> Path:
    """At a desktop width the page (``whole``: all of it, else what the window shows); at a
    phone's width ``element`` (all of it, or what the window shows of it from its top)."""
    page.evaluate("document.activeElement.blur()")
    if page.viewport_size["width"] >= 1000:
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=path, full_page=whole)
    elif whole:
        page.locator(element).screenshot(path=path)
    else:
        page.eval_on_selector(element, "e => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY)")
        page.screenshot(path=path)
    return path


def screenshots(out: Path = IMAGES) -> list[Path]:
    """Every view at 1280 and 390 px wide, run on the bundled example, to ``docs/images/``."""
    from playwright.sync_api import sync_playwright

    problem = browser_problem()
    if problem:
        raise SystemExit(problem)
    written = []
    with ServerProcess(Path(tempfile.mkdtemp()) / "server.log") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        for width, height in ((1280, 1000), (390, 844)):
            session = PageUnderTest(browser, server.base, width=width, height=height)
            page = session.page

            session.open()
            session.run("#example")
            session.run("#predict-run")
            written.append(shoot(page, out / f"web_predict_{width}.png"))
            session.tab("scan")
            session.run("#scan-run")
            written.append(shoot(page, out / f"web_scan_{width}.png"))
            session.tab("explain")
            session.run("#explain-run")
            written.append(shoot(page, out / f"web_explain_{width}.png"))
            session.tab("jobs")
            session.run("#job-submit")
            if page.is_hidden("#jobs-unavailable"):
                wait_until(page, "[...document.querySelectorAll('#jobs-table tr[data-state]')]"
                                 ".every(r => !['queued', 'running'].includes(r.dataset.state))")
            written.append(shoot(page, out / f"web_jobs_{width}.png"))
            session.tab("models")
            written.append(shoot(page, out / f"web_models_{width}.png", whole=False))  # the first cards
            if HAS_LNCRNA:
                session.tab("predict")
                page.select_option("#task", "lncrna-localization")
                session.run("#example")
                session.run("#predict-run")
                written.append(shoot(page, out / f"web_lncrna_{width}.png"))
                page.select_option("#task", "promoter")
            page.fill("#fasta", BAD)
            session.run("#predict-run")
            written.append(shoot(page, out / f"web_error_{width}.png", "#input"))
            session.close()
        browser.close()
    return written


if __name__ == "__main__":
    if "--screenshots" not in sys.argv:
        raise SystemExit("usage: python -m tests.web.test_page --screenshots")
    print(json.dumps([str(p.relative_to(REPO)) for p in screenshots()], indent=1))
