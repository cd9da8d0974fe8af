"""A tiny train -> export -> ONNX inference run through the command line, for both tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.checkpoint import load_classifier
from training.cli import main as train_cli
from training.train import predict_scores

MOTIF = "TATAAA"


def synthetic_sequences(n: int, length: int, seed: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        s = list(rng.choice(list("ACGT"), length))
        if i % 2:
            pos = int(rng.integers(0, length - len(MOTIF)))
            s[pos : pos + len(MOTIF)] = MOTIF
        seqs.append("".join(s))
        labels.append(i % 2)
    return seqs, labels


@pytest.fixture(scope="module")
def promoter_csvs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    paths = {}
    for split, n, seed in (("train", 96, 0), ("dev", 32, 1), ("test", 32, 2)):
        seqs, labels = synthetic_sequences(n, 80, seed)
        path = root / f"{split}.csv"
        path.write_text("sequence,label\n" + "".join(f"{s},{y}\n" for s, y in zip(seqs, labels)))
        paths[split] = path
    return paths


@pytest.mark.slow
def test_promoter_train_export_and_serve_the_same_scores(promoter_csvs, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "models" / "promoter" / "cnn_bilstm_avg"
    rc = train_cli([
        "train", "--task", "promoter", "--variant", "cnn_bilstm_avg", "--preset", "tiny",
        "--train", str(promoter_csvs["train"]), "--dev", str(promoter_csvs["dev"]),
        "--test", str(promoter_csvs["test"]), "--vocab-size", "200", "--epochs", "2",
        "--batch-size", "16", "--run-dir", str(run), "--export", str(out),
    ])
    assert rc == 0
    # the run folder: config, curve, metrics, model
    assert {"config.json", "curve.jsonl", "metrics.json", "model"} <= {p.name for p in run.iterdir()}
    curve = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    assert len(curve) == 2 and all("dev" in point for point in curve)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert {"accuracy", "f1", "mcc", "precision", "recall", "auroc", "specificity", "tpr", "fpr"} <= set(metrics["test"])

    # the exported folder gives the PyTorch scores through ONNX Runtime
    model, tok, _ = load_classifier(run / "model")
    seqs, _ = synthetic_sequences(20, 80, 7)
    seqs += ["acgu" * 30, "ACGTN" * 10]  # lowercase RNA and ambiguous bases, normalised alike
    onnx_scores = predict_sequences(OnnxModel(out), seqs).scores
    from service.contract.sequence import normalize_sequence

    torch_scores = predict_scores(model, tok, [normalize_sequence(s).sequence for s in seqs], "promoter")
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-5)

    # evaluate gives the same metrics from the run (PyTorch) and the export (ONNX Runtime)
    capsys.readouterr()
    assert train_cli(["evaluate", "--model", str(out), "--data", str(promoter_csvs["test"])]) == 0
    from_onnx = json.loads(capsys.readouterr().out)
    assert train_cli(["evaluate", "--model", str(run / "model"), "--data", str(promoter_csvs["test"])]) == 0
    from_torch = json.loads(capsys.readouterr().out)
    assert from_onnx["backend"] == "onnxruntime" and from_torch["backend"] == "pytorch"
    for key in ("accuracy", "mcc", "auroc"):
        assert from_onnx["metrics"][key] == pytest.approx(from_torch["metrics"][key], abs=1e-9)
    assert from_onnx["metrics"] == pytest.approx(metrics["test"], abs=1e-9)


@pytest.mark.slow
def test_lncrna_train_and_export_with_3_prime_truncation(tmp_path):
    rng = np.random.default_rng(3)
    records = []
    for i in range(40):
        labels = f"{i % 2}{(i // 2) % 2}0"
        seq = "".join(rng.choice(list("ACGU"), int(rng.integers(100, 3000))))
        records.append(f">{labels}|Species:Homo sapiens,gene_{i}\n{seq}\n")
    fasta = tmp_path / "train.fasta"
    fasta.write_text("".join(records))
    run, out = tmp_path / "run", tmp_path / "models" / "lncrna"
    rc = train_cli(["train", "--task", "lncrna-localization", "--preset", "tiny", "--train", str(fasta),
                    "--vocab-size", "200", "--epochs", "1", "--batch-size", "8",
                    "--run-dir", str(run), "--export", str(out), "--no-fp16"])
    assert rc == 0
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]["test"]
    assert metrics["labels_without_positives"] == ["extracellular_vesicle"]
    model = OnnxModel(out)
    assert model.card.labels == ["nucleus", "cytoplasm", "extracellular_vesicle"]
    assert (model.card.activation, model.card.positive_index) == ("sigmoid", None)
    assert model.card.tokenization.max_nucleotides == 2292
    assert model.card.tokenization.max_tokens == 482
    long = "".join(rng.choice(list("ACGT"), 5000))
    pred = predict_sequences(model, [long, long[-2292:], "ACGT" * 50])
    assert pred.scores.shape == (3, 3) and np.all((pred.scores > 0) & (pred.scores < 1))
    assert pred.prepared.truncated[0] and not pred.prepared.truncated[2]
    # keeping the last 2,292 nt: the long record scores as its own 3' end
    np.testing.assert_allclose(pred.scores[0], pred.scores[1], atol=1e-6)
