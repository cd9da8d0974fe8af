"""The tasks the project serves, defined once: names, labels, activation, the default model
and the ``all`` ensemble.

Training writes a card's ``task``, ``labels`` and ``activation`` from here; the service reads
what a model *is* and *does* from its card, and what a *task* offers (its default model, its
ensemble) from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Activation = Literal["softmax", "sigmoid"]
TaskName = Literal["promoter", "lncrna-localization"]

PROMOTER = "promoter"
LNCRNA = "lncrna-localization"
ALL = "all"
"""The model name of an ensemble: the mean of the task's ensemble members."""

PROMOTER_VARIANTS = ("base", "cnn", "bilstm", "cnn_bilstm_max", "cnn_bilstm_avg")
"""The five DNABERT-2 promoter variants of the DNABERT-2_CNN_BiLSTM study (``all`` is their mean)."""
LNCRNA_VARIANT = "lncrna"
"""The iLoc-lncRNA-BERT head on the DNABERT-2 backbone."""


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    """Output labels in graph-column order."""
    activation: Activation
    """softmax over the labels (one class) or a sigmoid per label (multi-label)."""
    positive_index: int | None
    """softmax: the column reported as the probability; None for multi-label tasks."""
    default_model: str | None
    """The model that answers without ``model=`` (None: the task's only model)."""
    ensemble: tuple[str, ...] = ()
    """Members of the ``all`` model (empty: the task has no ensemble)."""
    dnabert2_variants: tuple[str, ...] = ()
    """DNABERT-2 head variants trained for this task."""


TASKS: dict[str, Task] = {
    PROMOTER: Task(PROMOTER, ("non_promoter", "promoter"), "softmax", 1, "cnn_bilstm_max",
                   ensemble=PROMOTER_VARIANTS, dnabert2_variants=PROMOTER_VARIANTS),
    LNCRNA: Task(LNCRNA, ("nucleus", "cytoplasm", "extracellular_vesicle"), "sigmoid", None, None,
                 dnabert2_variants=(LNCRNA_VARIANT,)),
}
TASK_NAMES = tuple(TASKS)


def task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None


def task_of_variant(variant: str) -> Task:
    """The task a DNABERT-2 head variant is trained for."""
    for t in TASKS.values():
        if variant in t.dnabert2_variants:
            return t
    raise ValueError(f"{variant!r} is not a DNABERT-2 head variant")


def served_id(task_name: str, model: str) -> str:
    """A served model's id in the standard protocols (``/v1/models``, ``/v2/models``):
    ``<task>-<model>``, e.g. ``promoter-cnn_bilstm_max``, ``lncrna-localization-lncrna``."""
    return f"{task_name}-{model}"


def parse_served_id(model_id: str) -> tuple[str, str] | None:
    """``(task, model)`` of a :func:`served_id`, or None when it names no task."""
    for name in sorted(TASKS, key=len, reverse=True):
        if model_id.startswith(name + "-") and len(model_id) > len(name) + 1:
            return name, model_id[len(name) + 1:]
    return None
