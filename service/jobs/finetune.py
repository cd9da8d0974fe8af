"""``kind=finetune``: a labelled upload becomes a new version of a named model, served at once.

``POST /jobs?kind=finetune&task=promoter&base=cnn_bilstm_max&variant=cnn&name=my_promoters`` with
the labelled file as the body (promoter: CSV ``sequence,label``; lncRNA: FASTA whose headers start
with one 0/1 digit per label, nucleus, cytoplasm, extracellular vesicle). The job

1. checks the request before the upload is read: the ``train`` extra (torch) must be installed
   (else 501 naming what to install), ``base`` must be a served DNABERT-2 or DNABERT model of the
   task (its backbone is recovered from its graph) or the name of a checkpoint folder under
   ``DNABERT_CHECKPOINTS_DIR`` (never a path the client gives), ``variant`` a head of the task,
   ``name`` a model name, and the hyperparameters within their bounds;
2. runs ``python -m training.finetune`` (:mod:`training.finetune`) in a process of its own, at a
   lower CPU priority, with an address-space limit (``DNABERT_FINETUNE_MEMORY_GB``) and a
   wall-clock limit (the job's ``max_minutes``, plus the time to export): the upload is split by
   sequence hash into train/dev/test, trained with early stopping on dev, tested, exported and
   verified. While it runs, ``GET /jobs/{id}`` shows the dev curve (``training.curve``), epoch by
   epoch;
3. moves the exported folder into ``<models>/<task>/<name>/<N>/`` (``N`` the next version of that
   name; a rename within the models folder, so a half-copied version is never seen) and loads it
   with :meth:`~service.runtime.inference.InferenceService.reload`: a version that fails its
   checks or warm-up fails the job, and the versions that served before go on serving;
4. answers the training summary as its result (JSON: the test metrics, the split, the model and
   version), also shown in the job's status.

A fine-tuning job that a restart interrupts starts its training again from the beginning.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Query

from service.contract.card import CARD_FILE
from service.contract.errors import DnabertError, ModelNotFound
from service.contract.tasks import ALL, LNCRNA, PROMOTER, TASKS
from service.jobs.kinds import JobContext, Texts, Unit, Work
from service.runtime.inference import InferenceService, without_paths
from service.runtime.versions import version_folders
from service.settings import Settings

log = logging.getLogger("dnabert.jobs")

LABELLED_FILE = "labelled"
"""The spooled upload of a fine-tuning job."""
RUN = "run"
"""The worker's folder inside the job's folder (its data splits, run folder, curve, result)."""
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
BACKBONES = ("dnabert2", "dnabert1")
DNABERT1_VARIANTS = ("dnabert1_linear1", "dnabert1_linear2")


class TrainingUnavailable(DnabertError):
    """This installation cannot train: the ``train`` extra is missing."""

    code = "training_unavailable"
    http_status = 501


class InvalidFinetune(DnabertError):
    code = "invalid_parameter"
    http_status = 422


class FinetuneFailed(DnabertError):
    code = "finetune_failed"
    http_status = 500


class ModelsReadOnly(DnabertError):
    code = "models_read_only"
    http_status = 503


def training_available() -> bool:
    """Whether this Python can run :mod:`training.finetune` (torch and the training package)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "training", "safetensors", "onnx"))


def finetune_parameters(
    base: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description=(
        "a served DNABERT-2 or DNABERT model of the task (e.g. cnn_bilstm_max), whose fine-tuned backbone is the "
        "start; or the name of a checkpoint folder under DNABERT_CHECKPOINTS_DIR (a DNABERT-2-117M directory)"))],
    name: Annotated[str, Query(pattern=NAME.pattern, description=(
        "the model name the result is served as: a new name, or a new version of an existing one"))],
    variant: Annotated[str | None, Query(max_length=32, description=(
        "the head: promoter base, cnn, bilstm, cnn_bilstm_max or cnn_bilstm_avg (DNABERT: dnabert1_linear1, "
        "dnabert1_linear2); lncRNA: lncrna. Default: the base model's own"))] = None,
    epochs: Annotated[int, Query(ge=1, le=50)] = 3,
    lr: Annotated[float | None, Query(gt=0.0, le=0.01, description="backbone learning rate (default: the "
                                                                    "architecture's)")] = None,
    max_minutes: Annotated[float, Query(gt=0.0, le=600.0, description=(
        "training time at most (early stopping may end it sooner); also bounded by DNABERT_FINETUNE_MAX_MINUTES"))]
    = 10.0,
) -> None:
    """The query parameters of a fine-tuning job (besides kind and task)."""


def resolve_base(service: InferenceService, settings: Settings, task: str, base: str) -> tuple[Path, str]:
    """The folder of ``base`` and its variant: a served model of the task with a backbone, or a
    checkpoint folder by name under ``checkpoints_dir``."""
    served = service.task_models(task)
    lm = served.get(base)
    if lm is not None:
        if lm.model.card.architecture not in BACKBONES:
            raise InvalidFinetune(f"base model {base!r} is a {lm.model.card.architecture} model without a transformer "
                                  "backbone; start from a DNABERT-2 or DNABERT model")
        return lm.model.folder, lm.model.card.variant
    root = settings.checkpoints_dir
    if root is not None and not base.startswith(".") and "/" not in base:
        folder = (root / base).resolve()
        if folder.parent == root.resolve() and folder.is_dir() and (
                (folder / "config.json").is_file() or (folder / "classifier.json").is_file()):
            return folder, ""
    choices = sorted(n for n, m in served.items() if m.model.card.architecture in BACKBONES)
    where = " or a checkpoint folder in DNABERT_CHECKPOINTS_DIR" if root is not None else ""
    raise ModelNotFound(f"unknown base {base!r}: a served {task} model with a backbone ({', '.join(choices)}){where}")


def _variant(task: str, base_variant: str, architecture: str, variant: str | None) -> str:
    variant = variant or base_variant or TASKS[task].dnabert2_variants[0]
    allowed = DNABERT1_VARIANTS if architecture == "dnabert1" else TASKS[task].dnabert2_variants
    if variant not in allowed:
        raise InvalidFinetune(f"variant {variant[:32]!r} is not a head for this base; choose one of "
                              f"{', '.join(allowed)}")
    return variant


def next_version(models_dir: Path, task: str, name: str) -> int:
    versions = version_folders(models_dir).get((task, name), {})
    return max(versions, default=0) + 1


class FinetuneWork(Work):
    """One unit: the whole training run, in a worker process; the result is its summary (JSON)."""

    unit = "epochs"
    formats = {"json": "application/json"}
    tasks = (PROMOTER, LNCRNA)
    ahead = 1

    @classmethod
    def check(cls, service: InferenceService, task: str, params: dict) -> None:
        super().check(service, task, params)
        if not training_available():
            raise TrainingUnavailable(
                "this installation cannot train: fine-tuning needs the 'train' extra (torch). Install it beside "
                "the service: pip install torch==2.13.0 (the CPU build; or a CUDA build) then pip install -e "
                "'.[cpu,train]' (or '.[gpu,train]'), or run the service from the training image")
        settings: Settings = service.settings
        if params["name"] == ALL or params["name"] in TASKS:
            raise InvalidFinetune(f"{params['name']!r} cannot be a model name")
        folder, base_variant = resolve_base(service, settings, task, params["base"])
        from service.runtime.model import load_card

        arch = load_card(folder).architecture if (folder / CARD_FILE).is_file() else "dnabert2"
        params["variant"] = _variant(task, base_variant, arch, params.get("variant"))
        params["max_minutes"] = min(float(params["max_minutes"]), settings.finetune_max_minutes)
        task_dir = settings.models_dir / task
        if not os.access(task_dir if task_dir.is_dir() else settings.models_dir, os.W_OK):
            raise ModelsReadOnly("the models folder is not writable here: a fine-tuned version cannot be added "
                                 "(mount DNABERT_MODELS_DIR writable)")

    async def setup(self) -> None:
        params, task = self.params, self.ctx.job.task
        self.base, _ = resolve_base(self.service, self.ctx.settings, task, params["base"])
        self.run_dir = self.ctx.folder / RUN
        self.state = {"version": None}

    def count(self) -> int:
        self.total = int(self.params["epochs"])
        return self.total

    def units(self) -> Iterator[Unit]:
        if self.state.get("version") is None:
            yield Unit(self.total, None)

    async def compute(self, unit: Unit) -> dict[str, Any]:
        shutil.rmtree(self.run_dir, ignore_errors=True)  # a restarted job trains again from the start
        self.run_dir.mkdir(parents=True)
        export = self.run_dir / "export"
        spec = {"task": self.ctx.job.task, "variant": self.params["variant"], "name": self.params["name"],
                "data": str(self.ctx.input(LABELLED_FILE)), "base": str(self.base), "run_dir": str(self.run_dir),
                "out": str(export), "epochs": int(self.params["epochs"]), "lr": self.params.get("lr"),
                "max_minutes": float(self.params["max_minutes"]), "threads": max(1, (os.cpu_count() or 2) // 2)}
        (self.run_dir / "spec.json").write_text(json.dumps(spec, indent=2))
        await self._train(spec)
        summary = json.loads((self.run_dir / "result.json").read_text())
        summary["curve"] = _curve(self.run_dir / "run" / "curve.jsonl")
        version = await self._publish(export)
        summary.update(model=self.params["name"], version=version, served_as=f"{self.params['name']}@{version}")
        (self.run_dir / "result.json").write_text(json.dumps(summary, indent=2))
        return summary

    async def _train(self, spec: dict) -> None:
        settings: Settings = self.ctx.settings
        limit = int(settings.finetune_memory_gb * 1024**3)

        def limits() -> None:  # in the child, before it starts
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            os.nice(5)

        log_path = self.run_dir / "worker.log"
        with log_path.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "training.finetune", str(self.run_dir / "spec.json"), stdout=out,
                stderr=asyncio.subprocess.STDOUT, preexec_fn=limits, cwd=str(self.run_dir))
            try:
                await asyncio.wait_for(proc.wait(), timeout=spec["max_minutes"] * 90 + 300)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                raise FinetuneFailed(f"fine-tuning ran past its time limit ({spec['max_minutes']} min of training "
                                     "plus the export) and was stopped") from None
            finally:
                if proc.returncode is None:  # cancelled (job cancelled or the server stopping)
                    proc.kill()
                    await proc.wait()
        if proc.returncode != 0:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            reason = next((ln.removeprefix("error: ") for ln in reversed(lines) if ln.startswith("error: ")),
                          lines[-1] if lines else f"exit status {proc.returncode}")
            reason = reason.replace(str(self.ctx.input(LABELLED_FILE)), "upload")
            raise FinetuneFailed(f"fine-tuning failed: {without_paths(reason)[:500]}")

    async def _publish(self, export: Path) -> int:
        """Move the exported folder in as the name's next version, and load it."""
        task, name = self.ctx.job.task, self.params["name"]
        models = self.ctx.settings.models_dir
        version = next_version(models, task, name)
        target = models / task / name / str(version)
        incoming = models / task / name / f".incoming-{self.ctx.job.id}"
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copytree, export, incoming, dirs_exist_ok=True)
        incoming.rename(target)
        report = await self.service.reload(task)
        label = f"{task}/{name}@{version}"
        if label in report.refused:
            raise FinetuneFailed(f"the fine-tuned model was refused when loaded: {report.refused[label]}")
        return version

    def emit(self, unit: Unit, result: dict[str, Any]) -> tuple[Texts, int]:
        self.state["version"] = result["version"]
        return [json.dumps(result, allow_nan=False)], int(self.params["epochs"])


def _curve(path: Path) -> list[dict[str, Any]]:
    """The dev curve the trainer writes, one point per evaluation (a line being written is skipped)."""
    curve = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                point = json.loads(line)
            except ValueError:
                continue
            curve.append({k: point.get(k) for k in ("epoch", "step", "train_loss", "dev_score", "dev")})
    return curve


def training_status(folder: Path, result: Path | None = None) -> dict[str, Any] | None:
    """What ``GET /jobs/{id}`` shows of a fine-tuning job: the dev curve so far while it trains;
    once it has succeeded, the curve, the test metrics and the version served (from its result)."""
    if result is not None and result.is_file():
        try:
            summary = json.loads(result.read_text())
        except ValueError:
            summary = {}
        return {k: summary[k] for k in ("curve", "metrics", "split", "model", "version", "served_as") if k in summary}
    run = folder / RUN
    return {"curve": _curve(run / "run" / "curve.jsonl")} if run.is_dir() else None


__all__ = ["FinetuneWork", "JobContext", "finetune_parameters", "training_status"]
