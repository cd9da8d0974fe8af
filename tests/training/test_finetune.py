"""The fine-tuning worker (``python -m training.finetune``): its splits, its starting weights,
its refusals. A whole fine-tuning job through the service is tested in tests/service/api/test_jobs.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import load_classifier
from training.data import read_labelled
from training.finetune import FinetuneSpec, initial_weights, main, split_data
from training.synth import write_synthetic

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "models" / "promoter" / "cnn_bilstm_max"


def _labelled_csv(tmp_path: Path, n: int = 200) -> Path:
    folder = tmp_path / "synth"
    write_synthetic(folder, n=n, length=60, seed=1)
    out = tmp_path / "all.csv"
    rows = [line for name in ("train", "dev", "test") for line in (folder / f"{name}.csv").read_text().splitlines()[1:]]
    out.write_text("sequence,label\n" + "\n".join(rows) + "\n")
    return out


def _spec(tmp_path: Path, data: Path, **changes) -> FinetuneSpec:
    values = dict(task="promoter", variant="cnn", data=str(data), base=str(BASE), run_dir=str(tmp_path / "run"),
                  out=str(tmp_path / "out"), name="mine")
    values.update(changes)
    return FinetuneSpec(**values)


def test_the_upload_is_split_by_sequence_hash_into_disjoint_parts(tmp_path):
    data = _labelled_csv(tmp_path)
    files = split_data(_spec(tmp_path, data))
    parts = {k: [e.sequence for e in read_labelled(p, "promoter")] for k, p in files.items()}
    assert sum(len(v) for v in parts.values()) == len(read_labelled(data, "promoter"))
    assert not (set(parts["train"]) & set(parts["dev"]) or set(parts["train"]) & set(parts["test"]))
    assert 0.02 < len(parts["test"]) / 200 < 0.25 and 0.02 < len(parts["dev"]) / 200 < 0.25
    again = split_data(_spec(tmp_path / "again", data))  # the same file splits the same way
    assert [p.read_text() for p in again.values()] == [p.read_text() for p in files.values()]


def test_lncrna_fasta_labels_survive_the_split(tmp_path):
    rng = np.random.default_rng(0)
    records = "".join(f">{rng.integers(0, 2)}{rng.integers(0, 2)}{rng.integers(0, 2)} r{i}\n"
                      f"{''.join(rng.choice(list('ACGT'), 80))}\n" for i in range(60))
    data = tmp_path / "lnc.fa"
    data.write_text(records)
    files = split_data(_spec(tmp_path, data, task="lncrna-localization", variant="lncrna"))
    want = {e.sequence: e.label for e in read_labelled(data, "lncrna-localization")}
    got = {e.sequence: e.label for p in files.values() for e in read_labelled(p, "lncrna-localization")}
    assert got == want


def test_an_embedded_model_starts_the_run_with_its_own_backbone(tmp_path):
    from training.export.embedding import backbone_hidden_states

    init = initial_weights(_spec(tmp_path, tmp_path / "unused.csv"))
    model, tok, meta = load_classifier(init)
    assert meta["task"] == "promoter" and meta["variant"] == "cnn_bilstm_max"
    ids, mask = tok.pad([[1, 400, 500, 77, 2]])
    with torch.no_grad():
        hidden = model.bert(torch.from_numpy(ids), torch.from_numpy(mask))[0].numpy()
    np.testing.assert_allclose(hidden, backbone_hidden_states(BASE, ids, mask), atol=1e-5)


def test_refusals_are_one_line_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("sequence,label\nACGTACGT,2\n")
    spec = tmp_path / "spec.json"
    _spec(tmp_path, bad).save(spec)
    assert main([str(spec)]) == 1
    assert "label must be 0 or 1" in capsys.readouterr().err
    few = tmp_path / "few.csv"
    few.write_text("sequence,label\nACGTACGTAA,1\nTTTTACGTAC,0\n")
    _spec(tmp_path, few).save(spec)
    assert main([str(spec)]) == 1
    assert "needs at least 20" in capsys.readouterr().err
    _spec(tmp_path, _labelled_csv(tmp_path), task="lncrna-localization", variant="lncrna").save(spec)
    assert main([str(spec)]) == 1
    assert "FASTA whose headers start with 3 0/1 label digits" in capsys.readouterr().err
    spec.write_text(json.dumps({"task": "nope"}))
    assert main([str(spec)]) == 2
