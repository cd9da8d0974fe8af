"""Liveness, readiness, metrics (always open) and the model list (behind the API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.protocol import Health, ModelInfo, ModelsResponse
from service.runtime.inference import InferenceService
from service.runtime.session import available_providers

probes = APIRouter(tags=["service"])
"""Probes and metrics: always open."""
catalogue = APIRouter(tags=["service"])
"""The model list: behind the API key when one is configured."""


def get_service(request: Request) -> InferenceService:
    return request.app.state.service


ServiceDep = Annotated[InferenceService, Depends(get_service)]


@catalogue.get("/models", response_model=ModelsResponse,
               summary="Loaded models and their cards (and any that failed to load)")
async def models(service: ServiceDep) -> ModelsResponse:
    infos = [ModelInfo(task=lm.task, name=lm.name, providers=lm.model.providers, precision=lm.precision,
                       ready=lm.ready, card=lm.model.card.to_json())
             for lm in service.models.values()]
    infos += [ModelInfo(task=task, name=name, providers=[], precision="", ready=False, card={}, error=reason)
              for (task, name), reason in sorted(service.failed.items())]
    return ModelsResponse(models=infos, available_providers=available_providers(),
                          default_promoter_model=service.settings.default_promoter_model)


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
