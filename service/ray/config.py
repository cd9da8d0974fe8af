"""What a Ray Serve deployment of the service is made of, and the Serve options it becomes.

One :class:`RayConfig` describes the application: how many replicas (a fixed number, or
autoscaling between ``min_replicas`` and ``max_replicas`` on ongoing requests), what each replica
reserves (``num_cpus`` on CPU hosts, a fraction of a GPU with ``num_gpus``), Ray's admission
limits (``max_ongoing_requests`` per replica, ``max_queued_requests`` in front of them, answered
429 with ``Retry-After``), the batching inside each replica, and the service settings the
replicas run with. ``dnabert-serve ray`` builds it from its options; a ``serve run`` config file
passes the same fields as the application's ``args``. Nothing here imports Ray.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.settings import Settings

DEPLOYMENT = "dnabert"
"""The name of the deployment that serves the app (every model, every route)."""
METRICS_DEPLOYMENT = "dnabert-metrics"
"""The name of the small deployment that gathers the replicas' Prometheus texts."""
ENV_PREFIX = "DNABERT_"


class RayConfig(BaseModel):
    """One application on Ray Serve (module docstring). Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    app_name: str = Field("dnabert", min_length=1, description="Serve application name")
    route_prefix: str = Field("/", pattern=r"^/", description="where the app's routes start on the Serve proxy")
    replicas: int = Field(1, ge=1, description="fixed number of replicas (without autoscaling)")
    min_replicas: int | None = Field(None, ge=1, description="autoscaling: fewest replicas")
    max_replicas: int | None = Field(None, ge=1, description="autoscaling: most replicas; set to autoscale")
    target_ongoing_requests: float = Field(
        16.0, gt=0, description="autoscaling: ongoing requests per replica that Serve aims at")
    upscale_delay_s: float = Field(30.0, ge=0, description="autoscaling: load held this long before scaling up")
    downscale_delay_s: float = Field(300.0, ge=0, description="autoscaling: idle this long before scaling down")
    metrics_interval_s: float = Field(10.0, gt=0, description="autoscaling: how often replicas report their load")
    look_back_period_s: float = Field(30.0, gt=0, description="autoscaling: the window the load is averaged over")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica (fractions allowed)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (fractions share one GPU); > 0 serves on CUDA")
    max_ongoing_requests: int = Field(
        64, ge=1, description="requests one replica holds at once (its batcher batches across them)")
    max_queued_requests: int = Field(
        256, ge=-1, description="requests waiting for a replica, per Serve proxy or caller; beyond: 429 "
                                "(-1: no limit)")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After of a 429 for Ray's queue limit")
    batching: Literal["dynamic", "serve"] = Field(
        "dynamic", description="dynamic: the service's batcher (default); serve: Ray's @serve.batch, for comparison")
    spread_jobs: bool | None = Field(
        None, description="jobs' chunks are scored on whichever replica Serve picks; default: when "
                          "more than one replica can run")
    graceful_shutdown_s: float | None = Field(
        None, ge=0, description="a stopping replica's requests get this long; default: DNABERT_SHUTDOWN_GRACE_S")
    env: dict[str, str] = Field(
        default_factory=dict, description="DNABERT_* variables set in every replica before its settings are read")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="settings given directly (field names of service.settings.Settings)")

    @model_validator(mode="after")
    def _check(self) -> RayConfig:
        if self.min_replicas is not None and self.max_replicas is None:
            raise ValueError("min_replicas needs max_replicas (autoscaling)")
        if self.max_replicas is not None and (self.min_replicas or 1) > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        bad = sorted(k for k in self.env if not k.startswith(ENV_PREFIX))
        if bad:
            raise ValueError(f"env holds only {ENV_PREFIX}* variables, not {', '.join(bad)}")
        unknown = sorted(set(self.settings) - set(Settings.model_fields))
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None

    @property
    def most_replicas(self) -> int:
        return self.max_replicas if self.max_replicas is not None else self.replicas

    @property
    def spreads_jobs(self) -> bool:
        return self.spread_jobs if self.spread_jobs is not None else self.most_replicas > 1

    def shutdown_grace(self) -> float:
        """Seconds a stopping replica's requests get: :attr:`graceful_shutdown_s`, else the
        replicas' ``shutdown_grace_s`` as far as this process can tell (:attr:`settings`,
        :attr:`env`, then this process's environment)."""
        if self.graceful_shutdown_s is not None:
            return self.graceful_shutdown_s
        if "shutdown_grace_s" in self.settings:
            return float(self.settings["shutdown_grace_s"])
        if f"{ENV_PREFIX}SHUTDOWN_GRACE_S" in self.env:
            return float(self.env[f"{ENV_PREFIX}SHUTDOWN_GRACE_S"])
        return Settings().shutdown_grace_s

    def deployment_options(self) -> dict[str, Any]:
        """The options of ``serve.deployment(...).options(**these)`` for the service deployment."""
        options: dict[str, Any] = {
            "name": DEPLOYMENT,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": 429, "retry_after_s": self.retry_after_s},
            "graceful_shutdown_timeout_s": self.shutdown_grace(),
            "graceful_shutdown_wait_loop_s": 1.0,
            "health_check_period_s": 10.0,
            "health_check_timeout_s": 30.0,
            # a replica that cannot start (a broken model folder, no GPU) fails the deploy soon
            "max_constructor_retry_count": 3,
        }
        if self.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas or 1,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
                "metrics_interval_s": self.metrics_interval_s,
                "look_back_period_s": self.look_back_period_s,
            }
        else:
            options["num_replicas"] = self.replicas
        return options

    def replica_settings(self) -> Settings:
        """The settings of one replica: its environment with :attr:`env` written into it (a
        replica is a process of its own), then :attr:`settings`.

        On GPU replicas (``num_gpus`` > 0) the device defaults to ``gpu``. On CPU replicas the
        ONNX Runtime threads default to the replica's own CPUs shared out among the batcher's
        workers (at least one each), not the whole machine's cores: the replicas of one host do
        not oversubscribe it.
        """
        os.environ.update(self.env)
        overrides = dict(self.settings)
        if self.num_gpus > 0 and "device" not in overrides and f"{ENV_PREFIX}DEVICE" not in os.environ:
            overrides["device"] = "gpu"
        settings = Settings(**overrides)
        if self.num_gpus == 0 and settings.device != "gpu" and settings.intra_op_threads == 0:
            share = max(1, int(self.num_cpus) // settings.workers)
            settings = settings.model_copy(update={"intra_op_threads": share})
        return settings


def forwarded_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``DNABERT_*`` variables of this process, for replicas on other machines; the listening
    address is the Serve proxy's, so host and port stay out."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items()
            if k.startswith(ENV_PREFIX) and k not in ("DNABERT_HOST", "DNABERT_PORT")}
