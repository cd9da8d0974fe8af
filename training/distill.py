"""Distillation data for the DNABERT-2 promoter students: many more training sequences, made from
the training split, each labelled with the soft probability of an ensemble of strong small models.

The DNABERT-2 backbone is data-starved on about 12,000 labelled 300 bp sequences, while the
one-hot CNN, the CNN-GRU and DNABERT (6-mer) learn the task well from the same split. Their mean
probability on new sequences made from the training pool is a dense teaching signal:

* **point mutations** at 1-5 % of the positions;
* **shifts** by 10-80 bp, the flank that comes in taken from another pool sequence;
* **crossovers**: the 5' part of one sequence joined to the 3' part of another;
* a third of the shifted and crossed sequences also mutated.

Only training-split sequences are used (never dev or test), and a made sequence that happens to
equal a dev or test sequence is dropped. The teachers are the exported model folders, scored by
the service's own prediction path (:func:`service.runtime.offline.predict_sequences`).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from service.contract.tasks import PROMOTER
from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from training.data import Dataset
from training.metrics import binary_metrics

TEACHERS = ("onehot_cnn", "onehot_cnn_gru", "dnabert1_linear1")
"""The promoter models whose mean probability teaches: the strongest one-hot CNN, the CNN-GRU and
DNABERT (6-mer), each a different view of the sequence."""
BASES = "ACGT"
OPERATIONS = ("mutate", "shift", "crossover")


@dataclass(frozen=True)
class Augmentation:
    """How the made sequences are made (recorded in the distillation set's manifest)."""

    mutation_rate: tuple[float, float] = (0.01, 0.05)
    shift: tuple[int, int] = (10, 80)
    crossover_margin: int = 30
    """A crossover point is at least this far from either end."""
    also_mutate: float = 1 / 3
    """The fraction of shifted and crossed sequences that are also mutated."""


def _mutate(seq: str, rng: random.Random, rate_range: tuple[float, float]) -> str:
    rate = rng.uniform(*rate_range)
    chars = list(seq)
    for i in rng.sample(range(len(chars)), max(1, round(rate * len(chars)))):
        chars[i] = rng.choice([b for b in BASES if b != chars[i]])
    return "".join(chars)


def _shift(seq: str, other: str, rng: random.Random, shift_range: tuple[int, int]) -> str:
    k = min(rng.randint(*shift_range), len(seq) - 1, len(other))
    if rng.random() < 0.5:  # move the sequence 5'-wards: the 3' flank comes from the other
        return seq[k:] + other[len(other) - k:]
    return other[:k] + seq[: len(seq) - k]


def _crossover(seq: str, other: str, rng: random.Random, margin: int) -> str:
    n = min(len(seq), len(other))
    if n <= 2 * margin:
        return seq
    cut = rng.randint(margin, n - margin)
    return seq[:cut] + other[cut:n] if rng.random() < 0.5 else other[:cut] + seq[cut:n]


def augment(pool: Sequence[str], n: int, seed: int, exclude: set[str] = frozenset(),
            spec: Augmentation = Augmentation()) -> list[str]:
    """``n`` distinct new sequences made from ``pool``; none in ``pool`` or ``exclude``."""
    rng = random.Random(seed)
    seen = set(pool) | set(exclude)
    out: list[str] = []
    while len(out) < n:
        seq, other = rng.choice(pool), rng.choice(pool)
        op = rng.choice(OPERATIONS)
        if op == "mutate":
            made = _mutate(seq, rng, spec.mutation_rate)
        else:
            made = (_shift(seq, other, rng, spec.shift) if op == "shift"
                    else _crossover(seq, other, rng, spec.crossover_margin))
            if rng.random() < spec.also_mutate:
                made = _mutate(made, rng, spec.mutation_rate)
        if made not in seen:
            seen.add(made)
            out.append(made)
    return out


def teacher_scores(models: Path, sequences: Sequence[str], teachers: Sequence[str] = TEACHERS) -> np.ndarray:
    """(N,) the mean P(promoter) of the teacher model folders ``models/promoter/<teacher>``."""
    total = np.zeros(len(sequences))
    for name in teachers:
        folder = models / PROMOTER / name
        if not (folder / "card.json").is_file():
            raise FileNotFoundError(f"teacher model {folder} not found: distillation needs the exported "
                                    f"{', '.join(teachers)} folders (dnabert-train compare makes them)")
        model = OnnxModel(folder)
        total += predict_sequences(model, sequences).scores
    return total / len(teachers)


@dataclass
class DistillationSet:
    sequences: list[str]
    probabilities: np.ndarray
    manifest: dict

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, sequences=np.array(self.sequences), probabilities=self.probabilities,
                            manifest=np.array(json.dumps(self.manifest)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> DistillationSet:
        with np.load(path) as z:
            return cls([str(s) for s in z["sequences"]], z["probabilities"].astype(np.float64),
                       json.loads(str(z["manifest"])))


def make_distillation_set(data: Dataset, models: Path, n: int, seed: int = 7,
                          teachers: Sequence[str] = TEACHERS, spec: Augmentation = Augmentation()) -> DistillationSet:
    """``n`` made sequences with the teachers' mean probability; the manifest says how, and how
    well the teacher ensemble does on the dev split (it must beat the students to teach them)."""
    start = time.monotonic()
    pool = [e.sequence for e in data["train"]]
    held_out = {e.sequence for split in ("dev", "test") for e in data[split]}
    made = augment(pool, n, seed, exclude=held_out, spec=spec)
    dev = data["dev"]
    scored = teacher_scores(models, made + [e.sequence for e in dev], teachers)  # each teacher loaded once
    probs, dev_p = scored[: len(made)], scored[len(made):]
    dev_m = binary_metrics(np.array([e.label for e in dev]), dev_p)
    digest = hashlib.sha256("\n".join(made).encode()).hexdigest()
    manifest = {
        "sequences": len(made), "seed": seed, "teachers": list(teachers),
        "teacher_rule": "mean of the teachers' P(promoter)",
        "augmentation": asdict(spec), "pool": f"the {len(pool)} training-split sequences",
        "teacher_dev": {k: dev_m[k] for k in ("mcc", "accuracy", "auroc")},
        "mean_probability": float(probs.mean()), "confident_fraction": float(np.mean((probs < 0.1) | (probs > 0.9))),
        "sha256": digest, "seconds": round(time.monotonic() - start, 1),
    }
    return DistillationSet(made, probs, manifest)
