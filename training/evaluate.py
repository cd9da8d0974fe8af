"""``dnabert-train evaluate``: metrics of a model on a labelled file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.contract.card import CARD_FILE
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.checkpoint import is_run_folder, load_classifier
from training.data import read_labelled
from training.metrics import task_metrics
from training.train import predict_scores


def evaluate_model_dir(model_dir: Path, data: Path, threshold: float = 0.5) -> dict:
    """Evaluate an exported folder (ONNX Runtime) or a run's model folder (PyTorch)."""
    if (model_dir / CARD_FILE).is_file():
        model = OnnxModel(model_dir)
        task, backend = model.card.task, "onnxruntime"
        examples = read_labelled(data, task)
        scores = predict_sequences(model, [e.sequence for e in examples], [e.id for e in examples]).scores
    elif is_run_folder(model_dir):
        clf, tok, meta = load_classifier(model_dir)
        task, backend = meta["task"], "pytorch"
        examples = read_labelled(data, task)
        scores = predict_scores(clf, tok, [e.sequence for e in examples], task)
    else:
        raise FileNotFoundError(f"{model_dir}: neither an exported model folder ({CARD_FILE}) "
                                "nor a run model folder (classifier.json)")
    metrics = task_metrics(task, np.array([e.label for e in examples]), scores, threshold)
    return {"model": str(model_dir), "data": str(data), "task": task, "backend": backend, "metrics": metrics}
