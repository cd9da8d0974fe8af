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
