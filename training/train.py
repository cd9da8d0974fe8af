"""Fine-tuning a classifier (any architecture of :mod:`training.models.architectures`) with early
stopping on a dev split."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from service.contract import tasks
from service.contract.activation import activate
from service.contract.tasks import LNCRNA, PROMOTER
from service.contract.tokenization import SequenceTokenizerLike
from service.runtime.offline import batcher_config, score_tokens
from training.build import build, load_data
from training.checkpoint import save_classifier
from training.data import Dataset, Example
from training.distill import DistillationSet
from training.export.onnx import export_run
from training.job import TrainJob, TrainResult
from training.losses import two_way_multilabel_loss
from training.metrics import format_metrics, task_metrics


@dataclass
class TrainConfig:
    task: str = PROMOTER
    variant: str = "base"
    epochs: int = 8
    batch_size: int = 32
    lr: float = 5e-4  # backbone
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    head_dropout: float = 0.1
    patience: int = 3
    eval_every: int = 0  # optimiser steps between dev evaluations; 0 = once per epoch
    max_minutes: float | None = None
    max_steps: int | None = None
    decay_by_time: bool = False
    seed: int = 42
    tp: float = 4.0  # two-way loss temperatures (lncRNA)
    tn: float = 1.0
    threads: int | None = None
    bf16: bool = False  # bfloat16 autocast for the training steps (weights and dev scoring stay fp32)
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def shuffled_batches(encoded: list[list[int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Index batches in random order, sorted by length inside windows of 50 batches (less padding)."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = batch_size * 50
    order = [i for w in range(0, len(order), window)
             for i in sorted(order[w : w + window], key=lambda j: len(encoded[j]))]
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    return chunks


def predict_scores(model: torch.nn.Module, tok: SequenceTokenizerLike, sequences: list[str], task: str,
                   batch_size: int = 64) -> np.ndarray:
    """The task's scores from a PyTorch classifier: P(positive) (N,) for a softmax task such as
    promoter, sigmoid scores (N, labels) for a multi-label one such as lncRNA localization.

    The batches are cut by the service's batcher (:func:`service.runtime.offline.score_tokens`)
    and the logits activated as the card of the exported model will say, so PyTorch and ONNX
    Runtime scores come out of the same path.
    """
    spec = tasks.task(task)
    model.eval()

    def run_batch(batch: list[list[int]]) -> np.ndarray:
        ids, mask = tok.pad(batch)
        with torch.no_grad():  # the batcher calls this in a worker thread; no_grad is per thread
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
        return activate(logits.numpy(), spec.activation, spec.positive_index)

    tokens = [e.ids for e in tok.encode(sequences)]
    if not tokens:
        return np.empty((0,) if spec.positive_index is not None else (0, len(spec.labels)))
    scores = score_tokens(tokens, run_batch, batcher_config(max_batch_size=batch_size))  # (N, k)
    return scores[:, 0] if spec.positive_index is not None else scores


def evaluate_examples(model, tok, examples: list[Example], task: str) -> dict:
    scores = predict_scores(model, tok, [e.sequence for e in examples], task)
    return task_metrics(task, np.array([e.label for e in examples]), scores)


def dev_score(task: str, metrics: dict) -> float:
    """Model selection: MCC for promoters; macro AUROC (the mean over labels with positives and
    negatives) for lncRNA. Micro AUROC is not used: it rewards predicting each label's base rate."""
    key = metrics.get("macro_auroc") if task == LNCRNA else metrics.get("mcc")
    return float("-inf") if key is None else float(key)


def loss_fn(task: str, logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Cross-entropy on class indices, or on class probabilities (float ``y`` of shape (N, 2):
    distillation); the two-way multi-label loss for lncRNA."""
    if task == LNCRNA:
        return two_way_multilabel_loss(logits, y.float(), tp=cfg.tp, tn=cfg.tn)
    return F.cross_entropy(logits, y)


def evaluate_test_parts(model, tok, data: Dataset, task: str) -> dict:
    """Test metrics overall and per source part (e.g. hearing-loss test vs GUE held-out)."""
    test = data["test"]
    result = {"test": evaluate_examples(model, tok, test, task)}
    parts = sorted({e.source for e in test})
    if len(parts) > 1:
        for part in parts:
            result[part] = evaluate_examples(model, tok, [e for e in test if e.source == part], task)
    return result


def soft_targets(labels: list[int], soft: DistillationSet) -> torch.Tensor:
    """(N, 2) class probabilities: one-hot for the real labels, then the teachers' probabilities
    for the made sequences."""
    p = np.concatenate([np.asarray(labels, dtype=np.float64), soft.probabilities])
    return torch.from_numpy(np.stack([1.0 - p, p], axis=1).astype(np.float32))


def train_classifier(model: torch.nn.Module, tok: SequenceTokenizerLike, data: Dataset,
                     cfg: TrainConfig, run_dir: Path, soft: DistillationSet | None = None) -> dict:
    """Train with AdamW + linear warmup/decay, keep the best dev state, write the run folder.

    ``soft``: made sequences with teacher probabilities, shuffled in with the real examples
    (whose targets stay their labels)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    train = data["train"]
    encoded = [e.ids for e in tok.encode([e.sequence for e in train])]
    targets = torch.tensor([e.label for e in train])
    if soft is not None:
        encoded += [e.ids for e in tok.encode(soft.sequences)]
        targets = soft_targets([e.label for e in train], soft)

    head_params = [p for n, p in model.named_parameters() if n.startswith("head.")]
    body_params = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    groups = [{"params": head_params, "lr": cfg.head_lr}]
    if cfg.lr > 0:
        groups.append({"params": body_params, "lr": cfg.lr})
    else:  # backbone learning rate 0: a frozen backbone, only the head trains
        for p in body_params:
            p.requires_grad_(False)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = max(1, int(cfg.warmup_ratio * total))
    start = time.monotonic()

    def rate(s: int) -> float:
        remaining = (total - s) / max(1, total - warmup)
        if cfg.decay_by_time and cfg.max_minutes:
            remaining = min(remaining, 1.0 - (time.monotonic() - start) / (cfg.max_minutes * 60))
        return min((s + 1) / warmup, max(0.0, remaining))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    eval_every = cfg.eval_every or steps_per_epoch
    curve: list[dict] = []
    best = {"score": float("-inf"), "state": None, "step": 0}
    bad_evals, step, cpu_start = 0, 0, time.process_time()
    stop = False
    curve_file = (run_dir / "curve.jsonl").open("w")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        bar = tqdm(shuffled_batches(encoded, cfg.batch_size, rng), desc=f"{cfg.variant} epoch {epoch}",
                   leave=False, mininterval=5)
        running = []
        for idx in bar:
            ids, mask = tok.pad([encoded[i] for i in idx])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
            loss = loss_fn(cfg.task, logits.float(), targets[idx], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            running.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
            over_time = cfg.max_minutes is not None and time.monotonic() - start > cfg.max_minutes * 60
            if step % eval_every == 0 or step >= total or over_time:
                dev = evaluate_examples(model, tok, data["dev"], cfg.task)
                score = dev_score(cfg.task, dev)
                point = {"step": step, "epoch": epoch, "train_loss": float(np.mean(running)),
                         "dev_score": score, "dev": dev, "seconds": round(time.monotonic() - start, 1)}
                curve.append(point)
                curve_file.write(json.dumps(point) + "\n")
                curve_file.flush()
                tqdm.write(f"[{cfg.variant}] step {step} epoch {epoch} loss {point['train_loss']:.4f} "
                           f"dev score {score:.4f} ({point['seconds']} s)")
                running = []
                model.train()
                if score > best["score"]:
                    best = {"score": score, "step": step,
                            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                    bad_evals = 0
                else:
                    bad_evals += 1
                if bad_evals >= cfg.patience or over_time or step >= total:
                    stop = True
                    break
        if stop:
            break
    curve_file.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    seconds = time.monotonic() - start
    # CPU seconds of this process: less sensitive than wall-clock time to other jobs on the machine
    cpu_seconds = time.process_time() - cpu_start
    metrics = {
        "dev": evaluate_examples(model, tok, data["dev"], cfg.task),
        **evaluate_test_parts(model, tok, data, cfg.task),
    }
    summary = {
        "best_step": best["step"],
        "steps": step,
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": metrics,
    }
    (run_dir / "config.json").write_text(json.dumps(
        {"train": asdict(cfg), "data": data.description, "backbone": model.config.to_dict()}, indent=2))
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    save_classifier(model, tok, run_dir / "model", cfg.task, extra={
        "training": {"config": asdict(cfg), "data": data.description,
                     "best_step": best["step"], "steps": step, "train_seconds": round(seconds, 1),
                     "train_cpu_seconds": round(cpu_seconds, 1)},
        "metrics": metrics,
    })
    for name, m in metrics.items():
        tqdm.write(f"[{cfg.variant}] {name}: {format_metrics(m)}")
    return summary


def train_config(job: TrainJob, extra: dict[str, Any]) -> TrainConfig:
    lr, head_lr = job.learning_rates()
    return TrainConfig(task=job.task, variant=job.variant, epochs=job.epochs, batch_size=job.batch_size,
                       lr=lr, head_lr=head_lr, patience=job.patience, eval_every=job.eval_every,
                       max_minutes=job.max_minutes, max_steps=job.max_steps, decay_by_time=job.decay_by_time,
                       seed=job.seed, head_dropout=job.head_dropout, tp=job.tp, tn=job.tn,
                       threads=job.threads, bf16=job.bf16, extra={"architecture": job.architecture, **extra})


def default_run_dir(job: TrainJob) -> Path:
    return Path(f"runs/{job.task}-{job.variant}-{time.strftime('%Y%m%d-%H%M%S')}")


def train(job: TrainJob) -> TrainResult:
    """Run the job: seed, load the data, build, train into the run folder, export if asked."""
    seed_everything(job.seed)
    data = load_data(job)
    model, tok, extra = build(job, data)
    soft = None
    if job.distill:
        soft = DistillationSet.load(job.distill)
        extra = {**extra, "distillation": {"file": str(job.distill), **soft.manifest}}
    run_dir = job.run_dir or default_run_dir(job)
    summary = train_classifier(model, tok, data, train_config(job, extra), run_dir, soft)
    card = None
    if job.export:
        card = export_run(run_dir / "model", job.export, name=job.name or job.variant, fp16=job.fp16)
    return TrainResult(run_dir, summary, card)
