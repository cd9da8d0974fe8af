"""The work behind the endpoints: models, batchers, normalisation, tokenization, results.

Routes call :class:`InferenceService`; it never sees HTTP. Parsing, normalisation and
tokenization run in a thread pool (off the event loop); each model's sessions run in its
:class:`~service.batcher.DynamicBatcher`'s worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.batcher import BatcherConfig, DynamicBatcher
from service.card import CARD_FILE
from service.errors import DnabertError, InvalidFasta, ModelArtifactError, ModelNotFound, NotReady
from service.fasta import FastaRecord
from service.metrics import ServiceMetrics
from service.model_folder import OnnxModel, choose_providers, session_options
from service.protocol import (
    LncRnaResponse,
    LncRnaResult,
    LncRnaScores,
    PromoterResponse,
    PromoterResult,
)
from service.sequence import normalize_sequence
from service.settings import PROMOTER_VARIANTS, Settings

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
    """(task, name, folder) of every ``<task>/<name>/card.json`` below ``models_dir``."""
    if not models_dir.is_dir():
        raise ModelArtifactError(f"models directory {models_dir} does not exist")
    found = []
    for card in sorted(models_dir.glob(f"*/*/{CARD_FILE}")):
        found.append((card.parent.parent.name, card.parent.name, card.parent))
    if not found:
        raise ModelArtifactError(f"{models_dir}: no model folders (<task>/<name>/{CARD_FILE})")
    return found


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
    """Loads every model folder, runs a warm-up batch through each, serves predictions."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics | None = None):
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        self.models: dict[tuple[str, str], LoadedModel] = {}
        self.providers: list[str] = []
        self.started = False
        self._cpu = ThreadPoolExecutor(max_workers=settings.tokenizer_threads, thread_name_prefix="tokenize")

    # -- life cycle -------------------------------------------------------------------------
    def _load(self) -> None:
        s = self.settings
        self.providers = choose_providers(s.device)
        gpu = self.providers[0] == "CUDAExecutionProvider"
        precision = s.precision if s.precision != "auto" else ("fp16" if gpu else "fp32")
        for task, name, folder in discover(s.models_dir):
            card_precision = precision
            model = OnnxModel(folder, providers=self.providers,
                              precision=card_precision,
                              session_options=session_options(s.intra_op_threads))
            config = BatcherConfig(max_batch_tokens=s.max_batch_tokens, max_batch_size=s.max_batch_size,
                                   max_wait_ms=s.max_wait_ms, window=s.batch_window, max_queue=s.max_queue,
                                   workers=s.workers)
            batcher = DynamicBatcher(f"{task}/{name}", self._runner(model), config,
                                     observer=self.metrics.observer(f"{task}/{name}"))
            self.models[(task, name)] = LoadedModel(task, name, model, card_precision, batcher,
                                                    tokenizer_key=model.card.sha256[model.card.files["tokenizer"]])
            log.info("loaded %s/%s from %s (%s, %s)", task, name, folder, model.providers[0], card_precision)

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
        await loop.run_in_executor(self._cpu, self._load)
        for lm in self.models.values():
            await lm.batcher.start()
        await self.warm_up()
        self.started = True

    async def warm_up(self) -> None:
        """A real batch through every model before readiness (TEI-style health check)."""
        probe = [FastaRecord("warmup-1", "warmup-1", "ACGT" * 75, 1),
                 FastaRecord("warmup-2", "warmup-2", "TTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC" * 3, 3)]
        for lm in self.models.values():
            prep = prepare(probe, lm.model)
            out = await lm.batcher.submit(prep.tokens, timeout=self.settings.request_timeout_s * 5)
            if not np.all(np.isfinite(out)):
                raise ModelArtifactError(f"{lm.model.folder}: warm-up produced non-finite scores")
            lm.ready = True

    async def stop(self) -> None:
        self.started = False  # not ready from now on: requests get 503 not_ready, /readyz 503
        for lm in self.models.values():
            await lm.batcher.stop()
        self._cpu.shutdown(wait=False, cancel_futures=True)

    @property
    def ready(self) -> bool:
        return self.started and bool(self.models) and all(m.ready for m in self.models.values())

    # -- prediction -------------------------------------------------------------------------
    def task_models(self, task: str) -> dict[str, LoadedModel]:
        return {name: lm for (t, name), lm in self.models.items() if t == task}

    def resolve(self, task: str, name: str | None) -> list[LoadedModel]:
        if not self.ready:
            raise NotReady("the service is starting: models are loading or warming up")
        models = self.task_models(task)
        if task == TASK_PROMOTER:
            name = name or self.settings.default_promoter_model
            if name == ALL:
                chosen = [models[v] for v in PROMOTER_VARIANTS if v in models]
                if not chosen:
                    raise ModelNotFound("no promoter model is loaded")
                return chosen
        elif name is None:
            if len(models) != 1:
                raise ModelNotFound(f"choose a model for {task}: {', '.join(sorted(models))}")
            return list(models.values())
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
