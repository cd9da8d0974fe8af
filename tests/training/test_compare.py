"""``dnabert-train compare``: throughput measurement, the table, and a seconds-long run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.contract.card import ModelCard
from training.cli import main as train_cli
from training.compare import BEGIN, END, measure_throughput, write_markdown

MODELS = Path(__file__).resolve().parents[2] / "models"


def _result(rows):
    return {"command": "dnabert-train compare", "rows": rows, "split": {"test_parts": {"hl_test": 240, "gue_test": 1563}},
            "machine": {"cpu_count": 2, "processor": "x86_64"}}


def _row(name):
    return {"model": name, "family": "one-hot baseline", "tokenization": "base", "parameters": 1234,
            "hl_test": {"accuracy": 0.5, "f1": 0.5, "mcc": 0.1, "auroc": 0.6}, "gue_test": {},
            "train_seconds": 12.3, "throughput": {"graph_seq_per_s": 1000.0, "threads": "all"}, "graph_mb": 0.5}


def test_markdown_keeps_the_text_around_the_table(tmp_path):
    out = tmp_path / "comparison.md"
    write_markdown(out, _result([_row("a")]))
    text = out.read_text()
    assert BEGIN in text and END in text and "| a | one-hot baseline |" in text
    out.write_text("# Title\n\nhand-written reading\n\n" + text[text.index(BEGIN):] + "\nmore text\n")
    write_markdown(out, _result([_row("b")]))
    text = out.read_text()
    assert text.startswith("# Title\n\nhand-written reading") and text.endswith("more text\n")
    assert "| b |" in text and "| a |" not in text and "n/a" in text  # GUE metrics missing


@pytest.mark.skipif(not (MODELS / "promoter" / "base" / "card.json").is_file(), reason="no embedded models")
def test_measure_throughput_of_an_embedded_model():
    got = measure_throughput(MODELS / "promoter" / "base", batch=4, length=300, seconds=0.05, threads=1)
    assert got["graph_seq_per_s"] > 0 and got["predict_seq_per_s"] > 0
    assert got["batch"] == 4 and got["tokens"] > 10 and got["threads"] == 1


@pytest.mark.slow
def test_quick_compare_trains_exports_and_tabulates(shared_dir, tmp_path):
    if not (MODELS / "promoter" / "base" / "card.json").is_file():
        pytest.skip("no embedded DNABERT-2 models")
    models = tmp_path / "models"
    shutil.copytree(MODELS / "promoter" / "base", models / "promoter" / "base")
    runs, output = tmp_path / "runs", tmp_path / "comparison.md"
    assert train_cli(["compare", "--quick", "--only", "onehot_cnn", "--models", str(models), "--runs", str(runs),
                      "--output", str(output), "--threads", "1"]) == 0
    result = json.loads((runs / "comparison.json").read_text())
    assert [r["model"] for r in result["rows"]] == ["base", "onehot_cnn"]
    assert (models / "promoter" / "onehot_cnn" / "card.json").is_file()  # exported next to the others
    card = ModelCard.load(models / "promoter" / "onehot_cnn")
    assert card.training.command == "dnabert-train compare"
    assert card.training.initialised_from == "random initialisation (no pre-training)"
    text = output.read_text()
    assert "| base | DNABERT-2 | BPE |" in text and "| onehot_cnn | one-hot baseline | base |" in text
    # resumes: the finished run is not trained again
    mtime = (runs / "onehot_cnn" / "metrics.json").stat().st_mtime
    assert train_cli(["compare", "--quick", "--only", "onehot_cnn", "--models", str(models), "--runs", str(runs),
                      "--output", str(output), "--no-export"]) == 0
    assert (runs / "onehot_cnn" / "metrics.json").stat().st_mtime == mtime
    assert (runs / "onehot_cnn" / "export" / "card.json").is_file()
    assert train_cli(["compare", "--only", "base", "--models", str(models), "--runs", str(runs),
                      "--output", str(output)]) == 2
