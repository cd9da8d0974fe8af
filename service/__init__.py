"""Inference service for DNABERT-2 sequence classifiers.

This package also holds the inference contract that the training package imports:
sequence normalisation (:mod:`service.contract.sequence`), tokenization (:mod:`service.contract.tokenization`)
and the model-card schema (:mod:`service.contract.card`). It never imports torch.
"""

__version__ = "0.1.0"
