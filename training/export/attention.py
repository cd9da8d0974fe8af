"""Fused attention for the exported DNABERT-2 graphs: a rewrite of the ONNX graph after export.

The TorchScript exporter writes DNABERT-2's self-attention as some twenty plain operators per
layer (the ``Wqkv`` product, Reshape, Transpose, Split, Squeeze, two MatMuls, Div, the Add of
the ALiBi + padding bias, Softmax, Transpose, Reshape). ONNX Runtime's optimizer does not fuse
them: its attention fusions look for BERT's padding mask alone and give up on the ALiBi bias.
:func:`fuse_graph` rewrites each layer's subgraph into one contrib operator:

* ``com.microsoft.MultiHeadAttention`` (form :data:`MULTI_HEAD`, the default): ``query``, ``key``
  and ``value`` come from three products with the thirds of ``Wqkv`` (no copy of the
  ``(B, T, 3C)`` tensor to split it; int8 quantization turns them into integer products), the
  ``Wqkv`` bias is the node's ``bias``, the ALiBi matrix ``-slope_h * |i - j|`` (computed once
  per call, shape ``(1, heads, T, T)``) its ``attention_bias`` and ``attention_mask`` (as int32)
  its ``key_padding_mask`` with the published ``mask_filter_value`` -10000. Where the bias is
  not the exporter's ``padding + ALiBi`` sum, the whole ``(B, heads, T, T)`` bias becomes the
  ``attention_bias``: the same arithmetic, without the cheaper padding mask.
* ``com.microsoft.Attention`` (form :data:`ATTENTION_WITH_PROJECTION`, fp32/fp16 only): the same,
  with the ``Wqkv`` product inside the node.

It also splits a product read only by slices of its last axis (GEGLU's gate and value halves of
``gated_layers``) into one product per slice, which saves copying the ``(B, T, 2I)`` tensor.

The rewrite reads the graph's structure, not node names, and checks every piece it replaces (a
single consumer for each replaced tensor, the permutations, the split axis, the head count and
the scale); a layer it does not recognise (DNABERT v1, another exporter's graph) stays as it
was. :func:`fuse_model_graph` does it for one graph of a model folder: the exported graph is
kept as the plain fallback (``model.plain.onnx`` beside ``model.onnx``), the fused graph names
it in its metadata (:data:`service.runtime.session.FALLBACK_KEY`) and a session on a runtime
without the contrib operators loads the plain one (:class:`service.runtime.session.Session`).

Measured on DNABERT-2-117M (2-core AMD EPYC, ``bench/results/full_size.md``): at 66 tokens the
fused and plain graphs are equally fast (attention is about 1 % of the FLOPs there); at 482
tokens the fused graph takes 7 % (fp32) and 14 % (int8) less CPU time per sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from service.runtime.session import FALLBACK_KEY

CONTRIB_DOMAIN = "com.microsoft"
ATTENTION_OP = "MultiHeadAttention"
MULTI_HEAD = "multi_head"
ATTENTION_WITH_PROJECTION = "attention"
FORMS = (MULTI_HEAD, ATTENTION_WITH_PROJECTION)
FORM_OPERATORS = {MULTI_HEAD: ATTENTION_OP, ATTENTION_WITH_PROJECTION: "Attention"}
MASK_INPUT = "attention_mask"
MASK_INT32 = "attention_mask_int32"


@dataclass
class FusionReport:
    """What :func:`fuse_graph` changed."""

    form: str = ""
    attention_layers: int = 0  # attention nodes emitted
    split_products: int = 0  # sliced products split into one product per slice
    padding: str = "none"  # key_padding_mask (ALiBi alone as attention_bias) or attention_bias
    nodes_before: int = 0
    nodes_after: int = 0

    @property
    def fused(self) -> bool:
        return self.attention_layers > 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Graph:
    """Producers, consumers and constants of an ONNX graph, for pattern matching."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.ranks: dict[str, int] = {}

    def node(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def const(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Identity":  # the exporter shares equal weights
            return self.const(node.input[0])
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def ancestors_reach(self, name: str, target: str) -> bool:
        """Whether tensor ``name`` is computed from the tensor ``target``."""
        seen, stack = set(), [name]
        while stack:
            current = stack.pop()
            if current == target:
                return True
            if current in seen:
                continue
            seen.add(current)
            node = self.producer.get(current)
            if node is not None:
                stack.extend(i for i in node.input if i)
        return False


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _perm(node: onnx.NodeProto | None, perm: list[int]) -> bool:
    return node is not None and node.op_type == "Transpose" and list(_attr(node, "perm", [])) == perm


def _squeezed(g: _Graph, name: str) -> tuple[onnx.NodeProto, int] | None:
    """``name`` = Squeeze(axis 0) of output ``k`` of a Split: (the Split, k)."""
    squeeze = g.node(name, "Squeeze")
    if squeeze is None or len(squeeze.input) < 2:
        return None
    axes = g.const(squeeze.input[1])
    if axes is None or axes.reshape(-1).tolist() != [0] or g.only_consumer(squeeze.input[0]) is not squeeze:
        return None
    split = g.producer.get(squeeze.input[0])
    if split is None or split.op_type != "Split" or _attr(split, "axis", 0) != 0:
        return None
    return split, list(split.output).index(squeeze.input[0])


def _scalar(g: _Graph, name: str) -> float | None:
    value = g.const(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _match_attention(g: _Graph, softmax: onnx.NodeProto) -> dict[str, Any] | None:
    """One layer's attention subgraph around ``softmax``, or None when it is not the exporter's."""
    if _attr(softmax, "axis", -1) not in (-1, 3):
        return None
    add = g.node(softmax.input[0], "Add")
    if add is None or g.only_consumer(add.output[0]) is not softmax:
        return None
    for i in (0, 1):
        scaled = g.producer.get(add.input[i])
        if scaled is not None and scaled.op_type in ("Div", "Mul"):
            bias = add.input[1 - i]
            break
    else:
        return None
    factor = _scalar(g, scaled.input[1])
    if not factor or g.only_consumer(scaled.output[0]) is not add:
        return None
    scale = 1.0 / factor if scaled.op_type == "Div" else factor
    qk = g.node(scaled.input[0], "MatMul")
    if qk is None or g.only_consumer(qk.output[0]) is not scaled:
        return None
    k_t = g.producer.get(qk.input[1])
    if not _perm(k_t, [0, 1, 3, 2]) or g.only_consumer(k_t.output[0]) is not qk:
        return None
    pv = g.only_consumer(softmax.output[0])
    if pv is None or pv.op_type != "MatMul" or pv.input[0] != softmax.output[0]:
        return None
    parts = [_squeezed(g, qk.input[0]), _squeezed(g, k_t.input[0]), _squeezed(g, pv.input[1])]
    if any(p is None for p in parts) or len({id(p[0]) for p in parts}) != 1 or [p[1] for p in parts] != [0, 1, 2]:
        return None
    split = parts[0][0]
    if len(split.output) != 3 or any(g.only_consumer(o) is None for o in split.output):
        return None
    transpose = g.producer.get(split.input[0])
    if not _perm(transpose, [2, 0, 3, 1, 4]) or g.only_consumer(transpose.output[0]) is not split:
        return None
    reshape = g.node(transpose.input[0], "Reshape")
    if reshape is None or g.only_consumer(reshape.output[0]) is not transpose:
        return None
    shape = g.node(reshape.input[1], "Concat")
    dims = [g.const(x) for x in shape.input[2:]] if shape is not None and len(shape.input) == 5 else []
    if len(dims) != 3 or any(d is None or d.size != 1 for d in dims):
        return None
    three, heads, head_dim = (int(d.reshape(-1)[0]) for d in dims)
    if three != 3 or heads < 1 or head_dim < 1:
        return None
    out_t = g.only_consumer(pv.output[0])
    if not _perm(out_t, [0, 2, 1, 3]):
        return None
    out_r = g.only_consumer(out_t.output[0])
    if out_r is None or out_r.op_type != "Reshape":
        return None
    return {"qkv": reshape.input[0], "bias": bias, "heads": heads, "head_dim": head_dim, "scale": scale,
            "output": out_r.output[0], "replaced": [reshape, transpose, split, *(g.producer[p] for p in
                                                    (qk.input[0], k_t.input[0], pv.input[1])),
                                                    k_t, qk, scaled, add, softmax, pv, out_t, out_r]}


def _projection(g: _Graph, qkv: str, width: int) -> tuple[str, str | None]:
    """``qkv`` = MatMul(x, W) + b with a constant ``b`` of ``width``: (the MatMul's output, b);
    else (qkv, None)."""
    add = g.node(qkv, "Add")
    if add is None:
        return qkv, None
    for i in (0, 1):
        bias, product = add.input[i], add.input[1 - i]
        value = g.const(bias)
        if (value is not None and value.shape == (width,) and g.node(product, "MatMul") is not None
                and g.only_consumer(product) is add and g.only_consumer(qkv) is not None):
            return product, bias
    return qkv, None


def _padding_and_alibi(g: _Graph, bias: str) -> tuple[str, float] | None:
    """``bias`` = ``(1 - attention_mask[:, None, None, :]) * c + alibi``: (alibi, c), the ALiBi
    tensor of rank 4 that does not depend on the mask; else None."""
    add = g.node(bias, "Add")
    if add is None:
        return None
    for i in (0, 1):
        mul, alibi = g.node(add.input[i], "Mul"), add.input[1 - i]
        if mul is None or g.ancestors_reach(alibi, MASK_INPUT) or g.ranks.get(alibi) != 4:
            continue
        for j in (0, 1):
            sub, fill = g.node(mul.input[j], "Sub"), _scalar(g, mul.input[1 - j])
            if sub is None or fill is None or _scalar(g, sub.input[0]) != 1.0:
                continue
            cast = g.node(sub.input[1], "Cast")
            inner = g.node(cast.input[0], "Unsqueeze") if cast is not None else None
            outer = g.node(inner.input[0], "Unsqueeze") if inner is not None else None
            if outer is None or outer.input[0] != MASK_INPUT:
                continue
            axes = [g.const(outer.input[1]), g.const(inner.input[1])]
            if any(a is None for a in axes) or [a.reshape(-1).tolist() for a in axes] != [[1], [2]]:
                continue
            return alibi, fill
    return None


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Ranks of the graph's tensors from ONNX shape inference (weights not copied)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.initializer[:]
    for init in model.graph.initializer:  # shapes without data
        bare.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    inferred = onnx.shape_inference.infer_shapes(bare)
    ranks = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    return ranks


def _prune(graph: onnx.GraphProto) -> None:
    """Drop the nodes and initializers nothing reads any more."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    unused = [t for t in graph.initializer if t.name not in needed]
    for t in unused:
        graph.initializer.remove(t)


def _weight(g: _Graph, product: str) -> tuple[onnx.NodeProto, np.ndarray] | None:
    """``product`` = MatMul(x, W) with a constant 2-D ``W``: (the MatMul, W)."""
    matmul = g.node(product, "MatMul")
    if matmul is None:
        return None
    weight = g.const(matmul.input[1])
    return (matmul, weight) if weight is not None and weight.ndim == 2 else None


def _add_initializer(g: _Graph, name: str, value: np.ndarray) -> str:
    tensor = numpy_helper.from_array(value, name)
    g.graph.initializer.append(tensor)
    g.initializers[name] = tensor
    return name


def _rebuild(graph: onnx.GraphProto, after: dict[int, list[onnx.NodeProto]], first: list[onnx.NodeProto]) -> None:
    """Insert ``after[k]`` behind the node at index ``k`` and ``first`` at the start."""
    ordered = list(first)
    for k, node in enumerate(graph.node):
        ordered.append(node)
        ordered.extend(after.get(k, []))
    del graph.node[:]
    graph.node.extend(ordered)


def _fuse_attention(g: _Graph, report: FusionReport, form: str) -> None:
    graph = g.graph
    matches = [m for s in graph.node if s.op_type == "Softmax" and (m := _match_attention(g, s))]
    positions = {id(n): k for k, n in enumerate(graph.node)}
    after: dict[int, list[onnx.NodeProto]] = {}
    first: list[onnx.NodeProto] = []
    for layer, m in enumerate(matches):
        prefix = f"/attention_fused/layer.{layer}"
        width = m["heads"] * m["head_dim"]
        product, qkv_bias = _projection(g, m["qkv"], 3 * width)
        projection = _weight(g, product)
        decomposed = _padding_and_alibi(g, m["bias"])
        attrs: dict[str, Any] = {"num_heads": m["heads"], "scale": m["scale"]}
        if decomposed is not None:
            alibi, attrs["mask_filter_value"] = decomposed
            if not first:
                first.append(helper.make_node("Cast", [MASK_INPUT], [MASK_INT32], to=onnx.TensorProto.INT32,
                                              name="/attention_fused/mask_int32"))
            mask, bias = MASK_INT32, alibi
            report.padding = "key_padding_mask"
        else:
            mask, bias = "", m["bias"]
            report.padding = "attention_bias"
        new: list[onnx.NodeProto] = []
        if form == ATTENTION_WITH_PROJECTION and projection is not None:
            matmul, weight = projection
            if qkv_bias is None:
                qkv_bias = _add_initializer(g, f"{prefix}/qkv_bias", np.zeros(3 * width, dtype=weight.dtype))
            new.append(helper.make_node("Attention", [matmul.input[0], matmul.input[1], qkv_bias, mask, "", bias],
                                        [m["output"]], domain=CONTRIB_DOMAIN, name=f"{prefix}/Attention", **attrs))
        else:
            if projection is not None:  # three products: no copy of the (B, T, 3C) tensor to split it
                matmul, weight = projection
                q, k, v = (f"{prefix}/{part}" for part in "qkv")
                for i, part in enumerate((q, k, v)):
                    w = _add_initializer(g, f"{prefix}/W{'qkv'[i]}", weight[:, i * width:(i + 1) * width].copy())
                    new.append(helper.make_node("MatMul", [matmul.input[0], w], [part], name=f"{part}/MatMul"))
            else:
                sizes = _add_initializer(g, f"{prefix}/split_sizes", np.array([width] * 3, dtype=np.int64))
                q, k, v = (f"{prefix}/{part}" for part in "qkv")
                new.append(helper.make_node("Split", [product, sizes], [q, k, v], axis=-1, name=f"{prefix}/Split"))
            new.append(helper.make_node(ATTENTION_OP, [q, k, v, qkv_bias or "", mask, bias], [m["output"]],
                                        domain=CONTRIB_DOMAIN, name=f"{prefix}/{ATTENTION_OP}", **attrs))
        # The new nodes go where the subgraph's last node was: all their inputs exist by then.
        after.setdefault(max(positions[id(n)] for n in m["replaced"]), []).extend(new)
        for node in m["replaced"]:
            node.output[:] = [o if o != m["output"] else f"{o}/replaced" for o in node.output]
    if matches:
        _rebuild(graph, after, first)
    report.attention_layers = len(matches)


def _split_sliced_products(g: _Graph, report: FusionReport) -> None:
    """MatMul(x, W) read only by Slices of its last axis (GEGLU's gate and value halves) becomes
    one MatMul per slice with the matching columns of ``W``: no copy of the product to slice it."""
    graph = g.graph
    positions = {id(n): k for k, n in enumerate(graph.node)}
    after: dict[int, list[onnx.NodeProto]] = {}
    for node in list(graph.node):
        projection = _weight(g, node.output[0]) if node.op_type == "MatMul" else None
        users = g.consumers.get(node.output[0], [])
        if projection is None or len(users) < 2 or node.output[0] in g.outputs:
            continue
        _, weight = projection
        columns = []
        for user in users:
            if user.op_type != "Slice" or user.input[0] != node.output[0] or len(user.input) < 4:
                break
            starts, ends, axes = (g.const(user.input[i]) for i in (1, 2, 3))
            steps = g.const(user.input[4]) if len(user.input) > 4 else np.array([1])
            if any(x is None or x.size != 1 for x in (starts, ends, axes, steps)):
                break
            if int(steps.reshape(-1)[0]) != 1 or int(axes.reshape(-1)[0]) not in (-1, g.ranks.get(node.output[0], 0) - 1):
                break
            n = weight.shape[1]
            lo, hi = (int(np.clip(x.reshape(-1)[0] if x.reshape(-1)[0] >= 0 else x.reshape(-1)[0] + n, 0, n))
                      for x in (starts, ends))
            if hi <= lo:
                break
            columns.append((user, lo, hi))
        else:
            new = []
            for user, lo, hi in columns:
                w = _add_initializer(g, f"{user.output[0]}/weight", weight[:, lo:hi].copy())
                new.append(helper.make_node("MatMul", [node.input[0], w], [user.output[0]],
                                            name=f"{user.name or user.output[0]}/MatMul"))
                user.output[0] = f"{user.output[0]}/replaced"
            after.setdefault(positions[id(node)], []).extend(new)
            report.split_products += 1
    if after:
        _rebuild(graph, after, [])


def fuse_graph(model: onnx.ModelProto, form: str = MULTI_HEAD) -> FusionReport:
    """Rewrite ``model`` in place (see the module docstring); return what was fused.

    ``form``: :data:`MULTI_HEAD` (``MultiHeadAttention`` after three plain products, which int8
    quantization turns into integer products) or :data:`ATTENTION_WITH_PROJECTION` (``Attention``,
    the ``Wqkv`` product inside the node: fp32 and fp16 only).
    """
    if form not in FORMS:
        raise ValueError(f"unknown attention form {form!r}; expected one of {FORMS}")
    report = FusionReport(form=form, nodes_before=len(model.graph.node))
    ranks = _ranks(model)
    for step in (lambda g: _fuse_attention(g, report, form), lambda g: _split_sliced_products(g, report)):
        g = _Graph(model.graph)
        g.ranks = ranks
        step(g)
        _prune(model.graph)
    if report.attention_layers and not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    report.nodes_after = len(model.graph.node)
    return report


def fuse_graph_file(src: str | Path, dst: str | Path, form: str = MULTI_HEAD,
                    fallback: str | None = None) -> FusionReport:
    """:func:`fuse_graph` on the graph file ``src``, written to ``dst`` when anything was fused
    (with ``fallback``, the file name of the plain graph beside it, in its metadata)."""
    model = onnx.load(str(src))
    report = fuse_graph(model, form)
    if report.fused:
        if fallback:
            helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, FALLBACK_KEY: fallback})
        onnx.checker.check_model(model)
        onnx.save(model, str(dst))
    return report


def plain_name(file_name: str) -> str:
    """``model.onnx`` -> ``model.plain.onnx``, ``model.int8.onnx`` -> ``model.int8.plain.onnx``."""
    stem = file_name[: -len(".onnx")] if file_name.endswith(".onnx") else file_name
    return f"{stem}.plain.onnx"


def plain_role(role: str) -> str:
    """The card's ``files`` role of a graph's plain fallback: ``graph`` -> ``graph_plain``."""
    return f"{role}_plain"


def fuse_model_graph(folder: str | Path, file_name: str, files: dict[str, str], role: str,
                     check: Callable[[Path], dict[str, Any]] | None = None,
                     form: str = MULTI_HEAD) -> dict[str, Any] | None:
    """Fuse the attention of ``folder/file_name`` in place, keeping the exported graph beside it
    as ``<name>.plain.onnx`` (added to ``files`` under ``<role>_plain``).

    ``check(fused_path)`` verifies the fused graph (e.g. against PyTorch; it raises when it
    fails, and then the plain graph is put back). Returns the card's record of it (None when the
    graph has no attention subgraph this module recognises; the folder is then unchanged).
    """
    folder = Path(folder)
    graph, plain = folder / file_name, folder / plain_name(file_name)
    graph.replace(plain)
    try:
        report = fuse_graph_file(plain, graph, form, fallback=plain.name)
        if not report.fused:
            plain.replace(graph)
            return None
        checked = check(graph) if check is not None else None
    except BaseException:
        plain.replace(graph)
        raise
    files[plain_role(role)] = plain.name
    record: dict[str, Any] = {"file": file_name, "fallback": plain.name,
                              "operator": f"{CONTRIB_DOMAIN}.{FORM_OPERATORS[form]}", **report.as_dict()}
    if checked is not None:
        record["check"] = checked
    return record


def contrib_ops(path: str | Path) -> set[str]:
    """The ``com.microsoft`` operator types a graph file uses."""
    return _contrib_ops(onnx.load(str(path), load_external_data=False).graph.node)


def _contrib_ops(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    return {n.op_type for n in nodes if n.domain == CONTRIB_DOMAIN}
