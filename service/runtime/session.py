"""ONNX Runtime, and nothing else: the one module of the project that imports ``onnxruntime``.

Everything that creates a session, chooses execution providers, binds CUDA buffers or rewrites
a graph with ONNX Runtime's tools goes through here, so that the rest of the project (the
service's model folders and batchers, training's export checks and int8 quantization, the
benchmarks) depends on one small surface: :class:`Session`, :func:`choose_providers`,
:func:`quantize_dynamic_graph` and a few facts about the installed runtime.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


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
    back to the CPU silently).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = (CPU,), threads: int = 0):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.path = Path(path)
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
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


def quantize_dynamic_graph(src: str | Path, dst: str | Path, op_types: Sequence[str]) -> Path:
    """Dynamic int8 quantization (int8 weights, uint8 activations quantized per batch) of the
    listed operator types."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Graph clean-up and ONNX shape inference first, as the quantizer asks; the symbolic
        # shape pass is skipped because it cannot reason about the dynamic pooled length.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types))
    return Path(dst)
