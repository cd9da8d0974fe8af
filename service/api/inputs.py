"""Reading a prediction request's records: multipart upload, raw FASTA body, or JSON.

The body is read from the ASGI stream chunk by chunk and counted as it arrives, whatever its
form (raw, chunked without a Content-Length, multipart, JSON): once more than
``max_upload_bytes`` have arrived the request is refused (413) and the rest is never read, so
no request can make the service hold more than that much of its body. Multipart bodies are
parsed here with python-multipart's streaming parser: only the ``file`` field is kept (in
memory, within the same limit), nothing is spooled to disk. gzip is recognised by its magic
bytes and decompressed under the same limit (:class:`service.contract.fasta.StreamingGunzip`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from functools import partial

from fastapi import Request
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

try:  # python-multipart >= 0.0.13
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # older releases name the package 'multipart'
    from multipart.exceptions import MultipartParseError  # type: ignore[no-redef]
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

from service.api.protocol import PredictRequest
from service.contract.errors import (
    ClientClosed,
    DnabertError,
    EmptyInput,
    PayloadTooLarge,
    SequenceTooLong,
    TooManyRecords,
)
from service.contract.fasta import FastaRecord, id_preview, id_problem, read_fasta_bytes
from service.settings import Settings

FASTA_TYPES = ("text/plain", "text/x-fasta", "application/x-fasta", "application/fasta",
               "application/gzip", "application/x-gzip", "application/octet-stream")
FILE_FIELD = b"file"
MAX_MULTIPART_PARTS = 8  # the 'file' field and a few others (ignored)


class UnsupportedMediaType(DnabertError):
    code = "unsupported_media_type"
    http_status = 415


class InvalidJson(DnabertError):
    code = "invalid_json"
    http_status = 422


class InvalidMultipart(DnabertError):
    code = "invalid_multipart"
    http_status = 400


class BodyTimeout(DnabertError):
    """The body did not arrive within ``body_timeout_s`` of the start of reading it."""

    code = "body_timeout"
    http_status = 408


class ShuttingDown(DnabertError):
    """The service is shutting down: a request arriving now, or one whose body or work could not
    finish within the shutdown grace period."""

    code = "shutting_down"
    http_status = 503


def _check_length(request: Request, settings: Settings) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the {settings.max_upload_bytes}-byte limit")


async def _body_chunks(request: Request, settings: Settings) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; 413 as soon as more than the limit has arrived.

    Reading has a deadline of its own: the whole body must have arrived ``body_timeout_s`` after
    reading began, else 408 ``body_timeout`` (a client trickling its upload, or stalling half-way,
    must not hold its in-flight slot for longer). When the service's shutdown grace period is
    over (``InFlight.cut_off``), reading stops with 503 ``shutting_down``.
    """
    _check_length(request, settings)
    limit, size = settings.max_upload_bytes, 0
    loop = asyncio.get_running_loop()
    timeout = settings.body_timeout_s
    deadline = loop.time() + timeout
    gate = getattr(getattr(request.scope.get("app"), "state", None), "in_flight", None)
    cut: asyncio.Future | None = gate.cutoff_waiter() if hasattr(gate, "cutoff_waiter") else None
    stream = request.stream()
    try:
        while True:
            step = asyncio.ensure_future(anext(stream))
            try:
                await asyncio.wait({step} if cut is None else {step, cut},
                                   timeout=max(0.0, deadline - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not step.done():
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
            if step.cancelled():
                if cut is not None and cut.done():
                    raise ShuttingDown("the service is shutting down; the request body did not arrive "
                                       "in time to be served")
                raise BodyTimeout(f"the request body did not arrive within {timeout:g} s "
                                  f"({size} bytes received); send it faster or in a smaller piece")
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise ClientClosed("the client closed the connection before the request body was complete") from None
    finally:
        if cut is not None:
            cut.cancel()


async def _read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused as soon as it passes the limit (before it is all in memory)."""
    return b"".join([chunk async for chunk in _body_chunks(request, settings)])


class _MultipartFile:
    """Callbacks for :class:`MultipartParser` that keep the data of the ``file`` field only."""

    def __init__(self) -> None:
        self.parts = 0
        self.ended = False
        self.file: list[bytes] | None = None  # chunks of the 'file' field, once it has begun
        self._in_file = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_MULTIPART_PARTS:
            raise InvalidMultipart(f"more than {MAX_MULTIPART_PARTS} parts in the multipart body")
        self._headers = {}
        self._in_file = False

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise InvalidMultipart("a multipart part has no Content-Disposition header")
        _, params = parse_options_header(disposition)
        if params.get(b"name") == FILE_FIELD:
            if self.file is not None:
                raise InvalidMultipart("more than one 'file' field in the multipart body")
            self.file = []
            self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file and end > start:
            self.file.append(bytes(data[start:end]))  # type: ignore[union-attr]

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self.ended = True


async def read_multipart(request: Request, settings: Settings, sink: _MultipartFile) -> None:
    """Parse the multipart body into ``sink``'s callbacks while it streams in (within the body
    limit and deadline); the epilogue after the closing boundary is counted but ignored."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidMultipart("multipart/form-data without a boundary parameter in the Content-Type header")
    try:
        parser = MultipartParser(boundary, sink.callbacks())
    except Exception:  # noqa: BLE001 - python-multipart raises FormParserError / ValueError here
        raise InvalidMultipart("invalid multipart boundary") from None
    async for chunk in _body_chunks(request, settings):
        if sink.ended:
            continue
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidMultipart(f"malformed multipart body: {str(exc).split(' at ')[0]}") from None
    if not sink.ended:
        raise InvalidMultipart("the multipart body is truncated: it has no closing boundary")


async def _read_multipart_file(request: Request, settings: Settings) -> bytes:
    """The content of the multipart body's ``file`` field, parsed while the body streams in."""
    sink = _MultipartFile()
    await read_multipart(request, settings, sink)
    if sink.file is None:
        raise EmptyInput("multipart upload without a 'file' field")
    return b"".join(sink.file)


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``object_pairs_hook`` of :func:`json.loads`: an object, unless a key appears twice in it."""
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: object) -> bool:
    """Whether any string (key or value) of a parsed JSON document holds a lone surrogate
    (``"\\ud800"``): such text cannot be encoded in an answer."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _parse_json(body: bytes) -> object:
    """The JSON document of ``body`` (strict UTF-8), refusing a key repeated in any object:
    with a repeated key, every JSON parser silently keeps one of the values (the last one, for
    ``"sequences"``), so records would be dropped without a word."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"invalid JSON body: byte 0x{body[exc.start]:02x} at offset {exc.start} is not "
                          "valid UTF-8") from None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as dup:
        raise InvalidJson(f"invalid JSON body: the key {id_preview(dup.key)} appears more than once in one "
                          "object; only one of its values would be read, so the body is refused") from None
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"invalid JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # numbers over the digit limit, nesting too deep
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise InvalidJson(f"invalid JSON body: {reason}") from None
    if _lone_surrogate(doc):
        raise InvalidJson("invalid JSON body: a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
    return doc


def _json_records(body: bytes, settings: Settings) -> list[FastaRecord]:
    doc = _parse_json(body)
    try:
        req = PredictRequest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        if len(where) > 200:  # an unknown key can be as long as the body: not echoed whole
            where = where[:200] + "..."
        raise InvalidJson(f"invalid JSON body at {where or 'body'}: {first.get('msg')}") from None
    if len(req.sequences) > settings.max_records:
        raise TooManyRecords(f"more than {settings.max_records} records")
    seen: set[str] = set()
    records = []
    for i, item in enumerate(req.sequences):
        problem = id_problem(item.id)
        if problem is not None:
            raise InvalidJson(f"sequences.{i}.id: record id {id_preview(item.id)} holds a {problem}; ids are "
                              "echoed in JSON, CSV and TSV answers and may not contain control or "
                              "bidirectional-text characters")
        if item.id in seen:
            raise InvalidJson(f"duplicate record id {item.id!r}", record_id=item.id)
        seen.add(item.id)
        seq = "".join(item.sequence.split())
        if len(seq) > settings.max_sequence_length:
            raise SequenceTooLong(f"record {item.id!r} is longer than {settings.max_sequence_length} nt",
                                  record_id=item.id)
        records.append(FastaRecord(item.id, item.id, item.sequence, 0))  # JSON: no line numbers
    return records


async def read_records(request: Request, settings: Settings, executor=None) -> list[FastaRecord]:
    """Records of the request, whatever its form; errors are :class:`DnabertError`s."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    loop = asyncio.get_running_loop()
    parse = partial(read_fasta_bytes, max_bytes=settings.max_upload_bytes,
                    max_records=settings.max_records, max_sequence_length=settings.max_sequence_length)
    if media == "multipart/form-data":
        data = await _read_multipart_file(request, settings)
        # gzip is recognised by its magic bytes, whatever the file is called
        return await loop.run_in_executor(executor, parse, data)
    if media == "application/json":
        body = await _read_body(request, settings)
        if not body.strip():
            raise EmptyInput("no records: the body is empty")
        return await loop.run_in_executor(executor, _json_records, body, settings)
    if media in FASTA_TYPES or media == "":
        body = await _read_body(request, settings)
        return await loop.run_in_executor(
            executor, partial(parse, body, content_encoding=request.headers.get("content-encoding")))
    raise UnsupportedMediaType(
        f"unsupported content type {media!r}: send FASTA (text/plain, text/x-fasta, optionally gzip), "
        "a multipart upload with a 'file' field, or application/json")


async def read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused past ``max_upload_bytes`` and at the body deadline."""
    return await _read_body(request, settings)


def parse_json(body: bytes) -> object:
    """A JSON body, strict: UTF-8, no repeated key, no lone surrogate (:class:`InvalidJson`)."""
    return _parse_json(body)
