"""ONNX Runtime, and nothing else: the one module of the project that imports ``onnxruntime``.

Everything that creates a session, chooses execution providers, binds CUDA buffers or rewrites
a graph with ONNX Runtime's tools goes through here, so that the rest of the project (the
service's model folders and batchers, training's export checks and int8 quantization, the
benchmarks) depends on one small surface: :class:`Session`, :func:`choose_providers`,
:func:`quantize_dynamic_graph` and a few facts about the installed runtime.

Two things every session does:

* **a plain fallback**: a graph that uses ONNX Runtime's contrib operators (fused attention,
  :mod:`training.export.attention`) names, in its metadata (:data:`FALLBACK_KEY`), the plain graph
  of the same model beside it. Where the runtime lacks one of those operators (a build without
  contrib ops, an execution provider without the kernel), the session loads the plain graph
  instead and says so (:attr:`Session.fallback`);
* **on CPU, no SkipLayerNormalization fusion** (:data:`CPU_DISABLED_OPTIMIZERS`).
"""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


FALLBACK_KEY = "dnabert.fallback_graph"
"""Metadata key of a graph that needs contrib operators: the file name of its plain fallback."""

CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
"""Graph optimizers left out of CPU sessions. ONNX Runtime fuses ``Add`` + ``LayerNormalization``
into ``com.microsoft.SkipLayerNormalization``, whose CPU kernel (1.32) is a scalar loop: on a
(528, 768) float tensor, one thread, it took 1.9 ms against 0.24 ms for the two operators it
replaces, 8 % of DNABERT-2-117M's int8 time at batch 8 (``bench/results/full_size.md``). The
CUDA kernel is fused and fast, so GPU sessions keep the fusion."""

_MISSING_OPERATOR = ("is not a registered function/op", "Could not find an implementation for")


class RuntimeUnavailable(RuntimeError):
    """The execution provider asked for is not there (or did not load)."""


def version() -> str:
    return ort.__version__


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
            raise RuntimeUnavailable(
                "a GPU was asked for (device=gpu) but ONNX Runtime has no CUDA execution provider "
                f"(available: {', '.join(available)}); install the 'gpu' extra (onnxruntime-gpu) "
                "and check the NVIDIA driver"
            )
        return [CUDA, CPU]
    if device == "auto" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


class Session:
    """One ONNX Runtime inference session over a graph file.

    ``threads`` is the intra-op thread count (0: the library's default). With CUDA asked for,
    a session that did not get the CUDA provider is refused (ONNX Runtime would otherwise fall
    back to the CPU silently). ``disabled_optimizers``: ONNX Runtime graph optimizers to leave
    out (None: :data:`CPU_DISABLED_OPTIMIZERS` on CPU, none on GPU; ``()``: the library's full
    set, as benchmarks of the earlier behaviour use it).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = (CPU,), threads: int = 0, *,
                 disabled_optimizers: Sequence[str] | None = None):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        if disabled_optimizers is None:
            disabled_optimizers = CPU_DISABLED_OPTIMIZERS if CUDA not in providers else ()
        disabled = list(disabled_optimizers)
        self.path = Path(path)
        self.fallback: str | None = None
        """Why the plain fallback graph was loaded instead of ``path`` (None: it was not)."""

        def create(graph: Path) -> ort.InferenceSession:
            return ort.InferenceSession(str(graph), sess_options=opts, providers=list(providers),
                                        disabled_optimizers=disabled)

        try:
            self._session = create(self.path)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
            plain = fallback_graph(self.path)
            if plain is None or not any(m in str(exc) for m in _MISSING_OPERATOR):
                raise
            self._session = create(plain)
            reason = " ".join(str(exc).split())[:300]
            self.fallback = f"{self.path.name} needs an operator this runtime lacks ({reason}); loaded {plain.name}"
            self.path = plain
        if CUDA in providers and self.providers[0] != CUDA:
            raise RuntimeUnavailable(
                f"the CUDA execution provider was asked for but did not load (active: {self.providers}); "
                "refusing to fall back to the CPU silently")

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self._session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray], output: str | None = None) -> np.ndarray:
        """One output (the first when ``output`` is None) for one set of inputs."""
        return self._session.run([output] if output else None, dict(feeds))[0]

    def cuda_bound_step(self, feeds: Mapping[str, np.ndarray], output: str, shape: tuple[int, ...]):
        """(step, synchronize) running the graph with IO binding: inputs copied from the host on
        each call, the fp32 output written into a buffer left on GPU 0 (for benchmarks)."""
        binding = self._session.io_binding()
        out = ort.OrtValue.ortvalue_zeros(shape, np.float32, "cuda", 0)

        def step() -> None:
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            binding.bind_ortvalue_output(output, out)
            self._session.run_with_iobinding(binding)

        return step, binding.synchronize_outputs


def graph_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read from the top level of its protobuf without
    parsing the graph (no ``onnx`` package here, and the graph may not load)."""

    def varint(buf, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7

    def fields(buf, start: int, end: int):
        """(field number, bytes of a length-delimited field or None) from ``start`` to ``end``."""
        pos = start
        while pos < end:
            key, pos = varint(buf, pos)
            wire = key & 7
            if wire == 0:
                _, pos = varint(buf, pos)
                yield key >> 3, None
            elif wire == 2:
                size, pos = varint(buf, pos)
                yield key >> 3, (pos, pos + size)
                pos += size
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
                yield key >> 3, None
            else:
                raise ValueError(f"{path}: not an ONNX model (protobuf wire type {wire})")

    out: dict[str, str] = {}
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for number, span in fields(buf, 0, len(buf)):
            if number != 14 or span is None:  # ModelProto.metadata_props
                continue
            entry = {k: bytes(buf[v[0]:v[1]]).decode() for k, v in fields(buf, *span) if v is not None}
            out[entry.get(1, "")] = entry.get(2, "")
    return out


def fallback_graph(path: str | Path) -> Path | None:
    """The plain graph that ``path`` names as its fallback (:data:`FALLBACK_KEY`), when it exists."""
    try:
        name = graph_metadata(path).get(FALLBACK_KEY)
    except (OSError, ValueError, IndexError):
        return None
    if not name or Path(name).name != name:  # a file beside the graph, nothing else
        return None
    plain = Path(path).with_name(name)
    return plain if plain.is_file() else None


def quantize_dynamic_graph(src: str | Path, dst: str | Path, op_types: Sequence[str],
                           per_channel: bool = False) -> Path:
    """Dynamic int8 quantization (int8 weights, uint8 activations quantized per batch) of the
    listed operator types; ``per_channel``: one weight scale per output column."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Graph clean-up and ONNX shape inference first, as the quantizer asks; the symbolic
        # shape pass is skipped because it cannot reason about the dynamic pooled length.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        # ONNX shape inference stops at contrib operators (fused attention): tensors after them
        # have no inferred type, and every float tensor of these graphs is float32
        # (onnx.TensorProto.FLOAT = 1).
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types),
                         per_channel=per_channel, extra_options={"DefaultTensorType": 1})
    return Path(dst)
