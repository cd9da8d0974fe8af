"""Domain exceptions shared by the service and the training package."""

from __future__ import annotations


class DnabertError(Exception):
    """Base class of every error this project raises on purpose."""

    code = "error"


class InvalidSequence(DnabertError):
    """A record holds characters that are not nucleotides, or nothing at all."""

    code = "invalid_sequence"

    def __init__(self, record_id: str | None, message: str, position: int | None = None):
        self.record_id = record_id
        self.position = position
        where = f"record {record_id!r}: " if record_id is not None else ""
        super().__init__(where + message)


class InvalidFasta(DnabertError):
    """The FASTA text cannot be read (no header, header without sequence, ...)."""

    code = "invalid_fasta"

    def __init__(self, message: str, line: int | None = None, record_id: str | None = None):
        self.line = line
        self.record_id = record_id
        where = f"line {line}: " if line is not None else ""
        super().__init__(where + message)


class ModelArtifactError(DnabertError):
    """A model folder is missing a file, or a file does not match its card."""

    code = "model_artifact"
