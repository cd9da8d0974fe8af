"""The Open Inference Protocol (KServe v2) on the service, as Triton's own HTTP client speaks it.

A real ``dnabert-serve serve`` process on a free loopback port, driven by
``tritonclient.http.InferenceServerClient``: health, server and model metadata, model readiness,
and inference with JSON and binary tensors, whose outputs must equal what ``POST /predict/<task>``
answers for the same sequences (to 1e-6: the v2 outputs are FP32). The error answers
(``{"error": "..."}``, naming the input or output and the element) are checked over HTTP, and
what needs a fresh app (not started, an API key, a full gate) through the ASGI app.
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.contract.taskfile import TaskFile
from service.runtime import defaults
from service.settings import Settings
from tests.service.robustness import (
    HAS_LNCRNA,
    HAS_MODELS,
    MODELS_DIR,
    ServerProcess,
    make_settings,
    no_leak,
    run,
    serving,
    small_models_dir,
)

pytestmark = pytest.mark.skipif(not HAS_MODELS, reason=f"no promoter models in {MODELS_DIR}")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_RECORDS = 40
TOL = 1e-6
DEFAULT = "cnn_bilstm_max"
"""A single served DNABERT-2 model (metadata, embeddings)."""
SERVED_DEFAULT = defaults.default_model(Settings(models_dir=MODELS_DIR), "promoter", TaskFile.load(MODELS_DIR, "promoter"))
"""What answers without model=: promoter/task.json's choice (the operator's setting is not set here)."""
VARIANTS = ("base", "cnn", "bilstm", "cnn_bilstm_max", "cnn_bilstm_avg")
LNC_LABELS = ("nucleus", "cytoplasm", "extracellular_vesicle")


def _sequences() -> list[str]:
    rng = np.random.default_rng(11)
    seqs = ["".join(rng.choice(list("ACGT"), size=n)) for n in (35, 120, 300, 451)]
    return [
        "TTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC",
        seqs[1].lower(),                      # case
        seqs[2].replace("T", "U"),            # RNA
        seqs[3][:40] + "NNRY" + seqs[3][44:],  # ambiguity codes, over 300 bp
        "NNNNNNNNNNNN",                        # no informative base: answered, not scored
        "ACGT ACGT\nACGT",                     # whitespace
        seqs[0],
    ]


SEQUENCES = _sequences()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("v2") / "server.log"
    with ServerProcess(log, env={"DNABERT_MAX_RECORDS": str(MAX_RECORDS)}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    triton = httpclient.InferenceServerClient(url=server.base.removeprefix("http://"), network_timeout=120.0)
    yield triton
    triton.close()


def _predict(server, task: str, model: str | None, sequences: list[str]) -> list[dict]:
    records = [{"id": f"r{i}", "sequence": s} for i, s in enumerate(sequences)]
    resp = httpx.post(f"{server.base}/predict/{task}", params={"model": model} if model else {},
                      json={"sequences": records}, timeout=120.0)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


def _infer(client, name: str, sequences: list[str], outputs: list[str] | None, binary: bool, **kwargs):
    tensor = httpclient.InferInput("sequence", [len(sequences)], "BYTES")
    tensor.set_data_from_numpy(np.array([s.encode() for s in sequences], dtype=object), binary_data=binary)
    wanted = None if outputs is None else [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    return client.infer(name, [tensor], outputs=wanted, **kwargs)


def _close(got: np.ndarray, want: list) -> None:
    """FP32 values against /predict's (None: not scored, NaN here)."""
    want_arr = np.array([np.nan if w is None else w for w in want], dtype=np.float64)
    assert got.dtype == np.float32 and got.shape == want_arr.shape, (got.dtype, got.shape, want_arr.shape)
    assert np.array_equal(np.isnan(got), np.isnan(want_arr)), (got, want_arr)
    ok = ~np.isnan(want_arr)
    assert np.abs(got[ok].astype(np.float64) - want_arr[ok]).max() <= TOL


# ------------------------------------------------------------------------------------------
# health and metadata through tritonclient


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "dnabert-serve" and meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(client):
    meta = client.get_model_metadata(f"promoter-{DEFAULT}")
    assert meta["name"] == f"promoter-{DEFAULT}" and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "sequence", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1]},
                               {"name": "scored", "datatype": "BOOL", "shape": [-1]}]
    ensemble = client.get_model_metadata("promoter-all", model_version="1")
    assert ensemble["platform"] == "ensemble"
    assert {"name": "variant_probabilities", "datatype": "FP32", "shape": [-1, len(VARIANTS)]} in ensemble["outputs"]
    assert client.get_model_metadata("promoter-onehot_cnn")["name"] == "promoter-onehot_cnn"  # a baseline
    if HAS_LNCRNA:
        lnc = client.get_model_metadata("lncrna-localization-lncrna")
        assert lnc["outputs"][0] == {"name": "scores", "datatype": "FP32", "shape": [-1, 3]}
    for name in ("promoter-all", f"promoter-{DEFAULT}", "promoter-base"):
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
    assert not client.is_model_ready("promoter-nope")
    assert not client.is_model_ready("promoter-base", "2")
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_metadata("promoter-nope")
    assert exc.value.status() == "404"
    assert "unknown model 'promoter-nope'" in exc.value.message() and f"promoter-{DEFAULT}" in exc.value.message()


# ------------------------------------------------------------------------------------------
# inference equals /predict


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_embedding_models_equal_the_openai_and_embed_vectors(server, client, binary):
    name = f"promoter-{DEFAULT}-embedding"
    meta = client.get_model_metadata(name)
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 128]},
                               {"name": "scored", "datatype": "BOOL", "shape": [-1]}]
    assert client.is_model_ready(name) and not client.is_model_ready("promoter-onehot_cnn-embedding")
    got = _infer(client, name, SEQUENCES, None, binary)
    vectors, scored = got.as_numpy("embedding"), got.as_numpy("scored")
    assert vectors.dtype == np.float32 and vectors.shape == (len(SEQUENCES), 128)
    assert list(scored) == [True, True, True, True, False, True, True]
    assert np.isnan(vectors[4]).all()
    fasta = "".join(f">r{i}\n{s}\n" for i, s in enumerate(SEQUENCES))
    embed = httpx.post(f"{server.base}/embed", params={"model": f"promoter-{DEFAULT}"}, content=fasta,
                       headers={"Content-Type": "text/x-fasta"}, timeout=120.0).json()["results"]
    _close(vectors[scored].reshape(-1), [x for r in embed if r["embedding"] for x in r["embedding"]])
    openai = httpx.post(f"{server.base}/v1/embeddings", json={"model": f"promoter-{DEFAULT}", "input": SEQUENCES[6]},
                        timeout=60.0).json()["data"][0]["embedding"]
    _close(vectors[6], openai)



@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_promoter_default_model_equals_predict(server, client, binary):
    want = _predict(server, "promoter", None, SEQUENCES)
    result = _infer(client, f"promoter-{SERVED_DEFAULT}", SEQUENCES, ["probability", "scored"], binary, request_id="r-1")
    assert result.get_response()["model_name"] == f"promoter-{SERVED_DEFAULT}"
    assert result.get_response()["model_version"] == "1" and result.get_response()["id"] == "r-1"
    assert {o["name"] for o in result.get_response()["outputs"]} == {"probability", "scored"}
    _close(result.as_numpy("probability"), [r["probability"] for r in want])
    assert result.as_numpy("scored").tolist() == [r["probability"] is not None for r in want]
    assert want[4]["probability"] is None and np.isnan(result.as_numpy("probability")[4])
    assert all(r["model"] == SERVED_DEFAULT for r in want)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_promoter_all_equals_predict(server, client, binary):
    want = _predict(server, "promoter", "all", SEQUENCES)
    result = _infer(client, "promoter-all", SEQUENCES, ["variant_probabilities", "probability"], binary)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["variant_probabilities", "probability"]
    _close(result.as_numpy("probability"), [r["probability"] for r in want])
    variants = result.as_numpy("variant_probabilities")
    assert variants.shape == (len(SEQUENCES), len(VARIANTS))
    for j, name in enumerate(VARIANTS):
        _close(variants[:, j], [None if r["variant_probabilities"] is None else r["variant_probabilities"][name]
                                for r in want])


@pytest.mark.skipif(not HAS_LNCRNA, reason="no lncRNA model")
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_lncrna_scores_equal_predict(server, client, binary):
    want = _predict(server, "lncrna-localization", None, SEQUENCES)
    result = _infer(client, "lncrna-localization-lncrna", SEQUENCES, ["scores", "scored"], binary)
    scores = result.as_numpy("scores")
    assert scores.shape == (len(SEQUENCES), 3)
    for j, label in enumerate(LNC_LABELS):
        _close(scores[:, j], [None if r["scores"] is None else r["scores"][label] for r in want])
    assert result.as_numpy("scored").tolist() == [r["scores"] is not None for r in want]


def test_all_outputs_by_default_in_binary_and_compressed_requests(server, client):
    """Without outputs, tritonclient asks for every output in binary (binary_data_output); the
    request may be gzip or deflate."""
    want = _predict(server, "promoter", "base", SEQUENCES)
    for compression in (None, "gzip", "deflate"):
        result = _infer(client, "promoter-base", SEQUENCES, None, True, request_compression_algorithm=compression)
        outputs = result.get_response()["outputs"]
        assert [o["name"] for o in outputs] == ["probability", "scored"], compression
        assert all("binary_data_size" in o["parameters"] and "data" not in o for o in outputs)
        _close(result.as_numpy("probability"), [r["probability"] for r in want])


def test_json_form_with_nested_data_and_mixed_binary_outputs(server):
    """Shape [N, 1] with rows of one string; one output in JSON (NaN written null), one in binary."""
    want = _predict(server, "promoter", "cnn", SEQUENCES)
    body = {"id": "nested", "inputs": [{"name": "sequence", "datatype": "BYTES", "shape": [len(SEQUENCES), 1],
                                        "data": [[s] for s in SEQUENCES]}],
            "outputs": [{"name": "probability"}, {"name": "scored", "parameters": {"binary_data": True}}]}
    resp = httpx.post(f"{server.base}/v2/models/promoter-cnn/infer", json=body, timeout=120.0)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/octet-stream"
    length = int(resp.headers["inference-header-content-length"])
    head = json.loads(resp.content[:length])
    assert head["id"] == "nested" and head["model_name"] == "promoter-cnn"
    probability, scored = head["outputs"]
    assert probability["shape"] == [len(SEQUENCES)] and probability["data"][4] is None
    _close(np.array([np.nan if v is None else v for v in probability["data"]], dtype=np.float32),
           [r["probability"] for r in want])
    assert scored["parameters"] == {"binary_data_size": len(SEQUENCES)}
    assert np.frombuffer(resp.content[length:], dtype=bool).tolist() == [r["probability"] is not None for r in want]


def test_binary_input_written_by_hand(server):
    """The binary tensor extension without tritonclient: JSON, then each element's 4-byte
    little-endian length and bytes; a JSON-only answer (no header) when no output is binary."""
    seqs = SEQUENCES[:3]
    raw = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in seqs)
    head = json.dumps({"inputs": [{"name": "sequence", "datatype": "BYTES", "shape": [3],
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    resp = httpx.post(f"{server.base}/v2/models/promoter-base/versions/1/infer", content=head + raw,
                      headers={"Inference-Header-Content-Length": str(len(head))}, timeout=120.0)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json" and "inference-header-content-length" not in resp.headers
    out = resp.json()
    assert "id" not in out and out["model_version"] == "1"
    _close(np.array(out["outputs"][0]["data"], dtype=np.float32),
           [r["probability"] for r in _predict(server, "promoter", "base", seqs)])


def test_inference_is_counted_in_the_metrics(server, client):
    _infer(client, "promoter-bilstm", SEQUENCES[:2], ["probability"], False)
    text = httpx.get(f"{server.base}/metrics", timeout=10.0).text
    assert 'dnabert_requests_total{endpoint="v2/promoter",model="bilstm",status="200"}' in text
    assert 'dnabert_sequences_total{endpoint="v2/promoter",model="bilstm",status="200"} 2.0' in text


# ------------------------------------------------------------------------------------------
# errors: {"error": "..."} naming the input, output and element


def _request(data: list | None = None, **changes) -> dict:
    tensor = {"name": "sequence", "datatype": "BYTES", "shape": [2], "data": data or ["ACGTACGT", "TTGACA"]}
    tensor.update(changes.pop("tensor", {}))
    return {"inputs": [tensor], **changes}


def _error(resp: httpx.Response, status: int, *fragments: str) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body["error"])
    no_leak(resp.text)
    return body["error"]


@pytest.mark.parametrize(("body", "status", "fragments"), [
    (_request(["ACGT", "ACXGT"]), 400, ("input 'sequence'", "element 1", "invalid character 'X' at position 3")),
    (_request(["ACGT", ""]), 400, ("element 1", "empty")),
    (_request(["ACGT", "MKVHRSWYDMKVHRSWYDMKVHRSWYD"]), 400, ("element 1", "protein")),
    (_request(["ACGT", 7]), 400, ("input 'sequence'", "element 1 is int, not a string")),
    (_request(["ACGT"]), 400, ("input 'sequence'", "shape holds 2 elements but data has 1")),
    (_request(tensor={"datatype": "FP32"}), 400, ("input 'sequence'", "datatype 'FP32', expected BYTES")),
    (_request(tensor={"name": "seq"}), 400, ("unexpected input 'seq'", "'sequence'")),
    (_request(tensor={"shape": [2, 3]}), 400, ("shape [2, 3] is not [N] or [N, 1]",)),
    (_request(tensor={"shape": [2], "data": [["ACGT"], ["ACGT"]]}), 400, ("element 0: a nested list",)),
    (_request(tensor={"shape": [MAX_RECORDS + 1], "data": ["ACGT"] * (MAX_RECORDS + 1)}), 413,
     (f"holds {MAX_RECORDS + 1} sequences", f"at most {MAX_RECORDS}")),
    (_request(tensor={"data": ["A" * 100_001, "ACGT"]}), 400, ("element 0 is longer than 100000 nt",)),
    (_request(outputs=[{"name": "scores"}]), 400, ("outputs[0]: unknown output 'scores' for model 'promoter-base'",
                                                    "probability, scored")),
    (_request(outputs=[{"name": "probability"}, {"name": "probability"}]), 400, ("asked for twice",)),
    (_request(outputs=[{"name": "probability", "parameters": {"classification": 2}}]), 400,
     ("classification extension is not supported",)),
    (_request(parameters={"priority": 1}), 400, ("parameters: unknown key 'priority'", "binary_data_output")),
    (_request(parameters={"sequence_id": 3}), 400, ("sequence batching is not supported",)),
    (_request(id=42), 400, ("id must be a string",)),
    (_request(model="x"), 400, ("unknown key 'model'", "accepted: id, parameters, inputs, outputs")),
    ({"inputs": []}, 400, ("one input, 'sequence'", "0 inputs")),
    ([1, 2], 400, ("must be a JSON object",)),
])
def test_invalid_requests_are_4xx_naming_what_is_wrong(server, body, status, fragments):
    resp = httpx.post(f"{server.base}/v2/models/promoter-base/infer", json=body, timeout=120.0)
    _error(resp, status, *fragments)


def test_malformed_bodies_and_unknown_models(server):
    url = f"{server.base}/v2/models/promoter-base/infer"
    _error(httpx.post(url, content=b'{"inputs": [', timeout=30.0), 400, "invalid JSON body")
    _error(httpx.post(url, content=b"", timeout=30.0), 400, "empty")
    _error(httpx.post(url, content=b'{"inputs": [], "inputs": []}', timeout=30.0), 400, "more than once")
    _error(httpx.post(url, content=gzip.compress(json.dumps(_request()).encode())[:-9],
                      headers={"Content-Encoding": "gzip"}, timeout=30.0), 400, "gzip")
    _error(httpx.post(url, content=zlib.compress(b"{}"), headers={"Content-Encoding": "br"}, timeout=30.0), 415,
           "Content-Encoding")
    head = json.dumps(_request(tensor={"data": None})).encode()
    _error(httpx.post(url, content=head, headers={"Inference-Header-Content-Length": str(len(head) + 5)},
                      timeout=30.0), 400, "Inference-Header-Content-Length")
    binary = json.dumps({"inputs": [{"name": "sequence", "datatype": "BYTES", "shape": [2],
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    raw = struct.pack("<I", 4) + b"ACGT"  # one element where the shape says two
    _error(httpx.post(url, content=binary + raw, headers={"Inference-Header-Content-Length": str(len(binary))},
                      timeout=30.0), 400, "input 'sequence'", "ends before element 1")
    for path, fragment in (("/v2/models/promoter-nope/infer", "unknown model 'promoter-nope'"),
                           ("/v2/models/nope/infer", "the models are <task>-<model>"),
                           ("/v2/models/promoter-/infer", "unknown model 'promoter-'"),
                           ("/v2/models/promoter-base/versions/2/infer", "no version '2'"),
                           ("/v2/models/promoter-onehot_cnn-embedding/infer", "unknown embedding model"),
                           ("/v2/models/lncrna-localization-all/infer", "unknown model")):
        _error(httpx.post(server.base + path, json=_request(), timeout=30.0), 404, fragment)


def test_tritonclient_raises_the_error_message(client):
    tensor = httpclient.InferInput("sequence", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"ACGT-ACGT"], dtype=object))
    with pytest.raises(InferenceServerException) as exc:
        client.infer("promoter-base", [tensor])
    assert exc.value.status() == "400"
    assert "input 'sequence': element 0: invalid character '-' at position 5" in exc.value.message()


# ------------------------------------------------------------------------------------------
# what needs a fresh app: readiness before start, the API key, admission


def test_not_ready_before_start_and_open_probes(tmp_path):
    async def body():
        async with serving(make_settings(small_models_dir(tmp_path, "base")), start=False) as app:
            return {path: await app.get(path) for path in (
                "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/promoter-base/ready",
                "/v2/models/promoter-base")} | {
                "infer": await app.post("/v2/models/promoter-base/infer", json=_request())}

    out = run(body())
    assert out["/v2"].status_code == 200 and out["/v2/health/live"].json() == {"live": True}
    assert out["/v2/health/ready"].status_code == 503 and out["/v2/health/ready"].json() == {"ready": False}
    ready = out["/v2/models/promoter-base/ready"]
    assert ready.status_code == 503 and ready.json() == {"name": "promoter-base", "ready": False}
    _error(out["/v2/models/promoter-base"], 503, "starting")
    _error(out["infer"], 503, "starting")


def test_api_key_guards_models_and_inference_but_not_the_probes(tmp_path):
    key = "v2-test-key-0123456789"

    async def body():
        async with serving(make_settings(small_models_dir(tmp_path, "base"), api_key=key)) as app:
            out = {path: await app.get(path) for path in ("/v2", "/v2/health/live", "/v2/health/ready",
                                                          "/v2/models/promoter-base")}
            out["infer"] = await app.post("/v2/models/promoter-base/infer", json=_request())
            out["infer-key"] = await app.post("/v2/models/promoter-base/infer", json=_request(),
                                              headers={"Authorization": f"Bearer {key}"})
            return out

    out = run(body())
    for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        assert out[path].status_code == 200, path
    _error(out["/v2/models/promoter-base"], 401, "API key")
    _error(out["infer"], 401, "API key")
    assert out["infer-key"].status_code == 200, out["infer-key"].text


def test_admission_refuses_with_429_when_the_gate_is_full(tmp_path):
    async def body():
        async with serving(make_settings(small_models_dir(tmp_path, "base"), max_requests_in_flight=1)) as app:
            app.app.state.in_flight.count = 1  # one request in progress
            resp = await app.post("/v2/models/promoter-base/infer", json=_request())
            app.app.state.in_flight.count = 0
            return resp, await app.post("/v2/models/promoter-base/infer", json=_request())

    refused, served = run(body())
    _error(refused, 429, "already in progress")
    assert refused.headers["retry-after"] == "1"
    assert served.status_code == 200


def test_the_schema_describes_the_routes():
    from service.api.app import create_app

    spec = create_app(make_settings(models_dir=Path(MODELS_DIR))).openapi()
    paths = spec["paths"]
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}",
                 "/v2/models/{model_name}/versions/{model_version}", "/v2/models/{model_name}/ready",
                 "/v2/models/{model_name}/versions/{model_version}/ready"):
        assert "get" in paths[path], path
    for path in ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer"):
        op = paths[path]["post"]
        request = op["requestBody"]["content"]["application/json"]["schema"]
        assert request["required"] == ["inputs"] and request["additionalProperties"] is False
        assert {"400", "404", "413", "429", "503", "504"} <= set(op["responses"])
        assert "application/octet-stream" in op["responses"]["200"]["content"]
