"""Domain exceptions shared by the service and the training package.

Each error has a stable ``code`` and the HTTP status the service answers it with; the service
renders all of them through one handler into one error shape.
"""

from __future__ import annotations


class DnabertError(Exception):
    """Base class of every error this project raises on purpose."""

    code = "error"
    http_status = 500

    def __init__(self, message: str, *, record_id: str | None = None, line: int | None = None):
        self.message = message
        self.record_id = record_id
        self.line = line
        super().__init__(message)


class InvalidSequence(DnabertError):
    """A record holds characters that are not nucleotides, or nothing at all."""

    code = "invalid_sequence"
    http_status = 422

    def __init__(self, record_id: str | None, message: str, position: int | None = None,
                 line: int | None = None):
        self.position = position
        where = f"record {record_id!r}: " if record_id is not None else ""
        super().__init__(where + message, record_id=record_id, line=line)


class SequenceTooLong(DnabertError):
    code = "sequence_too_long"
    http_status = 422


class InvalidFasta(DnabertError):
    """The FASTA text cannot be read (no header, header without sequence, ...)."""

    code = "invalid_fasta"
    http_status = 400

    def __init__(self, message: str, line: int | None = None, record_id: str | None = None):
        where = f"line {line}: " if line is not None else ""
        super().__init__(where + message, record_id=record_id, line=line)


class EmptyInput(DnabertError):
    code = "empty_input"
    http_status = 400


class TooManyRecords(DnabertError):
    code = "too_many_records"
    http_status = 413


class PayloadTooLarge(DnabertError):
    code = "payload_too_large"
    http_status = 413


class Overloaded(DnabertError):
    """The queue is full: try again after ``retry_after`` seconds."""

    code = "overloaded"
    http_status = 429

    def __init__(self, message: str, retry_after: float = 1.0):
        self.retry_after = retry_after
        super().__init__(message)


class RequestTimeout(DnabertError):
    code = "timeout"
    http_status = 504


class InferenceFailed(DnabertError):
    """The batch that held this request's sequences failed in the runtime."""

    code = "inference_failed"
    http_status = 500


class ModelNotFound(DnabertError):
    code = "model_not_found"
    http_status = 404


class NotReady(DnabertError):
    code = "not_ready"
    http_status = 503


class ModelUnavailable(DnabertError):
    """The model exists but failed to load or warm up (only with ``allow_partial_start``)."""

    code = "model_unavailable"
    http_status = 503


class Unauthorized(DnabertError):
    """An API key is configured and the request has no valid ``Authorization: Bearer`` key."""

    code = "unauthorized"
    http_status = 401

    def __init__(self, message: str, *, token_given: bool = False):
        self.token_given = token_given
        super().__init__(message)


class ClientClosed(DnabertError):
    """The client went away before the answer was ready; nobody reads this response."""

    code = "client_closed_request"
    http_status = 499


class ModelArtifactError(DnabertError):
    """A model folder is missing a file, or a file does not match its card."""

    code = "model_artifact"
    http_status = 500


class NoEmbedding(DnabertError):
    """The model asked for has no backbone graph to embed with (a one-hot baseline, ``all``,
    or a folder exported before backbone graphs were written)."""

    code = "no_embedding"
    http_status = 422
