"""The backbone graph of a model folder: ``embedding.onnx``, the last hidden state of the backbone.

For every model with a transformer backbone (DNABERT-2 and DNABERT, not the one-hot baselines)
a model folder may hold, next to the classifier graph, ``embedding.onnx``: inputs ``input_ids``
and ``attention_mask`` (int64, dynamic batch and sequence axes), one output
``last_hidden_state`` (float32, batch x sequence x hidden) with exactly 0 at padded positions
(the mask is multiplied in inside the graph). The card lists it under the files role
``embedding`` with its sha256, and describes it in its ``embedding`` section
(:class:`service.contract.card.Embedding`).

* :func:`export_embedding` (with :class:`BackboneHiddenStates`, both defined next to the
  classifier exporter in :mod:`training.export.onnx`) exports it from a PyTorch classifier's
  backbone and verifies ONNX Runtime against PyTorch at every position (1e-4);
  :func:`export_model_folder <training.export.onnx.export_model_folder>` calls it for every new
  folder.
* :func:`add_embedding` adds it to a folder exported before, whose PyTorch weights are gone: the
  backbone is recovered from the classifier graph's initializers (:func:`recover_classifier`),
  exported, verified against that PyTorch backbone and against the hidden-state tensor inside
  the classifier graph (:func:`verify_against_classifier`), and the card is updated.
* :func:`backbone_hidden_states` is the PyTorch reference of a model folder's hidden states.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from service.contract.card import EMBEDDING_ROLE, Embedding, ModelCard, file_sha256
from service.contract.tokenization import SequenceTokenizerLike, tokenizer_for_card
from service.runtime.session import Session
from training.export.onnx import (
    BACKBONE_ARCHITECTURES,
    EMBEDDING_FILE,
    EXPORTED,
    PARITY_ATOL,
    BackboneHiddenStates,
    EmbeddingRefused,
    ExportParityError,
    export_embedding,
    export_graph,
    verification_batches,
)
from training.models.architectures import build_classifier

__all__ = ["EMBEDDING_FILE", "EXPORTED", "RECOVERED", "BackboneHiddenStates", "EmbeddingRefused",
           "add_embedding", "backbone_hidden_states", "check_addable", "classifier_hidden_tensor",
           "export_embedding", "has_backbone", "initializer_map", "recover_classifier",
           "verify_against_classifier", "with_embedding"]

RECOVERED = ("backbone weights recovered from model.onnx (the classifier graph's initializers) into "
             "PyTorch, then exported from that PyTorch backbone")

BACKBONE_SCOPE = "/bert/"
"""ONNX node names of the classifiers' backbone (module ``bert``) start with this."""
POOLER_SCOPE = "/bert/pooler/"


def has_backbone(card: ModelCard) -> bool:
    return card.architecture in BACKBONE_ARCHITECTURES


def _backbone_card(folder: Path) -> ModelCard:
    card = ModelCard.load(folder)
    if not has_backbone(card):
        raise EmbeddingRefused(f"{folder}: a {card.architecture} model ({card.variant}) has no transformer "
                               "backbone, so no embedding graph")
    return card


# ---------------------------------------------------------------------------------------------
# The hidden-state tensor inside a classifier graph


def classifier_hidden_tensor(graph: onnx.ModelProto, hidden_size: int) -> str:
    """The name of the backbone's last hidden state inside a classifier graph.

    It is the one tensor of shape (batch, sequence, ``hidden_size``) that an encoder node
    (``/bert/...``, not the pooler) computes and a node outside the encoder (the head, or the
    pooler) reads. (Other tensors cross too: constants, and the float attention mask that the
    lncRNA head shares with the backbone.)
    """
    inferred = onnx.shape_inference.infer_shapes(graph).graph
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.output]}
    producers = {out: node for node in graph.graph.node for out in node.output}

    def encoder(node: onnx.NodeProto) -> bool:
        return node.name.startswith(BACKBONE_SCOPE) and not node.name.startswith(POOLER_SCOPE)

    found = []
    for node in graph.graph.node:
        if encoder(node):
            continue
        for name in node.input:
            producer = producers.get(name)
            shape = shapes.get(name, [])
            if (producer is not None and encoder(producer) and len(shape) == 3 and shape[2] == hidden_size
                    and name not in found):
                found.append(name)
    if len(found) != 1:
        raise ExportParityError(f"expected one hidden-state tensor (batch, sequence, {hidden_size}) between the "
                                f"backbone and the head of the classifier graph, found {found}")
    return found[0]


def _with_output(graph: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(graph)
    del out.graph.output[:]
    out.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return out


def verify_against_classifier(classifier_graph: str | Path, embedding_graph: str | Path,
                              tok: SequenceTokenizerLike, atol: float = PARITY_ATOL) -> dict[str, Any]:
    """Max |embedding graph - the classifier graph's own hidden-state tensor| over the valid
    positions of :func:`verification_batches` (several sizes and lengths); beyond ``atol``
    :class:`ExportParityError` is raised. The report names the tensor."""
    graph = onnx.load(str(classifier_graph))
    out = onnx.load(str(embedding_graph), load_external_data=False).graph.output[0]
    tensor = classifier_hidden_tensor(graph, out.type.tensor_type.shape.dim[2].dim_value)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "classifier_hidden.onnx"
        onnx.save(_with_output(graph, tensor), str(probe))
        inner = Session(probe)
    embedding = Session(embedding_graph)
    worst, cases = 0.0, []
    for ids, mask in verification_batches(tok, seed=2):
        feeds = {"input_ids": ids, "attention_mask": mask}
        want, got = inner.run(feeds, tensor), embedding.run(feeds)
        if want.shape != got.shape:
            raise ExportParityError(f"{classifier_graph}: hidden-state tensor {tensor} has shape {want.shape}, "
                                    f"the embedding graph gives {got.shape}")
        valid = mask.astype(bool)
        diff = float(np.abs(got[valid] - want[valid]).max())
        worst = max(worst, diff)
        cases.append({"shape": list(ids.shape), "max_abs_diff": diff})
    if not worst <= atol:
        raise ExportParityError(f"{embedding_graph}: differs from the hidden state {tensor} inside "
                                f"{classifier_graph} by {worst:.3g} > {atol}")
    return {"max_abs_diff": worst, "atol": atol, "cases": cases, "tensor": tensor}


# ---------------------------------------------------------------------------------------------
# Recovering a classifier's backbone from its graph


Use = tuple[str, int]
"""Where a graph reads an initializer: (node name, input index)."""


def _uses(graph: onnx.GraphProto) -> dict[Use, str]:
    """(node name, input index) -> the initializer read there, over the graph's nodes.

    The exporter stores parameters of equal values once and passes the copies on through
    ``Identity`` nodes; those are followed back to the initializer (and are no uses themselves).
    """
    nodes = [node for node in graph.node if node.op_type != "Identity"]
    names = [node.name for node in nodes]
    if len(set(names)) != len(names) or not all(names):
        raise ExportParityError("the graph's node names are not unique, so its initializers cannot be placed")
    inits = {init.name for init in graph.initializer}
    alias = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "Identity"}

    def source(name: str) -> str:
        seen = set()
        while name in alias and name not in seen:
            seen.add(name)
            name = alias[name]
        return name

    uses = {}
    for node in nodes:
        for i, name in enumerate(node.input):
            name = source(name)
            if name in inits:
                uses[(node.name, i)] = name
    return uses


def _probe(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with every float parameter and buffer set to distinct random values (so that
    the exporter keeps them apart and each graph initializer matches exactly one of them)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype)
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return model.eval()


def initializer_map(model: nn.Module, work_dir: str | Path) -> dict[str, tuple[Use, bool]]:
    """Where the classifier graph of ``model``'s architecture and configuration reads each
    parameter: state-dict key -> ((node name, input index), transposed).

    ``model`` (a fresh classifier) is given distinct random weights and exported with
    :func:`export_graph` into ``work_dir``. Each initializer of that graph is the parameter whose
    values it equals, or equals transposed (the exporter's anonymous ``onnx::MatMul_N`` are
    transposed Linear weights); a named one must be the parameter of that name. Initializers
    that are no parameter as such (the LSTM heads' re-ordered gates) are left out.
    """
    probe = _probe(model)
    path = export_graph(probe, Path(work_dir) / "probe.onnx")
    graph = onnx.load(str(path)).graph
    state = {k: v.detach().numpy() for k, v in probe.state_dict().items() if v.is_floating_point()}
    first_use: dict[str, Use] = {}
    for use, name in _uses(graph).items():
        first_use.setdefault(name, use)
    mapping: dict[str, tuple[Use, bool]] = {}
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        hits = [(k, False) for k, v in state.items() if v.shape == values.shape and np.array_equal(v, values)]
        hits += [(k, True) for k, v in state.items()
                 if v.ndim == 2 and v.T.shape == values.shape and np.array_equal(v.T, values)]
        if not init.name.startswith("onnx::") and hits != [(init.name, False)]:
            raise ExportParityError(f"graph initializer {init.name} {list(values.shape)} is not that parameter "
                                    "of the classifier")
        if len(hits) > 1:
            raise ExportParityError(f"graph initializer {init.name} matches several parameters: {hits}")
        if hits and init.name in first_use:
            key, transposed = hits[0]
            mapping[key] = (first_use[init.name], transposed)
    return mapping


def recover_classifier(folder: str | Path) -> tuple[nn.Module, list[str]]:
    """A PyTorch classifier of the card's architecture whose backbone holds the weights of the
    folder's ``model.onnx``; also the state-dict keys that were recovered.

    :func:`initializer_map` tells, for a graph of this architecture and configuration, which
    node input reads each parameter; the folder's graph is read at those same node inputs (the
    node names are the exporter's module paths), every shape checked. This also holds where the
    exporter merged parameters of equal values into one initializer. Every backbone parameter
    (``bert.embeddings.*``, ``bert.encoder.*``) must be recovered; the pooler and the head are
    recovered where the graph holds them as they are (head parameters that the exporter
    re-arranged, such as LSTM gates, keep their initial values: use the backbone only).
    """
    folder = Path(folder)
    card = _backbone_card(folder)
    head_dropout = card.head.head_dropout if card.head.head_dropout is not None else 0.1
    model = build_classifier(card.architecture, card.backbone, card.variant, head_dropout).eval()
    with tempfile.TemporaryDirectory() as tmp:
        mapping = initializer_map(build_classifier(card.architecture, card.backbone, card.variant, head_dropout), tmp)
    path = folder / card.files["graph"]
    graph = onnx.load(str(path)).graph
    uses = _uses(graph)
    inits = {init.name: init for init in graph.initializer}
    state = model.state_dict()
    recovered = []
    for key, (use, transposed) in mapping.items():
        name = uses.get(use)
        if name is None:
            raise ExportParityError(f"{path}: node {use[0]} does not read an initializer at input {use[1]}, "
                                    f"where a {card.variant} classifier of this configuration reads {key}")
        values = numpy_helper.to_array(inits[name])
        values = values.T if transposed else values
        if tuple(values.shape) != tuple(state[key].shape):
            raise ExportParityError(f"{path}: initializer {name} {list(values.shape)} does not fit {key} "
                                    f"{list(state[key].shape)}")
        state[key] = torch.from_numpy(np.array(values)).to(state[key].dtype)
        recovered.append(key)
    needed = [k for k, _ in model.named_parameters() if k.startswith(("bert.embeddings.", "bert.encoder."))]
    missing = sorted(set(needed) - set(recovered))
    if missing:
        raise ExportParityError(f"{path}: backbone parameters not found in the graph: {missing[:8]}")
    model.load_state_dict(state)
    return model.eval(), recovered


@functools.lru_cache(maxsize=16)
def _recovered_backbone(folder: str, graph_sha256: str) -> BackboneHiddenStates:
    model, _ = recover_classifier(folder)
    return BackboneHiddenStates(model).eval()


def backbone_hidden_states(folder: str | Path, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The last hidden state (batch, sequence, hidden), 0 at padding, of a model folder's
    backbone, computed with PyTorch from the weights recovered from its ``model.onnx``
    (:func:`recover_classifier`; cached per folder and graph checksum)."""
    folder = Path(folder).resolve()
    card = ModelCard.load(folder)
    backbone = _recovered_backbone(str(folder), card.sha256[card.files["graph"]])
    with torch.no_grad():
        return backbone(torch.from_numpy(np.asarray(input_ids, dtype=np.int64)),
                        torch.from_numpy(np.asarray(attention_mask, dtype=np.int64))).numpy()


# ---------------------------------------------------------------------------------------------
# Cards


def with_embedding(card: ModelCard, folder: str | Path, section: dict[str, Any]) -> ModelCard:
    """``card`` listing ``folder/embedding.onnx`` (files role, sha256) and its ``embedding`` section."""
    card.files = {**card.files, EMBEDDING_ROLE: EMBEDDING_FILE}
    card.sha256 = {**card.sha256, EMBEDDING_FILE: file_sha256(Path(folder) / EMBEDDING_FILE)}
    card.embedding = Embedding.model_validate(section)
    return card


def check_addable(folder: str | Path, force: bool = False) -> ModelCard:
    """The folder's card, or :class:`EmbeddingRefused` when it gets no embedding graph."""
    folder = Path(folder)
    card = _backbone_card(folder)
    if EMBEDDING_ROLE in card.files and not force:
        raise EmbeddingRefused(f"{folder}: the card already lists an embedding graph "
                               f"({card.files[EMBEDDING_ROLE]}); --force replaces it")
    return card


def add_embedding(folder: str | Path, force: bool = False) -> ModelCard:
    """Add ``embedding.onnx`` to an exported folder from the backbone recovered from its
    ``model.onnx``, verified against that PyTorch backbone and against the classifier graph's
    hidden-state tensor (both 1e-4); then update the card (files, sha256, ``embedding``), the
    rest of it as it was. The classifier graphs are not touched."""
    folder = Path(folder)
    card = check_addable(folder, force)
    model, _ = recover_classifier(folder)
    tok = tokenizer_for_card(folder, card)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".embedding.") as tmp:
        section = export_embedding(model, tok, tmp, source=RECOVERED)
        inner = verify_against_classifier(folder / card.files["graph"], Path(tmp) / EMBEDDING_FILE, tok)
        section["parity_vs_classifier_graph"] = inner
        os.replace(Path(tmp) / EMBEDDING_FILE, folder / EMBEDDING_FILE)
    card = with_embedding(card, folder, section)
    card.save(folder)
    return card
