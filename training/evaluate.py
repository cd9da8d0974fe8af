"""``dnabert-train evaluate``: metrics of a model on a labelled file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.card import CARD_FILE
from training.checkpoint import TASK_LNCRNA, is_run_folder, load_classifier
from training.data import LNCRNA_LABELS, read_labelled
from training.metrics import binary_metrics, multilabel_metrics


def evaluate_model_dir(model_dir: Path, data: Path, threshold: float = 0.5) -> dict:
    """Evaluate an exported folder (ONNX Runtime) or a run's model folder (PyTorch)."""
    if (model_dir / CARD_FILE).is_file():
        from service.model_folder import OnnxModel

        model = OnnxModel(model_dir)
        task, backend = model.card.task, "onnxruntime"
        examples = read_labelled(data, task)
        scores = model.predict([e.sequence for e in examples], [e.id for e in examples]).scores
    elif is_run_folder(model_dir):
        from training.train import predict_scores

        clf, tok, meta = load_classifier(model_dir)
        task, backend = meta["task"], "pytorch"
        examples = read_labelled(data, task)
        scores = predict_scores(clf, tok, [e.sequence for e in examples])
    else:
        raise FileNotFoundError(f"{model_dir}: neither an exported model folder ({CARD_FILE}) "
                                "nor a run model folder (classifier.json)")
    y = np.array([e.label for e in examples])
    if task == TASK_LNCRNA:
        metrics = multilabel_metrics(y, scores, LNCRNA_LABELS, threshold)
    else:
        metrics = binary_metrics(y, scores, threshold)
    return {"model": str(model_dir), "data": str(data), "task": task, "backend": backend, "metrics": metrics}
