"""The scan benchmark runs end to end (a seconds-long smoke on a few thousand bases; no speed is
asserted, but both paths must give the same probabilities)."""

from __future__ import annotations

import json

import pytest

from bench.scan import main
from tests.service.robustness import needs_models


@needs_models
@pytest.mark.slow
def test_quick_scan_benchmark_writes_its_report(tmp_path):
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "scan-quick.json").read_text())
    assert report["model"] == "cnn_bilstm_max" and report["window"] == 300 and report["pieces"] == 2
    assert report["windows"] == 2 * 2 * (len(range(0, 3000 - 300 + 1, 50)))
    assert set(report["windows_per_s"]) == {"service", "shared", "parallel"}
    assert all(v > 0 for v in report["windows_per_s"].values()) and report["service_over_raw"] > 0
    assert report["max_abs_diff"] < 1e-5  # the scan path and raw ONNX Runtime agree
    text = (tmp_path / "scan-quick.md").read_text()
    assert "Service / raw" in text and "raw ONNX Runtime, one session" in text
