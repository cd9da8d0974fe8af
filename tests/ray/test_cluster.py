"""The service on a real local Ray cluster (``ray start --head --node-ip-address 127.0.0.1
--num-cpus 2``, started and stopped by this module by process id), deployed with
``dnabert-serve ray``; all traffic goes to 127.0.0.1.

* two replicas answer what the single-process service answers (results, error shapes, health,
  readiness, the model list), both of them answer, and ``/metrics`` counts every replica's
  requests; job work sent to the deployment is scored on both replicas, with the same scores;
* a replica killed (SIGKILL) while requests run is restarted by Ray, and only requests that were
  in flight when it died fail;
* Ray's queue limit answers 429 with ``Retry-After``; the ``@serve.batch`` replicas answer the
  same results;
* autoscaling adds a replica under load and removes it when idle (a short test configuration).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from bench.ray import LocalRayCluster, RayDeployment
from bench.run import free_port, random_dna
from service.settings import Settings
from tests.service.robustness import fasta, needs_models, serving

pytest.importorskip("ray", reason="Ray Serve is not installed (the ray extra)")

pytestmark = [pytest.mark.slow, needs_models]

FASTA = {"Content-Type": "text/x-fasta"}
SEQS = random_dna(40, 300, seed=21)
BODY = fasta([(f"s{i}", s) for i, s in enumerate(SEQS)] + [("with_n", "ACGTNNRYACGT" * 10)])
BIG = fasta([(f"b{i}", s) for i, s in enumerate(random_dna(300, 300, seed=22))])
LOCUS = fasta([("chr1:1001-2500", "".join(random_dna(1, 1500, seed=23)))])

CASES = {
    "predict": ("POST", "/predict/promoter", {}, BODY, FASTA),
    "predict-all-csv": ("POST", "/predict/promoter", {"model": "all", "format": "csv"}, BODY, FASTA),
    "predict-json-body": ("POST", "/predict/promoter", {"model": "cnn"},
                          json.dumps({"sequences": [{"id": "j1", "sequence": SEQS[0]}]}).encode(),
                          {"Content-Type": "application/json"}),
    "lncrna": ("POST", "/predict/lncrna-localization", {"format": "tsv"}, BODY, FASTA),
    "scan": ("POST", "/scan/promoter", {"stride": 100, "format": "json"}, LOCUS, FASTA),
    "bad-fasta": ("POST", "/predict/promoter", {}, b">bad\nACGT7ACGT\n", FASTA),
    "unknown-model": ("POST", "/predict/promoter", {"model": "nope"}, BODY, FASTA),
    "unknown-parameter": ("POST", "/predict/promoter", {"nope": "1"}, BODY, FASTA),
    "bad-content-type": ("POST", "/predict/promoter", {}, BODY, {"Content-Type": "application/x-www-form-urlencoded"}),
    "healthz": ("GET", "/healthz", {}, None, {}),
    "readyz": ("GET", "/readyz", {}, None, {}),
    "models": ("GET", "/models", {}, None, {}),
    "v2-ready": ("GET", "/v2/health/ready", {}, None, {}),
}


def _send(client, name: str):
    method, path, params, body, headers = CASES[name]
    return client.request(method, path, params=params, content=body, headers={**headers, "X-Request-ID": name})


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[int, str, bytes]]:
    """What the single-process service answers to every case (the app in this process)."""

    async def answers():
        async with serving(Settings()) as client:
            return {name: (r.status_code, r.headers.get("content-type", ""), r.content)
                    for name in CASES for r in [await _send(client, name)]}

    return asyncio.run(answers())


def _close(a, b, path="") -> None:
    """Equal, numbers to 1e-6 (a batch's composition may move the last bits of a score)."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _cells(text: str) -> list:
    def cell(v: str):
        return float(v) if re.fullmatch(r"-?\d+\.\d+(e-?\d+)?", v) else v

    return [[cell(v) for v in re.split(r"[,\t]", line)] for line in text.splitlines()]


def assert_same_answer(got: httpx.Response, want: tuple[int, str, bytes], name: str) -> None:
    status, ctype, body = want
    assert got.status_code == status, (name, got.status_code, got.text[:300])
    assert got.headers.get("content-type", "") == ctype, name
    if "json" in ctype:
        _close(got.json(), json.loads(body), name)
    elif ctype.startswith(("text/csv", "text/tab-separated-values")):
        _close(_cells(got.text), _cells(body.decode()), name)
    else:
        assert got.content == body, name


@pytest.fixture(scope="module")
def cluster():
    with LocalRayCluster(num_cpus=2) as c:
        yield c


@pytest.fixture(scope="module")
def port() -> int:
    """The Serve proxy's port: one per cluster, kept by every deployment on it."""
    return free_port()


def _metric(text: str, name: str, **labels: str) -> dict[str, float]:
    """The value of ``name`` per replica, summed over the samples that match ``labels``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            out[found["replica"]] = out.get(found["replica"], 0.0) + float(line.rsplit(" ", 1)[1])
    return out


class TestTwoReplicas:
    @pytest.fixture(scope="class")
    def deployment(self, cluster, port):
        with RayDeployment(cluster, port, "--replicas", "2", "--num-cpus", "0.5") as dep:
            yield dep

    def test_two_replicas_answer_as_the_single_process_service(self, deployment, cluster, reference):
        assert len(cluster.replicas()) == 2
        answered: dict[str, list[httpx.Response]] = {name: [] for name in CASES}
        lock = threading.Lock()

        def client(k: int) -> None:
            with httpx.Client(base_url=deployment.url, timeout=120) as c:
                for name in list(CASES)[k:] + list(CASES)[:k]:
                    r = _send(c, name)
                    with lock:
                        answered[name].append(r)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        replicas = set()
        for name, responses in answered.items():
            assert len(responses) == 6
            for r in responses:
                assert_same_answer(r, reference[name], name)
                assert r.headers.get_list("x-request-id") == [name]  # once, though the proxy adds it too
                replicas.add(r.headers["x-dnabert-replica"])
        assert len(replicas) == 2, replicas
        error = answered["bad-fasta"][0].json()["error"]
        assert error == {"code": "invalid_sequence", "message": error["message"], "record_id": "bad", "line": 2,
                         "request_id": "bad-fasta"}

    def test_metrics_count_the_requests_of_every_replica(self, deployment):
        sent = 0
        with httpx.Client(base_url=deployment.url, timeout=120) as c:
            time.sleep(7)  # every replica has reported the earlier tests' requests (every 5 s)
            before = c.get("/metrics").text
            for _ in range(20):
                r = _send(c, "predict")
                assert r.status_code == 200
                served = r.json()["model"]  # the default model (models/promoter/task.json)
                sent += 1
            time.sleep(7)  # and these
            after = c.get("/metrics")
        assert after.status_code == 200 and after.headers["content-type"].startswith("text/plain")
        labels = {"endpoint": "promoter", "model": served, "status": "200"}
        was, now = _metric(before, "dnabert_requests_total", **labels), _metric(after.text, "dnabert_requests_total",
                                                                                 **labels)
        assert len(now) == 2  # both replicas are there, labelled
        assert sum(now.values()) - sum(was.values()) == sent
        assert after.text.count("# TYPE dnabert_requests_total counter") == 1

    def test_job_work_is_scored_on_every_replica(self, deployment, cluster):
        """What a job runner's chunks go through (``score_background``), called as a replica
        would call it: the scores are the service's, and both replicas score."""
        from service.contract.fasta import FastaRecord
        from service.contract.prepare import prepare
        from service.runtime.model import OnnxModel

        model = OnnxModel(Settings().models_dir / "promoter" / "cnn_bilstm_max")
        records = [FastaRecord(f"s{i}", f"s{i}", s, 1) for i, s in enumerate(SEQS)]
        tokens = prepare(records, model.tokenizer).tokens
        want = model.scores(tokens)

        def batches() -> dict[str, float]:
            text = httpx.get(f"{deployment.url}/metrics", timeout=30).text
            return _metric(text, "dnabert_batch_size_count", model="promoter/cnn_bilstm_max")

        before = batches()
        # a driver of its own (a process with the cluster's token), as a replica calls the method
        script = (
            "import json, sys\n"
            "import ray\n"
            "from ray import serve\n"
            "tokens = json.load(sys.stdin)\n"
            "ray.init(address=sys.argv[1], logging_level='error', log_to_driver=False)\n"
            "handle = serve.get_deployment_handle('dnabert', 'dnabert').options(method_name='score_background')\n"
            "calls = [handle.remote('promoter', 'cnn_bilstm_max', tokens[i:i + 4], 60.0) for i in range(0, 40, 4)]\n"
            "calls += [handle.remote('promoter', 'cnn_bilstm_max', tokens, 60.0) for _ in range(10)]\n"
            "print(json.dumps([c.result(timeout_s=120).tolist() for c in calls]))\n"
            "ray.shutdown()\n")
        out = subprocess.run([sys.executable, "-c", script, cluster.address], input=json.dumps(tokens), text=True,
                             capture_output=True, timeout=300, env={**os.environ, **cluster.env})
        assert out.returncode == 0, out.stderr[-3000:]
        got = [np.asarray(rows) for rows in json.loads(out.stdout.strip().splitlines()[-1])]
        for i, out in enumerate(got[:10]):
            _close(out.tolist(), want[4 * i:4 * i + 4].tolist(), f"chunk {i}")
        for out in got[10:]:
            _close(out.tolist(), want.tolist(), "whole")
        time.sleep(7)
        after = batches()
        assert len(after) == 2 and all(after[r] > before.get(r, 0) for r in after), (before, after)

    def test_jobs_need_a_shared_store_when_several_replicas_serve(self, deployment):
        with httpx.Client(base_url=deployment.url, timeout=60) as c:
            answers = [c.get("/jobs"), c.post("/jobs", params={"kind": "predict", "task": "promoter"}, content=BODY,
                                              headers=FASTA)]
        for r in answers:
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "jobs_unavailable" and "DNABERT_JOBS_DATABASE_URL" in error["message"]

    def test_a_killed_replica_is_restarted_and_the_other_requests_succeed(self, deployment, cluster, reference):
        victims = cluster.replicas()
        assert len(victims) == 2
        log: list[tuple[float, float, int, str | None]] = []
        lock = threading.Lock()
        end = time.monotonic() + 14
        killed_at: list[float] = []

        def client() -> None:
            with httpx.Client(base_url=deployment.url, timeout=120) as c:
                while time.monotonic() < end:
                    start = time.monotonic()
                    r = c.post("/predict/promoter", content=BODY, headers=FASTA)
                    if r.status_code == 200:
                        assert_same_answer(r, reference["predict"], "predict")
                    with lock:
                        log.append((start, time.monotonic(), r.status_code, r.headers.get("x-dnabert-replica")))

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(4)
        killed_at.append(time.monotonic())
        os.kill(victims[0], signal.SIGKILL)
        for t in threads:
            t.join()
        kill = killed_at[0]
        failed = [entry for entry in log if entry[2] != 200]
        assert len(log) > 20 and len(failed) <= 6, failed  # at most the clients' requests in flight
        assert all(start < kill < done for start, done, _, _ in failed), (kill, failed)
        assert all(status == 200 for start, _, status, _ in log if start > kill + 0.5)
        # Ray starts a new replica in its place, and it answers
        seen = {rep for *_, rep in log if rep}
        deadline = time.monotonic() + 120
        while True:
            now = cluster.replicas()
            if len(now) == 2 and victims[0] not in now:
                break
            assert time.monotonic() < deadline, f"the killed replica was not replaced: {now}"
            time.sleep(0.5)
        answered: set[str] = set()
        done = threading.Event()
        deadline = time.monotonic() + 120

        def probe() -> None:
            with httpx.Client(base_url=deployment.url, timeout=60) as c:
                while not done.is_set() and time.monotonic() < deadline:
                    r = c.post("/predict/promoter", content=BODY, headers=FASTA)
                    assert r.status_code == 200
                    answered.add(r.headers["x-dnabert-replica"])
                    if answered - seen:
                        done.set()

        probes = [threading.Thread(target=probe) for _ in range(4)]  # busy enough for both replicas
        for t in probes:
            t.start()
        for t in probes:
            t.join()
        assert answered - seen, f"the new replica never answered: {answered}, seen before {seen}"
        assert httpx.get(f"{deployment.url}/readyz", timeout=30).status_code == 200


def test_ray_queue_limit_answers_429_with_retry_after_and_serve_batch_answers_the_same(cluster, port, reference):
    options = ("--replicas", "1", "--num-cpus", "0.5", "--max-ongoing-requests", "1", "--max-queued-requests", "1",
               "--batching", "serve")
    with RayDeployment(cluster, port, *options) as dep, httpx.Client(base_url=dep.url, timeout=120) as c:
        for name in ("predict", "predict-all-csv", "lncrna", "bad-fasta"):
            assert_same_answer(_send(c, name), reference[name], name)
        results: list[httpx.Response] = []
        lock = threading.Lock()

        def client() -> None:
            r = httpx.post(f"{dep.url}/predict/promoter", content=BIG, headers=FASTA, timeout=120)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2, statuses
    for r in results:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1"
        else:
            assert r.json()["count"] == 300


def test_autoscaling_adds_a_replica_under_load_and_removes_it_when_idle(cluster, port):
    options = ("--min-replicas", "1", "--max-replicas", "2", "--target-ongoing-requests", "1",
               "--upscale-delay-s", "0", "--downscale-delay-s", "3", "--metrics-interval-s", "0.5",
               "--look-back-period-s", "1", "--num-cpus", "0.5", "--max-ongoing-requests", "4")
    with RayDeployment(cluster, port, *options) as dep:
        assert len(cluster.replicas()) == 1
        stop = threading.Event()
        statuses: list[int] = []
        replicas: set[str] = set()

        def client() -> None:
            with httpx.Client(base_url=dep.url, timeout=120) as c:
                while not stop.is_set():
                    r = c.post("/predict/promoter", content=BIG, headers=FASTA)
                    statuses.append(r.status_code)
                    replicas.add(r.headers.get("x-dnabert-replica", ""))

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 120
            while not (len(cluster.replicas()) == 2 and len(replicas) == 2):
                assert time.monotonic() < deadline, f"no second replica under load: {cluster.replicas()}, {replicas}"
                time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert set(statuses) == {200}
        deadline = time.monotonic() + 120
        while len(cluster.replicas()) != 1:
            assert time.monotonic() < deadline, f"idle, still {len(cluster.replicas())} replicas"
            time.sleep(0.5)
        assert httpx.get(f"{dep.url}/readyz", timeout=30).status_code == 200
