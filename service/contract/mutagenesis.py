"""In-silico mutagenesis (ISM): every single-base mutant of a sequence, and what the changes of
the model's score at each of them say about each position.

Pure logic, shared by ``POST /explain/...`` and ``dnabert-serve explain`` (both score through
:mod:`service.runtime.explain`, which runs the reference and its mutants through the one
prediction path). Conventions, written once here:

* **Mutants** of a normalised sequence (:func:`service.contract.sequence.normalize_sequence`:
  upper case, ``U`` -> ``T``, ambiguity codes -> ``N``), in a fixed order: position 0, 1, ...,
  and at each position the bases ``A C G T`` in that order, leaving out the reference base. A
  position that is ``N`` has no reference base: all four bases are substituted there (so a
  sequence of length L with n ``N`` has ``3 L + n`` mutants), and its row of the matrix has no
  zero; such positions are listed as ``ambiguous_positions``.
* **Changes**: an L x 4 matrix per label, columns in ``A C G T`` order, entry = score(mutant) -
  score(reference), exactly 0 at the reference base. The score is what ``/predict`` reports for
  the same sequence: the promoter probability (``all``: the mean of the five variants), or each
  lncRNA label's sigmoid score.
* **Importance** of a position = the largest \\|change\\| over its substitutions; **mean change**
  = the mean of its substitutions' changes (3, or 4 at an ``N``), signed: negative where
  mutating the base lowers the score on average (the base supports the prediction).
* **Input length**: a record is explained up to the model's input length in nucleotides
  (:func:`input_length`): the card's ``tokenization.max_nucleotides`` (lncRNA: 2,292 nt), else
  the window the model was trained on: the promoter models were trained on 300 bp windows
  (their card's ``training.data.name`` is ``promoter_300bp``; the rule is the scan's,
  :func:`service.contract.windows.window_length`).
* **bedGraph**: one track per record (and per label for lncRNA), ``chrom`` = the record id,
  0-based half-open positions along the record, value = importance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from service.contract.card import ModelCard
from service.contract.errors import DnabertError, SequenceTooLong
from service.contract.sequence import AMBIGUITY_CODES
from service.contract.windows import window_length

BASES = "ACGT"
"""The columns of every change matrix, in this order."""

_BASE_INDEX = {b: i for i, b in enumerate(BASES)}
_AMBIGUOUS_RAW = frozenset(AMBIGUITY_CODES | {c.lower() for c in AMBIGUITY_CODES})


class TooManyMutants(DnabertError):
    """A request whose records have more single-base mutants in all than the server scores for one
    request (``max_mutants``); offline there is no limit."""

    code = "too_many_mutants"
    http_status = 413


def input_length(card: ModelCard) -> int:
    """The longest record, in nucleotides, that the model reads whole: ``max_nucleotides`` of the
    card's tokenization (lncRNA: 2,292), else the window it was trained on
    (:func:`service.contract.windows.window_length`: promoter 300 bp)."""
    return card.tokenization.max_nucleotides or window_length(card)


def raw_counts(raw: str) -> tuple[int, int]:
    """(length, ambiguous bases) of a record's raw sequence as normalisation will count them
    (whitespace removed; N and the IUPAC ambiguity codes, any case), without normalising it, so
    that limits are checked before any work (a character normalisation refuses is reported later)."""
    text = "".join(raw.split())
    return len(text), sum(c in _AMBIGUOUS_RAW for c in text)


def mutant_count(length: int, ambiguous: int) -> int:
    """Single-base mutants of a sequence: 3 per base, 4 per ``N``; none when no base is known
    (such a record is not scored, as by ``/predict``, so there is nothing to explain)."""
    return 0 if ambiguous >= length else 3 * length + ambiguous


def check_limits(records: Sequence, max_length: int, max_mutants: int | None) -> list[int]:
    """The mutant count of each record (``FastaRecord``-like: ``.id``, ``.sequence``), after
    refusing a record longer than ``max_length`` (422, naming it and the limit) and, when
    ``max_mutants`` is given, a request with more mutants in all (413, naming the limit and the
    count)."""
    counts = []
    for r in records:
        length, ambiguous = raw_counts(r.sequence)
        if length > max_length:
            raise SequenceTooLong(
                f"record {r.id!r} has {length} nucleotides; explanations take records up to the model's "
                f"input length, {max_length} nt (split it, or explain a window of it)",
                record_id=r.id, line=getattr(r, "line", None) or None)
        counts.append(mutant_count(length, ambiguous))
    total = sum(counts)
    if max_mutants is not None and total > max_mutants:
        raise TooManyMutants(
            f"these records have {total} single-base mutants in all; one request scores at most "
            f"{max_mutants} (max_mutants, DNABERT_MAX_MUTANTS): send fewer or shorter records, or use "
            "the offline command dnabert-serve explain, which has no limit")
    return counts


@dataclass(frozen=True)
class Mutagenesis:
    """The mutants of one normalised sequence, in the fixed order: ``positions[j]`` is the 0-based
    position of mutant ``j`` and ``bases[j]`` its base's column (0-3 for A, C, G, T)."""

    sequence: str
    positions: np.ndarray
    bases: np.ndarray

    @classmethod
    def of(cls, sequence: str) -> Mutagenesis:
        """Every single-base mutant of ``sequence`` (normalised: only A, C, G, T and N)."""
        ref = np.array([_BASE_INDEX.get(b, -1) for b in sequence], dtype=np.int64)  # -1: N
        grid = np.broadcast_to(np.arange(4), (len(sequence), 4))
        keep = grid != ref[:, None]
        positions, bases = np.nonzero(keep)
        return cls(sequence, positions, bases)

    def __len__(self) -> int:
        return len(self.positions)

    def mutants(self, start: int = 0, stop: int | None = None) -> list[str]:
        """The mutant sequences ``start:stop``, built when asked for (a chunk at a time)."""
        s = self.sequence
        return [s[:p] + BASES[b] + s[p + 1:]
                for p, b in zip(self.positions[start:stop].tolist(), self.bases[start:stop].tolist())]

    @property
    def ambiguous_positions(self) -> list[int]:
        """0-based positions that are ``N`` (all four bases substituted there)."""
        return [i for i, b in enumerate(self.sequence) if b not in _BASE_INDEX]

    def changes(self, reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(L, 4, k): score(mutant) - score(reference) at each mutant's position and base, 0 at
        the reference base. ``reference`` is (k,), ``scores`` (len(self), k), in mutant order."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape[0] != len(self):
            raise ValueError(f"{scores.shape[0]} scores for {len(self)} mutants")
        out = np.zeros((len(self.sequence), 4, scores.shape[1]))
        out[self.positions, self.bases] = scores - np.asarray(reference, dtype=np.float64)
        return out

    def substitutions(self) -> np.ndarray:
        """(L,): the mutants at each position (3, or 4 at an ``N``)."""
        return np.bincount(self.positions, minlength=len(self.sequence))


def importance(changes: np.ndarray) -> np.ndarray:
    """(L, k): the largest |change| at each position, per label."""
    return np.abs(changes).max(axis=1)


def mean_change(changes: np.ndarray, substitutions: np.ndarray) -> np.ndarray:
    """(L, k): the mean change over each position's substitutions (the reference entry, 0, is
    not one of them)."""
    return changes.sum(axis=1) / np.maximum(substitutions, 1)[:, None]


@dataclass
class Explanation:
    """One record explained, or (``reference`` None) not scored: no A, C, G or T in it."""

    id: str
    sequence: str
    labels: tuple[str, ...]
    """The score's labels: ``("promoter",)`` (the probability), or the lncRNA labels."""
    reference: np.ndarray | None
    """(k,) the reference sequence's scores."""
    changes: np.ndarray | None
    """(L, 4, k), see :meth:`Mutagenesis.changes`."""
    substitutions: np.ndarray
    flags: list[str] = field(default_factory=list)
    ambiguous_positions: list[int] = field(default_factory=list)

    @property
    def importance(self) -> np.ndarray | None:
        return None if self.changes is None else importance(self.changes)

    @property
    def mean_change(self) -> np.ndarray | None:
        return None if self.changes is None else mean_change(self.changes, self.substitutions)

    @property
    def mutants(self) -> int:
        return int(self.substitutions.sum()) if self.changes is not None else 0

    def label_index(self, label: str | None) -> int:
        """The column of ``label`` (None: the first label)."""
        if label is None:
            return 0
        try:
            return self.labels.index(label)
        except ValueError:
            raise ValueError(f"unknown label {label!r}; expected one of {', '.join(self.labels)}") from None

    def to_json(self) -> dict:
        """The JSON entry of this record. One label (promoter): ``reference`` is the score,
        ``changes`` L x 4, ``importance`` and ``mean_change`` length L; several labels: each of
        them is an object keyed by label."""
        entry: dict = {"id": self.id, "length": len(self.sequence), "sequence": self.sequence,
                       "mutants": self.mutants}
        imp, mean = self.importance, self.mean_change
        fields = {"reference": None, "changes": None, "importance": None, "mean_change": None}
        if self.changes is not None:
            per_label = [{"reference": float(self.reference[j]), "changes": self.changes[:, :, j].tolist(),
                          "importance": imp[:, j].tolist(), "mean_change": mean[:, j].tolist()}
                         for j in range(len(self.labels))]
            fields = per_label[0] if len(self.labels) == 1 else {
                key: {label: values[key] for label, values in zip(self.labels, per_label)} for key in fields}
        entry.update(fields)
        entry["ambiguous_positions"] = self.ambiguous_positions
        entry["flags"] = self.flags
        return entry


def explanations_json(explanations: Sequence[Explanation], task: str, model: str) -> str:
    """The JSON answer: the model, the column order and a ``results`` list, one entry per record."""
    return json.dumps({"task": task, "model": model, "bases": list(BASES), "count": len(explanations),
                       "results": [e.to_json() for e in explanations]}, allow_nan=False)


def _chrom(record_id: str) -> str:
    """A record id as a bedGraph ``chrom`` (one field: whitespace would split it)."""
    return re.sub(r"\s", "_", record_id) or "."


def importance_bedgraph(explanations: Sequence[Explanation], model: str, label: str | None = None) -> str:
    """bedGraph (0-based half-open, one base per line) of each record's importance: one track per
    record and label (``label`` given: that label only). A record that was not scored gets a track
    with no data lines."""
    lines: list[str] = []
    for e in explanations:
        columns = range(len(e.labels)) if label is None else [e.label_index(label)]
        imp = e.importance
        for j in columns:
            name = f"{e.id} {e.labels[j]}" if len(e.labels) > 1 else e.id
            name = name.replace('"', "'")
            lines.append(f'track type=bedGraph name="{name} ISM importance" description="{model}: largest '
                         f'|change| of the {e.labels[j]} score over the substitutions at each position '
                         f'(0-based)" visibility=full autoScale=on')
            if imp is None:
                continue
            chrom = _chrom(e.id)
            lines.extend(f"{chrom}\t{i}\t{i + 1}\t{v:.6g}" for i, v in enumerate(imp[:, j].tolist()))
    return "\n".join(lines) + "\n"
