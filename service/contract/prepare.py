"""Records -> model input: normalise each sequence, tokenize it, note what was found.

The first stage of the one prediction path (records -> normalise -> tokenize -> batcher ->
session -> activation -> results), shared by the service, the offline commands, evaluation
and the benchmarks.

Besides normalising (:func:`service.contract.sequence.normalize_sequence`), this stage refuses
records that look like protein (:func:`~service.contract.sequence.looks_like_protein`) and notes
the records that carry no information: a record whose bases are all ``N`` (or other ambiguity
codes) is still tokenized and run with its batch, but :meth:`Prepared.scored` is false for it
and the response builders give it no score and no label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.contract.errors import DnabertError, InvalidSequence
from service.contract.fasta import FastaRecord
from service.contract.sequence import (
    MOSTLY_AMBIGUOUS_FRACTION,
    NormalizedSequence,
    looks_like_protein,
    normalize_sequence,
    protein_error,
)
from service.contract.tokens import SequenceTokenizerLike

# Flags a record can carry (in this order).
AMBIGUOUS_BASES = "ambiguous_bases"  # at least one N or other ambiguity code
NO_INFORMATIVE_BASES = "no_informative_bases"  # only N / ambiguity codes: not scored
MOSTLY_AMBIGUOUS = "mostly_ambiguous"  # more than MOSTLY_AMBIGUOUS_FRACTION ambiguous; scored
TRUNCATED = "truncated"
RNA_INPUT = "rna_input"


@dataclass
class Prepared:
    """Records normalised and tokenized for one tokenizer, in input order."""

    ids: list[str]
    lengths: list[int]
    ambiguous: list[int]
    rna: list[bool]
    tokens: list[list[int]]
    truncated: list[bool]

    def scored(self, i: int) -> bool:
        """Whether record ``i`` has at least one A, C, G or T, so that its score means something."""
        return self.ambiguous[i] < self.lengths[i]

    def mostly_ambiguous(self, i: int) -> bool:
        """Scored, but more than :data:`MOSTLY_AMBIGUOUS_FRACTION` of its bases are ambiguous."""
        return self.scored(i) and self.ambiguous[i] > MOSTLY_AMBIGUOUS_FRACTION * self.lengths[i]

    def flags(self, i: int) -> list[str]:
        flags = []
        if self.ambiguous[i]:
            flags.append(AMBIGUOUS_BASES)
            if not self.scored(i):
                flags.append(NO_INFORMATIVE_BASES)
            elif self.mostly_ambiguous(i):
                flags.append(MOSTLY_AMBIGUOUS)
        if self.truncated[i]:
            flags.append(TRUNCATED)
        if self.rna[i]:
            flags.append(RNA_INPUT)
        return flags


def _locate(exc: DnabertError, record: FastaRecord) -> None:
    """Give a record's error the line of the file it is about (JSON records have none: line 0).

    An invalid character is on one of the record's sequence lines: the line that holds it; any
    other problem of the record is reported at its header line.
    """
    if exc.line is not None or not record.line:
        return
    position = exc.position if isinstance(exc, InvalidSequence) else None
    exc.line = record.line_of(position) if position else record.line


def _normalise(records: Sequence[FastaRecord]) -> list[NormalizedSequence]:
    norm = []
    append = norm.append
    for r in records:
        try:
            n = normalize_sequence(r.sequence, r.id)
            if n.n_codes and looks_like_protein(n):  # no ambiguity code other than N: not protein
                raise protein_error(n, r.id)
        except DnabertError as exc:
            _locate(exc, r)
            raise
        append(n)
    return norm


def prepare(records: Sequence[FastaRecord], tokenizer: SequenceTokenizerLike) -> Prepared:
    """Normalise (errors name the record and its line), refuse protein, tokenize, in input order."""
    norm = _normalise(records)
    encoded = tokenizer.encode([n.sequence for n in norm])
    return Prepared(
        ids=[r.id for r in records],
        lengths=[len(n.sequence) for n in norm],
        ambiguous=[n.n_ambiguous for n in norm],
        rna=[("U" in r.sequence or "u" in r.sequence) for r in records],
        tokens=[e.ids for e in encoded],
        truncated=[e.truncated for e in encoded],
    )


def records_of(sequences: Sequence[str], ids: Sequence[str] | None = None) -> list[FastaRecord]:
    """Plain sequences as records (ids ``0``, ``1``, ... unless given; no line numbers)."""
    ids = list(ids) if ids is not None else [str(i) for i in range(len(sequences))]
    return [FastaRecord(rid, rid, seq, 0) for rid, seq in zip(ids, sequences, strict=True)]
