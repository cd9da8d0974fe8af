"""Every classifier family the package trains, by variant name.

* ``dnabert2`` — :class:`training.models.heads.SequenceClassifier` (BPE tokens): ``base``, ``cnn``,
  ``bilstm``, ``cnn_bilstm_max``, ``cnn_bilstm_avg`` and ``lncrna``;
* ``dnabert1`` — :class:`training.models.dnabert1.Dnabert1Classifier` (overlapping k-mers):
  ``dnabert1_linear1``, ``dnabert1_linear2``;
* ``onehot`` — :mod:`training.models.baselines` (one token per base): ``onehot_cnn_gru``,
  ``onehot_cnn``, ``onehot_gru``.

All of them map ``(input_ids, attention_mask)`` to logits and carry ``variant``, ``config``
(with ``to_dict()``), ``head_dropout`` and ``describe()``, so training, checkpoints and export
treat them alike.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from service.contract.tasks import LNCRNA_VARIANT
from training.models import baselines, dnabert1
from training.models.baselines import ONEHOT_VARIANTS, BaselineConfig, build_baseline
from training.models.dnabert1 import DNABERT1_VARIANTS, Dnabert1Classifier, Dnabert1Config
from training.models.dnabert2 import DnaBertConfig
from training.models.heads import ALL_VARIANTS as DNABERT2_VARIANTS
from training.models.heads import SequenceClassifier

DNABERT2, DNABERT1, ONEHOT = "dnabert2", "dnabert1", "onehot"
ARCHITECTURES = (DNABERT2, DNABERT1, ONEHOT)
VARIANTS: dict[str, tuple[str, ...]] = {
    DNABERT2: tuple(DNABERT2_VARIANTS),
    DNABERT1: DNABERT1_VARIANTS,
    ONEHOT: ONEHOT_VARIANTS,
}
ALL_VARIANTS = tuple(v for vs in VARIANTS.values() for v in vs)


def architecture_of(variant: str) -> str:
    for arch, variants in VARIANTS.items():
        if variant in variants:
            return arch
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(ALL_VARIANTS)}")


def architecture(model: nn.Module) -> str:
    return getattr(model, "architecture", DNABERT2)


def build_classifier(arch: str, backbone: dict[str, Any], variant: str, head_dropout: float) -> nn.Module:
    """A fresh classifier from a saved ``backbone`` config dict (a run's ``classifier.json``)."""
    if arch == DNABERT2:
        return SequenceClassifier(DnaBertConfig.from_dict(backbone), variant, head_dropout)
    if arch == DNABERT1:
        return Dnabert1Classifier(Dnabert1Config.from_dict(backbone), variant, head_dropout)
    if arch == ONEHOT:
        return build_baseline(BaselineConfig.from_dict(backbone), variant, head_dropout)
    raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")


DESCRIPTIONS = {
    "base": "DNABERT-2 sequence classifier: pooler, dropout, linear",
    "cnn": "Conv1d(H->2H, k=3), ReLU, MaxPool(2), BatchNorm, dropout, first pooled position, linear",
    "bilstm": "BiLSTM(128 per direction), each sequence's last valid step, linear",
    "cnn_bilstm_max": "CNN block with max pooling, then BiLSTM, last valid step, linear",
    "cnn_bilstm_avg": "CNN block with average pooling, then BiLSTM, last valid step, linear",
    LNCRNA_VARIANT: "iLoc-lncRNA-BERT head: masked mean, dropout, H->64, dropout, 64->3, sigmoid",
    "dnabert1_linear1": "DNABERT (v1) over overlapping 6-mers: BERT encoder, pooled [CLS], dropout, linear",
    "dnabert1_linear2": "DNABERT (v1) over overlapping 6-mers: BERT encoder, pooled [CLS], dropout, "
                        "linear(H, H), ReLU, dropout, linear",
    "onehot_cnn_gru": "CNN-GRU baseline on one-hot bases: 2 x (conv, BN, ReLU, max-pool 2), BiGRU(64) "
                      "final states, 5 linear layers",
    "onehot_cnn": "CNN baseline on one-hot bases: 3 x (conv, BN, ReLU), max-pool 2 between, global max "
                  "over valid positions, one dense layer",
    "onehot_gru": "BiGRU baseline on one-hot bases: BiGRU(64) final states, linear, ReLU, dropout, linear",
}
"""The card's ``description`` of each variant, as ``dnabert-train embedded`` and ``compare`` export it."""


def tokenization_note(arch: str) -> str:
    """What the card says about long input, per architecture ("" for DNABERT-2: unchanged cards)."""
    if arch == DNABERT1:
        return dnabert1.LONG_INPUT_NOTE
    if arch == ONEHOT:
        return baselines.LONG_INPUT_NOTE
    return ""
