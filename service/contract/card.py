"""The model card: the contract between an exported model folder and the service.

:class:`ModelCard` is the only reader and writer of ``card.json``: training builds one and
:meth:`ModelCard.save` writes it, later steps (selection notes, int8 graphs) change the typed
fields and save it again, and the service loads it with :meth:`ModelCard.load`. Each section is
a typed model; sections whose content depends on the architecture (the backbone configuration)
or on the task (metrics) keep their extra keys, and every section writes back exactly the keys
it was given, so a card round-trips unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from service.contract.tasks import Activation, TaskName

CARD_FILE = "card.json"
CARD_SCHEMA_VERSION = 1

GRAPH_ROLES = {"fp32": "graph", "fp16": "graph_fp16", "int8": "graph_int8"}
"""Precision -> the card's ``files`` role of the graph that runs at that precision."""

EMBEDDING_ROLE = "embedding"
"""The card's ``files`` role of the backbone graph (``embedding.onnx``): inputs ``input_ids`` and
``attention_mask``, output the last hidden state (batch, sequence, hidden) with zeros at padding."""
EMBEDDING_OUTPUT = "last_hidden_state"


class _Section(BaseModel):
    """A card section: typed known fields, extra keys kept, only the keys given written back."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), validate_assignment=True)

    @model_serializer(mode="wrap")
    def _given_keys_only(self, handler):
        data = handler(self)
        keep = self.model_fields_set | set(self.model_extra or {})
        return {k: v for k, v in data.items() if k in keep}


class Tokenization(_Section):
    """Which tokenizer reads the folder's tokenizer file, and the truncation policy."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)

    kind: Literal["bpe", "kmer"] = "bpe"
    k: int | None = Field(None, description="kmer: k-mer length (1 to 6)")
    special_tokens: bool | None = Field(None, description="kmer: [CLS] ... [SEP] around the k-mers")
    max_tokens: int = 512
    truncation_side: Literal["left", "right"] = "right"
    max_nucleotides: int | None = None
    nucleotide_truncation_side: Literal["left", "right"] = "left"
    note: str | None = Field(None, description="for people: what happens to input over the limit")

    def entry(self) -> dict[str, Any]:
        """The entry as written (what :func:`service.contract.tokenization.tokenizer_from_entry` takes)."""
        return self.model_dump(mode="json")


class Head(_Section):
    variant: str | None = None
    head_dropout: float | None = None
    head_class: str | None = None
    parameters: int | None = Field(None, description="parameters of the whole classifier")


class Selection(_Section):
    rule: str | None = None
    dev_scores: dict[str, float] | None = None
    kept: str | None = None


class Training(_Section):
    config: dict[str, Any] | None = Field(None, description="the training job's settings")
    data: dict[str, Any] | None = Field(None, description="data sets and the split")
    best_step: int | None = None
    steps: int | None = None
    train_seconds: float | None = None
    train_cpu_seconds: float | None = None
    initialised_from: str | None = None
    pretrained_backbone: dict[str, Any] | None = None
    selection: Selection | None = None
    command: str | None = None


class Parity(_Section):
    max_abs_diff: float
    atol: float | None = None
    cases: list[dict[str, Any]] | None = None


class Export(_Section):
    opset: int | None = None
    exporter: str | None = None
    dynamic_axes: dict[str, list[str]] | None = None
    parity_vs_pytorch: Parity | None = None
    fp16: dict[str, Any] | None = Field(None, description="the fp16 graph's deviation from fp32")
    int8: dict[str, Any] | None = Field(None, description="the int8 graph measured against fp32 on test data")
    versions: dict[str, str] | None = None
    created: str | None = None


class Embedding(_Section):
    """The backbone graph (files role :data:`EMBEDDING_ROLE`): what it outputs and how to pool it.

    Only models with a transformer backbone (DNABERT-2, DNABERT) have one; cards written before
    it existed, and the one-hot baselines, have no such section.
    """

    output: str = Field(EMBEDDING_OUTPUT, description="the graph's output: (batch, sequence, dim) float32, "
                        "exactly 0 at padded positions")
    dim: int = Field(description="the hidden size")
    pooling: list[Literal["mean", "cls"]] = Field(["mean", "cls"], description="poolings that make sense")
    default_pooling: Literal["mean", "cls"] = "mean"
    mean_over: str | None = Field(None, description="which positions the mean pooling averages")
    parity_vs_pytorch: Parity | None = None
    parity_vs_classifier_graph: Parity | None = Field(
        None, description="valid positions against the hidden-state tensor inside the classifier graph")
    source: str | None = Field(None, description="how the graph was made")

    @model_validator(mode="after")
    def _default_is_offered(self) -> Embedding:
        if self.default_pooling not in self.pooling:
            raise ValueError(f"default_pooling {self.default_pooling!r} is not one of pooling {self.pooling}")
        return self


DEFAULT_THRESHOLD = 0.5
"""The promoter decision threshold when nothing else sets one (P(promoter) >= 0.5: promoter)."""


class ReliabilityBin(_Section):
    """One bin of a reliability table: the examples whose predicted P(positive) lies in [lo, hi)
    (the last bin also holds 1.0), their mean prediction and how often they are positive."""

    lo: float
    hi: float
    n: int
    mean_predicted: float | None = Field(None, description="None for an empty bin")
    observed_frequency: float | None = Field(None, description="None for an empty bin")


class SplitCalibration(_Section):
    """How well the probabilities of one split match the labels."""

    n: int
    brier: float | None = Field(None, description="mean (p - y)^2 of P(positive) (one-class tasks)")
    reliability: list[ReliabilityBin] | None = Field(None, description="equal-width bins over [0, 1]")
    per_label_brier: dict[str, float] | None = Field(None, description="multi-label tasks: label -> Brier score")


class Threshold(_Section):
    """The decision threshold chosen on dev (:func:`training.calibration.choose_threshold`).

    ``value`` is the threshold with the best dev MCC on the grid; it is in force only when
    ``adopted`` (far enough from 0.5 and clearly better there), otherwise 0.5 is.
    """

    value: float
    adopted: bool
    chosen_on: str = "dev"
    rule: str | None = None
    dev_mcc_at_0_5: float | None = None
    dev_mcc_at_threshold: float | None = None

    @property
    def in_force(self) -> float:
        """The threshold a prediction uses when neither the request nor the operator sets one."""
        return self.value if self.adopted else DEFAULT_THRESHOLD


class Calibration(_Section):
    """Reliability tables and Brier scores per split, and the dev-chosen threshold.

    Written by ``dnabert-train calibrate`` (a model folder's card) and ``dnabert-train
    choose-default`` (the ``all`` ensemble, in the task file); cards written before it existed
    have no such section and serve at 0.5.
    """

    splits: dict[str, SplitCalibration] = Field(description="split name (dev, hl_test, gue_test; test) -> figures")
    threshold: Threshold | None = Field(None, description="one-class tasks only")
    bins: int | None = None
    scored_with: str | None = Field(None, description="how the probabilities were computed")
    data: str | None = Field(None, description="the data set the splits come from")
    created: str | None = None


class SplitMetrics(_Section):
    """Metrics on one split (binary: accuracy, mcc, auroc, ...; multi-label: per_label, macro_auroc, ...)."""

    n: int | None = None
    accuracy: float | None = None
    f1: float | None = None
    mcc: float | None = None
    auroc: float | None = None
    macro_auroc: float | None = None
    micro_auroc: float | None = None


class ModelCard(BaseModel):
    """Everything needed to serve a model folder, and what is known about the model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)

    schema_version: int = CARD_SCHEMA_VERSION
    name: str
    task: TaskName
    variant: str
    architecture: str = Field(
        "dnabert2", description="dnabert2 (the default: cards without this field), dnabert1 (BERT over "
        "overlapping k-mers) or onehot (CNN/GRU baselines over one-hot bases)")
    description: str = ""
    labels: list[str]
    activation: Activation
    positive_index: int | None = Field(None, description="softmax column of the positive class")
    inputs: list[str]
    output: str
    files: dict[str, str] = Field(description="role -> file name: graph, graph_fp16, graph_int8 (optional), "
                                  "embedding (optional), tokenizer (tokenizer.json for kind bpe, vocab.txt for kind kmer)")
    sha256: dict[str, str]
    tokenization: Tokenization = Field(description="kind (bpe, the default, or kmer with k and "
                                       "special_tokens) and the truncation policy")
    backbone: dict[str, Any] = Field(description="the backbone's configuration (architecture-specific keys)")
    head: Head
    training: Training
    metrics: dict[str, SplitMetrics] = Field(description="split name -> metrics (dev, test, test parts)")
    export: Export
    embedding: Embedding | None = Field(None, description="the backbone graph (files role embedding), "
                                        "for models with a transformer backbone")
    calibration: Calibration | None = Field(None, description="reliability tables, Brier scores and the "
                                            "dev-chosen threshold (dnabert-train calibrate)")

    def threshold_in_force(self) -> float:
        """The promoter threshold this model's card sets: the adopted dev threshold, else 0.5."""
        th = self.calibration.threshold if self.calibration is not None else None
        return DEFAULT_THRESHOLD if th is None else th.in_force

    @classmethod
    def load(cls, folder: str | Path) -> ModelCard:
        return cls.model_validate(json.loads((Path(folder) / CARD_FILE).read_text()))

    def to_json(self) -> dict[str, Any]:
        """Every field, defaults filled in (what ``/models`` shows)."""
        return self.model_dump(mode="json")

    def file_json(self) -> dict[str, Any]:
        """What ``card.json`` holds: the fields given (a card written before a field with a
        default existed stays as it was), always with its schema version."""
        data = self.model_dump(mode="json", exclude_unset=True)
        return {"schema_version": self.schema_version, **data}

    def save(self, folder: str | Path) -> Path:
        """Write ``card.json`` atomically (a temporary file renamed over it): the service, which
        skips folders without a card, never reads half a card."""
        folder = Path(folder)
        text = json.dumps(self.file_json(), indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".card.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, folder / CARD_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return folder / CARD_FILE

    def graph_role(self, precision: str) -> str:
        role = GRAPH_ROLES.get(precision)
        if role is None:
            raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(GRAPH_ROLES)}")
        return role

    def serving_precision(self, wanted: str) -> str:
        """``wanted``, except that ``int8`` (an optional, CPU-only graph that a model earns by its
        measured accuracy) falls back to ``fp32`` for a card that lists no int8 graph."""
        return "fp32" if wanted == "int8" and GRAPH_ROLES["int8"] not in self.files else wanted


def file_sha256(path: str | Path) -> str:
    """The checksum a card records for each file of its folder."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
