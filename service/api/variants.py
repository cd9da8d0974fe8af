"""``POST /variants/promoter``: the effect of each VCF variant on the promoter probability.

The body is a VCF (plain or bgzip) and a reference FASTA: a multipart upload with the fields
``vcf`` and ``reference`` (the FASTA plain or gzip), or, when the server has its own reference
(``DNABERT_REFERENCE_FASTA``), the ``vcf`` field alone or the VCF as the whole body. An
uploaded reference is used in place of the server's. Both fields are read as data, whatever
their file names: no path sent by a client is ever opened. The whole body is within
``max_upload_bytes`` and ``body_timeout_s``; the variants (one per ALT) within ``max_records``.

The windows, the values and the three outputs are described in
:mod:`service.contract.variant_windows`; the scoring in :mod:`service.runtime.variants`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from service import __version__
from service.api.inputs import (  # the python-multipart names as inputs.py imports them, whatever the release
    MAX_MULTIPART_PARTS,
    InvalidMultipart,
    UnsupportedMediaType,
    _MultipartFile,
    _read_body,
    parse_options_header,
    read_multipart,
)
from service.api.lifecycle import Call, Offer
from service.api.protocol import ErrorResponse
from service.api.routes import ModelQuery
from service.contract.errors import DnabertError, EmptyInput
from service.contract.reference import MemoryReference, Reference, ReferenceUnavailable, server_reference
from service.contract.tasks import PROMOTER
from service.contract.variant_windows import VariantsResponse
from service.contract.vcf import VcfHeader, VcfRecord, read_vcf_bytes
from service.contract.windows import strand_name, strands_of
from service.runtime.variants import variant_report
from service.settings import Settings

log = logging.getLogger("dnabert.service")

variants = APIRouter(tags=["variants"])
"""Variant effects: behind the API key when one is configured."""

VCF_FIELD, REFERENCE_FIELD = b"vcf", b"reference"
VCF_TYPES = ("text/plain", "text/x-vcf", "text/vcf", "application/gzip", "application/x-gzip",
             "application/octet-stream")
VCF_MEDIA = "text/x-vcf"
SOURCE = f"dnabert-serve {__version__}"


class MissingReference(DnabertError):
    code = "missing_reference"
    http_status = 422


# -- reading the body ---------------------------------------------------------------------------


@dataclass
class VariantUpload:
    """A request's VCF and the reference to read it against; its length is the number of
    variants (one per ALT), which the metrics count."""

    header: VcfHeader
    records: list[VcfRecord]
    reference: Reference

    def __len__(self) -> int:
        return sum(max(1, len(r.alts)) for r in self.records)


class _MultipartFields(_MultipartFile):
    """The parser callbacks of :mod:`service.api.inputs`, keeping the ``vcf`` and ``reference``
    fields (in memory, within the body limit) instead of ``file``."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[bytes, list[bytes]] = {}
        self._into: list[bytes] | None = None

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise InvalidMultipart("a multipart part has no Content-Disposition header")
        name = parse_options_header(disposition)[1].get(b"name")
        self._into = None
        if name in (VCF_FIELD, REFERENCE_FIELD):
            if name in self.fields:
                raise InvalidMultipart(f"more than one {name.decode()!r} field in the multipart body")
            self._into = self.fields[name] = []

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._into is not None and end > start:
            self._into.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        self._into = None


async def _multipart_fields(request: Request, settings: Settings) -> dict[bytes, bytes]:
    """The ``vcf`` and ``reference`` fields of a multipart body, parsed as it streams in."""
    sink = _MultipartFields()
    await read_multipart(request, settings, sink)
    return {name: b"".join(parts) for name, parts in sink.fields.items()}


def _server_reference(settings: Settings) -> Reference:
    """The server's reference, indexed once per process; without its path in any answer."""
    try:
        return server_reference(settings.reference_fasta)  # type: ignore[arg-type]
    except ReferenceUnavailable as exc:
        log.error("DNABERT_REFERENCE_FASTA: %s", exc.message)
        raise ReferenceUnavailable("the server's reference FASTA (DNABERT_REFERENCE_FASTA) cannot be opened; "
                                   "upload the reference in the multipart field 'reference', or see the "
                                   "server log") from None


def _uploaded_reference(data: bytes, settings: Settings) -> Reference:
    try:
        return MemoryReference.from_fasta_bytes(data, max_bytes=settings.max_upload_bytes)
    except DnabertError as exc:
        exc.message = f"field 'reference' (the reference FASTA): {exc.message}"
        exc.args = (exc.message,)
        raise


def _parse(vcf: bytes, reference: bytes | None, settings: Settings) -> VariantUpload:
    if not vcf.strip():
        raise EmptyInput("no VCF: the 'vcf' field (or the body) is empty")
    header, records = read_vcf_bytes(vcf, max_bytes=settings.max_upload_bytes, max_variants=settings.max_records)
    if reference is not None:
        ref = _uploaded_reference(reference, settings)
    elif settings.reference_fasta is not None:
        ref = _server_reference(settings)
    else:
        raise MissingReference("no reference: send the reference FASTA in the multipart field 'reference' (this "
                               "server has no DNABERT_REFERENCE_FASTA)")
    return VariantUpload(header, records, ref)


async def read_variant_upload(request: Request, settings: Settings) -> VariantUpload:
    """The VCF and the reference of a request (module docstring); parsed off the event loop."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        fields = await _multipart_fields(request, settings)
        if VCF_FIELD not in fields:
            raise EmptyInput("multipart upload without a 'vcf' field")
        vcf, reference = fields[VCF_FIELD], fields.get(REFERENCE_FIELD)
    elif media in VCF_TYPES or media == "":
        vcf, reference = await _read_body(request, settings), None
    else:
        raise UnsupportedMediaType(f"unsupported content type {media!r}: send a multipart upload with the fields "
                                   "'vcf' and 'reference', or the VCF alone (text/plain, bgzip) when the server "
                                   "has a reference")
    return await asyncio.get_running_loop().run_in_executor(None, _parse, vcf, reference, settings)


# -- the work and its outputs ---------------------------------------------------------------------


OFFERS = {
    "json": Offer("application/json", lambda r: r.response().model_dump_json()),
    "tsv": Offer("text/tab-separated-values", lambda r: r.tsv(), "text/tab-separated-values; charset=utf-8"),
    "vcf": Offer(VCF_MEDIA, lambda r: r.vcf(SOURCE), f"{VCF_MEDIA}; charset=utf-8"),
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Malformed reference FASTA (with line number), malformed multipart body, or an empty VCF",
        404: "Unknown model (the names are listed by GET /models)",
        406: "Output format not offered: format= other than json, tsv or vcf, or an Accept header that accepts "
             f"none of application/json, text/tab-separated-values, {VCF_MEDIA}",
        408: "The request body did not arrive within DNABERT_BODY_TIMEOUT_S",
        413: "Upload or decompressed size over max_upload_bytes, or more variants (one per ALT) than max_records",
        415: "Unsupported content type",
        422: "A VCF line that cannot be read (invalid_vcf, with its line number), an invalid character in the "
             "reference, no reference (missing_reference), or an invalid or unknown query parameter",
        429: "Overloaded: retry after the Retry-After header's seconds",
        503: "Not ready, or the server's reference FASTA cannot be opened (reference_unavailable)",
        504: "The request's deadline passed before its windows ran",
    }.items()
}

_BODY = {"requestBody": {"required": True, "description": (
    "A multipart upload with the VCF 4.x in the field `vcf` (plain or bgzip, recognised by its first bytes) "
    "and the reference FASTA in the field `reference` (plain or gzip). The `reference` field may be left out "
    "where the server has its own reference (DNABERT_REFERENCE_FASTA); there the VCF may also be sent as the "
    "whole body (text/plain, text/x-vcf, application/gzip or application/octet-stream). Both fields are read "
    "as data, whatever their file names: a path is never opened. Other fields are ignored."),
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object", "required": ["vcf", "reference"], "maxProperties": MAX_MULTIPART_PARTS,
            "properties": {
                "vcf": {"type": "string", "format": "binary",
                        "description": "VCF 4.0-4.5 (##fileformat line, #CHROM header line, records), plain or "
                                       "bgzip; errors name the line"},
                "reference": {"type": "string", "format": "binary",
                              "description": "reference FASTA, plain or gzip (contig names: the first word of "
                                             "each header); optional where the server has its own reference"}},
            "additionalProperties": {"type": "string", "description": "ignored"}},
        "encoding": {"vcf": {"contentType": VCF_MEDIA},
                     "reference": {"contentType": "text/x-fasta, text/plain, application/gzip"}}}}}}


@variants.post("/variants/promoter", response_model=VariantsResponse, openapi_extra=_BODY,
               responses={200: {"description": "One entry per VCF record and ALT (JSON), or TSV, or the VCF with "
                                               "DNABERT_ INFO fields",
                                "content": {"text/tab-separated-values": {"schema": {"type": "string"}},
                                            VCF_MEDIA: {"schema": {"type": "string"}}}}, **_ERRORS},
               summary="Effect of each VCF variant on the promoter probability (REF vs ALT window)")
async def variants_promoter(
        call: Call, model: ModelQuery = None,
        strand: Annotated[str, Query(description=(
            "both (each strand reported; the top-level values are the strand with the larger |delta|), + (or "
            "plus: the windows as in the reference) or - (or minus: their reverse complements)"),
            json_schema_extra={"enum": ["both", "+", "-", "plus", "minus"]})] = "both",
        format: Annotated[str | None, Query(description="json (default), tsv or vcf; or the Accept header",
                                            json_schema_extra={"enum": list(OFFERS)})] = None) -> Response:
    chosen = strand_name(strands_of(strand))  # the scan's names: '+' arriving as ' ' (form encoding) too
    return await call.run(PROMOTER, model, format, lambda upload: variant_report(
                              call.service, upload.header, upload.records, upload.reference, model, chosen),
                          offers=OFFERS, endpoint="variants/promoter", read=read_variant_upload)
