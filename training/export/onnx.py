"""Export a trained classifier to ONNX, verify it against PyTorch, write a model folder.

A model folder (``models/<task>/<name>/``) is all the service needs:

* ``model.onnx`` — fp32 graph, inputs ``input_ids``/``attention_mask`` (int64, dynamic batch
  and sequence axes), output ``logits``;
* ``model.fp16.onnx`` — the same model in fp16 (int64 inputs, fp32 logits), for GPUs;
* the tokenizer file (``tokenizer.json`` for DNABERT-2's BPE, ``vocab.txt`` for k-mers and the
  one-hot baselines) and ``card.json`` (see :class:`service.card.ModelCard`).

Every architecture of :mod:`training.architectures` exports the same way.
"""

from __future__ import annotations

import copy
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.card import ModelCard
from service.model_folder import file_sha256
from service.tokenization import SequenceTokenizerLike
from training.architectures import architecture
from training.models import LNCRNA_VARIANT

OPSET = 18
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["logits"]
PARITY_ATOL = 1e-4


class ExportParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance."""


class _HalfPrecision(torch.nn.Module):
    """fp16 weights and compute, int64 inputs, fp32 logits out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).half().eval()
        self.config = model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask).float()


def export_graph(model: torch.nn.Module, path: Path, opset: int = OPSET) -> Path:
    """One ONNX graph with dynamic batch and sequence axes, weights embedded."""
    model.eval()
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript-based exporter: it maps nn.LSTM to one ONNX LSTM node with a dynamic
    # sequence axis. (torch.export decomposes the LSTM into a loop unrolled over time steps,
    # which fixes the sequence length.)
    torch.onnx.export(
        model, (ids, mask), str(path), dynamo=False, input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES, opset_version=opset,
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                      "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
    )
    onnx.checker.check_model(str(path), full_check=True)
    for value in onnx.load(str(path), load_external_data=False).graph.input:
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 2 or not all(d.dim_param for d in dims):
            raise ExportParityError(f"{path}: input {value.name} lost its dynamic batch/sequence axes")
    return path


def export_fp16(model: torch.nn.Module, path: Path, opset: int = OPSET) -> Path:
    """The same graph exported from the model cast to fp16 (fp32 logits out)."""
    return export_graph(_HalfPrecision(model), path, opset)


def verification_batches(tok: SequenceTokenizerLike, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random token batches of several sizes and lengths, with ragged padding.

    Rows are ``[CLS] ... [SEP]`` for tokenizers with special tokens and bare ids otherwise
    (the one-hot baselines); k-mer rows also hold some ``[UNK]`` (k-mers with N).
    """
    rng = np.random.default_rng(seed)
    specials = 2 if tok.special_tokens else 0
    out = []
    for batch, length in ((1, 3), (1, 64), (4, 37), (8, 128), (3, min(tok.policy.max_tokens, 520))):
        rows = []
        for b in range(batch):
            n = length if b == 0 else int(rng.integers(2, length + 1))
            body = rng.integers(5, tok.vocab_size, n - specials)
            if tok.kind == "kmer":
                body[rng.random(len(body)) < 0.05] = tok.unk_id
            body = body.tolist()
            rows.append([tok.cls_id, *body, tok.sep_id] if specials else body)
        out.append(tok.pad(rows))
    return out


def verify(model: torch.nn.Module, graph: Path, tok: SequenceTokenizerLike,
           atol: float = PARITY_ATOL) -> dict[str, Any]:
    """Max |ONNX Runtime - PyTorch| of the logits over several batch sizes and lengths."""
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    worst, cases = 0.0, []
    for ids, mask in verification_batches(tok):
        with torch.no_grad():
            ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        diff = float(np.abs(got - ref).max())
        worst = max(worst, diff)
        cases.append({"shape": list(ids.shape), "max_abs_diff": diff})
    if not worst <= atol:
        raise ExportParityError(f"{graph}: ONNX Runtime differs from PyTorch by {worst:.3g} > {atol}")
    return {"max_abs_diff": worst, "atol": atol, "cases": cases}


def verify_fp16(graph16: Path, graph32: Path, tok: SequenceTokenizerLike) -> dict[str, Any] | None:
    """Report the fp16 graph's deviation from fp32 (CPU), when ONNX Runtime can run it here."""
    try:
        s16 = ort.InferenceSession(str(graph16), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - some fp16 kernels exist on GPU only
        reason = " ".join(str(exc).split())[:300]
        return {"checked": False, "reason": f"ONNX Runtime CPU cannot run this fp16 graph: {reason}"}
    s32 = ort.InferenceSession(str(graph32), providers=["CPUExecutionProvider"])
    worst = 0.0
    for ids, mask in verification_batches(tok, seed=1):
        feeds = {"input_ids": ids, "attention_mask": mask}
        worst = max(worst, float(np.abs(s16.run(None, feeds)[0] - s32.run(None, feeds)[0]).max()))
    return {"checked": True, "max_abs_diff_logits_vs_fp32": worst}


def library_versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
    }


def export_model_folder(model: torch.nn.Module, tok: SequenceTokenizerLike, out: Path, *,
                        name: str, task: str, labels: list[str], training: dict[str, Any],
                        metrics: dict[str, Any], fp16: bool = True,
                        description: str = "", tokenization_note: str = "") -> ModelCard:
    """Export, verify, and write ``out/{model.onnx, model.fp16.onnx, <tokenizer file>, card.json}``.

    ``tokenization_note`` goes into the card's ``tokenization`` entry as ``note`` (e.g. what
    happens to input longer than the model's limit).
    """
    out.mkdir(parents=True, exist_ok=True)
    graph = export_graph(model, out / "model.onnx")
    parity = verify(model, graph, tok)
    files = {"graph": "model.onnx", "tokenizer": tok.file_name}
    fp16_report = None
    if fp16:
        export_fp16(model, out / "model.fp16.onnx")
        files["graph_fp16"] = "model.fp16.onnx"
        fp16_report = verify_fp16(out / "model.fp16.onnx", graph, tok)
    tok.save(out / tok.file_name)
    tokenization = tok.card_tokenization()
    if tokenization_note:
        tokenization["note"] = tokenization_note
    card = ModelCard(
        name=name,
        task=task,
        variant=model.variant,
        architecture=architecture(model),
        description=description,
        labels=labels,
        activation="sigmoid" if model.variant == LNCRNA_VARIANT else "softmax",
        positive_index=None if model.variant == LNCRNA_VARIANT else 1,
        inputs=INPUT_NAMES,
        output=OUTPUT_NAMES[0],
        files=files,
        sha256={f: file_sha256(out / f) for f in files.values()},
        tokenization=tokenization,
        backbone=model.config.to_dict(),
        head=model.describe(),
        training=training,
        metrics=metrics,
        export={
            "opset": OPSET,
            "exporter": "torch.onnx (TorchScript)",
            "dynamic_axes": {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"],
                             "logits": ["batch"]},
            "parity_vs_pytorch": parity,
            "fp16": fp16_report,
            "versions": library_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    (out / "card.json").write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    return card
