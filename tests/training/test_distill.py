"""The distillation set: how sequences are made, what labels them, and how a student trains on it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.data import Dataset, Example
from training.distill import (
    TEACHERS,
    Augmentation,
    DistillationSet,
    augment,
    make_distillation_set,
    teacher_scores,
)
from training.job import TrainJob
from training.synth import write_synthetic
from training.train import TrainConfig, loss_fn, soft_targets, train

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
HAVE_TEACHERS = all((MODELS / "promoter" / t / "card.json").is_file() for t in TEACHERS)


def _pool(n: int = 50, length: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("ACGT") for _ in range(length)) for _ in range(n)]


def test_made_sequences_are_new_distinct_same_length_and_reproducible():
    pool = _pool()
    exclude = set(_pool(5, seed=9))
    made = augment(pool, 2000, seed=3, exclude=exclude)
    assert len(made) == len(set(made)) == 2000
    assert {len(s) for s in made} == {300}
    assert not (set(made) & (set(pool) | exclude))
    assert made == augment(pool, 2000, seed=3, exclude=exclude)
    assert made != augment(pool, 2000, seed=4, exclude=exclude)


def _best_identity(seq: str, pool: np.ndarray, max_shift: int) -> float:
    """The largest fraction of positions of ``seq`` equal to some pool sequence shifted by at
    most ``max_shift``."""
    s = np.frombuffer(seq.encode(), dtype=np.uint8)
    n = len(s)
    best = 0
    for k in range(-max_shift, max_shift + 1):
        a, b = (s[k:], pool[:, : n - k]) if k >= 0 else (s[: n + k], pool[:, -k:])
        best = max(best, int((a == b).sum(axis=1).max()))
    return best / n


def test_every_made_sequence_keeps_a_large_piece_of_a_pool_sequence():
    pool = _pool(20)
    arr = np.array([np.frombuffer(p.encode(), dtype=np.uint8) for p in pool])
    spec = Augmentation(mutation_rate=(0.01, 0.05), shift=(10, 80), crossover_margin=30)
    identities = [_best_identity(s, arr, 80) for s in augment(pool, 300, seed=1, spec=spec)]
    # random sequences agree at about 25 % of positions; a mutant at >= 95 %, a shifted one at
    # >= 70 %, a crossover at >= 47 % (one parent keeps at least half in place)
    assert min(identities) >= 0.45
    assert sum(i >= 0.95 for i in identities) > 50  # plain mutants are among them
    assert sum(i < 0.9 for i in identities) > 100  # and shifts and crossovers


def test_a_made_sequence_never_equals_a_held_out_one():
    pool = _pool(3, length=40)
    # every single mutant of the first pool sequence is held out: none may come back
    held = {p[:i] + b + p[i + 1:] for p in pool for i in range(len(p)) for b in "ACGT"}
    made = augment(pool, 300, seed=2, exclude=held)
    assert not set(made) & held


@pytest.mark.skipif(not HAVE_TEACHERS, reason="the teacher models are not in models/promoter")
def test_teacher_score_is_the_mean_of_the_teachers_service_scores():
    seqs = _pool(12, seed=5) + ["TATAAAAG" * 30 + "ACGTACGTAC" * 6]
    mean = teacher_scores(MODELS, seqs)
    each = [predict_sequences(OnnxModel(MODELS / "promoter" / t), seqs).scores for t in TEACHERS]
    np.testing.assert_allclose(mean, np.mean(each, axis=0), atol=1e-12)
    assert ((mean >= 0) & (mean <= 1)).all()


@pytest.mark.skipif(not HAVE_TEACHERS, reason="the teacher models are not in models/promoter")
def test_the_set_is_made_from_train_only_and_saved_with_its_manifest(tmp_path):
    pool = _pool(30, seed=1)
    dev = [Example(f"d{i}", s, i % 2) for i, s in enumerate(_pool(10, seed=2))]
    data = Dataset({"train": [Example(f"t{i}", s, i % 2) for i, s in enumerate(pool)], "dev": dev, "test": []})
    made = make_distillation_set(data, MODELS, n=40, seed=1)
    path = tmp_path / "d.npz"
    made.save(path)
    back = DistillationSet.load(path)
    assert back.sequences == made.sequences and len(back.sequences) == 40
    np.testing.assert_array_equal(back.probabilities, made.probabilities)
    m = back.manifest
    assert m["teachers"] == list(TEACHERS) and m["sequences"] == 40 and m["pool"].startswith("the 30 ")
    assert set(m["teacher_dev"]) == {"mcc", "accuracy", "auroc"}
    assert not set(back.sequences) & ({e.sequence for e in dev} | set(pool))


def test_real_labels_are_one_hot_and_made_ones_soft():
    soft = DistillationSet(["A", "C"], np.array([0.25, 0.9]), {})
    t = soft_targets([1, 0], soft)
    np.testing.assert_allclose(t.numpy(), [[0, 1], [1, 0], [0.75, 0.25], [0.1, 0.9]], atol=1e-7)
    logits = torch.randn(4, 2)
    cfg = TrainConfig()
    # with one-hot rows the soft loss is the ordinary cross-entropy
    assert torch.allclose(loss_fn("promoter", logits[:2], t[:2], cfg), F.cross_entropy(logits[:2], torch.tensor([1, 0])))
    expected = -(t * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(loss_fn("promoter", logits, t, cfg), expected)


def test_a_student_trains_on_real_and_made_sequences_and_records_the_set(tmp_path):
    folder = tmp_path / "synth"
    write_synthetic(folder, n=120, length=60, seed=3)
    rng = np.random.default_rng(0)
    made = DistillationSet(_pool(64, length=60, seed=7), rng.uniform(size=64), {"teachers": ["x"], "sequences": 64})
    made.save(tmp_path / "d.npz")
    result = train(TrainJob(variant="cnn", preset="tiny", train=folder / "train.csv", dev=folder / "dev.csv",
                            test=folder / "test.csv", vocab_size=64, epochs=2, batch_size=16, max_minutes=0.3,
                            decay_by_time=True, distill=tmp_path / "d.npz", run_dir=tmp_path / "run"))
    n_train = len((folder / "train.csv").read_text().splitlines()) - 1
    steps_per_epoch = -(-(n_train + 64) // 16)  # the made sequences are batched in with the real ones
    assert result.summary["steps"] == 2 * steps_per_epoch or result.summary["train_seconds"] >= 18
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"distillation"' in config and '"sequences": 64' in config


def test_distillation_is_for_the_promoter_task():
    with pytest.raises(ValueError, match="--task promoter"):
        TrainJob(task="lncrna-localization", distill=Path("d.npz"))
