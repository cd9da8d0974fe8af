"""The Ray Serve application's parts that need neither Ray nor a cluster: the deployment options
a config becomes, the replica's settings, the merged metrics and the ``dnabert-serve ray``
options."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from service.cli import build_parser
from service.ray.cli import config_from
from service.ray.config import DEPLOYMENT, RayConfig, forwarded_environment
from service.ray.metrics import Board, families, label_sample, merge


# -- config ----------------------------------------------------------------------------------------
def test_a_fixed_number_of_replicas_and_ray_queue_limits_answered_429():
    opts = RayConfig(replicas=3, num_cpus=0.5, max_ongoing_requests=8, max_queued_requests=20,
                     retry_after_s=2).deployment_options()
    assert opts["name"] == DEPLOYMENT and opts["num_replicas"] == 3 and "autoscaling_config" not in opts
    assert opts["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert (opts["max_ongoing_requests"], opts["max_queued_requests"]) == (8, 20)
    assert opts["backpressure_config"] == {"status_code": 429, "retry_after_s": 2}


def test_autoscaling_on_ongoing_requests():
    cfg = RayConfig(min_replicas=2, max_replicas=6, target_ongoing_requests=4, upscale_delay_s=1,
                    downscale_delay_s=3, num_gpus=0.25)
    opts = cfg.deployment_options()
    assert "num_replicas" not in opts
    assert opts["autoscaling_config"] == {
        "min_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 4, "upscale_delay_s": 1,
        "downscale_delay_s": 3, "metrics_interval_s": 10.0, "look_back_period_s": 30.0}
    assert opts["ray_actor_options"]["num_gpus"] == 0.25
    assert cfg.spreads_jobs and not RayConfig().spreads_jobs and RayConfig(replicas=2).spreads_jobs


@pytest.mark.parametrize("bad", [
    {"min_replicas": 3, "max_replicas": 2},
    {"min_replicas": 2},
    {"env": {"PATH": "/bin"}},
    {"settings": {"no_such_setting": 1}},
    {"batching": "other"},
    {"replicas": 0},
    {"unknown_field": 1},
])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValidationError):
        RayConfig(**bad)


def test_shutdown_grace_comes_from_the_replicas_settings(monkeypatch):
    monkeypatch.delenv("DNABERT_SHUTDOWN_GRACE_S", raising=False)
    assert RayConfig().deployment_options()["graceful_shutdown_timeout_s"] == 10.0
    assert RayConfig(env={"DNABERT_SHUTDOWN_GRACE_S": "25"}).shutdown_grace() == 25.0
    assert RayConfig(settings={"shutdown_grace_s": 7}).shutdown_grace() == 7.0
    assert RayConfig(graceful_shutdown_s=3, settings={"shutdown_grace_s": 7}).shutdown_grace() == 3


def test_replica_settings_share_the_replicas_cpus_and_pick_the_gpu(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # a replica writes its env in: not into this process
    for key in ("DNABERT_DEVICE", "DNABERT_INTRA_OP_THREADS", "DNABERT_WORKERS", "DNABERT_MAX_QUEUE"):
        monkeypatch.delenv(key, raising=False)
    s = RayConfig(num_cpus=4).replica_settings()
    assert s.intra_op_threads == 2 and s.device == "auto"  # 4 CPUs over 2 workers
    assert RayConfig(num_cpus=0.5).replica_settings().intra_op_threads == 1
    assert RayConfig(num_cpus=8, settings={"intra_op_threads": 3}).replica_settings().intra_op_threads == 3
    gpu = RayConfig(num_gpus=0.5).replica_settings()
    assert gpu.device == "gpu" and gpu.intra_op_threads == 0
    monkeypatch.setenv("DNABERT_DEVICE", "cpu")  # the replica's own environment decides
    assert RayConfig(num_gpus=0.5).replica_settings().device == "cpu"
    s = RayConfig(env={"DNABERT_MAX_QUEUE": "123"}, settings={"workers": 4}).replica_settings()
    assert s.max_queue == 123 and s.workers == 4


def test_the_cli_forwards_dnabert_variables_but_not_the_address():
    env = {"DNABERT_MAX_QUEUE": "5", "DNABERT_HOST": "0.0.0.0", "DNABERT_PORT": "1", "HOME": "/root"}
    assert forwarded_environment(env) == {"DNABERT_MAX_QUEUE": "5"}


def test_the_ray_command_and_its_options(monkeypatch):
    monkeypatch.setenv("DNABERT_MAX_QUEUE", "77")
    args = build_parser().parse_args(["ray", "--address", "127.0.0.1:6379", "--max-replicas", "4",
                                      "--min-replicas", "2", "--num-gpus", "0.5", "--port", "9000",
                                      "--models-dir", "/m", "--batching", "serve"])
    assert args.func.__module__ == "service.ray.cli" and args.address == "127.0.0.1:6379" and args.port == 9000
    cfg = config_from(args)
    assert (cfg.min_replicas, cfg.max_replicas, cfg.num_gpus, cfg.batching) == (2, 4, 0.5, "serve")
    assert cfg.settings == {"models_dir": "/m"} and cfg.env["DNABERT_MAX_QUEUE"] == "77"
    fixed = config_from(build_parser().parse_args(["ray", "--replicas", "3", "--min-replicas", "2"]))
    assert fixed.replicas == 3 and not fixed.autoscaling and fixed.min_replicas is None


# -- metrics -------------------------------------------------------------------------------------
def _exposition(requests: int, latencies: list[float]) -> str:
    """A replica's text, as prometheus_client writes it."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    registry = CollectorRegistry()
    counter = Counter("dnabert_requests", "Requests", ["endpoint", "status"], registry=registry)
    counter.labels("promoter", "200").inc(requests)
    Gauge("dnabert_queue_depth", "Queued", ["model"], registry=registry).labels("promoter/base").set(0)
    hist = Histogram("dnabert_request_seconds", "Latency", ["endpoint"], buckets=(0.1, 1.0), registry=registry)
    for x in latencies:
        hist.labels("promoter").observe(x)
    return generate_latest(registry).decode()


A, B = _exposition(3, [0.05, 0.5]), _exposition(5, [2.0])


def test_samples_get_a_replica_label():
    assert label_sample('x_total{a="1"} 2.0', "r1") == 'x_total{replica="r1",a="1"} 2.0'
    assert label_sample("up 1.0", "r1") == 'up{replica="r1"} 1.0'
    assert label_sample("x{} 1", 'a"b') == 'x{replica="a\\"b"} 1'
    with pytest.raises(ValueError):
        label_sample("{bad} 1", "r")


def test_replicas_texts_merge_into_one_exposition():
    from prometheus_client.parser import text_string_to_metric_families

    text = merge({"r2": B, "r1": A})
    lines = text.splitlines()
    names = [f[0] for f in families(text)]
    assert len(names) == len(set(names)) == len(families(A))  # one HELP/TYPE per family
    assert lines.count("# TYPE dnabert_requests_total counter") == 1
    assert 'dnabert_requests_total{replica="r1",endpoint="promoter",status="200"} 3.0' in lines
    assert 'dnabert_requests_total{replica="r2",endpoint="promoter",status="200"} 5.0' in lines
    at = lines.index("# TYPE dnabert_queue_depth gauge")  # a family's samples follow its own TYPE
    assert lines[at + 1].startswith('dnabert_queue_depth{replica="r1"')
    assert lines[at + 2].startswith('dnabert_queue_depth{replica="r2"')
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    total = sum(s.value for s in parsed["dnabert_requests"].samples if s.name == "dnabert_requests_total")
    count = sum(s.value for s in parsed["dnabert_request_seconds"].samples
                if s.name == "dnabert_request_seconds_count")
    slow = sum(s.value for s in parsed["dnabert_request_seconds"].samples
               if s.name == "dnabert_request_seconds_bucket" and s.labels["le"] == "1.0")
    assert (total, count, slow) == (8.0, 3.0, 2.0)
    assert {s.labels["replica"] for f in parsed.values() for s in f.samples} == {"r1", "r2"}
    assert merge({}) == ""


def test_replicas_that_stop_reporting_are_left_out():
    board = Board(stale_after_s=10)
    board.report("r1", A, now=0.0)
    board.report("r2", B, now=5.0)
    assert sorted(board.live(now=9.0)) == ["r1", "r2"]
    assert sorted(board.live(now=12.0)) == ["r2"]
    board.forget("r2")
    assert board.merged(now=12.0) == ""


# -- the benchmark's report ----------------------------------------------------------------------
def test_the_benchmark_reports_medians_over_rounds():
    from bench.ray import report_md, summary

    def row(config, rate, p99, statuses):
        return {"config": config, "sequences": "300 bp", "records_per_request": 100, "clients": 8,
                "sequences_per_s": rate, "p50_ms": 10.0, "p99_ms": p99, "batch_size_mean": 30.0,
                "statuses": statuses}

    rows = [row("a", 100.0, 9.0, {"200": 5}), row("a", 300.0, 1.0, {"200": 4, "429": 1}),
            row("a", 200.0, 5.0, {"200": 5}), row("b", 50.0, 2.0, {"200": 3})]
    (a, b) = summary(rows)
    assert (a["sequences_per_s"], a["min"], a["max"], a["p99_ms"]) == (200.0, 100.0, 300.0, 5.0)
    assert (a["errors"], a["requests"]) == (1, 15) and b["sequences_per_s"] == 50.0
    machine = {"cpus": 2, "platform": "p", "python": "3", "onnxruntime": "1", "commit": "c", "date": "d",
               "providers": ["CPUExecutionProvider"]}
    text = report_md({"machine": machine, "seconds": 10, "rounds": 3, "rows": rows,
                      "load_average_before": (2.5, 1.0, 1.0), "load_average_during": [(3.0, 2.0, 1.0)]})
    assert "| a | 300 bp | 100 | 8 | 200 (100-300) | 10 | 5 | 30.0 | 1 / 15 |" in text
    assert "The machine was shared" in text
