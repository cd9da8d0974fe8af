"""The task's default model, chosen by the build: ``dnabert-train choose-default``.

:func:`choose_default` scores the dev split with each DNABERT-2 variant of the task's ensemble
and with ``all`` (the mean of their probabilities, as the service computes it), takes each one's
dev MCC at its own threshold in force, picks the best, and writes ``models/<task>/task.json``
(:class:`service.contract.taskfile.TaskFile`), which the service reads for the model that answers
without ``model=``. The ``all`` ensemble has no folder and no card, so its calibration and
dev-chosen threshold (:mod:`training.calibration`) go into the same file.

The scores come from the service's path (:func:`training.calibration.score_folder`), the
thresholds from the cards: run ``dnabert-train calibrate`` first, or every variant is taken at
0.5 (the rule written into the file says which).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from service.contract.card import ModelCard
from service.contract.taskfile import TaskFile
from service.contract.tasks import ALL, PROMOTER, task
from service.runtime.versions import version_folders
from training.calibration import (
    calibration_section,
    calibration_splits,
    check_data,
    labels_of,
    mcc_at,
    score_folder,
    task_dataset,
)
from training.data import Dataset
from training.metrics import binary_metrics

ALL_SCORED_WITH = ("the mean of the members' P(positive), each from the service's path (OnnxModel, fp32 graph, "
                   "service.runtime.offline.predict_sequences), as the service computes model=all")


def member_folders(models: Path, task_name: str) -> dict[str, Path]:
    """The folders of the task's ensemble members, newest version of each (what the service
    serves); ValueError when one is missing."""
    spec = task(task_name)
    if not spec.ensemble:
        raise ValueError(f"task {task_name!r} has no ensemble of models to choose a default from")
    found = version_folders(models) if models.is_dir() else {}
    folders = {name: versions[max(versions)] for (t, name), versions in found.items() if t == task_name}
    missing = [name for name in spec.ensemble if name not in folders]
    if missing:
        raise ValueError(f"{models / task_name}: no model folder for {', '.join(missing)} "
                         f"(the default is chosen among {', '.join(spec.ensemble)} and {ALL})")
    return {name: folders[name] for name in spec.ensemble}


def pick_best(dev_mcc: dict[str, float], order: list[str]) -> str:
    """The model with the highest dev MCC; ties go to the one first in ``order`` (the single
    models in the task's order, then ``all``: as good for less work)."""
    return max(order, key=lambda name: (dev_mcc[name], -order.index(name)))


def choose_default(models: Path, task_name: str = PROMOTER, data: Dataset | None = None,
                   threads: int = 0) -> TaskFile:
    """Score dev (and the test parts, for the ensemble's calibration), pick the model with the
    best dev MCC, write ``models/<task>/task.json`` and return it."""
    models = Path(models)
    folders = member_folders(models, task_name)
    data = data if data is not None else task_dataset(task_name)
    cards = {name: ModelCard.load(folder) for name, folder in folders.items()}
    for name, card in cards.items():
        check_data(card, data, folders[name])
    splits = calibration_splits(task_name, data)
    y_dev = labels_of(splits["dev"])

    scores = {name: score_folder(folder, splits, threads) for name, folder in folders.items()}
    thresholds = {name: card.threshold_in_force() for name, card in cards.items()}
    uncalibrated = [name for name, card in cards.items()
                    if card.calibration is None or card.calibration.threshold is None]

    mean = {split: np.mean([scores[name][split] for name in folders], axis=0) for split in splits}
    ensemble = calibration_section(task_name, splits, mean, data.description.get("name"),
                                   scored_with=ALL_SCORED_WITH)
    assert ensemble.threshold is not None
    thresholds[ALL] = ensemble.threshold.in_force

    dev_mcc = {name: round(mcc_at(y_dev, scores[name]["dev"], thresholds[name]), 6) for name in folders}
    dev_mcc[ALL] = round(mcc_at(y_dev, mean["dev"], thresholds[ALL]), 6)
    best = pick_best(dev_mcc, [*folders, ALL])

    rule = (f"the highest dev MCC among {', '.join(folders)} and {ALL} (the mean of their P(promoter)), each "
            "at its own threshold in force: the threshold its card adopted on dev (dnabert-train calibrate), "
            f"0.5 where none was adopted; {ALL}: chosen on dev by the same rule here; ties go to a single "
            "model, then to the order listed")
    if uncalibrated:
        rule += f"; cards without a calibration section (taken at 0.5): {', '.join(uncalibrated)}"
    all_metrics = {}
    for split, examples in splits.items():
        m = binary_metrics(labels_of(examples), mean[split])
        all_metrics[split] = {k: m.get(k) for k in ("n", "accuracy", "f1", "mcc", "auroc")}
    chosen = TaskFile(default_model=best, rule=rule, dev_mcc=dev_mcc, thresholds=thresholds, split="dev",
                      n=len(y_dev), data=data.description.get("name"), all=ensemble, all_metrics=all_metrics,
                      created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    chosen.save(models, task_name)
    return chosen
