"""Service configuration: one typed object read from ``DNABERT_*`` environment variables."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.contract.tasks import PROMOTER, TASKS


def default_models_dir() -> Path:
    """``models/`` of the checkout the package runs from, else ``./models``."""
    checkout = Path(__file__).resolve().parents[1] / "models"
    return checkout if checkout.is_dir() else Path.cwd() / "models"


def read_keys_file(path: Path) -> list[str]:
    """The API keys of a keys file: one a line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the API keys file {path}: {exc.strerror or exc}") from None
    keys = [line.strip() for line in text.splitlines()]
    return [k for k in keys if k and not k.startswith("#")]


class Settings(BaseSettings):
    """Every setting can be given as an environment variable, e.g. ``DNABERT_MODELS_DIR``."""

    model_config = SettingsConfigDict(env_prefix="DNABERT_", env_file=None, extra="ignore",
                                      protected_namespaces=("settings_",))

    models_dir: Path = Field(default_factory=default_models_dir,
                             description="folder with <task>/<variant>/ model folders")
    default_promoter_model: str | None = Field(
        None, description="promoter model used when model= is not given; unset: the default_model of "
                          f"models/promoter/task.json (dnabert-train choose-default), else {TASKS[PROMOTER].default_model}")
    promoter_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="P(promoter) at or over it is labelled promoter when a request gives no "
                                          "threshold; unset: the threshold the model's card adopted on dev "
                                          "(all: models/promoter/task.json), else 0.5")
    lncrna_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"nucleus": 0.5, "cytoplasm": 0.5, "extracellular_vesicle": 0.5},
        description='per-label thresholds, JSON: {"nucleus": 0.5, ...}',
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="gpu: CUDA provider required (fail at start without it); auto: CUDA when available")
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto", description="auto: fp16 graphs on GPU, fp32 on CPU; int8: dynamically quantized graphs (CPU)")
    intra_op_threads: int = Field(
        0, ge=0, description="ONNX Runtime threads per session; 0 = auto: on CPU the cores shared out "
                             "among the workers, on GPU the library default")
    workers: int = Field(2, ge=1, le=64, description="batches run concurrently per model (each has its own "
                                                     "share of the CPU threads)")
    max_batch_tokens: int = Field(16384, ge=64, description="padded-token budget of one batch")
    max_batch_size: int = Field(0, ge=0, description="sequences per batch; 0 = auto: 32 on CPU, 256 on GPU")
    max_wait_ms: float = Field(2.0, ge=0.0, le=1000.0)
    batch_window: int = Field(1024, ge=1, description="queued sequences sorted by length when cutting a batch")
    max_queue: int = Field(20000, ge=1, description="queued sequences per model before 429")
    max_requests_in_flight: int = Field(
        128, ge=1, description="prediction requests being read, parsed, queued or run at once; beyond it "
                               "429 before the body is read (with max_upload_bytes, a bound on memory)")
    request_timeout_s: float = Field(
        60.0, gt=0.0, description="deadline of a request's inference (from the moment its sequences are "
                                  "queued); a request that cannot make it behind the queued work is "
                                  "refused at once with 429, one that runs out of time gets 504")
    body_timeout_s: float = Field(
        30.0, gt=0.0, description="seconds to receive a prediction request's whole body, counted from the "
                                  "start of reading it; then 408 body_timeout and its in-flight slot is "
                                  "freed (a client trickling its upload cannot hold a slot for longer)")
    shutdown_grace_s: float = Field(
        10.0, ge=0.0, le=600.0, description="on SIGTERM: new requests are refused (503 shutting_down, and "
                                            "the port is closed), requests in progress get this long to "
                                            "finish; what is left then is answered 503 and the process exits")
    keep_alive_s: float = Field(
        5.0, gt=0.0, le=600.0, description="an idle keep-alive connection is closed after this long; behind "
                                           "a load balancer, set it above the balancer's idle timeout")
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="after gzip decompression")
    max_records: int = Field(20000, ge=1, description="records per request")
    max_scan_bases: int = Field(10_000_000, ge=1, description="nucleotides in all per /scan request (records "
                                                               "of any length); beyond it 413. Offline scan: no limit")
    max_sequence_length: int = Field(100_000, ge=1, description="nucleotides per record")
    max_mutants: int = Field(30_000, ge=1, description="single-base mutants per /explain request (3 per base, "
                                                       "4 per N); beyond it 413. Offline explain: no limit")
    tokenizer_threads: int = Field(2, ge=1, description="threads for parsing and tokenization")
    reference_fasta: Path | None = Field(
        None, description="the server's reference FASTA for /variants/promoter (indexed with pyfaidx on first "
                          "use); unset: clients upload the reference with each request")
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    # -- security and fault tolerance -----------------------------------------------------------
    api_key: SecretStr | None = Field(
        None, description="when set, /predict/* and /models need 'Authorization: Bearer <key>' "
                          "(health, readiness, metrics and the API docs stay open); several keys "
                          "separated by commas are all accepted, and each sees only its own jobs")
    api_keys_file: Path | None = Field(
        None, description="a file of API keys, one a line (blank lines and # comments skipped), accepted "
                          "besides DNABERT_API_KEY; read at start-up")
    jobs_dir: Path | None = Field(
        None, description="folder of the job store (jobs.sqlite3) and of the jobs' inputs and results; unset: "
                          "./jobs where it can be created, else dnabert-serve-jobs in the temporary folder. "
                          "Not writable: the /jobs endpoints answer 503 jobs_unavailable")
    jobs_database_url: SecretStr | None = Field(
        None, description="postgresql://user:password@host:5432/db: the job store shared by several replicas or "
                          "machines (PostgreSQL; psycopg comes with the ray extra), the jobs' files in a jobs_dir "
                          "they all mount; unset: SQLite in jobs_dir")
    job_max_upload_bytes: int = Field(
        2 * 1024**3, ge=1024, description="bytes of one job's input, as sent and after gzip decompression; "
                                          "beyond it 413")
    checkpoints_dir: Path | None = Field(
        None, description="folder of checkpoint folders (e.g. a DNABERT-2-117M directory) that a fine-tuning job may "
                          "start from, named by the job's base=; unset: fine-tuning starts from served models only")
    finetune_max_minutes: float = Field(60.0, gt=0.0, le=1440.0, description=(
        "upper bound of a fine-tuning job's training time (its max_minutes is cut to it)"))
    finetune_memory_gb: float = Field(16.0, gt=0.5, description=(
        "address-space limit of a fine-tuning job's worker process, in GiB"))
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description='origins allowed by CORS, as JSON (["https://a.example"]) or comma-separated; '
                    "empty: no CORS headers at all")
    allow_partial_start: bool = Field(
        False, description="false: any broken model folder stops start-up; true: broken folders are "
                           "logged, skipped and reported by /readyz and /models, the others serve")

    @field_validator("default_promoter_model", "promoter_threshold", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        """An empty variable (docker compose's ``${VAR:-}``) leaves the setting unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @model_validator(mode="after")
    def _keys_from_file(self):
        """The keys of ``api_keys_file`` join those of ``api_key`` (one comma-separated list)."""
        if self.api_keys_file is not None:
            keys = self.api_keys() + read_keys_file(self.api_keys_file)
            if not keys:
                raise ValueError(f"the API keys file {self.api_keys_file} holds no key")
            self.api_key = SecretStr(",".join(dict.fromkeys(keys)))
        return self

    def api_keys(self) -> list[str]:
        """Every accepted API key (none: the API is open)."""
        if self.api_key is None:
            return []
        return [k for k in (part.strip() for part in self.api_key.get_secret_value().split(",")) if k]

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [o for o in (part.strip() for part in text.split(",")) if o]
        return value

    @field_validator("lncrna_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for label, t in value.items():
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"threshold for {label} must be within [0, 1]")
        return value


def effective_batching(settings: Settings, gpu: bool, cpus: int | None = None) -> tuple[int, int]:
    """(intra-op threads per session, max batch size) after resolving the ``0 = auto`` values.

    Measured with ``python -m bench.run`` on a 2-core CPU (cnn_bilstm_max, 300 bp): raw ONNX
    Runtime peaks at batch 32 (1,041 seq/s against 912 at batch 128), and two workers with one
    thread each beat one worker with two threads by about 20 % end to end, because one batch's
    single-threaded operators (the LSTM steps) no longer leave a core idle. A GPU wants large
    batches and the library's own threading.
    """
    cpus = cpus or os.cpu_count() or 1
    threads = settings.intra_op_threads or (0 if gpu else max(1, cpus // settings.workers))
    batch = settings.max_batch_size or (256 if gpu else 32)
    return threads, batch


@lru_cache
def get_settings() -> Settings:
    return Settings()
