"""What answers when a request leaves something out: a task's default model and the promoter
threshold.

Both are decided here, once, in the same order (the first that is set wins):

1. the request (``model=``, ``threshold=``);
2. the operator's setting (``DNABERT_DEFAULT_PROMOTER_MODEL``, ``DNABERT_PROMOTER_THRESHOLD``),
   when it is set at all: both are unset by default;
3. what the build wrote next to the models: the default model of the task file
   ``models/<task>/task.json`` (``dnabert-train choose-default``); the threshold the model's
   card adopted on dev (``dnabert-train calibrate``), for ``all`` the task file's;
4. the project's own defaults: the task's default model in :mod:`service.contract.tasks`
   (used when there is no task file) and a threshold of 0.5 (a card without a calibration
   section, or one whose dev threshold was not adopted).
"""

from __future__ import annotations

from service.contract.card import DEFAULT_THRESHOLD, Calibration, ModelCard
from service.contract.taskfile import TaskFile
from service.contract.tasks import PROMOTER, TASKS
from service.settings import Settings


def default_model(settings: Settings, task: str, task_file: TaskFile | None) -> str | None:
    """The model that answers ``task`` without ``model=`` (None: the task's only model)."""
    if task == PROMOTER and settings.default_promoter_model is not None:
        return settings.default_promoter_model
    if task_file is not None:
        return task_file.default_model
    return TASKS[task].default_model


def default_model_source(settings: Settings, task: str, task_file: TaskFile | None) -> str:
    """Where :func:`default_model` took its answer from, for messages."""
    if task == PROMOTER and settings.default_promoter_model is not None:
        return "DNABERT_DEFAULT_PROMOTER_MODEL"
    if task_file is not None:
        return f"{task}/task.json"
    return "the project's default"


def promoter_threshold(requested: float | None, settings: Settings, cards: list[ModelCard],
                       task_file: TaskFile | None) -> float:
    """The threshold of a promoter prediction by ``cards`` (one model, or the members of
    ``all``): the request's, else the operator's, else the card's adopted one (``all``: the task
    file's), else 0.5."""
    if requested is not None:
        return requested
    if settings.promoter_threshold is not None:
        return settings.promoter_threshold
    if len(cards) == 1:
        return cards[0].threshold_in_force()
    calibration: Calibration | None = task_file.all if task_file is not None else None
    if calibration is not None and calibration.threshold is not None:
        return calibration.threshold.in_force
    return DEFAULT_THRESHOLD
