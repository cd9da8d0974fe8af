"""Records -> model input: normalise each sequence, tokenize it, note what was found.

The first stage of the one prediction path (records -> normalise -> tokenize -> batcher ->
session -> activation -> results), shared by the service, the offline commands, evaluation
and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.contract.errors import DnabertError
from service.contract.fasta import FastaRecord
from service.contract.sequence import normalize_sequence
from service.contract.tokens import SequenceTokenizerLike


@dataclass
class Prepared:
    """Records normalised and tokenized for one tokenizer, in input order."""

    ids: list[str]
    lengths: list[int]
    ambiguous: list[int]
    rna: list[bool]
    tokens: list[list[int]]
    truncated: list[bool]

    def flags(self, i: int) -> list[str]:
        flags = []
        if self.ambiguous[i]:
            flags.append("ambiguous_bases")
        if self.truncated[i]:
            flags.append("truncated")
        if self.rna[i]:
            flags.append("rna_input")
        return flags


def prepare(records: Sequence[FastaRecord], tokenizer: SequenceTokenizerLike) -> Prepared:
    """Normalise (errors name the record and its line) and tokenize, in input order."""
    norm = []
    for r in records:
        try:
            norm.append(normalize_sequence(r.sequence, r.id))
        except DnabertError as exc:
            exc.line = exc.line or r.line or None  # JSON records have no line (0)
            raise
    encoded = tokenizer.encode([n.sequence for n in norm])
    return Prepared(
        ids=[r.id for r in records],
        lengths=[len(n) for n in norm],
        ambiguous=[n.n_ambiguous for n in norm],
        rna=[("U" in r.sequence or "u" in r.sequence) for r in records],
        tokens=[e.ids for e in encoded],
        truncated=[e.truncated for e in encoded],
    )


def records_of(sequences: Sequence[str], ids: Sequence[str] | None = None) -> list[FastaRecord]:
    """Plain sequences as records (ids ``0``, ``1``, ... unless given; no line numbers)."""
    ids = list(ids) if ids is not None else [str(i) for i in range(len(sequences))]
    return [FastaRecord(rid, rid, seq, 0) for rid, seq in zip(ids, sequences, strict=True)]
