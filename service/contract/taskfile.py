"""The task file ``models/<task>/task.json``: what the build decided for a whole task.

``dnabert-train choose-default`` writes it (:func:`training.defaults.choose_default`): the model
that answers requests without ``model=``, the rule and the dev figures it was chosen by, and the
calibration and dev-chosen threshold of the ``all`` ensemble (which has no folder and so no card
of its own). The service reads it where it loads the models
(:class:`service.runtime.inference.InferenceService`, at start-up). A models folder without it is served as
before: the default model of :mod:`service.contract.tasks`, ``all`` at 0.5.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from service.contract.card import Calibration

TASK_FILE = "task.json"


class TaskFile(BaseModel):
    """``models/<task>/task.json``."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    default_model: str = Field(description="the model that answers without model= (a folder's name, or all)")
    rule: str = Field(description="how it was chosen, in words")
    dev_mcc: dict[str, float] = Field(description="model -> dev MCC at the threshold named in thresholds")
    thresholds: dict[str, float] | None = Field(None, description="model -> the threshold its dev MCC was taken at")
    split: str = Field("dev", description="the split the choice was made on")
    n: int | None = Field(None, description="examples in that split")
    data: str | None = Field(None, description="the data set")
    all: Calibration | None = Field(None, description="the ensemble's calibration and threshold")
    all_metrics: dict[str, dict[str, float | int | None]] | None = Field(
        None, description="split -> the ensemble's n, accuracy, f1, mcc, auroc at 0.5 (as the cards' metrics)")
    created: str | None = None

    @classmethod
    def path(cls, models_dir: str | Path, task: str) -> Path:
        return Path(models_dir) / task / TASK_FILE

    @classmethod
    def load(cls, models_dir: str | Path, task: str) -> TaskFile | None:
        """The task's file, or None when there is none; ValueError when it is not valid."""
        path = cls.path(models_dir, task)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return cls.model_validate(json.loads(text))
        except ValueError as exc:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
            raise ValueError(f"{path}: invalid {TASK_FILE}: {exc}") from None

    def save(self, models_dir: str | Path, task: str) -> Path:
        """Write the file atomically (a temporary file renamed over it)."""
        path = self.path(models_dir, task)
        text = json.dumps(self.model_dump(mode="json", exclude_unset=True), indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".task.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
