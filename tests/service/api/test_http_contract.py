"""The HTTP contract a new user (and a hostile client) meets first: unknown query parameters,
output-format negotiation (``format=`` and ``Accept`` with q-values), ``405`` with ``Allow``, the
body forms the OpenAPI schema states (``application/octet-stream`` and no Content-Type read as
FASTA), ``GET /`` pointing to the docs, and unexpected errors counted in the metrics.
"""

from __future__ import annotations

import gzip
import re

import pytest

from service.api.negotiation import UnsupportedFormat, choose_format, parse_accept
from service.runtime.inference import InferenceService
from tests.service.robustness import (
    FASTA,
    HAS_LNCRNA,
    LNCRNA,
    PROMOTER,
    assert_error,
    make_settings,
    needs_models,
    run,
    serving,
    small_models_dir,
)

BODY = b">a first\nTTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC\n>b\nACGTTGCAACGTNNACGUUGCA\n"
OFFERED = ("application/json", "text/csv", "text/tab-separated-values")


def _settings(tmp_path):
    return make_settings(small_models_dir(tmp_path, "base", lncrna=True))


def _requests_total(client, endpoint: str, model: str, status: int) -> float:
    registry = client.app.state.service.metrics.registry
    return registry.get_sample_value("dnabert_requests_total",
                                     {"endpoint": endpoint, "model": model, "status": str(status)}) or 0.0


# ------------------------------------------------------------------------------------------
# unknown query parameters


@needs_models
def test_an_unknown_query_parameter_is_refused_naming_it_and_the_accepted_ones(tmp_path):
    async def body():
        async with serving(_settings(tmp_path)) as client:
            out = {"lnc": await client.post(LNCRNA, params={"threshold_nucleolus": "0.9"}, content=BODY,
                                            headers=FASTA),
                   "promoter": await client.post(PROMOTER, params={"treshold": "0.9", "format": "csv"},
                                                 content=BODY, headers=FASTA),
                   # refused before the body is read: a body that is not FASTA does not matter
                   "before-body": await client.post(PROMOTER, params={"x": "1"}, content=b"\x00garbage",
                                                    headers=FASTA),
                   "known": await client.post(PROMOTER, params={"threshold": "0.9"}, content=BODY, headers=FASTA),
                   "counted": _requests_total(client, "promoter", "base", 422)}
        return out

    out = run(body())
    if HAS_LNCRNA:
        err = assert_error(out["lnc"], 422, "invalid_parameter")
        assert "'threshold_nucleolus'" in err["message"] and "did you mean 'threshold_nucleus'" in err["message"]
        for name in ("model", "format", "threshold_nucleus", "threshold_cytoplasm", "threshold_extracellular_vesicle"):
            assert name in err["message"].split("accepted:")[1], err
    err = assert_error(out["promoter"], 422, "invalid_parameter")
    assert "'treshold'" in err["message"] and "accepted: model, format, threshold" in err["message"], err
    assert_error(out["before-body"], 422, "invalid_parameter")
    assert out["known"].status_code == 200
    assert out["counted"] == 2  # refusals are counted like every other answer


# ------------------------------------------------------------------------------------------
# format negotiation


@pytest.mark.parametrize(("accept", "expected"), [
    (None, "json"),
    ("", "json"),
    ("*/*", "json"),
    ("application/*", "json"),
    ("text/*", "csv"),
    ("text/csv", "csv"),
    ("TEXT/CSV; charset=utf-8", "csv"),
    ("text/tab-separated-values", "tsv"),
    ("application/json, text/csv", "json"),
    ("text/csv;q=0.5, text/tab-separated-values", "tsv"),
    ("application/json;q=0.1, text/csv;q=0.9", "csv"),
    ("text/csv;q=0.5, application/json;q=0.5", "json"),  # a tie: the first offered
    ("text/csv;q=0, */*", "json"),
    ("application/json;q=0, */*;q=0.1", "csv"),  # the most specific range decides: JSON is refused
    ("text/*;q=0.2, text/tab-separated-values;q=0.3, */*;q=0.1", "tsv"),
    ("image/png, text/csv;q=0.01", "csv"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json"),  # a browser's
    ("not a media range", "json"),  # nothing valid in it: as if absent
])
def test_accept_header_negotiation(accept, expected):
    assert choose_format(None, accept) == expected


@pytest.mark.parametrize("accept", ["image/png", "text/csv;q=0", "application/xml, text/html",
                                    "application/json;q=0, text/*;q=0", "*/*;q=0"])
def test_an_accept_header_that_rules_out_every_offer_is_406(accept):
    with pytest.raises(UnsupportedFormat) as info:
        choose_format(None, accept)
    assert info.value.http_status == 406 and info.value.code == "unsupported_format"
    assert all(media in info.value.message for media in OFFERED), info.value.message


def test_format_parameter_wins_and_is_checked():
    assert choose_format("CSV", "application/json") == "csv"
    assert choose_format("json", "image/png") == "json"
    for bad in ("xml", "", "jsonx", "text/csv"):
        with pytest.raises(UnsupportedFormat, match="json, csv, tsv"):
            choose_format(bad, None)


def test_accept_parsing_reads_q_values_and_drops_what_is_malformed():
    assert parse_accept("text/csv;q=0.5;foo=bar, application/json; level=1 ;Q=0.2, */*") == [
        ("text", "csv", 0.5), ("application", "json", 0.2), ("*", "*", 1.0)]
    assert parse_accept("text/csv;q=2, text/csv;q=x, */csv, csv, /") == []


@needs_models
def test_output_format_negotiation_over_http(tmp_path):
    cases = {  # name: (params, Accept, expected status, expected content type)
        "format=xml": ({"format": "xml"}, None, 406, None),
        "Accept image/png": ({}, "image/png", 406, None),
        "Accept text/csv;q=0": ({}, "text/csv;q=0", 406, None),
        "Accept */*": ({}, "*/*", 200, "application/json"),
        "no Accept": ({}, None, 200, "application/json"),
        "Accept text/*": ({}, "text/*", 200, "text/csv"),
        "Accept q-values": ({}, "text/csv;q=0.4, text/tab-separated-values;q=0.8", 200, "text/tab-separated-values"),
        "format=tsv over Accept": ({"format": "tsv"}, "application/json", 200, "text/tab-separated-values"),
    }

    async def body():
        async with serving(_settings(tmp_path)) as client:
            out = {}
            for name, (params, accept, _, _) in cases.items():
                headers = dict(FASTA, **({"Accept": accept} if accept is not None else {}))
                out[name] = await client.post(PROMOTER, params=params, content=BODY, headers=headers)
            out["counted"] = _requests_total(client, "promoter", "base", 406)
        return out

    out = run(body())
    for name, (_, _, status, media) in cases.items():
        resp = out[name]
        if status == 406:
            err = assert_error(resp, 406, "unsupported_format")
            listed = ("json, csv, tsv",) if name.startswith("format") else OFFERED
            assert all(item in err["message"] for item in listed), (name, err)
        else:
            assert resp.status_code == 200, (name, resp.text[:300])
            assert resp.headers["content-type"].split(";")[0] == media, (name, resp.headers)
    assert out["counted"] == 3


# ------------------------------------------------------------------------------------------
# 405, GET /, the body forms and the schema


def test_405_names_the_allowed_methods(tmp_path):
    async def body():
        async with serving(_settings(tmp_path), start=False) as client:
            return [await client.get(PROMOTER), await client.delete(LNCRNA), await client.post("/healthz")]

    get_predict, delete_predict, post_probe = run(body())
    for resp, allowed in ((get_predict, "POST"), (delete_predict, "POST"), (post_probe, "GET")):
        assert_error(resp, 405, "method_not_allowed")
        assert allowed in [m.strip() for m in resp.headers["allow"].split(",")], resp.headers


def test_the_root_points_to_the_documentation(tmp_path):
    async def body():
        async with serving(_settings(tmp_path), start=False) as client:
            root = await client.get("/")
            links = {key: await client.get(root.json()[key]) for key in ("docs", "openapi", "health")}
            return root, links, client.app.openapi()

    root, links, spec = run(body())
    assert root.status_code == 200 and root.headers["content-type"].startswith("application/json")
    index = root.json()
    assert index["docs"] == "/docs" and index["openapi"] == "/openapi.json" and index["health"] == "/healthz"
    assert index["version"] and index["service"]
    assert all(resp.status_code == 200 for resp in links.values()), {k: r.status_code for k, r in links.items()}
    assert "/" not in spec["paths"]


def test_the_schema_states_the_body_forms_and_the_constraints():
    from service.api.app import create_app

    settings = make_settings(max_records=7, max_sequence_length=123, max_upload_bytes=4096)
    spec = create_app(settings).openapi()
    schemas = spec["components"]["schemas"]
    for path in (PROMOTER, LNCRNA):
        op = spec["paths"][path]["post"]
        content = op["requestBody"]["content"]
        assert {"multipart/form-data", "text/plain", "text/x-fasta", "application/octet-stream",
                "application/json"} <= set(content)
        assert content["application/octet-stream"]["schema"]["format"] == "binary"
        assert "no Content-Type" in op["requestBody"]["description"]
        assert content["text/plain"]["schema"]["$ref"] == "#/components/schemas/FastaText"
        params = {p["name"]: p for p in op["parameters"]}
        fmt = params["format"]["schema"]
        assert fmt["enum"] == ["json", "csv", "tsv"] and "pattern" not in str(fmt)
        assert "406" in op["responses"] and "404" in op["responses"]
    fasta = schemas["FastaText"]
    assert re.search(fasta["pattern"], " \n>a\nACGT") and not re.search(fasta["pattern"], "ACGT\n>a\nACGT")
    assert all(str(n) in fasta["description"] for n in (7, 123, 4096))
    assert schemas["PredictRequest"]["properties"]["sequences"]["maxItems"] == 7
    item = schemas["SequenceIn"]["properties"]
    assert item["id"]["maxLength"] == 1000 and item["id"]["minLength"] == 1
    assert re.fullmatch(item["id"]["pattern"], "chr1:100-200(+)") and not re.search(item["id"]["pattern"], "a\tb")
    assert not re.search(item["id"]["pattern"], "a\u202eb")
    assert re.search(item["sequence"]["pattern"], " acgu NRY\n") and not re.search(item["sequence"]["pattern"], "AC-GT")
    assert not re.search(item["sequence"]["pattern"], " \n")


@needs_models
def test_octet_stream_and_no_content_type_are_read_as_fasta(tmp_path):
    async def body():
        async with serving(_settings(tmp_path)) as client:
            out = {"text/plain": await client.post(PROMOTER, content=BODY, headers=FASTA)}
            for name, content, headers in (
                    ("octet-stream", BODY, {"Content-Type": "application/octet-stream"}),
                    ("octet-stream gzip", gzip.compress(BODY), {"Content-Type": "application/octet-stream"}),
                    ("no Content-Type", BODY, {}),
                    ("no Content-Type gzip", gzip.compress(BODY), {})):
                resp = await client.post(PROMOTER, content=content, headers=headers)
                assert headers or "content-type" not in resp.request.headers  # really sent without one
                out[name] = resp
        return out

    out = run(body())
    expected = out.pop("text/plain").json()
    for name, resp in out.items():
        assert resp.status_code == 200, (name, resp.text[:300])
        assert resp.json() == expected, name


# ------------------------------------------------------------------------------------------
# unexpected errors are counted


class _Bug(InferenceService):
    async def predict(self, *args, **kwargs):
        raise RuntimeError("an unexpected bug")


@needs_models
def test_an_unexpected_error_is_answered_500_and_counted(tmp_path):
    settings = _settings(tmp_path)

    async def body():
        async with serving(settings, _Bug(settings), raise_app_exceptions=False) as client:
            resp = await client.post(PROMOTER, content=BODY, headers=FASTA)
            metrics = await client.get("/metrics")
            return resp, _requests_total(client, "promoter", "base", 500), metrics.text

    resp, counted, text = run(body())
    assert_error(resp, 500, "internal_error")
    assert counted == 1
    assert 'dnabert_requests_total{endpoint="promoter",model="base",status="500"} 1.0' in text
    assert 'dnabert_sequences_total{endpoint="promoter",model="base",status="500"} 2.0' in text
