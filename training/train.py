"""Fine-tuning a classifier (any architecture of :mod:`training.architectures`) with early
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

from service.tokenization import SequenceTokenizerLike
from training.checkpoint import TASK_LNCRNA, TASK_PROMOTER, save_classifier
from training.data import LNCRNA_LABELS, PROMOTER_LABELS, Dataset, Example
from training.dnabert2 import DnaBertConfig, find_weights, load_backbone_state, read_state_dict
from training.losses import two_way_multilabel_loss
from training.metrics import binary_metrics, format_metrics, multilabel_metrics
from training.models import LNCRNA_VARIANT, SequenceClassifier


@dataclass
class TrainConfig:
    task: str = TASK_PROMOTER
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
    seed: int = 42
    tp: float = 4.0  # two-way loss temperatures (lncRNA)
    tn: float = 1.0
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def labels_for(task: str) -> list[str]:
    return list(LNCRNA_LABELS) if task == TASK_LNCRNA else list(PROMOTER_LABELS)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(backbone: DnaBertConfig, variant: str, head_dropout: float,
                init_from: Path | None) -> tuple[SequenceClassifier, list[str]]:
    """A classifier, with its backbone loaded from a DNABERT-2 checkpoint dir when given."""
    model = SequenceClassifier(backbone, variant, head_dropout)
    initialised: list[str] = []
    if init_from is not None:
        initialised = load_backbone_state(model.bert, read_state_dict(find_weights(init_from)))
    return model, initialised


def batches(encoded: list[list[int]], batch_size: int, shuffle: bool, rng: random.Random):
    """Index batches; when shuffling, sort by length inside windows of 50 batches (less padding)."""
    order = list(range(len(encoded)))
    if shuffle:
        rng.shuffle(order)
        window = batch_size * 50
        order = [i for w in range(0, len(order), window)
                 for i in sorted(order[w : w + window], key=lambda j: len(encoded[j]))]
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(chunks)
        return chunks
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def predict_scores(model: torch.nn.Module, tok: SequenceTokenizerLike, sequences: list[str],
                   batch_size: int = 64) -> np.ndarray:
    """Probabilities: P(promoter) (N,) for promoter models, sigmoid scores (N, 3) for lncRNA."""
    model.eval()
    encoded = [e.ids for e in tok.encode(sequences)]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[np.ndarray] = [None] * len(encoded)  # type: ignore[list-item]
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids, mask = tok.pad([encoded[i] for i in idx])
        logits = model(torch.from_numpy(ids), torch.from_numpy(mask)).double()
        probs = torch.sigmoid(logits) if model.variant == LNCRNA_VARIANT else logits.softmax(-1)[:, 1]
        for i, p in zip(idx, probs.numpy()):
            out[i] = p
    return np.stack(out)


def evaluate_examples(model, tok, examples: list[Example], task: str) -> dict:
    scores = predict_scores(model, tok, [e.sequence for e in examples])
    if task == TASK_LNCRNA:
        y = np.array([e.label for e in examples])
        return multilabel_metrics(y, scores, LNCRNA_LABELS)
    return binary_metrics(np.array([e.label for e in examples]), scores)


def dev_score(task: str, metrics: dict) -> float:
    """Model selection: MCC for promoters; macro AUROC (the mean over labels with positives and
    negatives) for lncRNA. Micro AUROC is not used: it rewards predicting each label's base rate."""
    key = metrics.get("macro_auroc") if task == TASK_LNCRNA else metrics.get("mcc")
    return float("-inf") if key is None else float(key)


def loss_fn(task: str, logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    if task == TASK_LNCRNA:
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


def train_classifier(model: torch.nn.Module, tok: SequenceTokenizerLike, data: Dataset,
                     cfg: TrainConfig, run_dir: Path) -> dict:
    """Train with AdamW + linear warmup/decay, keep the best dev state, write the run folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    train = data["train"]
    encoded = [e.ids for e in tok.encode([e.sequence for e in train])]
    targets = torch.tensor([e.label for e in train])

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
    warmup = max(1, int(cfg.warmup_ratio * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    eval_every = cfg.eval_every or steps_per_epoch
    curve: list[dict] = []
    best = {"score": float("-inf"), "state": None, "step": 0}
    bad_evals, step, start, cpu_start = 0, 0, time.monotonic(), time.process_time()
    stop = False
    curve_file = (run_dir / "curve.jsonl").open("w")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        bar = tqdm(batches(encoded, cfg.batch_size, True, rng), desc=f"{cfg.variant} epoch {epoch}",
                   leave=False, mininterval=5)
        running = []
        for idx in bar:
            ids, mask = tok.pad([encoded[i] for i in idx])
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
            loss = loss_fn(cfg.task, logits, targets[idx], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            running.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
            over_time = cfg.max_minutes is not None and time.monotonic() - start > cfg.max_minutes * 60
            if step % eval_every == 0 or step == total or over_time:
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
                if bad_evals >= cfg.patience or over_time:
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
    save_classifier(model, tok, run_dir / "model", cfg.task, labels_for(cfg.task), extra={
        "training": {"config": asdict(cfg), "data": data.description,
                     "best_step": best["step"], "steps": step, "train_seconds": round(seconds, 1),
                     "train_cpu_seconds": round(cpu_seconds, 1)},
        "metrics": metrics,
    })
    for name, m in metrics.items():
        tqdm.write(f"[{cfg.variant}] {name}: {format_metrics(m)}")
    return summary
