"""The synthetic TATA-box benchmark, and the train -> export -> serve loop on it (no external data)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from service.contract.sequence import normalize_sequence
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.checkpoint import load_classifier
from training.cli import main as train_cli
from training.synth import MOTIF, stratified_split, synthetic_tata, write_synthetic
from training.train import predict_scores


def read(path):
    with path.open() as fh:
        return [(r["sequence"], int(r["label"])) for r in csv.DictReader(fh)]


def test_deterministic_and_seeded():
    a, b, c = synthetic_tata(200, 80, seed=0), synthetic_tata(200, 80, seed=0), synthetic_tata(200, 80, seed=1)
    assert a == b and a != c


def test_motif_in_exactly_the_positives_and_exactly_once():
    seqs, labels = synthetic_tata(1000, 300, seed=3)
    assert sum(labels) == 500 and len(seqs) == 1000
    assert all(len(s) == 300 and set(s) <= set("ACGT") for s in seqs)
    for s, y in zip(seqs, labels):
        assert s.count(MOTIF) == y  # negatives: none by construction; positives: one
    # the motif's position is spread over the whole sequence
    positions = [s.index(MOTIF) for s, y in zip(seqs, labels) if y]
    assert min(positions) < 30 and max(positions) > 264


def test_stratified_split_keeps_half_positives_everywhere():
    _, labels = synthetic_tata(2000, 50, seed=0)
    parts = stratified_split(labels, 0.1, 0.1, seed=0)
    assert sorted(i for p in parts.values() for i in p) == list(range(2000))
    for split, n in (("train", 1600), ("dev", 200), ("test", 200)):
        assert len(parts[split]) == n
        assert sum(labels[i] for i in parts[split]) == n // 2
    with pytest.raises(ValueError):
        stratified_split(labels, 0.6, 0.5, seed=0)


def test_cli_writes_the_files(tmp_path, capsys):
    out = tmp_path / "synth"
    assert train_cli(["synth", "--length", "60", "--n", "101", "--seed", "5", "--out", str(out),
                      "--test-fraction", "0"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["dev.csv", "synth.json", "train.csv"]
    train, dev = read(out / "train.csv"), read(out / "dev.csv")
    assert len(train) + len(dev) == 101 and info["splits"]["dev"]["n"] == len(dev)
    assert sum(y for _, y in train + dev) == 50
    assert not {s for s, _ in train} & {s for s, _ in dev}
    again = tmp_path / "again"
    write_synthetic(again, length=60, n=101, seed=5, test_fraction=0)
    assert (again / "train.csv").read_text() == (out / "train.csv").read_text()


@pytest.mark.slow
def test_synth_train_export_serve(tmp_path):
    """What a fresh clone can run with no data: synth -> train a baseline -> export -> serve."""
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "models" / "promoter" / "onehot_cnn"
    assert train_cli(["synth", "--length", "100", "--n", "240", "--seed", "0", "--out", str(data)]) == 0
    rc = train_cli(["train", "--variant", "onehot_cnn", "--preset", "tiny", "--train", str(data / "train.csv"),
                    "--dev", str(data / "dev.csv"), "--test", str(data / "test.csv"), "--epochs", "2",
                    "--batch-size", "32", "--lr", "0.01", "--head-lr", "0.01",
                    "--run-dir", str(run), "--export", str(out)])
    assert rc == 0
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["test"]["n"] == 24
    served = OnnxModel(out)
    assert served.card.architecture == "onehot" and served.card.variant == "onehot_cnn"
    seqs = [s for s, _ in read(data / "test.csv")] + ["tataaa" + "ACGU" * 20, "ACGTN" * 10]
    model, tok, _ = load_classifier(run / "model")
    expected = predict_scores(model, tok, [normalize_sequence(s).sequence for s in seqs], "promoter")
    np.testing.assert_allclose(predict_sequences(served, seqs).scores, expected, atol=1e-5)
