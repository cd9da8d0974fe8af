"""The service as a Ray Serve application: the FastAPI app of :func:`service.api.app.create_app`,
unchanged, in every replica of one deployment.

* ``dnabert`` (:class:`DnabertService`): the app behind ``@serve.ingress``, built in each
  replica from the replica's settings; its lifespan loads, checks and warms up every model there,
  so a replica joins the Serve proxy's routing only once it can answer. All routes, error shapes,
  ``/healthz`` and ``/readyz`` are the app's own. Replicas are a fixed number or autoscaled on
  ongoing requests; each reserves ``num_cpus`` or a fraction of a GPU (``num_gpus``).
* ``dnabert-metrics`` (:class:`MetricsBoard`): one small replica (no CPU reserved) that keeps the
  latest Prometheus text of every replica; ``GET /metrics`` answers them merged, each sample
  labelled with its replica (:mod:`service.ray.metrics`).

Admission: Serve's proxy gives each replica at most ``max_ongoing_requests`` requests and holds
at most ``max_queued_requests`` more; beyond that it answers 429 with ``Retry-After`` itself
(``backpressure_config``), before any replica sees the request. Inside a replica the service's
own limits hold as they do in one process (429 ``overloaded`` from the batcher queue, the
deadline admission and the in-flight limit).

Jobs: with more than one replica, the chunks a job runner scores go to whichever replica Serve
picks (:class:`~service.ray.batching.SpreadBatcher`), through the ``score_background`` method,
so one job's chunks run on every replica. The job state must then live where every replica sees
it: the PostgreSQL store (:mod:`service.jobs.postgres`, ``DNABERT_JOBS_DATABASE_URL``) and a jobs
folder they share. Several replicas without it would each take the others' running jobs in the
SQLite store for orphans, so there ``/jobs`` answers 503 ``jobs_unavailable`` saying what to set
(:class:`NoSharedStore`); one replica keeps the single-process SQLite store.

:func:`build` is the application builder that ``serve run`` config files and KubeRay name
(``import_path: service.ray.app:build``); ``dnabert-serve ray`` uses :func:`application`.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError
from ray.serve.handle import DeploymentHandle
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.app import create_app
from service.contract.errors import DnabertError, InferenceFailed, NotReady, Overloaded
from service.jobs.runner import Jobs, JobsUnavailable
from service.jobs.store import JobStore
from service.metrics import BatchMetrics
from service.ray.batching import ServeBatcher, SpreadBatcher, pack_error, unpack
from service.ray.config import DEPLOYMENT, METRICS_DEPLOYMENT, RayConfig
from service.ray.metrics import REPORT_EVERY_S, Board, merge
from service.runtime.batcher import BACKGROUND
from service.runtime.inference import InferenceService
from service.settings import Settings, effective_batching

log = logging.getLogger("dnabert.ray")

REPLICA_HEADER = "X-Dnabert-Replica"
"""Response header naming the replica that answered."""


@serve.deployment(name=METRICS_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})
class MetricsBoard:
    """The latest Prometheus text of every replica (:class:`~service.ray.metrics.Board`)."""

    def __init__(self) -> None:
        self.board = Board()

    def report(self, replica: str, text: str) -> None:
        self.board.report(replica, text)

    def forget(self, replica: str) -> None:
        self.board.forget(replica)

    def merged(self, replica: str, text: str) -> str:
        """Every live replica's text merged, ``replica``'s own taken as ``text`` (fresh)."""
        self.board.report(replica, text)
        return self.board.merged()


class NoSharedStore(Jobs):
    """The jobs of a replica among several without a shared job store: every use is refused
    (503 ``jobs_unavailable``) with what to configure."""

    def __init__(self, service: InferenceService, settings: Settings, replicas: int):
        super().__init__(service, settings)
        self.replicas = replicas

    async def start(self) -> None:
        return None

    async def open(self) -> JobStore:
        raise JobsUnavailable(
            f"jobs are not available on this deployment: its {self.replicas} replicas need a job store they "
            "share (DNABERT_JOBS_DATABASE_URL, PostgreSQL) and one jobs folder (DNABERT_JOBS_DIR on a shared "
            "volume); with the single-process SQLite store, deploy one replica")


class ReplicaHeaders:
    """Pure ASGI middleware for responses that pass the Serve proxy: each names the replica that
    sent it, and carries ``X-Request-ID`` once (the proxy adds the request's id to every response
    itself, so the app's copy of the same id is left out)."""

    def __init__(self, app: ASGIApp, replica: str):
        self.app, self.value = app, replica.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent_id = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if not (k.lower() == b"x-request-id" and v == sent_id)]
                message["headers"] = [*headers, (REPLICA_HEADER.lower().encode(), self.value)]
            await send(message)

        await self.app(scope, receive, send_named)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class DnabertService:
    """One replica: the service's app and its models (module docstring)."""

    def __init__(self, config: dict[str, Any], board: DeploymentHandle | None = None):
        self.config = RayConfig(**config)
        self.settings = self.config.replica_settings()
        self.board = board
        context = serve.get_replica_context()
        self.replica = context.replica_tag
        self.app_name, self.deployment = context.app_name, context.deployment
        self.fastapi: FastAPI | None = None
        self._reporter: asyncio.Task | None = None
        self._scorer: DeploymentHandle | None = None

    # -- the app -------------------------------------------------------------------------------
    def __serve_build_asgi_app__(self) -> FastAPI:
        # Several replicas without a shared store (module docstring): the app's job runner gets a
        # folder that holds no store (it opens none at start-up), then NoSharedStore replaces it.
        shared = bool(getattr(self.settings, "jobs_database_url", None))
        no_jobs = self.config.most_replicas > 1 and not shared
        settings = self.settings
        if no_jobs:
            unused = Path(tempfile.gettempdir()) / f"dnabert-ray-{self.replica}-no-jobs"  # never created
            settings = settings.model_copy(update={"jobs_dir": unused})
        app = create_app(settings)
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app: FastAPI):
            async with inner(app) as state:
                if no_jobs:
                    await app.state.jobs.stop()
                    app.state.jobs = NoSharedStore(app.state.service, self.settings, self.config.most_replicas)
                self._adapt(app.state.service)
                if self.board is not None:
                    self._reporter = asyncio.get_running_loop().create_task(self._report(app), name="metrics")
                log.info("replica %s of %s/%s serves %d models (batching: %s, jobs spread: %s)", self.replica,
                         self.app_name, self.deployment, len(app.state.service.models), self.config.batching,
                         self.config.spreads_jobs)
                try:
                    yield state
                finally:
                    await self._stop_reporting()

        app.router.lifespan_context = lifespan
        if self.board is not None:
            # before the app's own /metrics: the first route that matches answers
            app.router.routes.insert(0, Route("/metrics", self._metrics, methods=["GET"], include_in_schema=False))
        app.add_middleware(ReplicaHeaders, replica=self.replica)
        self.fastapi = app
        return app

    def _adapt(self, service: InferenceService) -> None:
        """Swap in the Ray batching (module docstrings of :mod:`service.ray.batching`)."""
        gpu = bool(service.providers) and service.providers[0] == "CUDAExecutionProvider"
        _, max_batch_size = effective_batching(self.settings, gpu)
        for (task, name), lm in service.models.items():
            if self.config.batching == "serve":
                lm.batcher = ServeBatcher(
                    lm.batcher, lm.model.scores, max_batch_size=max_batch_size,
                    wait_s=self.settings.max_wait_ms / 1000.0, concurrency=self.settings.workers,
                    observer=BatchMetrics(service.metrics, f"{task}/{name}"))
            if self.config.spreads_jobs:
                lm.batcher = SpreadBatcher(lm.batcher, task, name, self._score_elsewhere)

    # -- /metrics over every replica -----------------------------------------------------------
    def _text(self, app: FastAPI) -> str:
        return generate_latest(app.state.service.metrics.registry).decode()

    async def _metrics(self, request) -> Response:
        own = self._text(request.app)
        try:
            text = await self.board.merged.remote(self.replica, own)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the board is down: this replica's figures, labelled
            log.warning("metrics board unavailable (%s); answering this replica's metrics only", type(exc).__name__)
            text = merge({self.replica: own})
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def _report(self, app: FastAPI) -> None:
        while True:
            try:
                await self.board.report.remote(self.replica, self._text(app))  # type: ignore[union-attr]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried at the next report
                log.debug("metrics report failed: %s", exc)
            await asyncio.sleep(REPORT_EVERY_S)

    async def _stop_reporting(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
            self._reporter = None
            try:
                await asyncio.wait_for(self.board.forget.remote(self.replica), 5)  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - it goes stale on its own
                pass

    # -- Serve's probes and the replicas' own calls ----------------------------------------------
    def check_health(self) -> None:
        """Serve restarts a replica whose check fails: here, one whose service stopped serving."""
        service = self.fastapi.state.service if self.fastapi is not None else None
        if service is None or not service.serving:
            raise RuntimeError("the service is not serving (models not loaded, or stopped)")

    async def score_background(self, task: str, name: str, sequences: list[list[int]],
                               timeout: float | None) -> Any:
        """Job work from any replica, scored here at background priority: the scores, or the
        error as data (:func:`~service.ray.batching.pack_error`)."""
        service: InferenceService | None = self.fastapi.state.service if self.fastapi is not None else None
        lm = service.models.get((task, name)) if service is not None and service.started else None
        if lm is None:
            return pack_error(NotReady(f"model {task}/{name} is not served by replica {self.replica}"))
        batcher = lm.batcher.local if isinstance(lm.batcher, SpreadBatcher) else lm.batcher
        try:
            return np.asarray(await batcher.submit(sequences, timeout=timeout, priority=BACKGROUND))
        except DnabertError as exc:
            return pack_error(exc)

    async def _score_elsewhere(self, task: str, name: str, sequences: list[list[int]],
                               timeout: float | None) -> np.ndarray:
        if self._scorer is None:
            self._scorer = serve.get_deployment_handle(self.deployment, self.app_name).options(
                method_name="score_background")
        try:
            reply = await self._scorer.remote(task, name, sequences, timeout)
        except BackPressureError as exc:
            raise Overloaded(f"every replica is busy ({exc.message}); retry later",
                             retry_after=exc.retry_after_s or 1.0) from None
        except (RayActorError, DeploymentUnavailableError, RequestCancelledError) as exc:
            raise InferenceFailed(f"the replica scoring a job chunk of {task}/{name} went away "
                                  f"({type(exc).__name__})") from None
        except RayTaskError as exc:
            raise InferenceFailed(f"remote scoring of {task}/{name} failed: {str(exc).splitlines()[0]}") from None
        return unpack(reply)


def application(config: RayConfig) -> serve.Application:
    """The bound application of ``config``: the service deployment and the metrics board."""
    options = config.deployment_options()
    return DnabertService.options(**options).bind(config.model_dump(), MetricsBoard.bind())


def build(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run`` and KubeRay: ``args`` are :class:`RayConfig` fields."""
    return application(RayConfig(**(args or {})))
