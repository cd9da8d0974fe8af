"""Jobs: work larger than one request (``docs/jobs.md``).

``POST /jobs?kind=predict|scan|variants|explain&task=...&<the endpoint's own query parameters>``
takes the input exactly as the synchronous endpoint takes it (a raw FASTA body, gzip, or a
multipart upload; for variants the ``vcf`` and ``reference`` fields, or the VCF as the body),
checks the parameters as that endpoint does (the same declarations: 422, 404, 406, 503 before
the body is read), streams the body to the job's folder on disk (gzip decompressed on the way,
within ``job_max_upload_bytes``: 413 beyond), stores the job and answers 202 with its id and URL.
The runner (:mod:`service.jobs.runner`) does the rest.

With API keys configured, a job belongs to the key that created it: every other key gets 404.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import zlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.dependencies.utils import get_dependant, request_params_to_args
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from service.api.explain import explanations
from service.api.inputs import (
    FASTA_TYPES,
    MAX_MULTIPART_PARTS,
    BodyTimeout,
    InvalidMultipart,
    MultipartParseError,
    MultipartParser,
    UnsupportedMediaType,
    _MultipartFile,
    parse_options_header,
)
from service.api.lifecycle import UnknownParameter
from service.api.protocol import ErrorResponse
from service.api.routes import _FASTA_FILE_TYPES, inference
from service.api.scan import scan
from service.api.variants import variants
from service.contract.errors import ClientClosed, DnabertError, EmptyInput, InvalidFasta, PayloadTooLarge
from service.contract.fasta import GZIP_MAGIC, StreamingGunzip
from service.contract.tasks import LNCRNA, PROMOTER
from service.contract.vcf import InvalidVcf
from service.jobs.finetune import LABELLED_FILE, finetune_parameters, training_status
from service.jobs.kinds import ENDPOINTS, FASTA_FILE, KINDS, REFERENCE_FILE, VCF_FILE
from service.jobs.runner import INPUT, Jobs, JobsUnavailable, fsync_dir
from service.jobs.store import SUCCEEDED, Job
from service.settings import Settings

jobs = APIRouter(tags=["jobs"])
"""Jobs: behind the API key when one is configured."""

VCF_TYPES = ("text/plain", "text/x-vcf", "text/vcf", "application/gzip", "application/x-gzip",
             "application/octet-stream")
_BLOCK = 1 << 20


class NoSuchJobKind(DnabertError):
    """A kind and task whose synchronous endpoint does not exist (scan of lncRNA, say)."""

    code = "not_found"
    http_status = 404


class JobNotFinished(DnabertError):
    """The result of a job that has not succeeded."""

    code = "job_not_finished"
    http_status = 409


# -- models ---------------------------------------------------------------------------------------


class JobAccepted(BaseModel):
    id: str
    url: str = Field(description="GET it for the job's state and progress")


class JobProgress(BaseModel):
    done: int
    total: int | None = Field(description="known once the input has been read through (null before)")
    unit: str = Field(description="records, windows (scan: positions x strands) or variants (one per ALT)")


class JobResultInfo(BaseModel):
    url: str
    bytes: int
    media_type: str
    format: str


class JobInfo(BaseModel):
    id: str
    kind: str
    task: str
    state: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress: JobProgress
    params: dict[str, Any] = Field(description="the endpoint's query parameters, as checked")
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int = Field(description="runs started: more than 1 after a restart resumed it")
    error: dict[str, Any] | None = Field(None, description=(
        "why it failed, in the service's error shape: code, message, and record_id and line where the "
        "input is at fault (what the synchronous endpoint answers for the same input)"))
    result: JobResultInfo | None = None
    training: dict[str, Any] | None = Field(None, description=(
        "fine-tuning jobs: the dev curve so far (one point per epoch), then the test metrics on the held-out "
        "split and the version served"))
    url: str


class JobList(BaseModel):
    jobs: list[JobInfo] = Field(description="newest first")
    next: str | None = Field(description="the next page, or null")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Malformed multipart body or gzip stream",
        404: "No such job (or it belongs to another API key); unknown model",
        406: "format= not offered by the job's endpoint",
        408: "The body stalled for longer than DNABERT_BODY_TIMEOUT_S",
        409: "The job has not succeeded (result)",
        413: "Input over DNABERT_JOB_MAX_UPLOAD_BYTES (as sent or decompressed)",
        415: "Unsupported content type",
        422: "Unknown kind, task or query parameter, an invalid parameter value",
        503: "Not ready, or jobs unavailable (the jobs folder cannot be written)",
    }.items()
}


_FILE = {"type": "string", "format": "binary"}
_BODY = {"requestBody": {"required": True, "description": (
    "The input as the kind's synchronous endpoint takes it, streamed to disk: a FASTA body (plain or gzip, "
    "recognised by its first bytes or Content-Encoding: gzip), or a multipart upload with the FASTA in the "
    "field `file`; for variants the fields `vcf` and `reference` (or the VCF as the whole body). At most "
    "DNABERT_JOB_MAX_UPLOAD_BYTES, as sent and decompressed. JSON bodies are for the synchronous endpoints."),
    "content": {
        "text/x-fasta": {"schema": {"$ref": "#/components/schemas/FastaText"},
                         "example": ">seq1\nTTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC\n"},
        "text/plain": {"schema": {"$ref": "#/components/schemas/FastaText"}},
        "application/octet-stream": {"schema": _FILE},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "maxProperties": MAX_MULTIPART_PARTS,
            "additionalProperties": {"type": "string", "description": "ignored"}, "properties": {
            "file": {**_FILE, "description": "the FASTA (for variants: the VCF, unless the field vcf is sent)"},
            "vcf": {**_FILE, "description": "variants: the VCF (as POST /variants/promoter takes it)"},
            "reference": {**_FILE, "description": "variants: the reference FASTA"}}},
            "encoding": {"file": {"contentType": _FASTA_FILE_TYPES}, "vcf": {"contentType": "text/x-vcf"},
                         "reference": {"contentType": _FASTA_FILE_TYPES}}},
    }}}


# -- helpers --------------------------------------------------------------------------------------


def _jobs(request: Request) -> Jobs:
    found = getattr(request.app.state, "jobs", None)
    if found is None:
        raise JobsUnavailable("jobs are not available: the service is not running")
    return found


def _owner(request: Request) -> str | None:
    return getattr(request.state, "key_owner", None)


def _time(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def describe(request: Request, job: Job) -> JobInfo:
    result = None
    if job.state == SUCCEEDED and job.result:
        result = JobResultInfo(url=str(request.url_for("job_result", job_id=job.id)), **job.result)
    training = None
    if job.kind == "finetune":
        found = _jobs(request)
        training = training_status(found.folder(job.id), found.result(job) if job.state == SUCCEEDED else None)
    done = job.done if training is None or job.finished else min(len(training["curve"]), job.total or 0)
    return JobInfo(id=job.id, kind=job.kind, task=job.task, state=job.state, training=training,
                   progress=JobProgress(done=done, total=job.total, unit=job.unit), params=job.params,
                   created_at=_time(job.created_at), started_at=_time(job.started_at),
                   finished_at=_time(job.finished_at), attempts=job.attempts,
                   error=job.error, result=result,
                   url=str(request.url_for("get_job", job_id=job.id)))


def _endpoint(kind: str, task: str) -> APIRoute:
    """The synchronous endpoint's route, whose query parameters a job of ``kind`` takes."""
    path = ENDPOINTS[kind].format(task=task)
    for router in (inference, scan, variants, explanations):
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path == path and "POST" in route.methods:
                return route
    raise JobsUnavailable(f"POST {path} is not served here")


_FINETUNE = get_dependant(path="/jobs", call=finetune_parameters)
"""The query parameters of a fine-tuning job, which has no synchronous endpoint."""


def job_params(request: Request, kind: str | None, task: str | None) -> tuple[str, str, dict]:
    """The job's kind, task and parameters, checked as the endpoint checks its own."""
    if kind not in KINDS:
        raise UnknownParameter(f"kind must be one of {', '.join(KINDS)}, not {str(kind)[:40]!r}")
    work, task = KINDS[kind], PROMOTER if task is None else task
    if task not in (PROMOTER, LNCRNA):
        raise UnknownParameter(f"task must be {PROMOTER} or {LNCRNA}, not {task[:40]!r}")
    if task not in work.tasks:
        raise NoSuchJobKind(f"there is no {kind} job for task {task[:40]!r}: a {kind} job's task is "
                            f"{' or '.join(work.tasks)}")
    fields = list((_FINETUNE if kind == "finetune" else _endpoint(kind, task).dependant).query_params)
    unknown = sorted(set(request.query_params) - {"kind", "task"} - {f.alias for f in fields})
    if unknown:
        raise UnknownParameter(f"unknown query parameter(s) {', '.join(repr(n[:64]) for n in unknown[:5])} for a "
                               f"{kind} job; accepted: kind, task, {', '.join(f.alias for f in fields)}")
    values, errors = request_params_to_args(fields, request.query_params)
    if errors:
        first = errors[0]
        raise UnknownParameter(f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', 'invalid')}")
    params = {k: v for k, v in values.items()}
    work.check(request.app.state.service, task, params)
    return kind, task, params


# -- spooling the input ---------------------------------------------------------------------------


def _gzip_declared(value: str | None) -> bool:
    codings = [c.strip().lower() for c in (value or "").split(",") if c.strip().lower() not in ("", "identity")]
    if not codings:
        return False
    if codings in (["gzip"], ["x-gzip"]):
        return True
    raise InvalidFasta(f"unsupported Content-Encoding {value!r}: only gzip and identity are accepted")


_HEAD = 1 << 16
"""Bytes of a spooled file checked at once (:func:`fasta_head`, :func:`vcf_head`)."""


def _line_of(data: bytes, offset: int) -> int:
    head = data[:offset]
    return head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1


def fasta_head(data: bytes) -> None:
    """Refuse at once a file that is plainly not FASTA text (binary, not UTF-8, or data before
    the first header), with the synchronous reader's error; the rest is checked when the job runs."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InvalidFasta("binary data, not FASTA text: the input contains a NUL byte", line=_line_of(data, nul))
    text = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(text) - 3:  # not a character cut at the end of the head
            raise InvalidFasta(f"not UTF-8 text: byte 0x{text[exc.start]:02x} is not valid UTF-8; send FASTA as "
                               "UTF-8 or ASCII text", line=_line_of(data, exc.start)) from None
    for number, line in enumerate(text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"), 1):
        words = line.split()
        if words and words[0][:1] != b";":
            if words[0][:1] != b">":
                raise InvalidFasta("sequence data before the first '>' header", line=number)
            return


def vcf_head(data: bytes) -> None:
    """Refuse at once a plain file that does not start as a VCF does (bgzip is checked later)."""
    if data[:2] == GZIP_MAGIC:
        return
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not first.startswith(b"##fileformat=VCF"):
        raise InvalidVcf(f"a VCF starts with '##fileformat=VCFv4.0' to 'VCFv4.5', not {first[:40]!r}", 1)


class Sink:
    """One spooled file: written as it arrives, gzip decompressed on the way when ``gunzip``
    (None: when it starts with the gzip magic), within ``limit`` bytes written; ``check`` sees
    its first :data:`_HEAD` bytes (as written) as soon as they are there."""

    def __init__(self, path: Path, limit: int, gunzip: bool | None, check=None):
        self.path, self.limit, self.gunzip, self.check = path, limit, gunzip, check
        self.file: BinaryIO = path.open("wb")
        self.size = 0
        self._head = b""
        self._inflate: StreamingGunzip | None = None
        self._checked = b"" if check is not None else None

    def write(self, data: bytes) -> None:
        if self.gunzip is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            self.gunzip = data[:2] == GZIP_MAGIC
        if self.gunzip and self._inflate is None:
            self._inflate = StreamingGunzip(self.limit)
        self._put(self._inflate.feed(data) if self._inflate is not None else data)

    def _put(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise PayloadTooLarge(f"the job's input is over the {self.limit}-byte limit "
                                  "(DNABERT_JOB_MAX_UPLOAD_BYTES), after gzip decompression")
        if self._checked is not None:
            self._checked += data[: _HEAD - len(self._checked)]
            if len(self._checked) >= _HEAD:
                self._check()
        self.file.write(data)

    def _check(self) -> None:
        head, self._checked = self._checked, None
        if head and self.check is not None:
            self.check(head)

    def abandon(self) -> None:
        """Stop writing (the upload failed; the folder is removed)."""
        self.file.close()

    def close(self) -> None:
        """The last bytes (a gzip stream must be complete), flushed to disk."""
        if self.file.closed:
            return
        if self._head:
            self._put(self._head)
            self._head = b""
        if self._inflate is not None:
            self._put(self._inflate.finish())
        if self._checked is not None:
            self._check()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class _MultipartSinks(_MultipartFile):
    """The multipart parser's callbacks, writing the wanted fields to their sinks."""

    def __init__(self, make: dict[bytes, Any]):
        super().__init__()
        self.make = make
        self.sinks: dict[bytes, Sink] = {}
        self._into: Sink | None = None

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise InvalidMultipart("a multipart part has no Content-Disposition header")
        name = parse_options_header(disposition)[1].get(b"name")
        self._into = None
        if name in self.make:
            if name in self.sinks:
                raise InvalidMultipart(f"more than one {name.decode()!r} field in the multipart body")
            self._into = self.sinks[name] = self.make[name]()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._into is not None and end > start:
            self._into.write(bytes(data[start:end]))

    def _part_end(self) -> None:
        self._into = None


async def _body(request: Request, settings: Settings) -> AsyncIterator[bytes]:
    """The body's chunks; 413 past ``job_max_upload_bytes``, 408 when it stalls for longer than
    ``body_timeout_s`` (an upload may take long, but must keep moving)."""
    limit = settings.job_max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the job limit of {limit} bytes "
                              "(DNABERT_JOB_MAX_UPLOAD_BYTES)")
    stream, size = request.stream(), 0
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), settings.body_timeout_s)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise BodyTimeout(f"the upload stalled for {settings.body_timeout_s:g} s ({size} bytes received)") from None
        except ClientDisconnect:
            raise ClientClosed("the client closed the connection before the upload was complete") from None
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the job limit of {limit} bytes (DNABERT_JOB_MAX_UPLOAD_BYTES)")
        if chunk:
            yield chunk


async def _multipart(request: Request, settings: Settings, make: dict[bytes, Any]) -> dict[bytes, Sink]:
    _, options = parse_options_header(request.headers.get("content-type", ""))
    if not options.get(b"boundary"):
        raise InvalidMultipart("multipart/form-data without a boundary parameter in the Content-Type header")
    sinks = _MultipartSinks(make)
    parser = MultipartParser(options[b"boundary"], sinks.callbacks())
    try:
        try:
            async for chunk in _body(request, settings):
                if not sinks.ended:
                    parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidMultipart(f"malformed multipart body: {str(exc).split(' at ')[0]}") from None
        if not sinks.ended:
            raise InvalidMultipart("the multipart body is truncated: it has no closing boundary")
        for sink in sinks.sinks.values():
            sink.close()
    except BaseException:
        for sink in sinks.sinks.values():
            sink.abandon()
        raise
    return sinks.sinks


async def spool(request: Request, settings: Settings, kind: str, folder: Path) -> None:
    """Write the request's input into ``folder/input`` as it arrives (module docstring)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    into, limit = folder / INPUT, settings.job_max_upload_bytes
    into.mkdir(parents=True)
    variants, finetune = kind == "variants", kind == "finetune"
    main = ((b"vcf", VCF_FILE, False, vcf_head) if variants else (b"file", LABELLED_FILE, None, None) if finetune
            else (b"file", FASTA_FILE, None, fasta_head))
    if media == "multipart/form-data":
        make = {main[0]: lambda: Sink(into / main[1], limit, main[2], main[3])}
        if variants:  # the VCF in the field 'vcf' (as the endpoint takes it), or else in 'file'
            make[b"reference"] = lambda: Sink(into / REFERENCE_FILE, limit, None, fasta_head)
            make[b"file"] = lambda: Sink(into / "file", limit, False, vcf_head)
        sinks = await _multipart(request, settings, make)
        if variants and b"vcf" not in sinks and b"file" in sinks:
            (into / "file").replace(into / VCF_FILE)
            sinks[b"vcf"] = sinks.pop(b"file")
        if main[0] not in sinks:
            raise EmptyInput(f"multipart upload without a {main[0].decode()!r} field")
    elif media in ((*VCF_TYPES, *FASTA_TYPES) if variants else (*FASTA_TYPES, "text/csv") if finetune
                   else FASTA_TYPES) or media == "":
        sink = Sink(into / main[1], limit, _gzip_declared(request.headers.get("content-encoding")) or main[2],
                    main[3])
        try:
            async for chunk in _body(request, settings):
                sink.write(chunk)
            sink.close()
        except BaseException:
            sink.abandon()
            raise
    else:
        what = "a multipart upload with the fields 'vcf' and 'reference', or the VCF" if variants else (
            "FASTA (text/plain, text/x-fasta, optionally gzip) or a multipart upload with a 'file' field")
        raise UnsupportedMediaType(f"unsupported content type {media!r} for a {kind} job: send {what}")
    await asyncio.to_thread(fsync_dir, into)


async def submit(request: Request, kind: str | None, task: str | None) -> Job:
    """Check, spool, store (module docstring)."""
    found = _jobs(request)
    kind, task, params = job_params(request, kind, task)
    await found.open()
    job = Job(id=found.new_id(), kind=kind, task=task, params=params, owner=_owner(request),
              unit=KINDS[kind].unit)
    folder = found.folder(job.id)
    try:
        await spool(request, request.app.state.settings, kind, folder)
        return await found.submit(job)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, folder, True)
        raise


def _wants_gzip(accept_encoding: str | None) -> bool:
    for part in (accept_encoding or "").split(","):
        name, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name.lower() in ("gzip", "x-gzip", "*") and q > 0:
            return True
    return False


def _gzipped(path: Path) -> Iterator[bytes]:
    deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            if out := deflate.compress(block):
                yield out
    yield deflate.flush()


def result_response(request: Request, job: Job, path: Path) -> Response:
    """The result file, gzip-compressed when the client accepts gzip."""
    if job.state != SUCCEEDED or not job.result or not path.is_file():
        raise JobNotFinished(f"job {job.id} is {job.state}: it has no result"
                             + (" yet" if job.state in ("queued", "running") else ""))
    media = job.result["media_type"]
    headers = {"Vary": "Accept-Encoding"}
    if _wants_gzip(request.headers.get("accept-encoding")):
        return StreamingResponse(_gzipped(path), media_type=media, headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(path, media_type=media, headers=headers)


# -- routes ---------------------------------------------------------------------------------------

KindQuery = Annotated[str, Query(description="predict, scan, variants, explain or finetune", json_schema_extra={
    "enum": list(KINDS)})]
TaskQuery = Annotated[str | None, Query(description="promoter (default) or lncrna-localization (predict, explain)",
                                        json_schema_extra={"enum": [PROMOTER, LNCRNA]})]
JobId = Annotated[str, PathParam(max_length=64)]


@jobs.post("/jobs", status_code=202, response_model=JobAccepted, responses=_ERRORS, openapi_extra=_BODY,
           summary="Submit a job: any query parameter of the kind's endpoint, the input as that endpoint takes it")
async def submit_job(request: Request, kind: KindQuery, task: TaskQuery = None) -> Response:
    """The body is what the synchronous endpoint takes (POST /predict/{task}, /scan/promoter,
    /variants/promoter, /explain/{task}): a FASTA body (plain or gzip) or a multipart upload; its
    other query parameters (model, format, stride, ...) are given here too. 202 with the job's URL."""
    job = await submit(request, kind, task)
    url = str(request.url_for("get_job", job_id=job.id))
    return JSONResponse({"id": job.id, "url": url}, status_code=202, headers={"Location": url})


@jobs.get("/jobs", response_model=JobList, responses=_ERRORS, summary="This key's jobs, newest first (paged)")
async def list_jobs(request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    before: Annotated[int | None, Query(ge=1, le=2**62, description="the cursor of the 'next' link")]
                    = None) -> JobList:
    found = await _jobs(request).list(_owner(request), limit + 1, before)
    page = found[:limit]
    more = len(found) > limit
    next_url = str(request.url.include_query_params(limit=limit, before=page[-1].seq)) if more else None
    return JobList(jobs=[describe(request, job) for job in page], next=next_url)


@jobs.get("/jobs/{job_id}", response_model=JobInfo, responses=_ERRORS, summary="A job's state and progress")
async def get_job(request: Request, job_id: JobId) -> JobInfo:
    return describe(request, await _jobs(request).get(job_id, _owner(request)))


@jobs.get("/jobs/{job_id}/result", responses={**_ERRORS, 200: {"description": "The result, in the format asked "
                                                                  "for at submission (gzip with Accept-Encoding)"}},
          summary="A succeeded job's result: what the synchronous endpoint answers")
async def job_result(request: Request, job_id: JobId) -> Response:
    found = _jobs(request)
    job = await found.get(job_id, _owner(request))
    return result_response(request, job, found.result(job))


@jobs.delete("/jobs/{job_id}", response_model=JobInfo, responses={**_ERRORS, 204: {"description": "Deleted"}},
             summary="Cancel an unfinished job (200, state cancelled) or delete a finished one (204); files go")
async def delete_job(request: Request, job_id: JobId) -> Response:
    job = await _jobs(request).remove(job_id, _owner(request))
    if job is None:
        return Response(status_code=204)
    return JSONResponse(describe(request, job).model_dump(mode="json"))
