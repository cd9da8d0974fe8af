"""The work behind the endpoints: models, batchers, normalisation, tokenization, results.

Routes call :class:`InferenceService`; it never sees HTTP. Parsing, normalisation and
tokenization run in a thread pool (off the event loop); each model's sessions run in its
:class:`~service.runtime.batcher.DynamicBatcher`'s worker threads.
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

from service.contract.card import CARD_FILE
from service.contract.errors import (
    DnabertError,
    InferenceFailed,
    InvalidFasta,
    ModelArtifactError,
    ModelNotFound,
    ModelUnavailable,
    NoEmbedding,
    NotReady,
    PayloadTooLarge,
)
from service.contract.fasta import FastaRecord
from service.contract.prepare import MOSTLY_AMBIGUOUS, NO_INFORMATIVE_BASES, Prepared, prepare
from service.contract.results import (
    LncRnaResponse,
    LncRnaResult,
    LncRnaScores,
    PromoterResponse,
    PromoterResult,
)
from service.contract.taskfile import TaskFile
from service.contract.tasks import ALL, LNCRNA, PROMOTER, TASKS, served_id
from service.metrics import ServiceMetrics
from service.runtime import defaults
from service.runtime.batcher import BatcherConfig, DynamicBatcher, RunBatch
from service.runtime.embedding import EmbeddingGraph, has_embedding
from service.runtime.model import OnnxModel, load_card
from service.runtime.session import RuntimeUnavailable, choose_providers
from service.runtime.versions import ReloadReport, folder_version, split_model, version_folders
from service.settings import Settings, effective_batching

log = logging.getLogger("dnabert.service")

@dataclass
class LoadedModel:
    task: str
    name: str
    model: OnnxModel
    precision: str
    batcher: DynamicBatcher
    ready: bool = False
    tokenizer_key: str = field(default="")
    embedder: DynamicBatcher | None = None
    """The batcher of the backbone graph, for models whose folder has one (embeddings)."""
    version: int = 1
    """Which version of ``name`` (:mod:`service.runtime.versions`)."""

    @property
    def batchers(self) -> list[DynamicBatcher]:
        return [self.batcher] + ([self.embedder] if self.embedder is not None else [])


def discover(models_dir: Path) -> list[tuple[str, str, Path]]:
    """(task, name, folder) of every model below ``models_dir``: ``<task>/<name>/card.json``, or
    the newest version ``<task>/<name>/<N>/card.json`` (:mod:`service.runtime.versions`; the
    older versions are loaded by :meth:`InferenceService.reload`).

    A folder beside them without a ``card.json`` (not an exported model, or an export still being
    written: the card is written last) is skipped with a warning that names it.
    """
    if not models_dir.is_dir():
        raise ModelArtifactError(f"models directory {models_dir} does not exist")
    found = [(task, name, versions[max(versions)])
             for (task, name), versions in sorted(version_folders(models_dir).items())]
    if not found:
        raise ModelArtifactError(f"{models_dir}: no model folders (<task>/<name>/{CARD_FILE})")
    for task_dir in sorted({models_dir / task for task, _, _ in found}):
        for other in sorted(p for p in task_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if not (other / CARD_FILE).is_file() and not any(other.glob(f"*/{CARD_FILE}")):
                log.warning("skipping %s: no %s (not an exported model folder, or an export in progress)",
                            other, CARD_FILE)
    return found


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)+[\w.+-]*")


def without_paths(message: str) -> str:
    """``message`` with every absolute path written ``<path>``: what a client may read."""
    return _ABSOLUTE_PATH.sub("<path>", message)


def public_reason(message: str, folder: Path, label: str, models_dir: Path) -> str:
    """A load failure's message for clients: the folder written as ``task/name``, no server paths."""
    for path in sorted({str(folder), str(folder.resolve())}, key=len, reverse=True):
        message = message.replace(path, label)
    for path in sorted({str(models_dir), str(models_dir.resolve())}, key=len, reverse=True):
        message = message.replace(path, "<models_dir>")
    return without_paths(message)


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
        self.versions: dict[tuple[str, str], dict[int, LoadedModel]] = {}  # every loaded version
        self.refused: dict[str, str] = {}  # 'task/name@N' -> why that version is not served
        self.providers: list[str] = []
        self.task_files: dict[str, TaskFile] = {}
        """task -> its ``models/<task>/task.json`` (default model, the ``all`` ensemble's threshold),
        read at start-up; a task without one falls back to :mod:`service.contract.tasks`."""
        self.started = False
        self._reloading = asyncio.Lock()
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
        try:
            self.providers = choose_providers(s.device)
        except RuntimeUnavailable as exc:
            raise ModelArtifactError(str(exc)) from exc
        gpu = self.providers[0] == "CUDAExecutionProvider"
        precision = s.precision if s.precision != "auto" else ("fp16" if gpu else "fp32")
        threads, max_batch_size = effective_batching(s, gpu)
        log.info("batching: %d worker(s) per model, %s intra-op threads each, at most %d sequences "
                 "and %d padded tokens per batch", s.workers, threads or "default", max_batch_size,
                 s.max_batch_tokens)
        config = BatcherConfig(max_batch_tokens=s.max_batch_tokens, max_batch_size=max_batch_size,
                               max_wait_ms=s.max_wait_ms, window=s.batch_window, max_queue=s.max_queue,
                               workers=s.workers)
        self._batching = (config, threads, precision)
        self._read_task_files(s.models_dir)
        for task, name, folder in discover(s.models_dir):
            try:
                lm = self._build(task, name, folder)
            except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
                self._broken(task, name, folder, exc)
                continue
            self.models[(task, name)] = lm
            self.versions.setdefault((task, name), {})[lm.version] = lm
        self._check_default(s.models_dir)

    def _build(self, task: str, name: str, folder: Path) -> LoadedModel:
        """One model folder checked and loaded, with its batchers (not started). Blocking."""
        config, threads, precision = self._batching
        version = folder_version(folder, name)
        card_precision = load_card(folder).serving_precision(precision)
        model = OnnxModel(folder, providers=self.providers, precision=card_precision, threads=threads)
        # Requests to several models are tokenized once per distinct tokenizer: the same
        # file *and* the same tokenization entry (kind, k, truncation) of the card.
        tokenizer_key = model.card.sha256[model.card.files["tokenizer"]] + json.dumps(
            model.card.tokenization.entry(), sort_keys=True)
        label = f"{task}/{name}" + (f"@{version}" if version != 1 else "")
        batcher = DynamicBatcher(label, self.batch_runner(model), config, observer=self.metrics.observer(label))
        embedder = self._embedder(task, name, folder, model, config, threads)
        log.info("loaded %s from %s (%s, %s)", label, folder, model.providers[0], card_precision)
        return LoadedModel(task, name, model, card_precision, batcher, tokenizer_key=tokenizer_key,
                           embedder=embedder, version=version)

    def _read_task_files(self, models_dir: Path) -> None:
        """Each task's ``task.json`` (:mod:`service.runtime.defaults`); an invalid one stops start-up
        unless ``allow_partial_start`` (then it is logged and the task served without it)."""
        for task in TASKS:
            try:
                tf = TaskFile.load(models_dir, task)
            except ValueError as exc:
                if not self.settings.allow_partial_start:
                    raise ModelArtifactError(str(exc)) from None
                log.error("ignoring %s (the task is served with the project's defaults)", exc)
                continue
            if tf is not None:
                self.task_files[task] = tf
                log.info("%s/%s: default model %s", task, TaskFile.path(models_dir, task).name, tf.default_model)

    def _check_default(self, models_dir: Path) -> None:
        """The default promoter model must be there whenever promoter models are served."""
        promoter = {name for (task, name) in [*self.models, *self.failed] if task == PROMOTER}
        default = self.default_model(PROMOTER)
        if promoter and default not in promoter and default != ALL:
            source = defaults.default_model_source(self.settings, PROMOTER, self.task_files.get(PROMOTER))
            message = (f"{models_dir / PROMOTER}: the default promoter model {default!r} "
                       f"({source}) is not there; found: {', '.join(sorted(promoter))}")
            if not self.settings.allow_partial_start:
                raise ModelArtifactError(message)
            log.error("%s", message)
            self.failed[(PROMOTER, default)] = (
                f"the default promoter model {default!r} is not in the models folder")
        if not self.models and self.failed:
            raise ModelArtifactError(f"{models_dir}: no model could be loaded: "
                                     + "; ".join(f"{t}/{n}: {r}" for (t, n), r in sorted(self.failed.items())))

    def _embedder(self, task: str, name: str, folder: Path, model: OnnxModel, config: BatcherConfig,
                  threads: int) -> DynamicBatcher | None:
        """The backbone graph's batcher, for a folder that has one (fp32 at any precision)."""
        if not has_embedding(model.card):
            return None
        graph = EmbeddingGraph(folder, model.card, model.tokenizer, self.providers, threads)
        label = f"{task}/{name}/embedding"
        return DynamicBatcher(label, graph.hidden_states, config, observer=self.metrics.observer(label))

    @staticmethod
    def batch_runner(model: OnnxModel) -> RunBatch:
        """What a model's batcher runs for each batch: pad, run the session, activate."""
        return model.scores

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._cpu, self._load)
            for lm in self.models.values():
                for batcher in lm.batchers:
                    await batcher.start()
            await self.warm_up()
        except BaseException:
            await self.stop()  # no batcher left running behind a failed start
            raise
        self.started = True
        await self.reload()  # the older versions of each model (a broken one is refused, logged)
        if self.failed:
            log.warning("serving %d models; not serving %s", len(self.models),
                        ", ".join(f"{t}/{n}" for t, n in sorted(self.failed)))

    async def warm_up(self) -> None:
        """A real batch through every model before readiness (TEI-style health check)."""
        probe = [FastaRecord("warmup-1", "warmup-1", "ACGT" * 75, 1),
                 FastaRecord("warmup-2", "warmup-2", "TTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC" * 3, 3)]
        for key, lm in list(self.models.items()):
            try:
                await self._warm(lm, probe)
            except Exception as exc:  # noqa: BLE001
                if not isinstance(exc, ModelArtifactError):
                    exc = ModelArtifactError(f"{lm.model.folder}: the warm-up batch failed "
                                             f"({getattr(exc, 'message', type(exc).__name__)})")
                try:
                    self._broken(lm.task, lm.name, lm.model.folder, exc)
                finally:
                    if key in self.failed:  # left out: stop its batchers now
                        del self.models[key]
                        self.versions.pop(key, None)
                        for batcher in lm.batchers:
                            await batcher.stop()
                self._check_default(self.settings.models_dir)
                continue
            lm.ready = True

    async def _warm(self, lm: LoadedModel, probe: list[FastaRecord]) -> None:
        """One real batch through the model (and its backbone graph); raises if it fails."""
        prep = prepare(probe, lm.model.tokenizer)
        out = await lm.batcher.submit(prep.tokens, timeout=self.settings.request_timeout_s * 5)
        if not np.all(np.isfinite(out)):
            raise ModelArtifactError(f"{lm.model.folder}: warm-up produced non-finite scores")
        if lm.embedder is not None:
            rows = await lm.embedder.submit(prep.tokens, timeout=self.settings.request_timeout_s * 5)
            if not all(np.all(np.isfinite(r.hidden)) for r in rows):
                raise ModelArtifactError(f"{lm.model.folder}: warm-up produced non-finite hidden states")

    async def stop(self) -> None:
        self.started = False  # not ready from now on: requests get 503 not_ready, /readyz 503
        every = {id(lm): lm for lm in [*self.models.values(), *(v for vs in self.versions.values() for v in vs.values())]}
        for lm in every.values():
            for batcher in lm.batchers:
                await batcher.stop()
        self._cpu.shutdown(wait=False, cancel_futures=True)

    async def reload(self, task: str | None = None) -> ReloadReport:
        """Load the model versions on disk that are not loaded yet, each checked against its card
        and warmed up on the side while the others serve. A version that fails is refused and
        reported; one that is newer than a name's current version becomes that name's model in
        one assignment: requests already resolved finish on the old session, the next ones get
        the new one. Versions already loaded are kept (and stay selectable as ``name@N``).
        ``task``: only that task's models."""
        report = ReloadReport()
        loop = asyncio.get_running_loop()
        probe = [FastaRecord("warmup-1", "warmup-1", "ACGT" * 75, 1)]
        async with self._reloading:
            found = await loop.run_in_executor(self._cpu, version_folders, self.settings.models_dir)
            for (kind, name), folders in sorted(found.items()):
                if task is not None and kind != task:
                    continue
                loaded = self.versions.setdefault((kind, name), {})
                for version, folder in sorted(folders.items()):
                    label = f"{kind}/{name}@{version}"
                    if version in loaded:
                        report.unchanged.append(label)
                        continue
                    lm = await self._load_version(kind, name, folder, label, probe, report)
                    if lm is None:
                        continue
                    loaded[version] = lm
                    current = self.models.get((kind, name))
                    if current is None or version > current.version:
                        self.models[(kind, name)] = lm  # the swap: the next request resolves to it
                        self.failed.pop((kind, name), None)
                    report.loaded.append(label)
                if not loaded:
                    del self.versions[(kind, name)]
        return report

    async def _load_version(self, task: str, name: str, folder: Path, label: str, probe: list[FastaRecord],
                            report: ReloadReport) -> LoadedModel | None:
        """One version loaded, started and warmed up; None (refused, reported) if it fails."""
        lm = None
        try:
            lm = await asyncio.get_running_loop().run_in_executor(self._cpu, self._build, task, name, folder)
            for batcher in lm.batchers:
                await batcher.start()
            await self._warm(lm, probe)
        except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
            if lm is not None:
                for batcher in lm.batchers:
                    await batcher.stop()
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            reason = public_reason(message, folder, label, self.settings.models_dir)
            log.error("model version %s is refused: %s", label, message)
            report.refused[label] = self.refused[label] = reason
            return None
        lm.ready = True
        self.refused.pop(label, None)
        return lm

    @property
    def default_available(self) -> bool:
        """The promoter model that answers requests without ``model=`` is loaded (or no promoter
        model is configured at all)."""
        promoter = self.task_models(PROMOTER)
        default = self.default_model(PROMOTER)
        if default == ALL:
            return bool(promoter) and not any(t == PROMOTER for t, _ in self.failed)
        return (default in promoter and promoter[default].ready) or (
            not promoter and not any(t == PROMOTER for t, _ in self.failed))

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

    def default_model(self, task: str) -> str | None:
        """The model that answers ``task`` without ``model=``: the operator's setting, else the
        task file's choice, else :mod:`service.contract.tasks`' (:func:`defaults.default_model`)."""
        return defaults.default_model(self.settings, task, self.task_files.get(task))

    def promoter_threshold(self, models: list[LoadedModel], requested: float | None = None) -> float:
        """The threshold of a promoter prediction by ``models`` (one, or the members of ``all``):
        the request's, else the operator's, else the card's (``all``: the task file's), else 0.5
        (:func:`defaults.promoter_threshold`)."""
        return defaults.promoter_threshold(requested, self.settings, [lm.model.card for lm in models],
                                           self.task_files.get(PROMOTER))

    def resolve(self, task: str, name: str | None) -> list[LoadedModel]:
        """The loaded models that answer ``model=name`` for ``task`` (several for ``all``)."""
        if not self.started:
            raise NotReady("the service is starting: models are loading or warming up")
        name, version = split_model(name)
        if version is not None:
            versions = self.versions.get((task, name or ""), {})
            if version not in versions:
                known = ", ".join(f"{name}@{v}" for v in sorted(versions)) or "none"
                raise ModelNotFound(f"unknown {task} model version {name}@{version}; loaded: {known}")
            return [versions[version]]
        spec = TASKS[task]
        models = self.task_models(task)
        failed = sorted(n for t, n in self.failed if t == task)
        name = name or self.default_model(task)
        if name is None:
            if len(models) != 1:
                if not models and failed:
                    raise self._unavailable(task, failed)
                raise ModelNotFound(f"choose a model for {task}: {', '.join(sorted(models))}")
            return list(models.values())
        if name == ALL and spec.ensemble:
            broken = [v for v in spec.ensemble if v in failed]
            if broken:
                raise self._unavailable(task, broken)
            chosen = [models[v] for v in spec.ensemble if v in models]
            if not chosen:
                raise ModelNotFound(f"no {task} model is loaded")
            return chosen
        if name in failed:
            raise self._unavailable(task, [name])
        if name not in models:
            known = ", ".join(sorted(models) + ([ALL] if spec.ensemble else []))
            raise ModelNotFound(f"unknown {task} model {name!r}; available: {known}")
        return [models[name]]

    async def scores(self, records: Sequence[FastaRecord], models: list[LoadedModel],
                     timeout: float | None) -> tuple[Prepared, list[np.ndarray]]:
        """The one prediction path: records -> normalise + tokenize (once per distinct tokenizer,
        off the event loop) -> each model's batcher -> session -> activation, as (N, k) scores
        per model. If one model fails or the caller is cancelled, the others' queued work is
        withdrawn."""
        if not records:
            raise InvalidFasta("no records")
        loop = asyncio.get_running_loop()
        prepared: dict[str, Prepared] = {}
        for lm in models:
            if lm.tokenizer_key not in prepared:
                prepared[lm.tokenizer_key] = await loop.run_in_executor(
                    self._cpu, prepare, records, lm.model.tokenizer)
        work = [asyncio.ensure_future(lm.batcher.submit(prepared[lm.tokenizer_key].tokens, timeout=timeout))
                for lm in models]
        try:
            outs = await asyncio.gather(*work)
        except BaseException as exc:
            for w in work:
                w.cancel()
            await asyncio.gather(*work, return_exceptions=True)
            if isinstance(exc, InferenceFailed):
                raise InferenceFailed(f"{exc.message}: the inference batch that held this request's sequences "
                                      "failed in the runtime; other requests are not affected, retry later") from None
            raise
        return prepared[models[0].tokenizer_key], [*outs]

    async def score(self, task: str, records: Sequence[FastaRecord], model: str | None = None,
                    timeout: float | None = None) -> Scored:
        """Scores of ``records`` without building a response: what scans, variant effects and
        explanations use, through the same path as :meth:`predict` (so a window's probability is
        what ``/predict`` answers for the same sequence). ``timeout`` defaults to the request
        deadline."""
        models = self.resolve(task, model)
        prep, outs = await self.scores(records, models,
                                       self.settings.request_timeout_s if timeout is None else timeout)
        return Scored([m.name for m in models], prep, np.stack(outs))

    async def predict(self, task: str, records: Sequence[FastaRecord], model: str | None = None,
                      thresholds: dict[str, float] | None = None) -> PromoterResponse | LncRnaResponse:
        """Predictions of ``task`` for ``records``: what ``POST /predict/{task}`` answers."""
        start = time.perf_counter()
        models = self.resolve(task, model)
        prep, outs = await self.scores(records, models, self.settings.request_timeout_s)
        result = self.respond(task, models, prep, outs, thresholds)
        _count_uninformative(self.metrics, task, prep)
        self.metrics.request_latency.labels(task).observe(time.perf_counter() - start)
        return result

    def respond(self, task: str, models: list[LoadedModel], prep: Prepared, outs: list[np.ndarray],
                thresholds: dict[str, float] | None = None) -> PromoterResponse | LncRnaResponse:
        """The answer of ``POST /predict/{task}`` for scores from :meth:`scores` (also what a
        predict job writes, chunk by chunk)."""
        thresholds = thresholds or {}
        if task == PROMOTER:
            return _promoter_response(models, prep, outs, self.promoter_threshold(models, thresholds.get("promoter")))
        return _lncrna_response(self.settings, models, prep, outs, thresholds)

    def embedding_models(self) -> dict[str, LoadedModel]:
        """The served models that give embeddings, by id (``<task>-<model>``)."""
        return {served_id(t, n): lm for (t, n), lm in sorted(self.models.items()) if lm.embedder is not None}

    def resolve_embedding(self, task: str, name: str | None) -> LoadedModel:
        """The one loaded model that embeds for ``model=name`` (default: the task's default)."""
        if name == ALL:
            raise NoEmbedding(f"model 'all' is the mean of five classifiers, not one backbone; embed with one "
                              f"of: {', '.join(self.embedding_models())}")
        (lm,) = self.resolve(task, name)
        if lm.embedder is None:
            raise NoEmbedding(f"model {served_id(task, lm.name)!r} has no backbone graph to embed with; models "
                              f"with embeddings: {', '.join(self.embedding_models()) or 'none'}")
        return lm

    async def embed(self, task: str, records: Sequence[FastaRecord], model: str | None = None,
                    timeout: float | None = None, max_values: int | None = None) -> Embedded:
        """The backbone's hidden states of each record (padding removed), through the model's
        embedding batcher: what ``/v1/embeddings``, ``/embed`` and the v2 embedding models answer.
        ``max_values`` bounds tokens x hidden size (per-token answers), checked before anything runs."""
        if not records:
            raise InvalidFasta("no records")
        lm = self.resolve_embedding(task, model)
        loop = asyncio.get_running_loop()
        prep = await loop.run_in_executor(self._cpu, prepare, records, lm.model.tokenizer)
        assert lm.embedder is not None
        dim = lm.model.card.embedding.dim if lm.model.card.embedding is not None else 0
        tokens = sum(len(row) for row in prep.tokens)
        if max_values is not None and tokens * dim > max_values:
            raise PayloadTooLarge(f"{tokens} tokens x {dim} dimensions = {tokens * dim} values; per-token hidden "
                                  f"states are answered up to {max_values} values per request: send fewer records")
        rows = await lm.embedder.submit(prep.tokens, timeout=self.settings.request_timeout_s
                                        if timeout is None else timeout)
        return Embedded(task, lm.name, lm.model.tokenizer, prep, [r.hidden for r in rows])

    async def predict_promoter(self, records: Sequence[FastaRecord], model: str | None = None,
                               threshold: float | None = None) -> PromoterResponse:
        return await self.predict(PROMOTER, records, model, None if threshold is None else {"promoter": threshold})

    async def predict_lncrna(self, records: Sequence[FastaRecord], model: str | None = None,
                             thresholds: dict[str, float] | None = None) -> LncRnaResponse:
        return await self.predict(LNCRNA, records, model, thresholds)


def _count_uninformative(metrics: ServiceMetrics, task: str, prep: Prepared) -> None:
    """Records answered without a score (no informative base) or scored but mostly ambiguous."""
    unscored = sum(not prep.scored(i) for i in range(len(prep.ids)))
    mostly = sum(prep.mostly_ambiguous(i) for i in range(len(prep.ids)))
    if unscored:
        metrics.uninformative.labels(task, NO_INFORMATIVE_BASES).inc(unscored)
    if mostly:
        metrics.uninformative.labels(task, MOSTLY_AMBIGUOUS).inc(mostly)


@dataclass
class Embedded:
    """Hidden states of some records by one model's backbone."""

    task: str
    model: str
    tokenizer: object
    prepared: Prepared
    hidden: list[np.ndarray]
    """Per record, ``(tokens, dim)`` float32: [CLS], the sequence's tokens, [SEP]; no padding."""

    @property
    def dim(self) -> int:
        return int(self.hidden[0].shape[1])


@dataclass
class Scored:
    """Scores of some records by one model or an ensemble (``all``)."""

    models: list[str]
    prepared: Prepared
    per_model: np.ndarray
    """(n_models, N, k): sigmoid scores per label, or (k = 1) the probability of the positive class."""

    @property
    def mean(self) -> np.ndarray:
        """(N, k): the mean over the models, as ``/predict`` reports it (``all``: the ensemble's)."""
        return self.per_model[0] if len(self.models) == 1 else self.per_model.mean(axis=0)

    @property
    def probability(self) -> np.ndarray:
        """(N,): the probability of the positive class (one-class tasks)."""
        return self.mean[:, 0]


def _promoter_response(models: list[LoadedModel], prep: Prepared, outs: list[np.ndarray],
                       threshold: float) -> PromoterResponse:
    """One probability per record: the model's, or with several models (``all``) their mean.
    A record without any informative base gets none (null probability, label and variants)."""
    probs = np.stack([o[:, 0] for o in outs], axis=1)  # (N, n_models)
    name = ALL if len(models) > 1 else models[0].name
    results = []
    for i, rid in enumerate(prep.ids):
        p: float | None = None
        label = variants = None
        if prep.scored(i):
            p = float(probs[i].mean())
            label = "promoter" if p >= threshold else "non_promoter"
            if len(models) > 1:
                variants = {m.name: float(probs[i, j]) for j, m in enumerate(models)}
        results.append(PromoterResult(
            id=rid, length=prep.lengths[i], probability=p, label=label, model=name,
            variant_probabilities=variants,
            truncated=prep.truncated[i], ambiguous_bases=prep.ambiguous[i], flags=prep.flags(i),
        ))
    return PromoterResponse(model=name, threshold=threshold, count=len(results), results=results)


def _lncrna_response(settings: Settings, models: list[LoadedModel], prep: Prepared, outs: list[np.ndarray],
                     thresholds: dict[str, float]) -> LncRnaResponse:
    """A sigmoid score per label; the locations are the labels at or over their threshold.
    A record without any informative base gets no scores and no location."""
    (lm,), (scores,) = models, outs
    labels = lm.model.card.labels
    th = {**settings.lncrna_thresholds, **thresholds}
    results = []
    for i, rid in enumerate(prep.ids):
        row = {label: float(scores[i, j]) for j, label in enumerate(labels)} if prep.scored(i) else None
        results.append(LncRnaResult(
            id=rid, length=prep.lengths[i], scores=LncRnaScores(**row) if row is not None else None,
            locations=[label for label in labels if row[label] >= th.get(label, 0.5)] if row is not None else [],
            truncated=prep.truncated[i], ambiguous_bases=prep.ambiguous[i], flags=prep.flags(i),
            model=lm.name,
        ))
    return LncRnaResponse(model=lm.name, thresholds={k: th.get(k, 0.5) for k in labels},
                          count=len(results), results=results)
