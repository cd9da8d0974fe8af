"""The ISM timing harness runs end to end (a seconds-long smoke; no speed is asserted)."""

from __future__ import annotations

import json

from bench.explain import main
from tests.service.robustness import needs_models


@needs_models
def test_quick_explain_benchmark_writes_its_report(tmp_path):
    assert main(["--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "explain-quick.json").read_text())
    rows = {row["model"]: row for row in report["rows"]}
    assert set(rows) == {report["rows"][0]["model"], "all"}
    assert all(row["mutants"] == 3 * 60 and row["seconds_median"] > 0 for row in rows.values())
    assert rows["all"]["models_run"] == 5 and rows["all"]["sequences_scored"] == 5 * 181
    assert "| all | 60 bp | 180 |" in (tmp_path / "explain-quick.md").read_text()
