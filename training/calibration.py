"""Calibration of exported models: reliability tables, Brier scores and a dev-chosen threshold.

Everything is measured on the service's own scores: the model folder is loaded and checked by
:class:`service.runtime.model.OnnxModel` (the fp32 graph) and the sequences go through
:func:`service.runtime.offline.predict_sequences`, the path ``/predict`` takes. The results go
into the card's ``calibration`` section (:class:`service.contract.card.Calibration`), which the
service reads for its default threshold (:mod:`service.runtime.defaults`).

The threshold rule (:func:`choose_threshold`): the grid point of 0.05 .. 0.95 (step 0.01) with the
best dev MCC, ties going to the point closest to 0.5. It is *adopted* only when 0.5 is clearly
off: the point lies at least 0.1 from 0.5 *and* its dev MCC beats the dev MCC at 0.5 by at
least 0.01. A threshold fitted on one split always looks a little better on that split than
0.5; the margins keep a noise-level gain from moving the service's labels. Multi-label models
(lncRNA) get per-label Brier scores on dev and test and no threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from service.contract.card import DEFAULT_THRESHOLD, Calibration, ModelCard, SplitCalibration, Threshold
from service.contract.tasks import PROMOTER, task
from training.data import Dataset, Example

BINS = 10
GRID = tuple(round(x / 100, 2) for x in range(5, 96))
"""Thresholds tried on dev: 0.05, 0.06, ..., 0.95."""
MIN_DISTANCE = 0.1
"""A dev threshold is adopted only this far from 0.5 or further ..."""
MIN_GAIN = 0.01
"""... and only when its dev MCC beats the dev MCC at 0.5 by this much or more."""
RULE = (f"the threshold of {GRID[0]:.2f}..{GRID[-1]:.2f} (step 0.01) with the best dev MCC, ties to the one "
        f"closest to 0.5; adopted only if it is >= {MIN_DISTANCE} from 0.5 and its dev MCC exceeds the dev MCC "
        f"at 0.5 by >= {MIN_GAIN}; otherwise 0.5")
SCORED_WITH = ("the service's path: OnnxModel (fp32 graph) + service.runtime.offline.predict_sequences; "
               "P(positive) for one-class tasks, the sigmoid score per label for multi-label ones")
PROMOTER_SPLITS = ("dev", "hl_test", "gue_test")
"""The promoter splits calibrated: dev, and the two parts of the test split."""


# ---------------------------------------------------------------------------------------------
# figures
def _arrays(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    q = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != q.shape:
        raise ValueError(f"{y.size} labels for {q.size} probabilities")
    if y.size == 0:
        raise ValueError("no examples")
    if np.any((q < 0) | (q > 1)) or not np.all(np.isfinite(q)):
        raise ValueError("probabilities must lie in [0, 1]")
    return y, q


def reliability_table(y_true: Sequence[int] | np.ndarray, p: Sequence[float] | np.ndarray,
                      bins: int = BINS) -> list[dict]:
    """``bins`` equal-width bins over [0, 1] of P(positive): ``{lo, hi, n, mean_predicted,
    observed_frequency}`` each, the bin holding lo <= p < hi (the last one also p = 1); an empty
    bin has n = 0 and None for both means."""
    y, q = _arrays(y_true, p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.floor(q * bins).astype(np.int64), 0, bins - 1)
    table = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        table.append({"lo": round(float(edges[b]), 6), "hi": round(float(edges[b + 1]), 6), "n": n,
                      "mean_predicted": round(float(q[inside].mean()), 6) if n else None,
                      "observed_frequency": round(float(y[inside].mean()), 6) if n else None})
    return table


def brier_score(y_true: Sequence[int] | np.ndarray, p: Sequence[float] | np.ndarray) -> float:
    """Mean squared difference between P(positive) and the 0/1 label (0 is perfect)."""
    y, q = _arrays(y_true, p)
    return float(np.mean((q - y) ** 2))


def mcc_at(y_true: Sequence[int] | np.ndarray, p: Sequence[float] | np.ndarray, threshold: float) -> float:
    """Matthews correlation of the labels ``p >= threshold`` (0 for a degenerate matrix, as
    :func:`training.metrics.binary_metrics` reports it)."""
    y, q = _arrays(y_true, p)
    pred = q >= threshold
    pos = y == 1
    tp, fp = float(np.sum(pred & pos)), float(np.sum(pred & ~pos))
    fn, tn = float(np.sum(~pred & pos)), float(np.sum(~pred & ~pos))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom else 0.0


@dataclass(frozen=True)
class ThresholdChoice:
    """What :func:`choose_threshold` decided."""

    value: float
    """The grid threshold with the best dev MCC."""
    adopted: bool
    """Whether it replaces 0.5 (module docstring)."""
    dev_mcc_at_0_5: float
    dev_mcc_at_threshold: float
    rule: str = RULE

    @property
    def in_force(self) -> float:
        return self.value if self.adopted else DEFAULT_THRESHOLD

    def section(self) -> Threshold:
        return Threshold(value=self.value, adopted=self.adopted, chosen_on="dev", rule=self.rule,
                         dev_mcc_at_0_5=round(self.dev_mcc_at_0_5, 6),
                         dev_mcc_at_threshold=round(self.dev_mcc_at_threshold, 6))


def choose_threshold(y_dev: Sequence[int] | np.ndarray, p_dev: Sequence[float] | np.ndarray,
                     grid: Sequence[float] = GRID, min_distance: float = MIN_DISTANCE,
                     min_gain: float = MIN_GAIN) -> ThresholdChoice:
    """The dev threshold by the rule of the module docstring."""
    y, q = _arrays(y_dev, p_dev)
    scores = [(mcc_at(y, q, t), t) for t in grid]
    best = max(m for m, _ in scores)
    # ties (within float noise) to the point closest to 0.5, then to the lower one
    value = min((t for m, t in scores if m >= best - 1e-12), key=lambda t: (abs(t - 0.5), t))
    at_half = mcc_at(y, q, DEFAULT_THRESHOLD)
    far = round(abs(value - DEFAULT_THRESHOLD), 9) >= min_distance
    better = round(best - at_half, 9) >= min_gain
    return ThresholdChoice(float(value), bool(far and better), at_half, best)


def split_calibration(y_true, p, bins: int = BINS) -> SplitCalibration:
    """One split of a one-class task: n, Brier score, reliability table."""
    return SplitCalibration(n=len(np.ravel(y_true)), brier=round(brier_score(y_true, p), 6),
                            reliability=reliability_table(y_true, p, bins))


def multilabel_calibration(y_true, scores, labels: Sequence[str]) -> SplitCalibration:
    """One split of a multi-label task: n and the Brier score of each label's sigmoid score."""
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 2 or y.shape[1] != len(labels):
        raise ValueError(f"expected (N, {len(labels)}) labels and scores, got {y.shape} and {s.shape}")
    return SplitCalibration(n=int(y.shape[0]), per_label_brier={
        label: round(brier_score(y[:, j], s[:, j]), 6) for j, label in enumerate(labels)})


# ---------------------------------------------------------------------------------------------
# splits, scores, sections
def calibration_splits(task_name: str, data: Dataset) -> dict[str, list[Example]]:
    """The splits a task is calibrated on: promoter dev, hl_test and gue_test (the test examples
    by their ``source``); a multi-label task's dev and test."""
    if task_name == PROMOTER:
        out = {"dev": list(data["dev"])}
        for part in PROMOTER_SPLITS[1:]:
            out[part] = [e for e in data["test"] if e.source == part]
        return {name: exs for name, exs in out.items() if exs}
    return {name: list(data[name]) for name in ("dev", "test") if data.splits.get(name)}


def task_dataset(task_name: str) -> Dataset:
    """The data set the embedded models of a task were trained and split on."""
    from training.data import lncrna_dataset, promoter_dataset

    return promoter_dataset() if task_name == PROMOTER else lncrna_dataset()


def score_folder(folder: Path, splits: dict[str, list[Example]], threads: int = 0) -> dict[str, np.ndarray]:
    """The service's scores of each split by the model folder (fp32 graph): (N,) P(positive) for
    a one-class model, (N, labels) for a multi-label one."""
    from service.runtime.model import OnnxModel
    from service.runtime.offline import predict_sequences

    model = OnnxModel(folder, threads=threads)
    return {name: predict_sequences(model, [e.sequence for e in exs], [e.id for e in exs]).scores
            for name, exs in splits.items()}


def labels_of(examples: Sequence[Example]) -> np.ndarray:
    return np.array([e.label for e in examples])


def calibration_section(task_name: str, splits: dict[str, list[Example]], scores: dict[str, np.ndarray],
                        data_name: str | None = None, bins: int = BINS,
                        scored_with: str = SCORED_WITH) -> Calibration:
    """The ``calibration`` section for scores of ``splits`` (a model's, or the ``all`` ensemble's):
    reliability and Brier per split, and for a one-class task the threshold chosen on dev."""
    spec = task(task_name)
    if "dev" not in splits:
        raise ValueError("calibration needs a dev split (the threshold is chosen on it)")
    figures: dict[str, SplitCalibration] = {}
    threshold = None
    for name, exs in splits.items():
        y = labels_of(exs)
        if spec.activation == "sigmoid":
            figures[name] = multilabel_calibration(y, scores[name], spec.labels)
        else:
            figures[name] = split_calibration(y, scores[name], bins)
    if spec.activation != "sigmoid":
        threshold = choose_threshold(labels_of(splits["dev"]), scores["dev"]).section()
    given = {"splits": figures, "threshold": threshold, "bins": None if spec.activation == "sigmoid" else bins,
             "scored_with": scored_with, "data": data_name,
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return Calibration(**{k: v for k, v in given.items() if v is not None})  # the card gets no nulls


def check_data(card: ModelCard, data: Dataset, folder: Path) -> None:
    """The model must have been split on this data set: its dev split is what calibration may fit."""
    trained_on = (card.training.data or {}).get("name")
    given = data.description.get("name")
    if trained_on and given and trained_on != given:
        raise ValueError(f"{folder}: the model was trained on {trained_on!r}, not on {given!r}: its dev "
                         "split there is not held out; calibrate it on its own data")


def calibrate_folder(model_folder: str | Path, data: Dataset | None = None, threads: int = 0) -> ModelCard:
    """Score the dev split and each test part with the model folder (the service's path), write
    the card's ``calibration`` section and return the card. ``data``: the task's data set
    (default: the one its embedded models are trained on, from ``../shared``)."""
    folder = Path(model_folder)
    card = ModelCard.load(folder)
    data = data if data is not None else task_dataset(card.task)
    check_data(card, data, folder)
    splits = calibration_splits(card.task, data)
    scores = score_folder(folder, splits, threads)
    card.calibration = calibration_section(card.task, splits, scores, data.description.get("name"))
    card.save(folder)
    return card


def model_folders(models: Path, only: Sequence[str] | None = None) -> dict[str, Path]:
    """``task/name`` (``task/name@N`` for versions after the first) -> folder, for every model
    folder below ``models`` (:func:`service.runtime.versions.version_folders`); ``only``: those
    ``task/name`` (every version of each)."""
    from service.runtime.versions import version_folders

    found = {}
    for (task_name, name), versions in sorted(version_folders(models).items()):
        for version, folder in sorted(versions.items()):
            found[f"{task_name}/{name}" + (f"@{version}" if version > 1 else "")] = folder
    if only:
        missing = [name for name in only if not any(label.split("@")[0] == name for label in found)]
        if missing:
            raise FileNotFoundError(f"no model folder {', '.join(missing)} under {models} "
                                    f"(found: {', '.join(found) or 'none'})")
        found = {label: folder for label, folder in found.items() if label.split("@")[0] in only}
    return found


def calibrate_models(models: Path, only: Sequence[str] | None = None, threads: int = 0) -> dict[str, dict]:
    """:func:`calibrate_folder` for every model folder (``only``: ``task/name``), each task's data
    read once; a summary per folder."""
    data: dict[str, Dataset] = {}
    summary = {}
    for label, folder in model_folders(models, only).items():
        task_name = ModelCard.load(folder).task
        if task_name not in data:
            data[task_name] = task_dataset(task_name)
        card = calibrate_folder(folder, data[task_name], threads)
        cal = card.calibration
        assert cal is not None
        entry: dict = {"brier": {k: v.brier if v.per_label_brier is None else v.per_label_brier
                                 for k, v in cal.splits.items()}}
        if cal.threshold is not None:
            entry["threshold"] = cal.threshold.value
            entry["adopted"] = cal.threshold.adopted
        summary[label] = entry
    return summary
