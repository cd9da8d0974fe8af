"""Inference service for DNABERT-2 sequence classifiers.

This package also holds the inference contract that the training package imports:
sequence normalisation (:mod:`service.sequence`), tokenization (:mod:`service.tokenization`)
and the model-card schema (:mod:`service.card`). It never imports torch.
"""

__version__ = "0.1.0"
