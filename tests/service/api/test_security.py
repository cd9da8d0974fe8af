"""Security: optional API key, CORS off unless configured, nothing internal in responses, model names
looked up (never used as paths), request ids in responses and logs."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading

import pytest

from service.api import security as api_module
from service.runtime.inference import InferenceService
from tests.service.robustness import (
    FASTA,
    LNCRNA,
    PROMOTER,
    assert_error,
    fasta,
    make_settings,
    needs_models,
    no_leak,
    run,
    serving,
    small_models_dir,
)

pytestmark = needs_models

KEY = "s3cret-key-for-tests-0123456789"
BODY = fasta([("a", "ACGTTGCAACGTAGCTAGCTAGCATCGATCGA")])


def _settings(tmp_path, **overrides):
    return make_settings(small_models_dir(tmp_path, "base", lncrna=True), **overrides)


# ------------------------------------------------------------------------------------------
# API key


def test_api_key_guards_predictions_and_models_but_not_probes(tmp_path, monkeypatch, caplog):
    compared = []
    real_compare = api_module.hmac.compare_digest

    def compare(a, b):
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(api_module.hmac, "compare_digest", compare)
    caplog.set_level(logging.INFO)
    pulled = []

    async def never_read():
        pulled.append(1)
        yield b">a\nACGT\n"

    async def body():
        out = {}
        async with serving(_settings(tmp_path, api_key=KEY)) as client:
            good = {"Authorization": f"Bearer {KEY}"}
            out["none"] = await client.post(PROMOTER, content=BODY, headers=FASTA)
            out["wrong"] = await client.post(PROMOTER, content=BODY, headers={**FASTA, "Authorization": "Bearer nope"})
            out["prefix"] = await client.post(PROMOTER, content=BODY,
                                              headers={**FASTA, "Authorization": f"Bearer {KEY[:-1]}"})
            out["basic"] = await client.post(PROMOTER, content=BODY, headers={**FASTA, "Authorization": f"Basic {KEY}"})
            out["bare"] = await client.post(PROMOTER, content=BODY, headers={**FASTA, "Authorization": KEY})
            out["empty"] = await client.post(PROMOTER, content=BODY, headers={**FASTA, "Authorization": "Bearer "})
            out["lnc-none"] = await client.post(LNCRNA, content=BODY, headers=FASTA)
            out["models-none"] = await client.get("/models")
            # refused before the body is read, and before parameters are looked at
            out["stream-none"] = await client.post(PROMOTER, params={"threshold": "7"}, content=never_read(),
                                                   headers=FASTA)
            out["ok"] = await client.post(PROMOTER, content=BODY, headers={**FASTA, **good})
            out["ok-lower-scheme"] = await client.post(PROMOTER, content=BODY,
                                                       headers={**FASTA, "Authorization": f"bearer {KEY}"})
            out["lnc-ok"] = await client.post(LNCRNA, content=BODY, headers={**FASTA, **good})
            out["models-ok"] = await client.get("/models", headers=good)
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
                out[path] = await client.get(path)
        return out

    out = run(body())
    for name in ("none", "wrong", "prefix", "basic", "bare", "empty", "lnc-none", "models-none", "stream-none"):
        err = assert_error(out[name], 401, "unauthorized")
        challenge = out[name].headers["www-authenticate"]
        assert challenge.startswith("Bearer"), name
        assert KEY not in out[name].text and KEY not in str(out[name].headers), name
        assert ("invalid_token" in challenge) == (name in ("wrong", "prefix")), (name, challenge)
        assert "API key" in err["message"]
    assert pulled == []
    for name in ("ok", "ok-lower-scheme", "lnc-ok", "models-ok"):
        assert out[name].status_code == 200, (name, out[name].text)
    assert out["ok"].json() == out["ok-lower-scheme"].json()
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert out[path].status_code == 200, path
    assert compared and all(a == len(KEY) or b == len(KEY) for a, b in compared)  # hmac.compare_digest
    assert KEY not in caplog.text
    assert "invalid API key" in caplog.text

    spec = out["/openapi.json"].json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, method in ((PROMOTER, "post"), (LNCRNA, "post"), ("/models", "get")):
        op = spec["paths"][path][method]
        assert op["security"] == [{"HTTPBearer": []}], path
        assert "401" in op["responses"], path
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "security" not in spec["paths"][path]["get"], path


def test_without_api_key_everything_is_open_and_documented_so(tmp_path):
    async def body():
        async with serving(_settings(tmp_path)) as client:
            return (await client.post(PROMOTER, content=BODY, headers={**FASTA, "Authorization": "Bearer anything"}),
                    await client.get("/models"), (await client.get("/openapi.json")).json())

    predict, models, spec = run(body())
    assert predict.status_code == 200 and models.status_code == 200
    assert "securitySchemes" not in spec.get("components", {})
    assert "401" not in spec["paths"][PROMOTER]["post"]["responses"]


def test_api_key_from_the_environment(monkeypatch, tmp_path):
    from service.settings import Settings

    monkeypatch.setenv("DNABERT_API_KEY", KEY)
    monkeypatch.setenv("DNABERT_CORS_ORIGINS", "https://a.example, https://b.example")
    s = Settings(models_dir=tmp_path)
    assert s.api_key is not None and s.api_key.get_secret_value() == KEY
    assert KEY not in repr(s) and KEY not in str(s.model_dump())
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("DNABERT_API_KEY", "")
    monkeypatch.setenv("DNABERT_CORS_ORIGINS", '["https://c.example"]')
    s = Settings(models_dir=tmp_path)
    assert s.api_key is None and s.cors_origins == ["https://c.example"]
    monkeypatch.delenv("DNABERT_CORS_ORIGINS")
    assert Settings(models_dir=tmp_path).cors_origins == []


# ------------------------------------------------------------------------------------------
# CORS


def test_cors_is_off_unless_configured(tmp_path):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}

    async def body():
        out = {}
        async with serving(_settings(tmp_path)) as client:
            out["off-preflight"] = await client.options(PROMOTER, headers=preflight)
            out["off-simple"] = await client.post(PROMOTER, content=BODY,
                                                  headers={**FASTA, "Origin": "https://evil.example"})
        async with serving(_settings(tmp_path, cors_origins=["https://app.example"])) as client:
            out["on-preflight"] = await client.options(PROMOTER, headers={**preflight,
                                                                          "Origin": "https://app.example"})
            out["on-simple"] = await client.post(PROMOTER, content=BODY,
                                                 headers={**FASTA, "Origin": "https://app.example"})
            out["on-other"] = await client.post(PROMOTER, content=BODY,
                                                headers={**FASTA, "Origin": "https://evil.example"})
            out["on-other-preflight"] = await client.options(PROMOTER, headers=preflight)
        return out

    out = run(body())
    for name in ("off-preflight", "off-simple", "on-other", "on-other-preflight"):
        assert "access-control-allow-origin" not in out[name].headers, name
    assert out["off-preflight"].status_code == 405
    assert out["off-simple"].status_code == 200
    assert out["on-preflight"].status_code == 200
    assert out["on-preflight"].headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in out["on-preflight"].headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in out["on-preflight"].headers
    assert out["on-simple"].headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in out["on-simple"].headers["access-control-expose-headers"].lower()
    assert out["on-other-preflight"].status_code == 400


# ------------------------------------------------------------------------------------------
# nothing internal in responses


class _BuggyPredict(InferenceService):
    """An unexpected bug whose message carries server paths."""

    async def predict(self, *args, **kwargs):
        raise RuntimeError(f"{self.settings.models_dir}/promoter/base/model.onnx: boom at /usr/lib/x.so")


class _BrokenRuntime(InferenceService):
    """A runtime that fails every batch, with a server path in its message."""

    @staticmethod
    def batch_runner(model):
        def run(batch):
            raise RuntimeError(f"{model.folder}/model.onnx: [ONNXRuntimeError] node /encoder/layer.0 failed")
        return run


def test_no_stack_traces_or_server_paths_in_any_error(tmp_path, caplog):
    settings = _settings(tmp_path)
    caplog.set_level(logging.INFO)

    async def body():
        out = []
        async with serving(settings, start=False) as client:
            out.append(await client.post(PROMOTER, content=BODY, headers=FASTA))  # not ready
        with pytest.raises(Exception) as info:  # every warm-up batch fails: start-up stops
            await _BrokenRuntime(settings).start()
        async with serving(settings, _BuggyPredict(settings), raise_app_exceptions=False) as client:
            out.append(await client.post(PROMOTER, content=BODY, headers=FASTA))  # unexpected bug -> 500
            out.append(await client.get("/no/such/path"))
            out.append(await client.get("/../../etc/passwd"))
            out.append(await client.delete(PROMOTER))
            out.append(await client.post(PROMOTER, params={"model": "../../../etc/passwd"}, content=BODY,
                                         headers=FASTA))
            out.append(await client.post(PROMOTER, content=b"\x00" * 10, headers=FASTA))
            out.append(await client.post(PROMOTER, content=b"{", headers={"Content-Type": "application/json"}))
            out.append(await client.post(LNCRNA, content=b">a\nACGT\n", headers={"Content-Type": "image/png"}))
        return out, str(info.value)

    out, startup_error = run(body())
    assert [r.status_code for r in out] == [503, 500, 404, 404, 405, 404, 400, 422, 415]
    for resp in out:
        no_leak(resp.text, tmp_path, settings.models_dir)
        assert "onnx" not in resp.text.lower() and "boom" not in resp.text
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["x-request-id"]
    assert out[1].json()["error"]["code"] == "internal_error"
    # the operator's error names the folder
    assert re.match(re.escape(str(settings.models_dir)) + r"/[\w-]+/\w+: the warm-up batch failed", startup_error)
    assert "boom" in caplog.text  # ...and the details are in the log, with the request id
    assert any("unexpected error in request" in r.getMessage() for r in caplog.records)


def test_model_names_are_looked_up_never_opened_as_files(tmp_path):
    """An audit hook watches every file the process opens while hostile model names are sent."""
    watching = threading.Event()
    opened: list[str] = []

    def hook(event, args):
        if watching.is_set() and event in ("open", "os.listdir", "os.scandir") and args:
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # cannot be removed; it does nothing unless `watching` is set
    names = ["../../etc/passwd", "/etc/passwd", "..", ".", "promoter/../../../etc/passwd", "base/../base",
             "%2e%2e%2fetc%2fpasswd", "base\x00", "~root", "C:\\Windows\\win.ini", "all/../base"]

    async def body():
        out = {}
        async with serving(_settings(tmp_path)) as client:
            watching.set()
            try:
                for n in names:
                    out[PROMOTER, n] = await client.post(PROMOTER, params={"model": n}, content=BODY, headers=FASTA)
                    out[LNCRNA, n] = await client.post(LNCRNA, params={"model": n}, content=BODY, headers=FASTA)
            finally:
                watching.clear()
        return out

    out = run(body())
    for resp in out.values():
        assert_error(resp, 404, "model_not_found")
        assert "root:" not in resp.text and "[fonts]" not in resp.text
    suspicious = [p for p in opened if "passwd" in p or "win.ini" in p or ".." in p or "~" in p]
    assert suspicious == []


# ------------------------------------------------------------------------------------------
# request ids


def test_request_ids_in_responses_and_logs(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dnabert")

    async def body():
        out = {}
        async with serving(_settings(tmp_path)) as client:
            out["given"] = await client.post(PROMOTER, content=BODY, headers={**FASTA, "X-Request-ID": "trace-0001"})
            out["given-error"] = await client.post(PROMOTER, content=b"ACGT", headers={**FASTA,
                                                                                     "X-Request-ID": "trace-0002"})
            out["generated"] = await client.post(PROMOTER, content=BODY, headers=FASTA)
            out["control"] = await client.post(PROMOTER, content=BODY, headers={**FASTA, "X-Request-ID": "a\tb"})
            out["long"] = await client.get("/healthz", headers={"X-Request-ID": "r" * 201})
            out["probe"] = await client.get("/readyz", headers={"X-Request-ID": "probe-7"})
        return out

    out = run(body())
    assert out["given"].headers["x-request-id"] == "trace-0001"
    assert out["given-error"].json()["error"]["request_id"] == "trace-0002"
    generated = out["generated"].headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    for name in ("control", "long"):
        assert re.fullmatch(r"[0-9a-f]{32}", out[name].headers["x-request-id"]), name
    assert out["probe"].headers["x-request-id"] == "probe-7"
    access = [r.getMessage() for r in caplog.records if r.name == "dnabert.access"]
    for rid, status in (("trace-0001", 200), ("trace-0002", 400), (generated, 200), ("probe-7", 200)):
        assert any(line.startswith(f"request {rid}: ") and f"-> {status} " in line for line in access), (rid, access)
    assert all("\n" not in line for line in access)
    assert json.loads(out["given"].text)["count"] == 1
