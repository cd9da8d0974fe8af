"""Liveness, readiness, metrics (always open) and the model list (behind the API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from service.api.protocol import Health, ModelInfo, ModelsResponse
from service.contract.errors import DnabertError, NotReady
from service.contract.tasks import PROMOTER, TASK_NAMES
from service.runtime.inference import InferenceService
from service.runtime.session import available_providers

probes = APIRouter(tags=["service"])
"""Probes and metrics: always open."""
catalogue = APIRouter(tags=["service"])
"""The model list: behind the API key when one is configured."""


def get_service(request: Request) -> InferenceService:
    return request.app.state.service


ServiceDep = Annotated[InferenceService, Depends(get_service)]


class InvalidTask(DnabertError):
    code = "invalid_parameter"
    http_status = 422


class VersionInfo(BaseModel):
    version: int
    ready: bool
    serving: bool = Field(description="the version that model=<name> selects (the newest ready one)")
    error: str | None = Field(None, description="why this version is refused (the others serve)")


class VersionedModelInfo(ModelInfo):
    version: int | None = Field(None, description="the version model=<name> selects; model=<name>@<N> another")
    versions: list[VersionInfo] = Field(default_factory=list, description="every version found, oldest first")


class VersionedModelsResponse(ModelsResponse):
    models: list[VersionedModelInfo]  # type: ignore[assignment]


class ReloadResponse(BaseModel):
    loaded: list[str] = Field(description="versions loaded and warmed up ('task/name@N'); the newest of a name "
                                          "now answers model=<name>")
    refused: dict[str, str] = Field(description="versions that failed their checks or warm-up, and why; the "
                                                "versions that served before still do")
    unchanged: list[str] = Field(description="versions already loaded")


def _versions(service: InferenceService, task: str, name: str) -> list[VersionInfo]:
    served = service.models.get((task, name))
    infos = [VersionInfo(version=v, ready=lm.ready, serving=lm is served)
             for v, lm in sorted(service.versions.get((task, name), {}).items())]
    prefix = f"{task}/{name}@"
    infos += [VersionInfo(version=int(label[len(prefix):]), ready=False, serving=False, error=reason)
              for label, reason in service.refused.items() if label.startswith(prefix)]
    return sorted(infos, key=lambda v: v.version)


def model_infos(service: InferenceService) -> list[VersionedModelInfo]:
    """One entry per model name: the version it serves, its card, and every version found."""
    infos = [VersionedModelInfo(task=lm.task, name=lm.name, providers=lm.model.providers, precision=lm.precision,
                                ready=lm.ready, card=lm.model.card.to_json(), version=lm.version,
                                versions=_versions(service, lm.task, lm.name))
             for lm in service.models.values()]
    infos += [VersionedModelInfo(task=task, name=name, providers=[], precision="", ready=False, card={},
                                 error=reason, versions=_versions(service, task, name))
              for (task, name), reason in sorted(service.failed.items())]
    return infos


@catalogue.get("/models", response_model=VersionedModelsResponse,
               summary="Loaded models, their versions and cards (and any that failed to load)")
async def models(service: ServiceDep) -> VersionedModelsResponse:
    return VersionedModelsResponse(models=model_infos(service), available_providers=available_providers(),
                                   default_promoter_model=service.default_model(PROMOTER))


@catalogue.post("/models/reload", response_model=ReloadResponse,
                summary="Load the model versions added to the models folder; the newest of each name serves")
async def reload_models(service: ServiceDep, task: Annotated[str | None, Query(
        description="only this task's models (default: every task)", json_schema_extra={"enum": TASK_NAMES})] = None
                        ) -> ReloadResponse:
    """Each new version is checked against its card and warmed up beside the serving ones; a
    version that fails is refused and reported, and the version that served before goes on
    serving. Requests in flight finish on the session they started on."""
    if not service.started:
        raise NotReady("the service is starting: models are loading or warming up")
    if task is not None and task not in TASK_NAMES:
        raise InvalidTask(f"task must be one of {', '.join(TASK_NAMES)}, not {task[:40]!r}")
    report = await service.reload(task)
    return ReloadResponse(loaded=report.loaded, refused=report.refused, unchanged=report.unchanged)


@probes.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


@probes.get("/readyz", response_model=Health, responses={503: {"model": Health}},
            summary="Ready once every model has run a warm-up batch")
async def readyz(service: ServiceDep) -> Response:
    """200 ``ready``: every model serves. 200 ``degraded``: some model folders failed at start-up
    (``allow_partial_start``) and are listed in ``errors``; the others, the default promoter model
    among them, serve. 503 ``not_ready``: starting, stopping, or the default promoter model is not
    available."""
    detail = {f"{lm.task}/{lm.name}": lm.ready and service.started for lm in service.models.values()}
    detail.update({f"{task}/{name}": False for task, name in service.failed})
    errors = {f"{task}/{name}": reason for (task, name), reason in sorted(service.failed.items())} or None
    status = "ready" if service.ready else "degraded" if service.serving else "not_ready"
    body = Health(status=status, detail=detail, errors=errors)
    return JSONResponse(body.model_dump(), status_code=503 if status == "not_ready" else 200)


@probes.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
