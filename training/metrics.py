"""Evaluation metrics for binary and multi-label sequence classifiers.

Binary metrics follow the DNABERT-2_CNN_BiLSTM promoter study. With the
confusion matrix counts TP, FN, FP, TN at a decision threshold
(a sample is predicted positive when ``prob_positive >= threshold``):

* accuracy    = (TP + TN) / N
* precision   = TP / (TP + FP)
* recall      = TPR = TP / (TP + FN)          (sensitivity)
* specificity = TN / (TN + FP)
* fpr         = FP / (FP + TN) = 1 - specificity
* f1          = 2 * precision * recall / (precision + recall)
* mcc         = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
* auroc       = area under the ROC curve of the raw probabilities,
                ``None`` when ``y_true`` holds a single class.

Ratios whose denominator is zero are reported as 0.

Multi-label metrics (one sigmoid output per label) report per-label AUROC,
accuracy and F1, the macro AUROC (mean over labels whose AUROC is defined,
i.e. that have both positives and negatives), the micro AUROC (over the
flattened label matrix), the Hamming loss (fraction of wrong label
decisions) and the subset accuracy (fraction of samples whose whole label
vector is predicted exactly).

All returned values are plain Python ``int``/``float``/``None``/``str`` so the
dictionaries can be written with :func:`json.dumps` directly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from service.contract import tasks


def _safe_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or 0.0 when the denominator is zero."""
    return float(numerator) / float(denominator) if denominator else 0.0


def _auroc_or_none(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, or ``None`` when ``y_true`` does not contain both classes."""
    if np.unique(y_true).size < 2:
        return None
    return float(roc_auc_score(y_true, scores))


def _mcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews correlation; 0.0 (without sklearn's warning) for a degenerate matrix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(matthews_corrcoef(y_true, y_pred))


def _as_binary_labels(y_true: Any) -> np.ndarray:
    return np.asarray(y_true).astype(np.int64)


def binary_metrics(
    y_true: Sequence[int] | np.ndarray,
    prob_positive: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Threshold and ranking metrics for a binary classifier.

    Args:
        y_true: shape (N,) of 0/1 labels.
        prob_positive: shape (N,) probabilities of the positive class.
        threshold: a sample is predicted positive when its probability is
            ``>= threshold``.

    Returns:
        Dict with ``accuracy, f1, mcc, precision, recall, auroc, specificity,
        tpr, fpr, n, n_positive, threshold``; ``auroc`` is ``None`` when only
        one class is present in ``y_true``.
    """
    y = _as_binary_labels(y_true).ravel()
    p = np.asarray(prob_positive, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true shape {y.shape} != prob_positive shape {p.shape}")
    if y.size == 0:
        raise ValueError("binary_metrics needs at least one sample")
    pred = (p >= threshold).astype(np.int64)

    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    recall = float(recall_score(y, pred, labels=[0, 1], zero_division=0))
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, labels=[0, 1], zero_division=0)),
        "mcc": _mcc(y, pred),
        "precision": float(precision_score(y, pred, labels=[0, 1], zero_division=0)),
        "recall": recall,
        "auroc": _auroc_or_none(y, p),
        "specificity": _safe_ratio(tn, tn + fp),
        "tpr": recall,
        "fpr": _safe_ratio(fp, fp + tn),
        "n": int(y.size),
        "n_positive": int(tp + fn),
        "threshold": float(threshold),
    }


def multilabel_metrics(
    y_true: Sequence[Sequence[int]] | np.ndarray,
    scores: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[str],
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Metrics for a multi-label classifier with one probability per label.

    Args:
        y_true: shape (N, L) of 0/1 labels.
        scores: shape (N, L) probabilities.
        labels: the L label names, in column order.
        threshold: a label is predicted when its probability is ``>= threshold``.

    Returns:
        Dict with ``per_label`` ({name: {auroc, n_positive, accuracy, f1}}),
        ``macro_auroc``, ``micro_auroc``, ``hamming_loss``, ``subset_accuracy``,
        ``labels_without_positives``, ``labels_without_negatives``, ``n`` and
        ``threshold``. Undefined AUROCs are ``None``.
    """
    y = _as_binary_labels(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"expected matching (N, L) arrays, got {y.shape} and {s.shape}")
    if y.shape[1] != len(labels):
        raise ValueError(f"{len(labels)} label names for {y.shape[1]} columns")
    if y.shape[0] == 0:
        raise ValueError("multilabel_metrics needs at least one sample")
    pred = (s >= threshold).astype(np.int64)

    per_label: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(labels):
        per_label[name] = {
            "auroc": _auroc_or_none(y[:, j], s[:, j]),
            "n_positive": int(y[:, j].sum()),
            "accuracy": float(accuracy_score(y[:, j], pred[:, j])),
            "f1": float(f1_score(y[:, j], pred[:, j], labels=[0, 1], zero_division=0)),
        }

    defined = [m["auroc"] for m in per_label.values() if m["auroc"] is not None]
    n = int(y.shape[0])
    return {
        "per_label": per_label,
        "macro_auroc": float(np.mean(defined)) if defined else None,
        "micro_auroc": _auroc_or_none(y.ravel(), s.ravel()),
        "hamming_loss": float(hamming_loss(y, pred)),
        "subset_accuracy": float(accuracy_score(y, pred)),
        "labels_without_positives": [
            name for j, name in enumerate(labels) if not y[:, j].any()
        ],
        "labels_without_negatives": [
            name for j, name in enumerate(labels) if y[:, j].all()
        ],
        "n": n,
        "threshold": float(threshold),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_metrics(metrics: dict[str, Any]) -> str:
    """Compact multi-line summary of a :func:`binary_metrics` or
    :func:`multilabel_metrics` result, for CLI logs."""
    lines: list[str] = []
    scalars = [(k, v) for k, v in metrics.items() if not isinstance(v, (dict, list))]
    for start in range(0, len(scalars), 4):
        chunk = scalars[start : start + 4]
        lines.append("  ".join(f"{k}={_fmt(v)}" for k, v in chunk))
    for key, value in metrics.items():
        if isinstance(value, list):
            lines.append(f"{key}: {', '.join(map(str, value)) if value else '-'}")
    per_label = metrics.get("per_label")
    if isinstance(per_label, dict) and per_label:
        width = max(len(str(name)) for name in per_label)
        for name, m in per_label.items():
            fields = "  ".join(f"{k}={_fmt(v)}" for k, v in m.items())
            lines.append(f"  {str(name):<{width}}  {fields}")
    return "\n".join(lines)


def task_metrics(task_name: str, y_true: Any, scores: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """The metrics of a task's model: binary metrics of P(positive) for a softmax task,
    multi-label metrics over the task's labels for a sigmoid one."""
    spec = tasks.task(task_name)
    if spec.activation == "sigmoid":
        return multilabel_metrics(y_true, scores, spec.labels, threshold)
    return binary_metrics(y_true, scores, threshold)
