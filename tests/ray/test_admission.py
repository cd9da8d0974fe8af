"""An overloaded replica on Ray Serve refuses with the service's JSON 429 when its own in-flight
limit is below what Serve lets it hold.

Serve's proxy answers its own 429 (``max_queued_requests`` reached) before any replica sees the
request, with Ray's one line of text as the body: ``BackpressureConfig`` sets only the status and
``Retry-After``. A deployment that wants the service's JSON error instead gives each replica a
``max_requests_in_flight`` (``DNABERT_MAX_REQUESTS_IN_FLIGHT``) below ``--max-ongoing-requests``:
past it the replica answers 429 ``overloaded`` while Serve still routes to it, and Serve's queue
stays empty (``docs/ray.md``, "Admission, errors and headers").

A replica with ``--max-ongoing-requests 4`` and an in-flight limit of 3, under 12 concurrent
uploads: some 200, the rest 429 with the service's JSON error, ``Retry-After`` and the replica's
name; Serve's queue (64) refuses none.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.service.robustness import fasta, needs_models, small_models_dir

pytestmark = [pytest.mark.slow, needs_models]


def test_an_overloaded_replica_answers_the_services_json_429_before_serves_queue(tmp_path):
    pytest.importorskip("ray", reason="Ray Serve is not installed (the ray extra)")
    from bench.ray import LocalRayCluster, RayDeployment
    from bench.run import free_port, random_dna

    body = fasta([(f"b{i}", s) for i, s in enumerate(random_dna(300, 300, seed=31))])
    options = ("--replicas", "1", "--num-cpus", "0.5", "--max-ongoing-requests", "4", "--max-queued-requests", "64",
               "--models-dir", str(small_models_dir(tmp_path, "base")))
    env = {"DNABERT_DEFAULT_PROMOTER_MODEL": "base", "DNABERT_SHUTDOWN_GRACE_S": "2",
           "DNABERT_MAX_REQUESTS_IN_FLIGHT": "3"}
    results: list[httpx.Response] = []
    lock = threading.Lock()
    with LocalRayCluster(num_cpus=2) as cluster, RayDeployment(cluster, free_port(), *options, env=env) as dep:
        start = threading.Barrier(12)

        def client() -> None:
            start.wait()
            r = httpx.post(f"{dep.url}/predict/promoter", content=body, headers={"Content-Type": "text/x-fasta"},
                           timeout=120)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert httpx.get(f"{dep.url}/readyz", timeout=30).status_code == 200
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 3, statuses
    for r in results:
        if r.status_code == 200:
            assert r.json()["count"] == 300
            continue
        assert r.headers["content-type"] == "application/json" and r.headers["retry-after"] == "1", r.text
        error = r.json()["error"]
        assert error["code"] == "overloaded" and "3 prediction requests are already in progress" in error["message"]
        assert r.headers["x-dnabert-replica"]  # answered by the replica, not by Serve's proxy
