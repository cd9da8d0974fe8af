"""Shared helpers of the training tests."""

from __future__ import annotations

from pathlib import Path

from training.data import Dataset


def promoter_sample(shared_dir: Path, dev: int, hl_test: int, gue_test: int) -> Dataset:
    """The first ``dev`` dev examples and the first ``hl_test`` / ``gue_test`` of each test part
    of the real promoter split (no training examples): small enough for a fast test."""
    from training.data import promoter_dataset

    data = promoter_dataset(shared_dir)
    hl = [e for e in data["test"] if e.source == "hl_test"][:hl_test]
    gue = [e for e in data["test"] if e.source == "gue_test"][:gue_test]
    return Dataset({"train": [], "dev": data["dev"][:dev], "test": hl + gue}, data.description)
