"""Load and faults: overload, clients that go away, broken model folders, failing batches.

* Start-up with a missing, corrupt or mismatched model folder fails with an error that names the
  folder; with ``allow_partial_start`` the healthy models serve and ``/readyz`` and ``/models``
  say which did not load and why (without server paths).
* A failing inference batch fails the requests that had a sequence in it (500
  ``inference_failed``) and nothing else; the service goes on.
* A client that disconnects while its body is uploading, or while its sequences wait in the
  batch queue, leaves no work behind: its queued sequences are dropped unrun, nothing is stuck.
* A real server (``python -m service serve``, loopback) under several times its capacity for a
  few seconds: 429s appear, every accepted request completes with the right results, memory
  stays bounded and the server serves normally afterwards. Over real sockets: a streamed 1 GB
  line is cut off at the limit, and clients that vanish mid-upload or mid-wait do no harm.

The load figures are printed (run with ``-s``) and recorded in docs/robustness.md:

    python -m pytest -q -s tests/service/test_load_faults.py -k load
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.contract.errors import ModelArtifactError
from service.runtime.inference import InferenceService
from tests.service.robustness import (
    FASTA,
    LNCRNA,
    MODELS_DIR,
    PROMOTER,
    ServerProcess,
    assert_error,
    copy_model,
    fasta,
    make_settings,
    needs_models,
    no_leak,
    run,
    serving,
    small_models_dir,
)

pytestmark = needs_models


def metric(text: str, sample: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def dna(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


async def until(predicate, what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` (a state check, not a timing assertion) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------------------------------
# start-up faults


def _card(folder: Path) -> dict:
    return json.loads((folder / "card.json").read_text())


def _write_card(folder: Path, card: dict) -> None:
    (folder / "card.json").write_text(json.dumps(card))


def _corrupt_graph_keep_sha(folder: Path) -> None:
    graph = folder / "model.onnx"
    graph.write_bytes(b"this is not an ONNX graph" * 100)
    card = _card(folder)
    card["sha256"]["model.onnx"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    _write_card(folder, card)


def _rename_inputs(folder: Path) -> None:
    card = _card(folder)
    card["inputs"] = ["ids", "mask"]
    _write_card(folder, card)


def _rename_output(folder: Path) -> None:
    card = _card(folder)
    card["output"] = "probabilities"
    _write_card(folder, card)


def _tamper(folder: Path) -> None:
    tok = folder / "tokenizer.json"
    tok.write_bytes(tok.read_bytes().replace(b'"A"', b'"Z"', 1))


FAULTS = {
    # name: (change made to a copy of promoter/base, text the error must contain)
    "card.json not JSON": (lambda f: (f / "card.json").write_text("{not json"), "invalid card.json"),
    "card.json with a wrong field": (lambda f: _write_card(f, {**_card(f), "activation": "relu"}),
                                     "invalid card.json"),
    "graph file missing": (lambda f: (f / "model.onnx").unlink(), "graph file model.onnx is missing"),
    "tokenizer changed (bad sha256)": (_tamper, "tokenizer.json does not match the sha256 in the card"),
    "graph changed (bad sha256)": (lambda f: (f / "model.onnx").write_bytes((f / "model.onnx").read_bytes()[:-10]),
                                   "model.onnx does not match the sha256 in the card"),
    "corrupt graph (sha256 matches)": (_corrupt_graph_keep_sha, "ONNX Runtime cannot load model.onnx"),
    "wrong input names": (_rename_inputs, "do not match the card"),
    "wrong output name": (_rename_output, "do not match the card"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_broken_model_folder_stops_start_up_naming_the_folder(tmp_path, fault):
    change, expected = FAULTS[fault]
    root = small_models_dir(tmp_path, "base")
    broken = copy_model(MODELS_DIR / "promoter" / "cnn", root / "promoter" / "cnn")
    change(broken)

    async def body():
        service = InferenceService(make_settings(root))
        with pytest.raises(ModelArtifactError) as info:
            await service.start()
        assert not service.started and all(lm.batcher._closing for lm in service.models.values())  # noqa: SLF001
        app = create_app(make_settings(root))
        with pytest.raises(ModelArtifactError):
            async with app.router.lifespan_context(app):
                pass
        return str(info.value)

    message = run(body())
    assert message.startswith(f"{broken}: "), message
    assert expected in message, message


@pytest.mark.parametrize("case", ["models folder missing", "no model folders", "default model missing"])
def test_missing_models_stop_start_up_naming_the_folder(tmp_path, case):
    if case == "models folder missing":
        root, expected = tmp_path / "nowhere", "does not exist"
        settings = make_settings(root)
    elif case == "no model folders":
        root, expected = tmp_path / "empty", "no model folders"
        root.mkdir()
        settings = make_settings(root)
    else:
        root = small_models_dir(tmp_path, "base")
        expected = "the default promoter model 'cnn_bilstm_max' (DNABERT_DEFAULT_PROMOTER_MODEL) is not there"
        settings = make_settings(root, default_promoter_model="cnn_bilstm_max")

    async def body():
        with pytest.raises(ModelArtifactError) as info:
            await InferenceService(settings).start()
        return str(info.value)

    message = run(body())
    assert str(root) in message and expected in message, message


def test_folder_without_card_is_skipped_with_a_warning(tmp_path, caplog):
    root = small_models_dir(tmp_path, "base")
    half = copy_model(MODELS_DIR / "promoter" / "cnn", root / "promoter" / "cnn")
    (half / "card.json").unlink()  # e.g. an export still being written: the card comes last
    caplog.set_level(logging.WARNING)

    async def body():
        service = InferenceService(make_settings(root))
        await service.start()
        try:
            return sorted(service.models), service.ready
        finally:
            await service.stop()

    models, ready = run(body())
    assert models == [("promoter", "base")] and ready
    assert f"skipping {half}: no card.json" in caplog.text


def test_cli_exits_with_a_clear_error_for_a_broken_folder(tmp_path):
    root = small_models_dir(tmp_path, "base")
    broken = copy_model(MODELS_DIR / "promoter" / "cnn", root / "promoter" / "cnn")
    _tamper(broken)
    server = ServerProcess(tmp_path / "server.log", env={"DNABERT_MODELS_DIR": str(root),
                                                          "DNABERT_DEFAULT_PROMOTER_MODEL": "base"})
    proc = server.start()
    try:
        rc = proc.wait(timeout=90)
    finally:
        server.stop()
    out = server.output()
    assert rc != 0, out
    assert f"start-up failed: {broken}: tokenizer.json does not match the sha256 in the card" in out, out


def _partial_models(tmp_path: Path) -> Path:
    root = small_models_dir(tmp_path, "base")
    _tamper(copy_model(MODELS_DIR / "promoter" / "cnn", root / "promoter" / "cnn"))
    _rename_inputs(copy_model(MODELS_DIR / "lncrna-localization" / "lncrna", root / "lncrna-localization" / "lncrna"))
    return root


def test_partial_start_serves_the_healthy_models_and_readyz_tells_the_truth(tmp_path):
    root = _partial_models(tmp_path)
    body_ = fasta([("a", "ACGTTGCAACGTAGCTAGCTAGCATCGATCGA")])

    async def body():
        out = {}
        with pytest.raises(ModelArtifactError) as info:  # the default: refuse to start
            await InferenceService(make_settings(root)).start()
        out["strict"] = str(info.value)
        async with serving(make_settings(root, allow_partial_start=True)) as client:
            out["readyz"] = await client.get("/readyz")
            out["models"] = await client.get("/models")
            out["default"] = await client.post(PROMOTER, content=body_, headers=FASTA)
            out["base"] = await client.post(PROMOTER, params={"model": "base"}, content=body_, headers=FASTA)
            out["cnn"] = await client.post(PROMOTER, params={"model": "cnn"}, content=body_, headers=FASTA)
            out["all"] = await client.post(PROMOTER, params={"model": "all"}, content=body_, headers=FASTA)
            out["absent"] = await client.post(PROMOTER, params={"model": "bilstm"}, content=body_, headers=FASTA)
            out["lncrna"] = await client.post(LNCRNA, content=body_, headers=FASTA)
            out["metrics"] = await client.get("/metrics")
        for default in ("cnn", "bilstm"):  # the default model broken, or not there at all
            async with serving(make_settings(root, allow_partial_start=True, default_promoter_model=default)) as client:
                out["readyz", default] = await client.get("/readyz")
                out["default", default] = await client.post(PROMOTER, content=body_, headers=FASTA)
                out["base", default] = await client.post(PROMOTER, params={"model": "base"}, content=body_,
                                                         headers=FASTA)
        return out

    out = run(body())
    assert re.match(re.escape(str(root)) + r"/(promoter/cnn|lncrna-localization/lncrna): ", out["strict"])

    ready = out["readyz"]
    assert ready.status_code == 200
    health = ready.json()
    assert health["status"] == "degraded"
    assert health["detail"] == {"promoter/base": True, "promoter/cnn": False, "lncrna-localization/lncrna": False}
    assert set(health["errors"]) == {"promoter/cnn", "lncrna-localization/lncrna"}
    assert "promoter/cnn: tokenizer.json does not match the sha256" in health["errors"]["promoter/cnn"]
    assert "do not match the card" in health["errors"]["lncrna-localization/lncrna"]
    no_leak(ready.text, tmp_path, root)

    models = {(m["task"], m["name"]): m for m in out["models"].json()["models"]}
    assert models["promoter", "base"]["ready"] is True and models["promoter", "base"]["error"] is None
    for key in (("promoter", "cnn"), ("lncrna-localization", "lncrna")):
        assert models[key]["ready"] is False and models[key]["error"] == health["errors"]["/".join(key)]
    no_leak(out["models"].text, tmp_path, root)

    assert out["default"].status_code == 200 and out["default"].json()["model"] == "base"
    assert out["base"].json() == out["default"].json()
    for name in ("cnn", "all", "lncrna"):
        err = assert_error(out[name], 503, "model_unavailable")
        no_leak(out[name].text, tmp_path, root)
        assert "failed to load" in err["message"]
    assert "promoter/cnn" in out["cnn"].json()["error"]["message"]
    assert_error(out["absent"], 404, "model_not_found")
    assert out["metrics"].status_code == 200

    for default in ("cnn", "bilstm"):
        ready = out["readyz", default]
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready", default
        assert f"promoter/{default}" in ready.json()["errors"], default
        assert out["base", default].status_code == 200, default  # the healthy model still serves
        assert_error(out["default", default], 503, "model_unavailable")


# ------------------------------------------------------------------------------------------
# a failing inference batch


POISON = "ACGTACGTTTGACAGGGCCCAAATTTGGGCCCAAATTT" * 3


class PoisonedService(InferenceService):
    """The runtime fails every batch that holds the poison sequence, with internals in its message."""

    batches: list[tuple[bool, list[tuple[int, ...]]]]

    def batch_runner(self, model):
        real = InferenceService.batch_runner(model)
        poison = tuple(model.tokenizer.encode([POISON])[0].ids)
        self.batches = []
        lock = threading.Lock()

        def run(batch):
            rows = [tuple(seq) for seq in batch]
            failed = poison in rows
            with lock:
                self.batches.append((failed, rows))
            if failed:
                raise RuntimeError(f"[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : {model.folder}/model.onnx: "
                                   "Non-zero status code returned while running MatMul node")
            return real(batch)

        return run


def test_failing_batch_fails_only_its_requests_and_serving_goes_on(tmp_path):
    root = small_models_dir(tmp_path, "base")
    settings = make_settings(root, max_batch_size=2, max_wait_ms=20)
    rng = random.Random(3)
    seqs = [dna(rng, 60 + 7 * i) for i in range(10)]
    seqs[4] = POISON
    service = PoisonedService(settings)

    async def body():
        async with serving(settings, service) as client:
            alone = [await client.post(PROMOTER, json={"sequences": [{"id": f"r{i}", "sequence": s}]})
                     for i, s in enumerate(seqs) if i != 4]
            before = len(service.batches)
            burst = await asyncio.gather(*(
                client.post(PROMOTER, json={"sequences": [{"id": f"r{i}", "sequence": s}]})
                for i, s in enumerate(seqs)))
            during = service.batches[before:]
            after = await client.post(PROMOTER, json={"sequences": [{"id": "later", "sequence": seqs[0]}]})
            ready = await client.get("/readyz")
            metrics = (await client.get("/metrics")).text
        return alone, burst, during, after, ready, metrics

    alone, burst, during, after, ready, metrics = run(body())
    model = service.models["promoter", "base"].model
    tokens = [tuple(model.tokenizer.encode([s])[0].ids) for s in seqs]
    in_failed = {row for failed, rows in during if failed for row in rows}
    reference = {r.json()["results"][0]["id"]: r.json()["results"][0] for r in alone}
    n_ok = 0
    for i, resp in enumerate(burst):
        if tokens[i] in in_failed:  # shared the failing batch
            err = assert_error(resp, 500, "inference_failed")
            assert "batch" in err["message"] and "retry" in err["message"]
            no_leak(resp.text, tmp_path, root)
            assert "ONNXRuntimeError" not in resp.text and "MatMul" not in resp.text
        else:
            assert resp.status_code == 200, (i, resp.text)
            got = resp.json()["results"][0]
            assert got["probability"] == pytest.approx(reference[got["id"]]["probability"], abs=1e-6)
            n_ok += 1
    assert burst[4].status_code == 500
    assert n_ok >= len(seqs) - 2  # a batch holds at most two sequences
    assert sum(failed for failed, _ in during) == 1
    assert after.status_code == 200 and ready.status_code == 200
    assert metric(metrics, "dnabert_batch_failures_total", model="promoter/base") == 1
    assert metric(metrics, "dnabert_requests_total", status="500") == len(seqs) - n_ok
    assert metric(metrics, "dnabert_queue_depth") == 0


# ------------------------------------------------------------------------------------------
# clients that go away (driven at the ASGI level, so that the moment is exact)


class GatedService(InferenceService):
    """The first batch after ``arm()`` blocks until ``release()``; every batch run is recorded."""

    def batch_runner(self, model):
        real = InferenceService.batch_runner(model)
        self.ran: list[tuple[int, ...]] = []
        self.blocked = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

        def run(batch):
            self.ran.extend(tuple(s) for s in batch)
            if not self.gate.is_set():
                self.blocked.set()
                self.gate.wait(60)
            return real(batch)

        return run

    def arm(self) -> None:
        self.blocked.clear()
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()


def _scope(path: str, headers: dict[str, str], rid: str) -> dict:
    raw = [(k.lower().encode(), v.encode()) for k, v in {**headers, "X-Request-ID": rid}.items()]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": raw, "client": ("127.0.0.1", 1), "server": ("test", 80)}


async def _asgi_call(app, scope: dict, messages: list[dict], gone: asyncio.Event) -> list[dict]:
    """Call the app: the given receive messages, then ``http.disconnect`` once ``gone`` is set."""
    sent: list[dict] = []
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_client_gone_mid_upload_or_mid_wait_leaves_no_work(tmp_path, caplog):
    settings = make_settings(small_models_dir(tmp_path, "base"), workers=1)
    service = GatedService(settings)
    rng = random.Random(11)
    waiting = [dna(rng, 200 + i) for i in range(3)]
    caplog.set_level(logging.INFO)

    async def body():
        out = {}
        async with serving(settings, service) as client:
            app = client.app
            lm = service.models["promoter", "base"]
            # 1. mid-upload, each form: part of the body, then the client is gone
            partial = {
                "raw": ({"Content-Type": "text/plain"}, b">a\nACGTACGT"),
                "json": ({"Content-Type": "application/json"}, b'{"sequences": [{"id": "a", "seq'),
                "multipart": ({"Content-Type": "multipart/form-data; boundary=B"},
                              b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\n>a\nACGT'),
            }
            gone = asyncio.Event()
            gone.set()
            for form, (headers, chunk) in partial.items():
                ran = len(service.ran)
                sent = await _asgi_call(app, _scope(PROMOTER, headers, f"upload-{form}"),
                                        [{"type": "http.request", "body": chunk, "more_body": True}], gone)
                out["upload", form] = (sent, len(service.ran) - ran)

            # 2. mid-wait: A holds the only worker, B waits in the queue, then B's client is gone
            service.arm()
            first = asyncio.ensure_future(client.post(PROMOTER, content=fasta([("A", dna(rng, 300))]), headers=FASTA))
            await until(service.blocked.is_set, "the first batch to start")
            gone = asyncio.Event()
            body_b = json.dumps({"sequences": [{"id": f"b{i}", "sequence": s} for i, s in enumerate(waiting)]})
            call_b = asyncio.ensure_future(_asgi_call(
                app, _scope(PROMOTER, {"Content-Type": "application/json"}, "wait-b"),
                [{"type": "http.request", "body": body_b.encode(), "more_body": False}], gone))
            await until(lambda: lm.batcher.queue_depth == len(waiting), "B's sequences to be queued")
            gone.set()
            out["wait"] = await asyncio.wait_for(call_b, 30)
            out["depth-after-gone"] = lm.batcher.queue_depth
            service.release()
            out["first"] = await first
            out["later"] = await client.post(PROMOTER, content=fasta([("C", waiting[0])]), headers=FASTA)
            out["metrics"] = (await client.get("/metrics")).text
        return out

    out = run(body())
    for form in ("raw", "json", "multipart"):
        sent, ran = out["upload", form]
        assert ran == 0, form
        assert sent and sent[0]["status"] == 499, (form, sent)
    assert out["wait"][0]["status"] == 499
    assert out["depth-after-gone"] == 0  # withdrawn at once, before the worker was free
    model = service.models["promoter", "base"].model if service.models else None
    assert out["first"].status_code == 200 and out["later"].status_code == 200
    tokens = [tuple(model.tokenizer.encode([s])[0].ids) for s in waiting] if model else []
    assert not (set(tokens[1:]) & set(service.ran))  # B's other sequences never ran
    later_tokens = tokens[0]
    assert service.ran.count(later_tokens) == 1  # only C's copy of waiting[0] ran
    m = out["metrics"]
    assert metric(m, "dnabert_dropped_sequences_total", model="promoter/base", reason="cancelled") == len(waiting)
    assert metric(m, "dnabert_requests_total", endpoint="promoter", status="499") == 4
    assert metric(m, "dnabert_queue_depth") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "wait-b: the client disconnected while waiting" in caplog.text


# ------------------------------------------------------------------------------------------
# a real server: load, a streamed gigabyte, clients that vanish

MAX_QUEUE = 48
MAX_IN_FLIGHT = 16
UPLOAD_LIMIT = 1 << 20
N_BODIES = 24
SEQS_PER_REQUEST = 4


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    root = small_models_dir(tmp, "base")
    env = {"DNABERT_MODELS_DIR": str(root), "DNABERT_DEFAULT_PROMOTER_MODEL": "base",
           "DNABERT_MAX_QUEUE": str(MAX_QUEUE), "DNABERT_MAX_BATCH_SIZE": "32", "DNABERT_MAX_WAIT_MS": "2",
           "DNABERT_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "DNABERT_REQUEST_TIMEOUT_S": "60",
           "DNABERT_MAX_REQUESTS_IN_FLIGHT": str(MAX_IN_FLIGHT)}
    with ServerProcess(tmp / "server.log", env=env) as server:
        yield server


def _bodies() -> list[tuple[list[str], bytes]]:
    rng = random.Random(42)
    out = []
    for b in range(N_BODIES):
        records = [(f"b{b}_s{i}", dna(rng, rng.randint(150, 450))) for i in range(SEQS_PER_REQUEST)]
        out.append(([rid for rid, _ in records], fasta(records)))
    return out


async def _post(port: int, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """A minimal HTTP/1.1 client (one connection per request): the load generator shares the CPU
    with the server, so it must cost far less per request than the server does."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /predict/promoter HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ", 2)[1]), {k.lower(): v for k, v in headers.items()}, payload


async def _load(port: int, seconds: float = 3.0, factor: float = 4.0) -> dict:
    bodies = _bodies()
    reference = []
    for _, body in bodies:  # one at a time: the expected answers
        status, _, payload = await _post(port, body)
        assert status == 200, payload
        reference.append({r["id"]: r["probability"] for r in json.loads(payload)["results"]})

    async def one(i: int) -> tuple[int, float, bool]:
        ids, body = bodies[i % N_BODIES]
        t0 = time.perf_counter()
        status, headers, payload = await _post(port, body)
        latency = time.perf_counter() - t0
        ok = False
        if status == 200:
            results = json.loads(payload)["results"]
            ok = [r["id"] for r in results] == ids and all(
                abs(r["probability"] - reference[i % N_BODIES][r["id"]]) <= 1e-5 for r in results)
        elif status == 429:
            ok = json.loads(payload)["error"]["code"] == "overloaded" and int(headers["retry-after"]) >= 1
        return status, latency, ok

    # capacity: a closed loop of 4 clients for 1.5 s
    done, stop = [0], time.perf_counter() + 1.5

    async def closed_loop(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            status, _, ok = await one(i)
            assert status == 200 and ok
            done[0] += 1
            i += 4

    t0 = time.perf_counter()
    await asyncio.gather(*(closed_loop(k) for k in range(4)))
    capacity = done[0] / (time.perf_counter() - t0)

    # overload: an open loop at `factor` times the capacity
    target = factor * capacity
    tasks, start = [], time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        due = start + len(tasks) / target
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.ensure_future(one(len(tasks))))
    offered_s = time.perf_counter() - start
    results = await asyncio.gather(*tasks)
    total_s = time.perf_counter() - start

    served = [r for r in results if r[0] == 200]
    latencies = sorted(r[1] for r in served)
    after_status, _, after_payload = await _post(port, bodies[0][1])
    return {
        "capacity_rps": capacity,
        "target_rps": target,
        "offered_rps": len(results) / offered_s,
        "served_rps": len(served) / total_s,
        "seconds": seconds,
        "requests": len(results),
        "statuses": {s: sum(1 for r in results if r[0] == s) for s in sorted({r[0] for r in results})},
        "all_correct": all(r[2] for r in results),
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan"),
        "after": (after_status, json.loads(after_payload)), "after_reference": reference[0],
    }


@pytest.mark.slow
def test_load_at_several_times_capacity(real_server):
    mem_before = real_server.memory_kib()
    out = asyncio.run(asyncio.wait_for(_load(real_server.port), 120))
    mem_after = real_server.memory_kib()
    server_ms = sorted(float(x) for x in re.findall(r"-> 200 in ([\d.]+) ms", real_server.output()))
    print(f"\nload: capacity {out['capacity_rps']:.0f} req/s; offered {out['offered_rps']:.0f} req/s "
          f"(target {out['target_rps']:.0f}) for {out['seconds']:.0f} s; served {out['served_rps']:.0f} req/s; "
          f"statuses {out['statuses']}; client p50 {out['p50_ms']:.0f} ms, p99 {out['p99_ms']:.0f} ms; "
          f"server p99 {server_ms[int(0.99 * len(server_ms))]:.0f} ms; "
          f"RSS {mem_before['VmRSS'] / 1024:.0f} MiB before, peak {mem_after['VmHWM'] / 1024:.0f} MiB "
          f"({SEQS_PER_REQUEST} sequences per request, max_queue {MAX_QUEUE}, in flight {MAX_IN_FLIGHT})")
    assert out["offered_rps"] >= 2 * out["capacity_rps"], out  # really over capacity
    assert set(out["statuses"]) <= {200, 429}, out["statuses"]
    assert out["statuses"].get(429, 0) > 0 and out["statuses"].get(200, 0) > 0, out["statuses"]
    assert out["all_correct"]  # every accepted request got its own records' scores
    # bounded: at most MAX_IN_FLIGHT requests are held; memory grows by far less than 256 MiB
    assert mem_after["VmHWM"] - mem_before["VmRSS"] < 256 * 1024, (mem_before, mem_after)
    status, after = out["after"]
    assert status == 200
    assert {r["id"]: r["probability"] for r in after["results"]} == pytest.approx(out["after_reference"], abs=1e-5)
    ready = httpx.get(real_server.base + "/readyz")
    metrics_text = httpx.get(real_server.base + "/metrics").text
    assert ready.status_code == 200
    assert metric(metrics_text, "dnabert_queue_depth") == 0
    assert metric(metrics_text, "dnabert_requests_total", status="429") == out["statuses"][429]


def _http_request(head: str) -> bytes:
    return head.replace("\n", "\r\n").encode()


def test_real_socket_gigabyte_line_is_cut_off(real_server):
    """A chunked upload of 1 GiB: the server answers 413 after the limit and stops reading."""
    rss_before = real_server.memory_kib()["VmRSS"]
    sock = socket.create_connection(("127.0.0.1", real_server.port), timeout=10)
    sock.sendall(_http_request("POST /predict/promoter HTTP/1.1\nHost: test\nContent-Type: text/plain\n"
                               "Transfer-Encoding: chunked\nX-Request-ID: gigabyte-1\n\n"))
    chunk = b"A" * (64 * 1024)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent, reply = 0, b""
    sock.settimeout(2.0)
    try:
        sock.sendall(b"5\r\n>big\n\r\n")
        while sent < (1 << 30):
            sock.sendall(frame)  # blocks (then times out) once the server stops reading
            sent += len(chunk)
    except (TimeoutError, BrokenPipeError, ConnectionResetError):
        pass
    try:
        sock.settimeout(10.0)
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        sock.close()
    status_line = reply.split(b"\r\n", 1)[0]
    print(f"\ngigabyte line: the client got {sent / (1 << 20):.1f} MiB out before the server closed; "
          f"reply {status_line!r}")
    assert sent < 64 * (1 << 20), sent  # the server stopped reading long before the gigabyte
    if reply:
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    deadline = time.monotonic() + 10
    while "request gigabyte-1: POST '/predict/promoter' -> 413" not in real_server.output():
        assert time.monotonic() < deadline, real_server.output()[-3000:]
        time.sleep(0.05)
    assert real_server.memory_kib()["VmRSS"] - rss_before < 64 * 1024
    assert httpx.post(real_server.base + PROMOTER, content=b">a\nACGT\n", headers=FASTA).status_code == 200


def test_real_socket_clients_that_vanish(real_server):
    rng = random.Random(5)
    # mid-upload: the body is announced but the client goes away after 10 kB
    sock = socket.create_connection(("127.0.0.1", real_server.port), timeout=10)
    sock.sendall(_http_request("POST /predict/promoter HTTP/1.1\nHost: test\nContent-Type: text/plain\n"
                               "Content-Length: 500000\nX-Request-ID: vanish-upload\n\n") + b">a\n" + b"A" * 10000)
    sock.close()
    # mid-wait: a whole request, then the client goes away before the answer
    body = fasta([(f"w{i}", dna(rng, 2000)) for i in range(40)])
    sock = socket.create_connection(("127.0.0.1", real_server.port), timeout=10)
    sock.sendall(_http_request(f"POST /predict/promoter HTTP/1.1\nHost: test\nContent-Type: text/plain\n"
                               f"Content-Length: {len(body)}\nX-Request-ID: vanish-wait\n\n") + body)
    sock.close()
    deadline = time.monotonic() + 30
    while not all(f"request {rid}: POST '/predict/promoter' -> 499" in real_server.output()
                  for rid in ("vanish-upload", "vanish-wait")):
        assert time.monotonic() < deadline, real_server.output()[-3000:]
        time.sleep(0.05)
    ok = httpx.post(real_server.base + PROMOTER, content=fasta([("after", dna(rng, 300))]), headers=FASTA)
    assert ok.status_code == 200
    text = httpx.get(real_server.base + "/metrics").text
    assert metric(text, "dnabert_queue_depth") == 0
    assert "Traceback" not in real_server.output()
