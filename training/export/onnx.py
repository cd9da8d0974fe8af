"""Export a trained classifier to ONNX, verify it against PyTorch, write a model folder.

A model folder (``models/<task>/<name>/``) is all the service needs:

* ``model.onnx`` — fp32 graph, inputs ``input_ids``/``attention_mask`` (int64, dynamic batch
  and sequence axes), output ``logits``;
* ``model.fp16.onnx`` — the same model in fp16 (int64 inputs, fp32 logits), for GPUs;
* ``embedding.onnx`` — for DNABERT-2 and DNABERT (not the one-hot baselines): the backbone's
  last hidden state ``last_hidden_state`` (batch, sequence, hidden), 0 at padded positions, and
  the card's ``embedding`` section (see :mod:`training.export.embedding`);
* the tokenizer file (``tokenizer.json`` for DNABERT-2's BPE, ``vocab.txt`` for k-mers and the
  one-hot baselines) and ``card.json`` (see :class:`service.contract.card.ModelCard`).

Every architecture of :mod:`training.models.architectures` exports the same way. The graphs are
checked with ONNX Runtime through :mod:`service.runtime.session`, the runtime the service uses.
"""

from __future__ import annotations

import copy
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from service.contract import tasks
from service.contract.card import EMBEDDING_OUTPUT, EMBEDDING_ROLE, ModelCard, file_sha256
from service.contract.tokenization import SequenceTokenizerLike
from service.runtime import session
from service.runtime.session import Session
from training.checkpoint import load_classifier
from training.models import architectures
from training.models.architectures import DNABERT1, DNABERT2, architecture

OPSET = 18
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["logits"]
PARITY_ATOL = 1e-4

EMBEDDING_FILE = "embedding.onnx"
BACKBONE_ARCHITECTURES = (DNABERT2, DNABERT1)
"""Architectures with a transformer backbone, which get an embedding graph."""
POOLING = ["mean", "cls"]
DEFAULT_POOLING = "mean"
MEAN_OVER = "every non-padding token, [CLS] and [SEP] included"
EXPORTED = "exported from the PyTorch backbone"


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


def export_graph(model: torch.nn.Module, path: Path, opset: int = OPSET, output: str = OUTPUT_NAMES[0],
                 output_axes: dict[int, str] | None = None) -> Path:
    """One ONNX graph with dynamic batch and sequence axes, weights embedded.

    ``output`` names the graph's one output and ``output_axes`` its dynamic axes (default: the
    logits, dynamic in the batch axis).
    """
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
        output_names=[output], opset_version=opset,
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                      "attention_mask": {0: "batch", 1: "sequence"}, output: output_axes or {0: "batch"}},
    )
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path), load_external_data=False).graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 2 or not all(d.dim_param for d in dims):
            raise ExportParityError(f"{path}: input {value.name} lost its dynamic batch/sequence axes")
    dims = graph.output[0].type.tensor_type.shape.dim
    if not all(dims[axis].dim_param for axis in output_axes or {0: "batch"}):
        raise ExportParityError(f"{path}: output {output} lost its dynamic axes")
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
    onnx_session = Session(graph)
    worst, cases = 0.0, []
    for ids, mask in verification_batches(tok):
        with torch.no_grad():
            ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        got = onnx_session.run({"input_ids": ids, "attention_mask": mask})
        diff = float(np.abs(got - ref).max())
        worst = max(worst, diff)
        cases.append({"shape": list(ids.shape), "max_abs_diff": diff})
    if not worst <= atol:
        raise ExportParityError(f"{graph}: ONNX Runtime differs from PyTorch by {worst:.3g} > {atol}")
    return {"max_abs_diff": worst, "atol": atol, "cases": cases}


def verify_fp16(graph16: Path, graph32: Path, tok: SequenceTokenizerLike) -> dict[str, Any] | None:
    """Report the fp16 graph's deviation from fp32 (CPU), when ONNX Runtime can run it here."""
    try:
        s16 = Session(graph16)
    except Exception as exc:  # noqa: BLE001 - some fp16 kernels exist on GPU only
        reason = " ".join(str(exc).split())[:300]
        return {"checked": False, "reason": f"ONNX Runtime CPU cannot run this fp16 graph: {reason}"}
    s32 = Session(graph32)
    worst = 0.0
    for ids, mask in verification_batches(tok, seed=1):
        feeds = {"input_ids": ids, "attention_mask": mask}
        worst = max(worst, float(np.abs(s16.run(feeds) - s32.run(feeds)).max()))
    return {"checked": True, "max_abs_diff_logits_vs_fp32": worst}


class EmbeddingRefused(ValueError):
    """The model gets no embedding graph: it has no transformer backbone, or has one already."""


class BackboneHiddenStates(nn.Module):
    """``(input_ids, attention_mask) -> last_hidden_state`` of a classifier's backbone, padded
    positions multiplied by 0 (the DNABERT-2 backbone zeroes them already; DNABERT's does not)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.architecture = architecture(classifier)
        if self.architecture not in BACKBONE_ARCHITECTURES:
            raise EmbeddingRefused(f"a {self.architecture} classifier has no transformer backbone")
        self.bert = classifier.bert
        self.config = classifier.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.architecture == DNABERT2:
            hidden = self.bert(input_ids, attention_mask)[0]
        else:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        return hidden * attention_mask[..., None].to(hidden.dtype)


def export_embedding(model: nn.Module, tok: SequenceTokenizerLike, out_dir: str | Path, *,
                     source: str = EXPORTED) -> dict[str, Any]:
    """Write ``out_dir/embedding.onnx``, the last hidden state of ``model``'s backbone, and verify it.

    ONNX Runtime is compared with PyTorch on :func:`verification_batches` at every position
    (padding included, where both are 0); beyond 1e-4 :class:`ExportParityError` is raised.
    Returns the card's ``embedding`` section (:class:`service.contract.card.Embedding`).
    """
    backbone = BackboneHiddenStates(model).eval()
    path = export_graph(backbone, Path(out_dir) / EMBEDDING_FILE, output=EMBEDDING_OUTPUT,
                        output_axes={0: "batch", 1: "sequence"})
    parity = verify(backbone, path, tok)
    return {"output": EMBEDDING_OUTPUT, "dim": backbone.config.hidden_size, "pooling": list(POOLING),
            "default_pooling": DEFAULT_POOLING, "mean_over": MEAN_OVER, "parity_vs_pytorch": parity,
            "source": source}


def library_versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": session.version(),
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
    }


def export_model_folder(model: torch.nn.Module, tok: SequenceTokenizerLike, out: Path, *,
                        name: str, task: str, training: dict[str, Any], metrics: dict[str, Any],
                        fp16: bool = True, description: str = "", tokenization_note: str = "",
                        fused_attention: bool = False) -> ModelCard:
    """Export, verify, and write ``out/{model.onnx, model.fp16.onnx, [embedding.onnx], <tokenizer
    file>, card.json}`` (the embedding graph for models with a transformer backbone).

    The card's labels, activation and positive class are the task's
    (:mod:`service.contract.tasks`). ``tokenization_note`` goes into the card's ``tokenization``
    entry as ``note`` (e.g. what happens to input longer than the model's limit).

    ``fused_attention``: DNABERT-2's attention in ``model.onnx`` and ``model.fp16.onnx`` becomes
    ONNX Runtime's ``MultiHeadAttention`` (:mod:`training.export.attention`), verified against
    PyTorch like the plain graph; the plain graphs stay beside them as ``model.plain.onnx`` and
    ``model.fp16.plain.onnx`` (roles ``graph_plain``, ``graph_fp16_plain``), loaded where the
    runtime lacks the operator, and the card's ``export.attention`` says what was fused.
    """
    spec = tasks.task(task)
    out.mkdir(parents=True, exist_ok=True)
    graph = export_graph(model, out / "model.onnx")
    parity = verify(model, graph, tok)
    files = {"graph": "model.onnx", "tokenizer": tok.file_name}
    fp16_report = None
    if fp16:
        export_fp16(model, out / "model.fp16.onnx")
        files["graph_fp16"] = "model.fp16.onnx"
        fp16_report = verify_fp16(out / "model.fp16.onnx", graph, tok)
    attention = _fuse_attention(model, tok, out, files) if fused_attention else None
    embedding = None
    if architecture(model) in BACKBONE_ARCHITECTURES:
        embedding = export_embedding(model, tok, out)
        files[EMBEDDING_ROLE] = EMBEDDING_FILE
    tok.save(out / tok.file_name)
    tokenization = tok.card_tokenization()
    if tokenization_note:
        tokenization["note"] = tokenization_note
    card = ModelCard(
        name=name,
        task=spec.name,
        variant=model.variant,
        architecture=architecture(model),
        description=description,
        labels=list(spec.labels),
        activation=spec.activation,
        positive_index=spec.positive_index,
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
            **({"attention": attention} if attention is not None else {}),
            "versions": library_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    if embedding is not None:
        card.embedding = embedding
    card.save(out)
    return card


def _fuse_attention(model: torch.nn.Module, tok: SequenceTokenizerLike, out: Path,
                    files: dict[str, str]) -> dict[str, Any] | None:
    """Fused attention in the folder's fp32 and fp16 graphs, each verified (fp32 against PyTorch
    to :data:`PARITY_ATOL`, fp16 against the fp32 graph), the plain graphs kept as fallbacks."""
    from training.export.attention import fuse_model_graph

    fused = {}
    for role in ("graph", "graph_fp16"):
        if role not in files:
            continue
        if role == "graph":
            def check(path: Path) -> dict[str, Any]:
                return verify(model, path, tok)
        else:
            def check(path: Path) -> dict[str, Any]:
                return verify_fp16(path, out / files["graph"], tok) or {}
        record = fuse_model_graph(out, files[role], files, role, check)
        if record is not None:
            fused[role] = record
    return fused or None


def export_run(run_model_dir: str | Path, out: str | Path, *, name: str | None = None, description: str = "",
               fp16: bool = True, fused_attention: bool = False) -> ModelCard:
    """Export a run's ``model/`` folder (``classifier.json`` + weights) to the model folder ``out``,
    named ``name`` (default: the variant), with the run's training record and metrics."""
    model, tok, meta = load_classifier(run_model_dir)
    return export_model_folder(model, tok, Path(out), name=name or meta["variant"], task=meta["task"],
                               training=meta.get("training", {}), metrics=meta.get("metrics", {}),
                               fp16=fp16, description=description,
                               tokenization_note=architectures.tokenization_note(architecture(model)),
                               fused_attention=fused_attention)


def export_summary(out: str | Path, card: ModelCard) -> dict[str, Any]:
    """What ``dnabert-train export`` prints: the folder, its files, the parity with PyTorch and
    the fp16 graph's check."""
    parity = card.export.parity_vs_pytorch
    return {"out": str(out), "files": card.files, "parity": parity.max_abs_diff if parity else None,
            "fp16": card.export.fp16}
