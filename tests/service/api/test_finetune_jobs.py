"""Fine-tuning through the API (``POST /jobs?kind=finetune``): a labelled upload becomes a new
version of a named model, served by name at once, with its dev curve and test metrics in the
job's status; and what is refused before any training starts."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.service.robustness import (
    ThreadedServer,
    assert_error,
    make_settings,
    needs_models,
    small_models_dir,
)

pytestmark = needs_models
pytest.importorskip("torch")


def _synthetic_csv(tmp_path, n: int, length: int) -> bytes:
    from training.synth import write_synthetic

    folder = tmp_path / "synth"
    write_synthetic(folder, n=n, length=length, seed=0)
    rows = [line for part in ("train", "dev", "test") for line in (folder / f"{part}.csv").read_text().splitlines()[1:]]
    return ("sequence,label\n" + "\n".join(rows) + "\n").encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    settings = make_settings(small_models_dir(tmp, "base", "cnn_bilstm_max", "onehot_cnn"), jobs_dir=tmp / "jobs",
                             workers=1)
    with ThreadedServer(settings) as srv:
        srv.tmp = tmp
        yield srv


def _wait(base: str, job_id: str, timeout: float = 420.0) -> dict:
    deadline, seen_curve = time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        status = httpx.get(f"{base}/jobs/{job_id}", timeout=30).json()
        seen_curve |= bool((status.get("training") or {}).get("curve")) and status["state"] == "running"
        if status["state"] in ("succeeded", "failed", "cancelled"):
            status["seen_curve_while_running"] = seen_curve
            return status
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.mark.slow
def test_a_finetune_job_serves_a_new_model_by_name_with_its_test_accuracy(server):
    body = _synthetic_csv(server.tmp, n=4000, length=60)  # the synthetic TATA-box set (dnabert-train synth)
    r = httpx.post(f"{server.base}/jobs", params={"kind": "finetune", "task": "promoter", "base": "cnn_bilstm_max",
                                                  "name": "tata", "epochs": 3, "lr": 5e-4, "max_minutes": 3},
                   content=body, headers={"Content-Type": "text/csv"}, timeout=60)
    assert r.status_code == 202, r.text
    status = _wait(server.base, r.json()["id"])
    assert status["state"] == "succeeded", status
    training = status["training"]
    assert status["seen_curve_while_running"] and len(training["curve"]) >= 1
    assert training["metrics"]["test"]["accuracy"] >= 0.9, training["metrics"]["test"]
    assert training["served_as"] == "tata@1" and training["split"]["sizes"]["test"] > 300
    assert status["progress"]["done"] == status["progress"]["total"] == 3
    result = httpx.get(f"{server.base}/jobs/{r.json()['id']}/result", timeout=30).json()
    assert result["version"] == 1 and result["metrics"]["test"] == training["metrics"]["test"]
    # served by name at once, through the same endpoints as every model
    from training.synth import synthetic_tata

    seqs, labels = synthetic_tata(100, 60, seed=7)  # sequences none of the job's data holds
    fasta = "".join(f">s{i}\n{seq}\n" for i, seq in enumerate(seqs))
    pred = httpx.post(f"{server.base}/predict/promoter", params={"model": "tata"}, content=fasta,
                      headers={"Content-Type": "text/x-fasta"}, timeout=30)
    assert pred.status_code == 200 and pred.json()["model"] == "tata", pred.text
    called = [int(x["label"] == "promoter") for x in pred.json()["results"]]
    assert sum(c == y for c, y in zip(called, labels)) >= 85
    models = {m["name"]: m for m in httpx.get(f"{server.base}/models", timeout=30).json()["models"]}
    assert models["tata"]["version"] == 1
    assert (server.tmp / "models" / "promoter" / "tata" / "1" / "card.json").is_file()


def test_what_is_refused_before_any_training(server, monkeypatch):
    post = lambda **params: httpx.post(f"{server.base}/jobs", params={"kind": "finetune", **params},  # noqa: E731
                                       content=b"sequence,label\nACGT,1\n", headers={"Content-Type": "text/csv"},
                                       timeout=30)
    assert_error(post(base="nope", name="x"), 404, "model_not_found")
    assert_error(post(base="onehot_cnn", name="x"), 422)
    assert_error(post(base="..", name="x"), 422)
    assert_error(post(base="cnn_bilstm_max", name="Bad Name"), 422)
    assert_error(post(base="cnn_bilstm_max", name="x", variant="lncrna"), 422)
    assert_error(post(base="cnn_bilstm_max", name="x", epochs=0), 422)
    assert_error(post(base="cnn_bilstm_max", name="x", stride=50), 422)  # another kind's parameter
    import service.jobs.finetune as finetune

    monkeypatch.setattr(finetune, "training_available", lambda: False)
    r = post(base="cnn_bilstm_max", name="x")
    assert_error(r, 501, "training_unavailable")
    assert "pip install" in r.json()["error"]["message"] and "train" in r.json()["error"]["message"]


def test_a_failing_training_fails_the_job_with_the_reason(server):
    r = httpx.post(f"{server.base}/jobs", params={"kind": "finetune", "base": "cnn_bilstm_max", "name": "broken"},
                   content=b"sequence,label\nACGTACGTAC,3\n", headers={"Content-Type": "text/csv"}, timeout=30)
    assert r.status_code == 202, r.text
    status = _wait(server.base, r.json()["id"], timeout=120)
    assert status["state"] == "failed" and status["error"]["code"] == "finetune_failed"
    assert "upload:2: label must be 0 or 1" in status["error"]["message"]
    assert str(server.tmp) not in status["error"]["message"]  # no server path
    assert "broken" not in {m["name"] for m in httpx.get(f"{server.base}/models", timeout=30).json()["models"]}
