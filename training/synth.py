"""``dnabert-train synth``: the synthetic TATA-box benchmark of the DNABERT fine-tuning tutorial.

Random DNA of one length; exactly half of the sequences (label 1) carry the motif ``TATAAA`` at a
uniformly random position, the other half (label 0) do not. It gives a fresh clone a complete
train -> export -> serve loop with no external data.

Choices (deterministic for a given seed, on any machine: numpy's PCG64 generator):

* **Negatives never contain TATAAA by accident.** In uniform random DNA the motif occurs in
  about 7 % of 300 bp sequences, which would put label noise into the data. Every background
  sequence is drawn again until it has no ``TATAAA``, so the label is exactly "contains TATAAA".
* **Positives contain TATAAA exactly once**: the motif overwrites 6 bases of a TATAAA-free
  background (the length is kept). TATAAA has no border (no proper prefix equal to a suffix),
  so the overwrite cannot create a second occurrence across its edges.
* **Stratified split**: each class is shuffled and cut separately, so train, dev and test all
  hold half positives (to within one sequence). The files are ``sequence,label`` CSVs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MOTIF = "TATAAA"
_BASES = np.array(list("ACGT"))


def _background(rng: np.random.Generator, length: int) -> str:
    while True:
        seq = "".join(_BASES[rng.integers(0, 4, length)])
        if MOTIF not in seq:
            return seq


def synthetic_tata(n: int = 2000, length: int = 300, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` sequences, ``n // 2`` of them positive (in random order), and their labels."""
    if length < len(MOTIF):
        raise ValueError(f"--length must be at least {len(MOTIF)}")
    if n < 2:
        raise ValueError("--n must be at least 2")
    rng = np.random.default_rng(seed)
    labels = np.array([1] * (n // 2) + [0] * (n - n // 2))
    rng.shuffle(labels)
    seqs = []
    for y in labels:
        seq = _background(rng, length)
        if y:
            pos = int(rng.integers(0, length - len(MOTIF) + 1))
            seq = seq[:pos] + MOTIF + seq[pos + len(MOTIF):]
        seqs.append(seq)
    return seqs, labels.tolist()


def stratified_split(labels: list[int], dev_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, list[int]]:
    """Indices per split; each class is shuffled and cut on its own (rounded per class)."""
    if dev_fraction < 0 or test_fraction < 0 or dev_fraction + test_fraction >= 1:
        raise ValueError("dev and test fractions must be >= 0 and leave a training split")
    rng = np.random.default_rng([seed, 1])
    out: dict[str, list[int]] = {"train": [], "dev": [], "test": []}
    y = np.asarray(labels)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n_dev, n_test = round(dev_fraction * len(idx)), round(test_fraction * len(idx))
        out["test"] += idx[:n_test].tolist()
        out["dev"] += idx[n_test : n_test + n_dev].tolist()
        out["train"] += idx[n_test + n_dev :].tolist()
    return {k: sorted(v) for k, v in out.items()}


def write_synthetic(out: Path, length: int = 300, n: int = 2000, seed: int = 0,
                    dev_fraction: float = 0.1, test_fraction: float = 0.1) -> dict:
    """Write ``train.csv``, ``dev.csv`` (and ``test.csv`` unless ``test_fraction`` is 0) and
    ``synth.json`` (the arguments and counts) to ``out``."""
    seqs, labels = synthetic_tata(n, length, seed)
    parts = stratified_split(labels, dev_fraction, test_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, idx in parts.items():
        if split == "test" and test_fraction == 0:
            continue
        path = out / f"{split}.csv"
        path.write_text("sequence,label\n" + "".join(f"{seqs[i]},{labels[i]}\n" for i in idx))
        counts[split] = {"n": len(idx), "positives": int(sum(labels[i] for i in idx))}
    info = {"motif": MOTIF, "length": length, "n": n, "seed": seed, "dev_fraction": dev_fraction,
            "test_fraction": test_fraction, "splits": counts, "out": str(out),
            "negatives": "TATAAA-free by construction (rejection sampling)",
            "positives": "exactly one TATAAA at a uniformly random position"}
    (out / "synth.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
