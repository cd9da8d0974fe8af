"""The benchmark harness runs end to end (a seconds-long smoke; no speed is asserted)."""

from __future__ import annotations

import json

import pytest

from bench.run import main


@pytest.mark.slow
def test_quick_benchmark_writes_its_report(tmp_path):
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "quick.json").read_text())
    assert {"raw_onnx", "front_end", "torch_eager", "service", "summary", "machine"} <= set(report)
    assert all(row["sequences_per_s"] > 0 for row in report["raw_onnx"])
    assert report["service"]["loads"][0]["statuses"] == {"200": report["service"]["loads"][0]["statuses"]["200"]}
    assert "## Summary" in (tmp_path / "quick.md").read_text()


@pytest.mark.slow
def test_gpu_harness_runs_on_cpu_with_a_tiny_backbone(tmp_path):
    """The GPU harness is the same code on a CUDA host; here it runs the tiny preset on the CPU."""
    from bench import gpu

    assert gpu.main(["--preset", "tiny", "--device", "cpu", "--quick", "--no-service",
                     "--export-dir", str(tmp_path / "models"), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu-quick.json").read_text())
    tasks = {(row["task"], row["head"]) for row in report["raw"]}
    assert tasks == {("promoter", "cnn_bilstm_avg"), ("lncrna-localization", "lncrna")}
    assert all(row["sequences_per_s"] > 0 and row["flops_per_sequence"] > 0 for row in report["raw"])
    # the exported folders are real, servable model folders
    from service.runtime.model import OnnxModel
    from service.runtime.offline import predict_sequences

    model = OnnxModel(tmp_path / "models" / "promoter" / "cnn_bilstm_avg")
    assert predict_sequences(model, ["ACGT" * 75]).scores.shape == (1,)


def test_flop_count_adds_the_lstm(tmp_path):
    import torch

    from bench.gpu import model_flops
    from training.models.dnabert2 import PRESETS
    from training.models.heads import SequenceClassifier

    torch.manual_seed(0)
    with_lstm = SequenceClassifier(PRESETS["tiny"], "cnn_bilstm_avg")
    cnn_only = SequenceClassifier(PRESETS["tiny"], "cnn")
    h, d, steps = 128, 2 * PRESETS["tiny"].hidden_size, 30 // 2
    lstm = 2 * 4 * h * (d + h) * 2 * (steps + 1)
    # same backbone and conv block; the heads differ by the LSTM and the classifier's input width
    diff = model_flops(with_lstm, 30) - model_flops(cnn_only, 30)
    assert diff == pytest.approx(lstm + 2 * 2 * (2 * h - 2 * PRESETS["tiny"].hidden_size), rel=1e-6)
