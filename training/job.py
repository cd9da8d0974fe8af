"""A training job as data: everything ``dnabert-train train`` takes, with its defaults.

:func:`training.train.train` runs a :class:`TrainJob` (data, model, training, export); the
command line, the embedded-model build and the comparison all describe their runs this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.contract.tasks import LNCRNA, LNCRNA_VARIANT, PROMOTER, TASK_NAMES

if TYPE_CHECKING:
    from service.contract.card import ModelCard

DEFAULT_LR: dict[str, tuple[float, float]] = {
    "dnabert2": (5e-4, 1e-3), "dnabert1": (1e-3, 1e-3), "dnabert1-pretrained": (5e-5, 1e-3), "onehot": (2e-3, 2e-3),
}
"""(backbone, head) learning rates of a job without ``lr`` / ``head_lr``, by architecture
(``dnabert1-pretrained``: DNABERT v1 fine-tuned from a checkpoint)."""

PATH_FIELDS = ("train", "dev", "test", "tokenizer", "run_dir", "export", "distill")
"""Fields given as ``str`` or ``Path`` and held as ``Path``."""


@dataclass(frozen=True)
class TrainJob:
    """One fine-tuning run: ``dnabert-train train``'s options, with its defaults."""

    task: str = PROMOTER
    variant: str | None = None
    """Default: ``base`` for promoters, ``lncrna`` for lncRNA localization (filled in on creation)."""
    # data: the task's shared data set unless a training file is given
    train: Path | None = None
    dev: Path | None = None
    test: Path | None = None
    limit: int | None = None
    """At most this many examples per split (smoke runs)."""
    # model
    init_from: str | Path | None = None
    """A DNABERT-2 or DNABERT (v1) checkpoint directory, or a run's ``model/`` folder (recorded in
    the run as given)."""
    preset: str = "small"
    kmer: int = 6
    tokenizer: Path | None = None
    vocab_size: int = 4096
    max_tokens: int | None = None
    # optimisation
    epochs: int = 8
    batch_size: int = 32
    lr: float | None = None
    """Backbone learning rate (default: :data:`DEFAULT_LR` of the architecture)."""
    head_lr: float | None = None
    head_dropout: float = 0.1
    hidden_dropout: float | None = None
    """DNABERT-2 backbone dropout (``hidden_dropout_prob``); default: the preset's or checkpoint's."""
    patience: int = 3
    eval_every: int = 0
    max_minutes: float | None = None
    max_steps: int | None = None
    """Stop after this many optimiser steps (the learning rate decays to 0 by then)."""
    decay_by_time: bool = False
    """With ``max_minutes``: the learning rate decays linearly to 0 by the step budget or by the
    time budget, whichever comes first (a run cut by time still ends at a low rate)."""
    distill: Path | None = None
    """A distillation set (:mod:`training.distill`, ``.npz``): made sequences labelled with a
    teacher ensemble's probability, trained on beside the real labels (promoter task)."""
    seed: int = 42
    threads: int | None = None
    bf16: bool = False
    """Train under bfloat16 autocast (CPU): matrix multiplies in bfloat16 (1.6-2.2x the training
    steps per second on a CPU with AMX); weights, optimiser state and dev scoring stay fp32."""
    tp: float = 4.0
    """Two-way multi-label loss: temperature of the positive logits (lncRNA; the study's 4)."""
    tn: float = 1.0
    """Two-way multi-label loss: temperature of the negative logits (lncRNA; the study's 1)."""
    # outputs
    run_dir: Path | None = None
    """Default: ``runs/<task>-<variant>-<time>``."""
    export: Path | None = None
    """A model folder to export the trained model to."""
    name: str | None = None
    """The exported model's name (default: the variant)."""
    fp16: bool = True
    """Also export the fp16 graph."""

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASK_NAMES)}")
        if self.variant is None:
            object.__setattr__(self, "variant", LNCRNA_VARIANT if self.task == LNCRNA else "base")
        for name in PATH_FIELDS:
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else Path(value))
        if self.distill is not None and self.task != PROMOTER:
            raise ValueError("distillation sets hold promoter probabilities; --distill needs --task promoter")
        if self.hidden_dropout is not None and not 0.0 <= self.hidden_dropout < 1.0:
            raise ValueError(f"--hidden-dropout must be in [0, 1), got {self.hidden_dropout}")
        if self.tp <= 0 or self.tn <= 0:
            raise ValueError(f"two-way loss temperatures must be positive, got tp={self.tp}, tn={self.tn}")
        if self.architecture != "dnabert2" and self.task != PROMOTER:
            raise ValueError(f"{self.variant} is a promoter (two-class) model; --task {self.task} needs a "
                             "DNABERT-2 variant")

    @property
    def architecture(self) -> str:
        """dnabert2, dnabert1 or onehot (:mod:`training.models.architectures`)."""
        from training.models.architectures import architecture_of  # torch: only once a job is made

        return architecture_of(self.variant)

    def learning_rates(self) -> tuple[float, float]:
        """(backbone, head): the job's, or the architecture's defaults."""
        key = "dnabert1-pretrained" if self.architecture == "dnabert1" and self.init_from else self.architecture
        lr, head_lr = DEFAULT_LR[key]
        return (self.lr if self.lr is not None else lr, self.head_lr if self.head_lr is not None else head_lr)


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]
    """What ``metrics.json`` holds: steps, seconds, parameters, metrics per split."""
    card: ModelCard | None = None
    """The exported model's card (when the job exported)."""

    def report(self) -> dict[str, Any]:
        """What ``dnabert-train train`` prints."""
        return {"run_dir": str(self.run_dir), **self.summary}


