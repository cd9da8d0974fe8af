"""int8 graphs for CPU serving: ONNX Runtime dynamic quantization, measured against fp32.

``dnabert-train quantize --models models`` adds ``model.int8.onnx`` to every exported model
folder (card role ``graph_int8``; served with ``DNABERT_PRECISION=int8``). Weights of the
chosen operators are stored as int8; activations are quantized per batch at run time
(``DynamicQuantizeMatMul``). By default only the matrix products are quantized:

* quantizing the LSTM as well (``DynamicQuantizeLSTM``) wrecked ``cnn_bilstm_max``: its test MCC
  fell from 0.527 to 0.198 and the mean score moved by 0.40;
* convolutions stay fp32: on AVX2 CPUs ONNX Runtime's ``ConvInteger`` kernel was about 3x
  slower than the fp32 ``FusedConv`` it replaces.

Nothing here is assumed to be harmless: each int8 graph is compared with its fp32 graph on the
task's test split (never used for training or selection) and the card records the largest and
mean score difference and the test metrics of both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.contract.card import GRAPH_ROLES, ModelCard, file_sha256
from service.contract.tasks import LNCRNA
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from service.runtime.session import quantize_dynamic_graph
from training.data import lncrna_dataset, promoter_dataset
from training.metrics import task_metrics

log = logging.getLogger("dnabert.train")

INT8_FILE = "model.int8.onnx"
DEFAULT_OP_TYPES = ("MatMul", "Gemm")


def _throughput(model: OnnxModel, sequences: list[str], batch: int = 32, seconds: float = 2.0) -> float:
    tokens = [e.ids for e in model.tokenizer.encode(sequences[:batch])]
    ids, mask = model.tokenizer.pad(tokens)
    model.run(ids, mask)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.run(ids, mask)
        n += 1
    return n * len(tokens) / (time.perf_counter() - start)


def add_int8(folder: Path, examples: Sequence, op_types: Sequence[str] = DEFAULT_OP_TYPES,
             speed_seconds: float = 2.0) -> dict:
    """Write ``model.int8.onnx`` into an exported folder, measure it against fp32 on
    ``examples`` (labelled test data), and record the figures in the card."""
    folder = Path(folder)
    card = ModelCard.load(folder)
    dst = folder / INT8_FILE
    quantize_dynamic_graph(folder / card.files["graph"], dst, op_types)
    # The card must list the file before OnnxModel will load it.
    card.files[GRAPH_ROLES["int8"]] = INT8_FILE
    card.sha256[INT8_FILE] = file_sha256(dst)
    card.save(folder)

    fp32 = OnnxModel(folder, precision="fp32")
    int8 = OnnxModel(folder, precision="int8")
    sequences = [e.sequence for e in examples]
    s32, s8 = predict_sequences(fp32, sequences).scores, predict_sequences(int8, sequences).scores
    diff = np.abs(s32 - s8)
    labels = np.array([e.label for e in examples])
    figures = {
        "op_types": list(op_types),
        "weight_type": "int8 (activations uint8, dynamic)",
        "test_sequences": len(sequences),
        "max_abs_diff_scores_vs_fp32": float(diff.max()),
        "mean_abs_diff_scores_vs_fp32": float(diff.mean()),
        "test_metrics_fp32": task_metrics(card.task, labels, s32),
        "test_metrics_int8": task_metrics(card.task, labels, s8),
        "graph_mb": round(dst.stat().st_size / 2**20, 2),
    }
    if speed_seconds > 0:
        figures["cpu_sequences_per_s_batch32"] = {
            "fp32": round(_throughput(fp32, sequences, seconds=speed_seconds), 1),
            "int8": round(_throughput(int8, sequences, seconds=speed_seconds), 1),
        }
    card.export.int8 = figures
    card.save(folder)
    log.info("%s: int8 max |score diff| %.4f", folder, figures["max_abs_diff_scores_vs_fp32"])
    return figures


def test_examples(task: str, root: Path | None = None) -> list:
    """The held-out test split a model of ``task`` was never trained or selected on."""
    data = lncrna_dataset(root) if task == LNCRNA else promoter_dataset(root)
    return data["test"]


def quantize_models(models: Path, op_types: Sequence[str] = DEFAULT_OP_TYPES, speed_seconds: float = 2.0,
                    only: Sequence[str] | None = None) -> dict[str, dict]:
    """``add_int8`` for the model folders ``models/<task>/<name>/`` (``only``: those names)."""
    out, cache = {}, {}
    folders = sorted(p.parent for p in Path(models).glob("*/*/card.json"))
    if only:
        wanted = {str(Path(models) / name) for name in only}
        missing = wanted - {str(f) for f in folders}
        if missing:
            raise FileNotFoundError(f"no model folder {', '.join(sorted(missing))}")
        folders = [f for f in folders if str(f) in wanted]
    for folder in folders:
        card = ModelCard.load(folder)
        if card.task not in cache:
            cache[card.task] = test_examples(card.task)
        out[f"{card.task}/{card.name}"] = add_int8(folder, cache[card.task], op_types, speed_seconds)
    return out
