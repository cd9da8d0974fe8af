"""Reference genomes for variant windows: one small interface, two implementations.

:class:`Reference` is what window building needs: the contigs and their lengths, and the bases
of a 0-based half-open interval (``fetch(chrom, start0, end0)``, BED-style), upper-case with
IUPAC ambiguity codes read as ``N`` (as :func:`service.contract.sequence.normalize_sequence`
reads them), so that REF comparison and the windows see what the model will see.

* :class:`MemoryReference`: a FASTA uploaded with a request (plain or gzip, parsed by the strict
  FASTA reader, every contig checked and normalised once; within the upload limit).
* :class:`FaidxReference`: a FASTA file on the server or the offline machine, indexed with
  pyfaidx and read by seek, never loaded whole. pyfaidx keeps its ``.fai`` next to the FASTA;
  where that folder is read-only (a mounted genome) and no up-to-date ``.fai`` is there, the
  index is built in a temporary folder of our own instead, and removed by :meth:`close`.
  :func:`server_reference` opens the server's one reference (``DNABERT_REFERENCE_FASTA``) once
  per process, on first use.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from service.contract.errors import DnabertError, InvalidSequence
from service.contract.fasta import read_fasta_bytes
from service.contract.sequence import AMBIGUITY_CODES, normalize_sequence

__all__ = ["FaidxReference", "MemoryReference", "Reference", "ReferenceUnavailable", "server_reference"]

log = logging.getLogger("dnabert.reference")
_UPPER_N = str.maketrans({**{c: "N" for c in AMBIGUITY_CODES}, **{c.lower(): "N" for c in AMBIGUITY_CODES},
                          "a": "A", "c": "C", "g": "G", "t": "T", "u": "T", "U": "T"})


class ReferenceUnavailable(DnabertError):
    """The server's reference FASTA cannot be opened or indexed (a configuration problem)."""

    code = "reference_unavailable"
    http_status = 503


class Reference(ABC):
    """Contigs by name; bases by 0-based half-open interval."""

    @property
    @abstractmethod
    def contigs(self) -> Mapping[str, int]:
        """Contig name -> length (bases)."""

    def length(self, chrom: str) -> int | None:
        """The contig's length, None when the reference has no such contig."""
        return self.contigs.get(chrom)

    @abstractmethod
    def fetch(self, chrom: str, start0: int, end0: int) -> str:
        """Bases ``[start0, end0)`` of ``chrom`` (0 <= start0 <= end0 <= length), upper-case,
        ambiguity codes as ``N``."""

    def close(self) -> None:  # noqa: B027 - optional: only a file-backed reference has anything to release
        """Release files (nothing to do for an in-memory reference)."""


class MemoryReference(Reference):
    """A reference held in memory: the contigs of an uploaded FASTA."""

    def __init__(self, sequences: Mapping[str, str]):
        self._sequences = dict(sequences)
        self._lengths = {name: len(seq) for name, seq in self._sequences.items()}

    @classmethod
    def from_fasta_bytes(cls, data: bytes, *, max_bytes: int, max_contigs: int | None = None) -> MemoryReference:
        """Parse a FASTA (plain or gzip); contig names are the first word of each header. An
        invalid character is an :class:`InvalidSequence` naming the contig and the line."""
        contigs = {}
        for record in read_fasta_bytes(data, max_bytes=max_bytes, max_records=max_contigs):
            try:
                contigs[record.id] = normalize_sequence(record.sequence, record.id).sequence
            except InvalidSequence as exc:
                exc.line = record.line_of(exc.position) if exc.position else record.line
                raise
        return cls(contigs)

    @property
    def contigs(self) -> Mapping[str, int]:
        return self._lengths

    def fetch(self, chrom: str, start0: int, end0: int) -> str:
        _check_interval(chrom, start0, end0, self._lengths.get(chrom))
        return self._sequences[chrom][start0:end0]


class FaidxReference(Reference):
    """A FASTA file read through its ``.fai`` index (pyfaidx); safe to share between threads."""

    def __init__(self, path: str | os.PathLike):
        import pyfaidx  # a runtime dependency; imported here so that the contract stays light

        self.path = Path(path)
        self._tmp: Path | None = None
        self._lock = threading.Lock()
        if not self.path.is_file():
            raise ReferenceUnavailable(f"reference FASTA {self.path} is not a file")
        try:
            try:
                self._faidx = self._open(pyfaidx, self.path.with_name(self.path.name + ".fai"))
            except OSError:  # pyfaidx could not write the .fai beside the FASTA: a read-only folder
                self._tmp = Path(tempfile.mkdtemp(prefix="dnabert-fai-"))
                log.info("cannot write an index beside %s: indexing it in %s", self.path, self._tmp)
                self._faidx = self._open(pyfaidx, self._tmp / (self.path.name + ".fai"))
        except (pyfaidx.FastaIndexingError, pyfaidx.FastaNotFoundError, pyfaidx.UnsupportedCompressionFormat,
                OSError, ValueError) as exc:
            self.close()
            raise ReferenceUnavailable(f"reference FASTA {self.path} cannot be indexed: {exc}") from None
        self._lengths = {name: rec.rlen for name, rec in self._faidx.index.items()}

    def _open(self, pyfaidx, index: Path):
        # rebuild: a .fai older than the FASTA is rebuilt (an OSError where it cannot be written)
        return pyfaidx.Faidx(str(self.path), indexname=str(index), rebuild=True, as_raw=True,
                             sequence_always_upper=True)

    @property
    def contigs(self) -> Mapping[str, int]:
        return self._lengths

    def fetch(self, chrom: str, start0: int, end0: int) -> str:
        _check_interval(chrom, start0, end0, self._lengths.get(chrom))
        if start0 == end0:
            return ""
        with self._lock:  # one file handle: seeks and reads must not interleave
            text = str(self._faidx.fetch(chrom, start0 + 1, end0))
        return text.translate(_UPPER_N)

    def close(self) -> None:
        faidx = getattr(self, "_faidx", None)
        if faidx is not None:
            faidx.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _check_interval(chrom: str, start0: int, end0: int, length: int | None) -> None:
    if length is None:
        raise KeyError(chrom)
    if not 0 <= start0 <= end0 <= length:
        raise IndexError(f"{chrom}:[{start0}, {end0}) is outside the contig (length {length})")


_server: dict[str, FaidxReference] = {}
_server_lock = threading.Lock()


def server_reference(path: str | os.PathLike) -> FaidxReference:
    """The reference at ``path``, indexed once per process (later calls share it). Blocking:
    call it off the event loop; indexing a genome the first time takes a while."""
    key = os.fspath(path)
    with _server_lock:
        ref = _server.get(key)
        if ref is None:
            ref = _server[key] = FaidxReference(key)
        return ref
