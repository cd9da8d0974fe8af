"""Loading an exported model folder and running it with ONNX Runtime.

This is the only module of the project's runtime that imports ``onnxruntime``. A folder is
checked against its card before a session is created: every file the card names must exist
and match its sha256, and the graph's inputs and output must be the ones the card declares.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.card import CARD_FILE, ModelCard
from service.errors import ModelArtifactError
from service.sequence import normalize_sequence
from service.tokenization import tokenizer_for_card


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


@dataclass(frozen=True)
class Prediction:
    scores: np.ndarray  # (N,) P(positive) for softmax models, (N, L) for sigmoid models
    truncated: list[bool]
    n_ambiguous: list[int]
    n_tokens: list[int]


CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def available_providers() -> list[str]:
    return ort.get_available_providers()


def preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from NVIDIA's pip wheels (onnxruntime-gpu[cuda,cudnn]) when installed.

    Where CUDA comes from the system instead, this finds nothing and the session loads the
    system libraries as usual.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # noqa: BLE001 - best effort; the CUDA check below is what decides
            pass


def choose_providers(device: str) -> list[str]:
    """``gpu``: CUDA then CPU (CUDA must be available); ``cpu``: CPU; ``auto``: CUDA when present."""
    available = available_providers()
    if device != "cpu" and CUDA in available:
        preload_cuda_libraries()
    if device == "gpu":
        if CUDA not in available:
            raise ModelArtifactError(
                "a GPU was asked for (device=gpu) but ONNX Runtime has no CUDA execution provider "
                f"(available: {', '.join(available)}); install the 'gpu' extra (onnxruntime-gpu) "
                "and check the NVIDIA driver"
            )
        return [CUDA, CPU]
    if device == "auto" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def session_options(intra_op_threads: int = 0) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    return opts


GRAPH_ROLES = {"fp32": "graph", "fp16": "graph_fp16", "int8": "graph_int8"}
"""Precision -> the card's ``files`` role of the graph that runs at that precision."""


def serving_precision(folder: str | Path, wanted: str) -> str:
    """The precision a folder is served at: ``wanted``, except that ``int8`` (an optional,
    CPU-only graph that a model earns by its measured accuracy) falls back to ``fp32`` for a
    folder whose card lists no int8 graph. fp32 and fp16 graphs are required."""
    if wanted != "int8":
        return wanted
    try:
        files = json.loads((Path(folder) / CARD_FILE).read_text()).get("files", {})
    except (OSError, ValueError):
        return wanted  # let OnnxModel report the broken card
    return wanted if GRAPH_ROLES["int8"] in files else "fp32"


class OnnxModel:
    """An exported classifier: card + tokenizer + ONNX Runtime session."""

    def __init__(self, folder: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 precision: str = "fp32", session_options: ort.SessionOptions | None = None):
        self.folder = Path(folder)
        try:
            self.card = ModelCard.load(self.folder)
        except FileNotFoundError as exc:
            raise ModelArtifactError(f"{self.folder}: no {CARD_FILE}") from exc
        except ValueError as exc:
            raise ModelArtifactError(f"{self.folder}: invalid {CARD_FILE}: {exc}") from exc
        role = GRAPH_ROLES.get(precision)
        if role is None:
            raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(GRAPH_ROLES)}")
        if role not in self.card.files:
            raise ModelArtifactError(f"{self.folder}: the card lists no {role} file")
        self._check_files()
        self.tokenizer = tokenizer_for_card(self.folder, self.card)  # BPE or k-mer, per the card
        try:
            self.session = ort.InferenceSession(
                str(self.folder / self.card.files[role]), sess_options=session_options,
                providers=list(providers),
            )
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelArtifactError(f"{self.folder}: ONNX Runtime cannot load {self.card.files[role]}: {first}") from exc
        if CUDA in providers and self.session.get_providers()[0] != CUDA:
            raise ModelArtifactError(
                f"{self.folder}: the CUDA execution provider was asked for but did not load "
                f"(active: {self.session.get_providers()}); refusing to fall back to the CPU silently"
            )
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != self.card.inputs or self.card.output not in outputs:
            raise ModelArtifactError(
                f"{self.folder}: graph inputs {inputs} / outputs {outputs} do not match the card "
                f"({self.card.inputs} -> {self.card.output})"
            )

    def _check_files(self) -> None:
        for role, name in self.card.files.items():
            path = self.folder / name
            if not path.is_file():
                raise ModelArtifactError(f"{self.folder}: {role} file {name} is missing")
            want = self.card.sha256.get(name)
            if want is None or file_sha256(path) != want:
                raise ModelArtifactError(f"{self.folder}: {name} does not match the sha256 in the card")

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Raw logits for one padded batch."""
        return self.session.run([self.card.output], {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def activate(self, logits: np.ndarray) -> np.ndarray:
        if self.card.activation == "sigmoid":
            return sigmoid(logits)
        probs = softmax(logits)
        return probs[:, self.card.positive_index] if self.card.positive_index is not None else probs

    def predict(self, sequences: Sequence[str], ids: Sequence[str] | None = None,
                batch_size: int = 64) -> Prediction:
        """Normalise, tokenize, batch by length, run; scores in input order."""
        ids = list(ids) if ids is not None else [str(i) for i in range(len(sequences))]
        norm = [normalize_sequence(s, rid) for s, rid in zip(sequences, ids, strict=True)]
        enc = self.tokenizer.encode([n.sequence for n in norm])
        order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
        scores: list[np.ndarray] = [np.empty(0)] * len(enc)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = self.tokenizer.pad([enc[i].ids for i in idx])
            for i, s in zip(idx, self.activate(self.run(input_ids, mask))):
                scores[i] = s
        return Prediction(np.stack(scores) if scores else np.empty(0), [e.truncated for e in enc],
                          [n.n_ambiguous for n in norm], [len(e.ids) for e in enc])
