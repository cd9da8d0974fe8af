"""Reading labelled data and building leak-free splits.

Formats:
* CSV with a header ``sequence,label`` (promoter data; label 1 = promoter);
* FASTA whose headers start with 0/1 digits, one per label (iLoc-lncRNA-BERT style:
  ``>110|...`` = nucleus and cytoplasm, in the order nucleus, cytoplasm, extracellular vesicle).

Every sequence is normalised with :func:`service.contract.sequence.normalize_sequence`, exactly as the
service does, so training and serving see the same text.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from Bio import SeqIO

from service.contract import tasks
from service.contract.errors import InvalidFasta
from service.contract.sequence import normalize_sequence
from service.contract.tasks import LNCRNA, TASKS

SPLITS = ("train", "dev", "test")


@dataclass
class Example:
    id: str
    sequence: str
    label: int | tuple[int, ...]
    source: str = ""


@dataclass
class Dataset:
    """Named splits of examples plus a description of how they were made."""

    splits: dict[str, list[Example]]
    description: dict = field(default_factory=dict)

    def __getitem__(self, split: str) -> list[Example]:
        return self.splits[split]


def shared_dir() -> Path:
    """The ``shared`` data folder: ``$DNABERT_SHARED_DIR`` or ``../shared`` beside the repo."""
    env = os.environ.get("DNABERT_SHARED_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    if not (path / "data").is_dir():
        raise FileNotFoundError(
            f"data folder not found at {path / 'data'}; set DNABERT_SHARED_DIR to the folder "
            "that holds data/promoter and data/lncrna"
        )
    return path


def read_csv(path: str | Path, source: str | None = None) -> list[Example]:
    path = Path(path)
    examples = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"sequence", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a header with columns 'sequence,label'")
        for i, row in enumerate(reader, start=2):
            rid = f"{path.name}:{i}"
            label = int(row["label"])
            if label not in (0, 1):
                raise ValueError(f"{path}:{i}: label must be 0 or 1, got {row['label']!r}")
            seq = normalize_sequence(row["sequence"], rid).sequence
            examples.append(Example(rid, seq, label, source or path.name))
    return examples


def read_labelled_fasta(path: str | Path, n_labels: int = 3, source: str | None = None) -> list[Example]:
    """FASTA with ``n_labels`` leading 0/1 digits in each header."""
    path = Path(path)
    examples = []
    with path.open() as fh:
        for record in SeqIO.parse(fh, "fasta"):
            digits = record.description[:n_labels]
            if len(digits) != n_labels or set(digits) - {"0", "1"}:
                raise InvalidFasta(
                    f"{path}: header {record.description[:40]!r} does not start with "
                    f"{n_labels} 0/1 label digits",
                    record_id=record.id,
                )
            seq = normalize_sequence(str(record.seq), record.id).sequence
            examples.append(
                Example(record.id, seq, tuple(int(c) for c in digits), source or path.name)
            )
    if not examples:
        raise InvalidFasta(f"{path}: no FASTA records")
    return examples


def read_labelled(path: str | Path, task: str) -> list[Example]:
    """CSV for promoter data, FASTA for lncRNA data (chosen by file suffix): one 0/1 digit per
    label in the headers of a multi-label task, one digit for a single-class one."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return read_csv(path)
    spec = tasks.task(task)
    return read_labelled_fasta(path, n_labels=len(spec.labels) if spec.activation == "sigmoid" else 1)


def _hash_fraction(sequence: str, salt: str) -> float:
    digest = hashlib.sha256((salt + sequence).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def merge_splits(
    sources: Iterable[tuple[str, str, list[Example]]],
) -> tuple[dict[str, list[Example]], dict]:
    """Merge (split, source name, examples) into deduplicated, disjoint splits.

    A sequence that occurs in several splits is kept only in the most held-out one
    (test > dev > train); a sequence seen with conflicting labels is dropped everywhere.
    """
    rank = {s: i for i, s in enumerate(("test", "dev", "train"))}
    chosen: dict[str, tuple[str, Example]] = {}
    labels: dict[str, set] = {}
    n_in = 0
    for split, _, examples in sources:
        for ex in examples:
            n_in += 1
            labels.setdefault(ex.sequence, set()).add(ex.label)
            prev = chosen.get(ex.sequence)
            if prev is None or rank[split] < rank[prev[0]]:
                chosen[ex.sequence] = (split, ex)
    conflicting = {s for s, ls in labels.items() if len(ls) > 1}
    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for seq, (split, ex) in chosen.items():
        if seq not in conflicting:
            splits[split].append(ex)
    stats = {
        "records_read": n_in,
        "unique_sequences": len(chosen),
        "dropped_conflicting_labels": len(conflicting),
        "sizes": {s: len(v) for s, v in splits.items()},
    }
    return splits, stats


def hash_split(
    examples: Sequence[Example], dev: float, test: float, salt: str
) -> dict[str, list[Example]]:
    """Deterministic split by a hash of the sequence (stable across runs and machines)."""
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for ex in examples:
        u = _hash_fraction(ex.sequence, salt)
        out["test" if u < test else "dev" if u < test + dev else "train"].append(ex)
    return out


def promoter_dataset(root: Path | None = None, seed_salt: str = "prom300-v1") -> Dataset:
    """Hearing-loss 300 bp set + the GUE 300 bp pool, deduplicated, no sequence in two splits.

    * hearing-loss train/dev/test keep their published roles;
    * the GUE pool (prom_300_tata train+dev, prom_300 all_dev and notata_dev) is deduplicated
      and split by a hash of the sequence: 10 % test (``gue_test``), 10 % dev, 80 % train.
    The test split is reported in two parts: ``hl_test`` and ``gue_test``.
    """
    base = (root or shared_dir()) / "data" / "promoter"
    hl = base / "hearing_loss_300"
    pool_files = [
        base / "gue_prom_300_tata" / "train.csv",
        base / "gue_prom_300_tata" / "dev.csv",
        base / "gue_prom_300_extra" / "all_dev.csv",
        base / "gue_prom_300_extra" / "notata_dev.csv",
    ]
    pool: dict[str, Example] = {}
    for f in pool_files:
        for ex in read_csv(f, source=f"gue/{f.parent.name}/{f.name}"):
            pool.setdefault(ex.sequence, ex)
    gue = hash_split(list(pool.values()), dev=0.10, test=0.10, salt=seed_salt)
    sources = [
        ("test", "hearing_loss_300/test", read_csv(hl / "test.csv", source="hl_test")),
        ("dev", "hearing_loss_300/dev", read_csv(hl / "dev.csv", source="hl_dev")),
        ("train", "hearing_loss_300/train", read_csv(hl / "train.csv", source="hl_train")),
    ] + [(split, f"gue/{split}", exs) for split, exs in gue.items()]
    for split, _, exs in sources[3:]:
        for ex in exs:
            ex.source = f"gue_{split}"
    splits, stats = merge_splits(sources)
    stats["test_parts"] = {
        part: sum(1 for ex in splits["test"] if ex.source == part) for part in ("hl_test", "gue_test")
    }
    desc = {
        "name": "promoter_300bp",
        "files": [str(p.relative_to(base.parent.parent)) for p in [hl / "train.csv", hl / "dev.csv", hl / "test.csv", *pool_files]],
        "split": (
            "hearing-loss train/dev/test as published; GUE 300 bp pool deduplicated and split "
            f"by sha256(salt={seed_salt!r} + sequence): 80% train, 10% dev, 10% test; a sequence "
            "in several splits is kept only in the most held-out one; conflicting labels dropped"
        ),
        **stats,
    }
    return Dataset(splits, desc)


def lncrna_dataset(root: Path | None = None, dev_fraction: float = 0.15, salt: str = "lnc-v1") -> Dataset:
    """iLoc-lncRNA-BERT: train on iloc_homo_train (dev split from it), test on LncLocFormer."""
    base = (root or shared_dir()) / "data" / "lncrna"
    train = read_labelled_fasta(base / "iloc_homo_train.fasta", source="iloc_homo_train")
    test = read_labelled_fasta(base / "iloc_lnclocformer_test.fasta", source="lnclocformer_test")
    parts = hash_split(train, dev=dev_fraction, test=0.0, salt=salt)
    splits, stats = merge_splits(
        [("test", "lnclocformer_test", test), ("dev", "iloc/dev", parts["dev"]), ("train", "iloc/train", parts["train"])]
    )
    desc = {
        "name": "lncrna_localization",
        "files": ["data/lncrna/iloc_homo_train.fasta", "data/lncrna/iloc_lnclocformer_test.fasta"],
        "split": (
            f"train/dev: iloc_homo_train.fasta split by sha256(salt={salt!r} + sequence), "
            f"{dev_fraction:.0%} dev; test: iloc_lnclocformer_test.fasta; a sequence in both "
            "is kept only in test"
        ),
        "labels": list(TASKS[LNCRNA].labels),
        **stats,
    }
    return Dataset(splits, desc)


def file_dataset(train: Path, task: str, dev: Path | None = None, test: Path | None = None,
                 dev_fraction: float = 0.1, salt: str = "user-v1") -> Dataset:
    """Splits from user files; without a dev file, a hashed dev split is cut from train."""
    train_ex = read_labelled(train, task)
    sources = []
    if test is not None:
        sources.append(("test", str(test), read_labelled(test, task)))
    if dev is not None:
        sources.append(("dev", str(dev), read_labelled(dev, task)))
        sources.append(("train", str(train), train_ex))
    else:
        parts = hash_split(train_ex, dev=dev_fraction, test=0.0, salt=salt)
        sources += [("dev", f"{train}:dev", parts["dev"]), ("train", str(train), parts["train"])]
    splits, stats = merge_splits(sources)
    desc = {
        "name": Path(train).stem,
        "files": [str(p) for p in (train, dev, test) if p is not None],
        "split": "given files" if dev is not None else f"dev = {dev_fraction:.0%} of train by sequence hash",
        **stats,
    }
    return Dataset(splits, desc)


def unlabelled_sequences(root: Path | None = None, exclude: Iterable[str] = ()) -> list[str]:
    """Every sequence at hand for tokenizer training and masked-LM pre-training.

    The 300 bp pool, the 70 bp core promoters and the lncRNA training set. Test sets that
    models are evaluated on (hearing-loss test, the LncLocFormer test set) are left out, and so
    is every sequence in ``exclude`` (pass the test splits' sequences).
    """
    excluded = set(exclude)
    base = (root or shared_dir()) / "data"
    files = sorted((base / "promoter").rglob("*.csv"))
    seqs: dict[str, None] = {}
    for f in files:
        if f.parent.name == "hearing_loss_300" and f.name == "test.csv":
            continue
        for ex in read_csv(f):
            seqs[ex.sequence] = None
    for ex in read_labelled_fasta(base / "lncrna" / "iloc_homo_train.fasta"):
        seqs[ex.sequence] = None
    return [s for s in seqs if s not in excluded]


def pretraining_sequences(root: Path | None = None) -> list[str]:
    """:func:`unlabelled_sequences` without any sequence of the promoter or lncRNA test splits:
    what the BPE tokenizer and the masked-LM backbone learn from."""
    held_out = {e.sequence for e in promoter_dataset(root)["test"]} | {e.sequence for e in lncrna_dataset(root)["test"]}
    return unlabelled_sequences(root, exclude=held_out)
