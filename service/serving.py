"""The work behind the endpoints: models, batchers, normalisation, tokenization, results.

Routes call :class:`InferenceService`; it never sees HTTP. Parsing, normalisation and
tokenization run in a thread pool (off the event loop); each model's sessions run in its
:class:`~service.batcher.DynamicBatcher`'s worker threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.batcher import BatcherConfig, DynamicBatcher
from service.card import CARD_FILE
from service.errors import (
    DnabertError,
    InferenceFailed,
    InvalidFasta,
    ModelArtifactError,
    ModelNotFound,
    ModelUnavailable,
    NotReady,
)
from service.fasta import FastaRecord
from service.metrics import ServiceMetrics
from service.model_folder import OnnxModel, choose_providers, serving_precision, session_options
from service.protocol import (
    LncRnaResponse,
    LncRnaResult,
    LncRnaScores,
    PromoterResponse,
    PromoterResult,
)
from service.sequence import normalize_sequence
from service.settings import PROMOTER_VARIANTS, Settings, effective_batching

log = logging.getLogger("dnabert.service")

TASK_PROMOTER = "promoter"
TASK_LNCRNA = "lncrna-localization"
ALL = "all"


@dataclass
class Prepared:
    """Records normalised and tokenized for one model's tokenizer."""

    ids: list[str]
    lengths: list[int]
    ambiguous: list[int]
    rna: list[bool]
    tokens: list[list[int]]
    truncated: list[bool]


@dataclass
class LoadedModel:
    task: str
    name: str
    model: OnnxModel
    precision: str
    batcher: DynamicBatcher
    ready: bool = False
    tokenizer_key: str = field(default="")


def discover(models_dir: Path) -> list[tuple[str, str, Path]]:
    """(task, name, folder) of every ``<task>/<name>/card.json`` below ``models_dir``.

    A folder beside them without a ``card.json`` (not an exported model, or an export still being
    written: the card is written last) is skipped with a warning that names it.
    """
    if not models_dir.is_dir():
        raise ModelArtifactError(f"models directory {models_dir} does not exist")
    found = []
    for card in sorted(models_dir.glob(f"*/*/{CARD_FILE}")):
        found.append((card.parent.parent.name, card.parent.name, card.parent))
    if not found:
        raise ModelArtifactError(f"{models_dir}: no model folders (<task>/<name>/{CARD_FILE})")
    for task_dir in sorted({folder.parent for _, _, folder in found}):
        for other in sorted(p for p in task_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if not (other / CARD_FILE).is_file():
                log.warning("skipping %s: no %s (not an exported model folder, or an export in progress)",
                            other, CARD_FILE)
    return found


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)+[\w.+-]*")


def public_reason(message: str, folder: Path, label: str, models_dir: Path) -> str:
    """A load failure's message for clients: the folder written as ``task/name``, no server paths."""
    for path in sorted({str(folder), str(folder.resolve())}, key=len, reverse=True):
        message = message.replace(path, label)
    for path in sorted({str(models_dir), str(models_dir.resolve())}, key=len, reverse=True):
        message = message.replace(path, "<models_dir>")
    return _ABSOLUTE_PATH.sub("<path>", message)


def prepare(records: Sequence[FastaRecord], model: OnnxModel) -> Prepared:
    """Normalise (errors name the record and its line) and tokenize, in input order."""
    norm = []
    for r in records:
        try:
            norm.append(normalize_sequence(r.sequence, r.id))
        except DnabertError as exc:
            exc.line = exc.line or r.line or None  # JSON records have no line (0)
            raise
    encoded = model.tokenizer.encode([n.sequence for n in norm])
    return Prepared(
        ids=[r.id for r in records],
        lengths=[len(n) for n in norm],
        ambiguous=[n.n_ambiguous for n in norm],
        rna=[("U" in r.sequence or "u" in r.sequence) for r in records],
        tokens=[e.ids for e in encoded],
        truncated=[e.truncated for e in encoded],
    )


def flags_of(prep: Prepared, i: int) -> list[str]:
    flags = []
    if prep.ambiguous[i]:
        flags.append("ambiguous_bases")
    if prep.truncated[i]:
        flags.append("truncated")
    if prep.rna[i]:
        flags.append("rna_input")
    return flags


class InferenceService:
    """Loads every model folder, runs a warm-up batch through each, serves predictions.

    A folder that cannot be loaded or warmed up stops start-up with an error that names it,
    unless ``allow_partial_start`` is set: then it is logged, left out and listed in
    :attr:`failed`, and the healthy models serve.
    """

    def __init__(self, settings: Settings, metrics: ServiceMetrics | None = None):
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        self.models: dict[tuple[str, str], LoadedModel] = {}
        self.failed: dict[tuple[str, str], str] = {}  # (task, name) -> reason, without server paths
        self.providers: list[str] = []
        self.started = False
        self._cpu = ThreadPoolExecutor(max_workers=settings.tokenizer_threads, thread_name_prefix="tokenize")

    # -- life cycle -------------------------------------------------------------------------
    def _broken(self, task: str, name: str, folder: Path, exc: BaseException) -> None:
        """A model folder failed to load or warm up: raise (default) or record it and go on."""
        if isinstance(exc, DnabertError):
            message = exc.message
        else:  # a bug or a library error: keep its first line, not its traceback
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            message = f"{folder}: cannot load the model: {type(exc).__name__}" + (f": {first}" if first else "")
        if str(folder) not in message:
            message = f"{folder}: {message}"
        if not self.settings.allow_partial_start:
            if isinstance(exc, ModelArtifactError) and exc.message == message:
                raise exc
            raise ModelArtifactError(message) from exc
        log.error("model %s/%s is not served: %s", task, name, message)
        self.failed[(task, name)] = public_reason(message, folder, f"{task}/{name}", self.settings.models_dir)

    def _load(self) -> None:
        s = self.settings
        self.providers = choose_providers(s.device)
        gpu = self.providers[0] == "CUDAExecutionProvider"
        precision = s.precision if s.precision != "auto" else ("fp16" if gpu else "fp32")
        threads, max_batch_size = effective_batching(s, gpu)
        log.info("batching: %d worker(s) per model, %s intra-op threads each, at most %d sequences "
                 "and %d padded tokens per batch", s.workers, threads or "default", max_batch_size,
                 s.max_batch_tokens)
        for task, name, folder in discover(s.models_dir):
            card_precision = serving_precision(folder, precision)
            try:
                model = OnnxModel(folder, providers=self.providers,
                                  precision=card_precision,
                                  session_options=session_options(threads))
                # Requests to several models are tokenized once per distinct tokenizer: the same
                # file *and* the same tokenization entry (kind, k, truncation) of the card.
                tokenizer_key = model.card.sha256[model.card.files["tokenizer"]] + json.dumps(
                    model.card.tokenization, sort_keys=True)
            except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
                self._broken(task, name, folder, exc)
                continue
            config = BatcherConfig(max_batch_tokens=s.max_batch_tokens, max_batch_size=max_batch_size,
                                   max_wait_ms=s.max_wait_ms, window=s.batch_window, max_queue=s.max_queue,
                                   workers=s.workers)
            batcher = DynamicBatcher(f"{task}/{name}", self._runner(model), config,
                                     observer=self.metrics.observer(f"{task}/{name}"))
            self.models[(task, name)] = LoadedModel(task, name, model, card_precision, batcher,
                                                    tokenizer_key=tokenizer_key)
            log.info("loaded %s/%s from %s (%s, %s)", task, name, folder, model.providers[0], card_precision)
        self._check_default(s.models_dir)

    def _check_default(self, models_dir: Path) -> None:
        """The default promoter model must be there whenever promoter models are served."""
        promoter = {name for (task, name) in [*self.models, *self.failed] if task == TASK_PROMOTER}
        default = self.settings.default_promoter_model
        if promoter and default not in promoter and default != ALL:
            message = (f"{models_dir / TASK_PROMOTER}: the default promoter model {default!r} "
                       f"(DNABERT_DEFAULT_PROMOTER_MODEL) is not there; found: {', '.join(sorted(promoter))}")
            if not self.settings.allow_partial_start:
                raise ModelArtifactError(message)
            log.error("%s", message)
            self.failed[(TASK_PROMOTER, default)] = (
                f"the default promoter model {default!r} is not in the models folder")
        if not self.models and self.failed:
            raise ModelArtifactError(f"{models_dir}: no model could be loaded: "
                                     + "; ".join(f"{t}/{n}: {r}" for (t, n), r in sorted(self.failed.items())))

    @staticmethod
    def _runner(model: OnnxModel):
        pad = model.tokenizer.pad

        def run(batch: list[Sequence[int]]) -> np.ndarray:
            input_ids, mask = pad(batch)
            scores = model.activate(model.run(input_ids, mask))
            return scores if scores.ndim == 2 else scores[:, None]

        return run

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._cpu, self._load)
            for lm in self.models.values():
                await lm.batcher.start()
            await self.warm_up()
        except BaseException:
            await self.stop()  # no batcher left running behind a failed start
            raise
        self.started = True
        if self.failed:
            log.warning("serving %d models; not serving %s", len(self.models),
                        ", ".join(f"{t}/{n}" for t, n in sorted(self.failed)))

    async def warm_up(self) -> None:
        """A real batch through every model before readiness (TEI-style health check)."""
        probe = [FastaRecord("warmup-1", "warmup-1", "ACGT" * 75, 1),
                 FastaRecord("warmup-2", "warmup-2", "TTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC" * 3, 3)]
        for key, lm in list(self.models.items()):
            try:
                prep = prepare(probe, lm.model)
                out = await lm.batcher.submit(prep.tokens, timeout=self.settings.request_timeout_s * 5)
                if not np.all(np.isfinite(out)):
                    raise ModelArtifactError(f"{lm.model.folder}: warm-up produced non-finite scores")
            except Exception as exc:  # noqa: BLE001
                if not isinstance(exc, ModelArtifactError):
                    exc = ModelArtifactError(f"{lm.model.folder}: the warm-up batch failed "
                                             f"({getattr(exc, 'message', type(exc).__name__)})")
                try:
                    self._broken(lm.task, lm.name, lm.model.folder, exc)
                finally:
                    if key in self.failed:  # left out: stop its batcher now
                        del self.models[key]
                        await lm.batcher.stop()
                self._check_default(self.settings.models_dir)
                continue
            lm.ready = True

    async def stop(self) -> None:
        self.started = False  # not ready from now on: requests get 503 not_ready, /readyz 503
        for lm in self.models.values():
            await lm.batcher.stop()
        self._cpu.shutdown(wait=False, cancel_futures=True)

    @property
    def default_available(self) -> bool:
        """The promoter model that answers requests without ``model=`` is loaded (or no promoter
        model is configured at all)."""
        promoter = self.task_models(TASK_PROMOTER)
        default = self.settings.default_promoter_model
        if default == ALL:
            return bool(promoter) and not any(t == TASK_PROMOTER for t, _ in self.failed)
        return (default in promoter and promoter[default].ready) or (
            not promoter and not any(t == TASK_PROMOTER for t, _ in self.failed))

    @property
    def ready(self) -> bool:
        """Started, every model warm, nothing failed."""
        return self.serving and not self.failed

    @property
    def serving(self) -> bool:
        """Started with at least one model, every loaded model warm, the default one among them."""
        return (self.started and bool(self.models) and all(m.ready for m in self.models.values())
                and self.default_available)

    # -- prediction -------------------------------------------------------------------------
    def task_models(self, task: str) -> dict[str, LoadedModel]:
        return {name: lm for (t, name), lm in self.models.items() if t == task}

    def _unavailable(self, task: str, names: list[str]) -> ModelUnavailable:
        which = ", ".join(f"{task}/{n}" for n in names)
        return ModelUnavailable(f"model {which} failed to load at start-up and is not served; see /readyz")

    def resolve(self, task: str, name: str | None) -> list[LoadedModel]:
        if not self.started:
            raise NotReady("the service is starting: models are loading or warming up")
        models = self.task_models(task)
        failed = sorted(n for t, n in self.failed if t == task)
        if task == TASK_PROMOTER:
            name = name or self.settings.default_promoter_model
            if name == ALL:
                broken = [v for v in PROMOTER_VARIANTS if v in failed]
                if broken:
                    raise self._unavailable(task, broken)
                chosen = [models[v] for v in PROMOTER_VARIANTS if v in models]
                if not chosen:
                    raise ModelNotFound("no promoter model is loaded")
                return chosen
        elif name is None:
            if len(models) != 1:
                if not models and failed:
                    raise self._unavailable(task, failed)
                raise ModelNotFound(f"choose a model for {task}: {', '.join(sorted(models))}")
            return list(models.values())
        if name in failed:
            raise self._unavailable(task, [name])
        if name not in models:
            known = ", ".join(sorted(models) + ([ALL] if task == TASK_PROMOTER else []))
            raise ModelNotFound(f"unknown {task} model {name!r}; available: {known}")
        return [models[name]]

    async def _scores(self, records: Sequence[FastaRecord], models: list[LoadedModel],
                      timeout: float | None) -> tuple[Prepared, list[np.ndarray]]:
        if not records:
            raise InvalidFasta("no records")
        loop = asyncio.get_running_loop()
        prepared: dict[str, Prepared] = {}
        for lm in models:  # one tokenization per distinct tokenizer
            if lm.tokenizer_key not in prepared:
                prepared[lm.tokenizer_key] = await loop.run_in_executor(self._cpu, prepare, records, lm.model)
        tasks = [asyncio.ensure_future(lm.batcher.submit(prepared[lm.tokenizer_key].tokens, timeout=timeout))
                 for lm in models]
        try:
            outs = await asyncio.gather(*tasks)
        except InferenceFailed as exc:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise InferenceFailed(f"{exc.message}: the inference batch that held this request's sequences "
                                  "failed in the runtime; other requests are not affected, retry later") from None
        except BaseException:
            # one model refused or failed (or the request was cancelled): withdraw the others' work
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return prepared[models[0].tokenizer_key], [*outs]

    async def predict_promoter(self, records: Sequence[FastaRecord], model: str | None = None,
                               threshold: float | None = None) -> PromoterResponse:
        start = time.perf_counter()
        models = self.resolve(TASK_PROMOTER, model)
        threshold = self.settings.promoter_threshold if threshold is None else threshold
        timeout = self.settings.request_timeout_s
        prep, outs = await self._scores(records, models, timeout)
        probs = np.stack([o[:, 0] for o in outs], axis=1)  # (N, n_models)
        name = ALL if len(models) > 1 else models[0].name
        results = []
        for i, rid in enumerate(prep.ids):
            p = float(probs[i].mean())
            results.append(PromoterResult(
                id=rid, length=prep.lengths[i], probability=p,
                label="promoter" if p >= threshold else "non_promoter", model=name,
                variant_probabilities={m.name: float(probs[i, j]) for j, m in enumerate(models)} if len(models) > 1 else None,
                truncated=prep.truncated[i], ambiguous_bases=prep.ambiguous[i], flags=flags_of(prep, i),
            ))
        self.metrics.request_latency.labels(TASK_PROMOTER).observe(time.perf_counter() - start)
        return PromoterResponse(model=name, threshold=threshold, count=len(results), results=results)

    async def predict_lncrna(self, records: Sequence[FastaRecord], model: str | None = None,
                             thresholds: dict[str, float] | None = None) -> LncRnaResponse:
        start = time.perf_counter()
        (lm,) = self.resolve(TASK_LNCRNA, model)
        labels = lm.model.card.labels
        th = {**self.settings.lncrna_thresholds, **(thresholds or {})}
        prep, (scores,) = await self._scores(records, [lm], self.settings.request_timeout_s)
        results = []
        for i, rid in enumerate(prep.ids):
            row = {label: float(scores[i, j]) for j, label in enumerate(labels)}
            results.append(LncRnaResult(
                id=rid, length=prep.lengths[i], scores=LncRnaScores(**row),
                locations=[label for label in labels if row[label] >= th.get(label, 0.5)],
                truncated=prep.truncated[i], ambiguous_bases=prep.ambiguous[i], flags=flags_of(prep, i),
                model=lm.name,
            ))
        self.metrics.request_latency.labels(TASK_LNCRNA).observe(time.perf_counter() - start)
        return LncRnaResponse(model=lm.name, thresholds={k: th.get(k, 0.5) for k in labels},
                              count=len(results), results=results)
