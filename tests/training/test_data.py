"""Data reading and leak-free splits."""

from __future__ import annotations

import pytest

from service.contract.errors import InvalidFasta, InvalidSequence
from training.data import (
    Example,
    lncrna_dataset,
    merge_splits,
    promoter_dataset,
    read_csv,
    read_labelled_fasta,
)


def test_labelled_fasta_headers_give_multilabel_targets(tmp_path):
    path = tmp_path / "x.fasta"
    path.write_text(">110|Species:Homo sapiens,a\nacgu\nACGT\n>001|b\nNNAC\n")
    a, b = read_labelled_fasta(path)
    assert a.label == (1, 1, 0) and a.sequence == "ACGTACGT"
    assert b.label == (0, 0, 1) and b.sequence == "NNAC"
    path.write_text(">1x0|bad\nACGT\n")
    with pytest.raises(InvalidFasta, match="label digits"):
        read_labelled_fasta(path)


def test_csv_rejects_bad_rows_naming_the_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("sequence,label\nACGT,1\nAC-GT,0\n")
    with pytest.raises(InvalidSequence, match="x.csv:3"):
        read_csv(path)
    path.write_text("seq,y\nACGT,1\n")
    with pytest.raises(ValueError, match="sequence,label"):
        read_csv(path)


def test_merge_keeps_a_sequence_in_one_split_and_drops_conflicts():
    ex = lambda s, y: Example(s, s, y)  # noqa: E731
    splits, stats = merge_splits([
        ("train", "a", [ex("AAA", 1), ex("CCC", 0), ex("GGG", 1)]),
        ("test", "b", [ex("AAA", 1), ex("TTT", 0)]),
        ("dev", "c", [ex("GGG", 0), ex("CCC", 0)]),
    ])
    assert [e.sequence for e in splits["test"]] == ["AAA", "TTT"]
    assert [e.sequence for e in splits["dev"]] == ["CCC"]
    assert splits["train"] == []
    assert stats["dropped_conflicting_labels"] == 1  # GGG


@pytest.mark.usefixtures("shared_dir")
def test_promoter_splits_are_disjoint_and_keep_the_hearing_loss_test():
    data = promoter_dataset()
    seqs = {name: {e.sequence for e in data[name]} for name in ("train", "dev", "test")}
    assert not seqs["train"] & seqs["dev"] and not seqs["train"] & seqs["test"] and not seqs["dev"] & seqs["test"]
    parts = data.description["test_parts"]
    assert parts["hl_test"] == 240 and parts["gue_test"] > 1000
    assert all(len(e.sequence) == 300 for e in data["train"][:100])


@pytest.mark.usefixtures("shared_dir")
def test_lncrna_split():
    data = lncrna_dataset()
    assert data.description["labels"] == ["nucleus", "cytoplasm", "extracellular_vesicle"]
    train, dev, test = ({e.sequence for e in data[s]} for s in ("train", "dev", "test"))
    assert not train & test and not dev & test and not train & dev
    assert len(test) > 600 and not any(e.label[2] for e in data["test"])
