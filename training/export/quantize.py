"""int8 graphs for CPU serving: ONNX Runtime dynamic quantization, gated on accuracy against fp32.

``dnabert-train quantize --models models`` adds ``model.int8.onnx`` to every exported model
folder (card role ``graph_int8``; served with ``DNABERT_PRECISION=int8``). Weights of the
chosen operators are stored as int8; activations are quantized per batch at run time
(``DynamicQuantizeMatMul``). What is quantized and how, and why (each measured here, 2-core AMD
EPYC with AVX-512 VNNI, ``bench/results/full_size.md``):

* the matrix products (``MatMul``, ``Gemm``): on VNNI an int8 product runs at about 3.3x the
  fp32 rate (680 against 205 GOP/s on one core for DNABERT-2-117M's shapes);
* **per-channel weights** (default): one scale per output column costs nothing in speed and
  keeps more accuracy than one scale per matrix;
* **fused attention** (default, DNABERT-2 only): the graph is rewritten first
  (:mod:`training.export.attention`: ``MultiHeadAttention`` with the ALiBi bias, three
  ``Wqkv`` products and two GEGLU products that quantize into integer products without a
  Split), then quantized. The plain int8 graph stays beside it as ``model.int8.plain.onnx``
  (card role ``graph_int8_plain``), loaded where the runtime lacks the contrib operator;
* the attention products (query x key, probabilities x value) stay fp32 inside the fused
  operator: ONNX Runtime has no int8 attention kernel that takes an attention bias (its
  ``QAttention`` has none), and at 300 bp they are about 1 % of the work;
* **static quantization** (QDQ with MinMax calibration) was slower: 40 against 30 ms of CPU per
  sequence of DNABERT-2-117M at batch 8, and the quantizer cannot type the tensors after the
  fused attention. Dynamic quantization is what this module writes;
* quantizing the LSTM as well (``DynamicQuantizeLSTM``) wrecked ``cnn_bilstm_max``: its test MCC
  fell from 0.527 to 0.198 and the mean score moved by 0.40;
* convolutions stay fp32: on AVX2 CPUs ONNX Runtime's ``ConvInteger`` kernel was about 3x
  slower than the fp32 ``FusedConv`` it replaces.

Nothing here is assumed to be harmless: each candidate int8 graph is built in a scratch copy of
the folder and compared with the fp32 graph on the task's test split (never used for training
or selection). It must pass the **accuracy gate**: the test MCC (a softmax task) or macro AUROC
(a multi-label task) within :data:`GATE_TOLERANCE` of fp32. Only then is it written into the
folder; with ``replace="if-faster"`` an int8 graph the folder already has is replaced only by a
faster one (less CPU time per sequence at batch 32, interleaved, medians). The card records the
figures of both precisions, the gate, the speed and how the graph was made (``export.int8``).
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.contract.card import GRAPH_ROLES, ModelCard, file_sha256
from service.contract.tasks import LNCRNA, task
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from service.runtime.session import Session, quantize_dynamic_graph
from training.data import lncrna_dataset, promoter_dataset
from training.export.attention import MULTI_HEAD, fuse_graph_file, plain_name, plain_role
from training.metrics import task_metrics

log = logging.getLogger("dnabert.train")

INT8_FILE = "model.int8.onnx"
INT8_PLAIN_FILE = plain_name(INT8_FILE)
DEFAULT_OP_TYPES = ("MatMul", "Gemm")
GATE_TOLERANCE = 0.01
REPLACE = ("always", "if-faster")


class GateFailed(ValueError):
    """The int8 graph is further from fp32 than the accuracy gate allows."""


def gate_metric(task_name: str) -> str:
    """The metric the accuracy gate compares: MCC for a softmax task, macro AUROC for a sigmoid one."""
    return "macro_auroc" if task(task_name).activation == "sigmoid" else "mcc"


def accuracy_gate(task_name: str, fp32: dict[str, Any], int8: dict[str, Any],
                  tolerance: float = GATE_TOLERANCE) -> dict[str, Any]:
    """The gate's record: the metric of both precisions, their difference and whether it passes."""
    metric = gate_metric(task_name)
    a, b = fp32.get(metric), int8.get(metric)
    diff = None if a is None or b is None else abs(float(a) - float(b))
    return {"metric": metric, "fp32": a, "int8": b, "abs_diff": diff, "tolerance": tolerance,
            "passed": diff is not None and diff <= tolerance}


def _batch(model: OnnxModel, sequences: list[str], batch: int) -> tuple[np.ndarray, np.ndarray]:
    return model.tokenizer.pad([e.ids for e in model.tokenizer.encode(sequences[:batch])])


def interleaved_throughput(models: dict[str, OnnxModel], sequences: list[str], batch: int = 32,
                           seconds: float = 2.0, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Speed of each model on the same batch: in each round every model runs for
    ``seconds / rounds`` (the order alternating between rounds); medians over the rounds of the
    sequences per second and of the process CPU time per sequence (the steadier figure where other
    work shares the cores)."""
    feeds = {name: _batch(m, sequences, batch) for name, m in models.items()}
    for name, m in models.items():
        m.run(*feeds[name])
    rates: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            n, start, start_cpu = 0, time.perf_counter(), time.process_time()
            while n < 1 or time.perf_counter() - start < seconds / rounds:
                models[name].run(*feeds[name])
                n += 1
            done = n * feeds[name][0].shape[0]
            rates[name].append(done / (time.perf_counter() - start))
            cpu[name].append(1000 * (time.process_time() - start_cpu) / done)
    return {name: {"sequences_per_s": round(statistics.median(rates[name]), 1),
                   "cpu_ms_per_sequence": round(statistics.median(cpu[name]), 4)} for name in models}


def build_int8(fp32_graph: Path, out_dir: Path, op_types: Sequence[str] = DEFAULT_OP_TYPES,
               per_channel: bool = True, fused_attention: bool = True) -> dict[str, Any]:
    """Write ``out_dir/model.int8.onnx`` (and, with fused attention, its plain fallback
    ``model.int8.plain.onnx``) from a plain fp32 graph; return how they were made."""
    out_dir = Path(out_dir)
    made: dict[str, Any] = {"op_types": list(op_types), "per_channel": per_channel,
                            "weight_type": "int8 (activations uint8, dynamic)" +
                                           (", per-channel weight scales" if per_channel else ""),
                            "attention": "plain", "files": {GRAPH_ROLES["int8"]: INT8_FILE}}
    if not fused_attention:
        quantize_dynamic_graph(fp32_graph, out_dir / INT8_FILE, op_types, per_channel)
        return made
    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "fused.onnx"
        report = fuse_graph_file(fp32_graph, fused, MULTI_HEAD, fallback=INT8_PLAIN_FILE)
        if not report.fused:  # no DNABERT-2 attention in this graph: the plain int8 graph is all
            quantize_dynamic_graph(fp32_graph, out_dir / INT8_FILE, op_types, per_channel)
            return made
        quantize_dynamic_graph(fused, out_dir / INT8_FILE, op_types, per_channel)
    quantize_dynamic_graph(fp32_graph, out_dir / INT8_PLAIN_FILE, op_types, per_channel)
    made["attention"] = {"operator": "com.microsoft.MultiHeadAttention", "fallback": INT8_PLAIN_FILE,
                         **report.as_dict()}
    made["files"][plain_role(GRAPH_ROLES["int8"])] = INT8_PLAIN_FILE
    return made


def _model_on(folder: Path, precision: str, graph: str) -> OnnxModel:
    """The folder's model at ``precision`` with its session on ``graph`` (a plain fallback)."""
    model = OnnxModel(folder, precision=precision)
    model.session = Session(folder / graph)
    return model


def _scratch_copy(folder: Path, card: ModelCard, tmp: Path) -> Path:
    """The folder's fp32 graph (and its plain fallback), tokenizer and card in ``tmp``."""
    scratch = tmp / folder.name
    scratch.mkdir()
    roles = (GRAPH_ROLES["fp32"], plain_role(GRAPH_ROLES["fp32"]), "tokenizer")
    keep = {role: name for role, name in card.files.items() if role in roles}
    for name in keep.values():
        shutil.copy2(folder / name, scratch / name)
    copy = card.model_copy(deep=True)
    copy.files = keep
    copy.sha256 = {name: card.sha256[name] for name in keep.values() if name in card.sha256}
    copy.save(scratch)
    return scratch


def add_int8(folder: Path, examples: Sequence, op_types: Sequence[str] = DEFAULT_OP_TYPES,
             speed_seconds: float = 2.0, *, per_channel: bool = True, fused_attention: bool = True,
             tolerance: float = GATE_TOLERANCE, replace: str = "always") -> dict:
    """Build an int8 graph for an exported folder, measure it against fp32 on ``examples``
    (labelled test data) and, when it passes the accuracy gate (and, with ``replace="if-faster"``,
    is faster than the int8 graph the folder has), write it into the folder and record the
    figures in the card. Returns the figures; raises :class:`GateFailed` when the gate fails.
    """
    if replace not in REPLACE:
        raise ValueError(f"replace must be one of {REPLACE}, not {replace!r}")
    folder = Path(folder)
    card = ModelCard.load(folder)
    source = card.files.get(plain_role(GRAPH_ROLES["fp32"]), card.files[GRAPH_ROLES["fp32"]])
    sequences = [e.sequence for e in examples]
    labels = np.array([e.label for e in examples])
    with tempfile.TemporaryDirectory() as tmp:
        scratch = _scratch_copy(folder, card, Path(tmp))
        made = build_int8(scratch / source, scratch, op_types, per_channel, fused_attention)
        candidate = ModelCard.load(scratch)
        candidate.files.update(made["files"])
        candidate.sha256.update({name: file_sha256(scratch / name) for name in made["files"].values()})
        candidate.save(scratch)

        fp32 = OnnxModel(scratch, precision="fp32")
        int8 = OnnxModel(scratch, precision="int8")
        s32, s8 = predict_sequences(fp32, sequences).scores, predict_sequences(int8, sequences).scores
        diff = np.abs(s32 - s8)
        metrics32, metrics8 = task_metrics(card.task, labels, s32), task_metrics(card.task, labels, s8)
        figures: dict[str, Any] = {
            **{k: v for k, v in made.items() if k != "files"},
            "test_sequences": len(sequences),
            "max_abs_diff_scores_vs_fp32": float(diff.max()),
            "mean_abs_diff_scores_vs_fp32": float(diff.mean()),
            "test_metrics_fp32": metrics32,
            "test_metrics_int8": metrics8,
            "gate": accuracy_gate(card.task, metrics32, metrics8, tolerance),
            "graph_mb": round((scratch / INT8_FILE).stat().st_size / 2**20, 2),
        }
        if INT8_PLAIN_FILE in made["files"].values():
            plain = predict_sequences(_model_on(scratch, "int8", INT8_PLAIN_FILE), sequences).scores
            figures["fallback_max_abs_diff_scores_vs_fp32"] = float(np.abs(s32 - plain).max())
            figures["fallback_test_metrics_int8"] = task_metrics(card.task, labels, plain)
        if not figures["gate"]["passed"]:
            g = figures["gate"]
            raise GateFailed(f"{folder}: int8 {g['metric']} {g['int8']} against fp32 {g['fp32']} is further "
                             f"than {tolerance}; the folder is unchanged")
        current = GRAPH_ROLES["int8"] in card.files
        if speed_seconds > 0 or (replace == "if-faster" and current):
            models = {"fp32": fp32, "int8": int8}
            if current:
                models["int8_current"] = OnnxModel(folder, precision="int8")
            speed = interleaved_throughput(models, sequences, seconds=max(speed_seconds, 1.0))
            figures["cpu_speed_batch32"] = {k: v for k, v in speed.items() if k != "int8_current"}
            if current:
                figures["replaced_int8_speed_batch32"] = speed["int8_current"]
            new, old = speed["int8"]["cpu_ms_per_sequence"], speed.get("int8_current", {}).get("cpu_ms_per_sequence")
            if current and replace == "if-faster" and new >= old:
                log.info("%s: the new int8 graph (%.3f ms of CPU per sequence) is not faster than the current "
                         "one (%.3f); kept", folder, new, old)
                return {**figures, "written": False}
        # Write into the folder: the graphs first, then the card that lists them.
        for role in [r for r in card.files if r.startswith(GRAPH_ROLES["int8"])]:
            name = card.files.pop(role)
            card.sha256.pop(name, None)
            if name not in made["files"].values():
                (folder / name).unlink(missing_ok=True)
        for role, name in made["files"].items():
            shutil.copy2(scratch / name, folder / name)
            card.files[role] = name
            card.sha256[name] = file_sha256(folder / name)
    card.export.int8 = figures
    card.save(folder)
    log.info("%s: int8 %s %s vs fp32 %s, max |score diff| %.4f", folder, figures["gate"]["metric"],
             figures["gate"]["int8"], figures["gate"]["fp32"], figures["max_abs_diff_scores_vs_fp32"])
    return {**figures, "written": True}


def test_examples(task_name: str, root: Path | None = None) -> list:
    """The held-out test split a model of ``task_name`` was never trained or selected on."""
    data = lncrna_dataset(root) if task_name == LNCRNA else promoter_dataset(root)
    return data["test"]


def quantize_models(models: Path, op_types: Sequence[str] = DEFAULT_OP_TYPES, speed_seconds: float = 2.0,
                    only: Sequence[str] | None = None, **options: Any) -> dict[str, dict]:
    """``add_int8`` for the model folders ``models/<task>/<name>/`` (``only``: those names);
    ``options`` go to :func:`add_int8`. A folder whose int8 graph fails the gate is reported
    (``error``) and left unchanged."""
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
        try:
            out[f"{card.task}/{card.name}"] = add_int8(folder, cache[card.task], op_types, speed_seconds, **options)
        except GateFailed as exc:
            out[f"{card.task}/{card.name}"] = {"written": False, "error": str(exc)}
    return out
