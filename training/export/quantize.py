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

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.card import CARD_FILE, ModelCard
from service.model_folder import OnnxModel, file_sha256, session_options

log = logging.getLogger("dnabert.train")

INT8_FILE = "model.int8.onnx"
DEFAULT_OP_TYPES = ("MatMul", "Gemm")


def quantize_graph(src: Path, dst: Path, op_types: Sequence[str] = DEFAULT_OP_TYPES) -> Path:
    """Dynamic int8 quantization (int8 weights, uint8 activations quantized per batch)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Graph clean-up and ONNX shape inference first, as the quantizer asks; the symbolic
        # shape pass is skipped because it cannot reason about the dynamic pooled length.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types))
    return dst


def _scores(model: OnnxModel, sequences: list[str]) -> np.ndarray:
    return model.predict(sequences, batch_size=64).scores


def _throughput(model: OnnxModel, sequences: list[str], batch: int = 32, seconds: float = 2.0) -> float:
    tokens = [e.ids for e in model.tokenizer.encode(sequences[:batch])]
    ids, mask = model.tokenizer.pad(tokens)
    model.run(ids, mask)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.run(ids, mask)
        n += 1
    return n * len(tokens) / (time.perf_counter() - start)


def _metrics(task: str, labels: np.ndarray, scores: np.ndarray) -> dict:
    from training.data import LNCRNA_LABELS
    from training.metrics import binary_metrics, multilabel_metrics

    if task == "lncrna-localization":
        return multilabel_metrics(labels, scores, LNCRNA_LABELS)
    return binary_metrics(labels, scores)


def add_int8(folder: Path, examples: Sequence, op_types: Sequence[str] = DEFAULT_OP_TYPES,
             speed_seconds: float = 2.0) -> dict:
    """Write ``model.int8.onnx`` into an exported folder, measure it against fp32 on
    ``examples`` (labelled test data), and record the figures in the card."""
    folder = Path(folder)
    card = ModelCard.load(folder)
    dst = folder / INT8_FILE
    quantize_graph(folder / card.files["graph"], dst, op_types)
    # The card must list the file before OnnxModel will load it. The card's JSON is edited in
    # place (not re-serialised) so that nothing else in it changes.
    raw = json.loads((folder / CARD_FILE).read_text())
    raw["files"]["graph_int8"] = INT8_FILE
    raw["sha256"][INT8_FILE] = file_sha256(dst)
    (folder / CARD_FILE).write_text(json.dumps(raw, indent=2) + "\n")

    opts = session_options()
    fp32 = OnnxModel(folder, precision="fp32", session_options=opts)
    int8 = OnnxModel(folder, precision="int8", session_options=opts)
    sequences = [e.sequence for e in examples]
    s32, s8 = _scores(fp32, sequences), _scores(int8, sequences)
    diff = np.abs(s32 - s8)
    labels = np.array([e.label for e in examples])
    figures = {
        "op_types": list(op_types),
        "weight_type": "int8 (activations uint8, dynamic)",
        "test_sequences": len(sequences),
        "max_abs_diff_scores_vs_fp32": float(diff.max()),
        "mean_abs_diff_scores_vs_fp32": float(diff.mean()),
        "test_metrics_fp32": _metrics(card.task, labels, s32),
        "test_metrics_int8": _metrics(card.task, labels, s8),
        "graph_mb": round(dst.stat().st_size / 2**20, 2),
    }
    if speed_seconds > 0:
        figures["cpu_sequences_per_s_batch32"] = {
            "fp32": round(_throughput(fp32, sequences, seconds=speed_seconds), 1),
            "int8": round(_throughput(int8, sequences, seconds=speed_seconds), 1),
        }
    raw["export"]["int8"] = figures
    (folder / CARD_FILE).write_text(json.dumps(raw, indent=2) + "\n")
    log.info("%s: int8 max |score diff| %.4f", folder, figures["max_abs_diff_scores_vs_fp32"])
    return figures


def test_examples(task: str, root: Path | None = None) -> list:
    """The held-out test split a model of ``task`` was never trained or selected on."""
    from training.data import lncrna_dataset, promoter_dataset

    data = lncrna_dataset(root) if task == "lncrna-localization" else promoter_dataset(root)
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
