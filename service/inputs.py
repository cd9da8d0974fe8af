"""Reading a prediction request's records: multipart upload, raw FASTA body, or JSON."""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.errors import DnabertError, EmptyInput, PayloadTooLarge, SequenceTooLong, TooManyRecords
from service.fasta import FastaRecord, read_fasta_bytes
from service.protocol import PredictRequest
from service.settings import Settings

FASTA_TYPES = ("text/plain", "text/x-fasta", "application/x-fasta", "application/fasta",
               "application/gzip", "application/x-gzip", "application/octet-stream")


class UnsupportedMediaType(DnabertError):
    code = "unsupported_media_type"
    http_status = 415


class InvalidJson(DnabertError):
    code = "invalid_json"
    http_status = 422


def _check_length(request: Request, settings: Settings) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the {settings.max_upload_bytes}-byte limit")


async def _read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused as soon as it passes the limit (before it is all in memory)."""
    _check_length(request, settings)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > settings.max_upload_bytes:
            raise PayloadTooLarge(f"request body is over the {settings.max_upload_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_records(body: bytes, settings: Settings) -> list[FastaRecord]:
    try:
        req = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidJson(f"invalid JSON body at {where or 'body'}: {first.get('msg')}") from None
    if len(req.sequences) > settings.max_records:
        raise TooManyRecords(f"more than {settings.max_records} records")
    seen: set[str] = set()
    records = []
    for item in req.sequences:
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
        _check_length(request, settings)
        form = await request.form(max_files=1, max_fields=8)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise EmptyInput("multipart upload without a 'file' field")
            data = await upload.read()
        finally:
            await form.close()
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
