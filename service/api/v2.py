"""The Open Inference Protocol (KServe v2) over HTTP/REST, as Triton's clients speak it.

Every served model is a v2 model named ``<task>-<model>``: ``promoter-cnn_bilstm_max``,
``promoter-onehot_cnn``, ``promoter-all`` (the mean of the five DNABERT-2 variants),
``lncrna-localization-lncrna``. Each has one version, ``1``, and one input: ``sequence``, BYTES,
shape ``[N]`` (or ``[N, 1]``), one DNA/RNA sequence per element. Its outputs:

* promoter: ``probability`` FP32 ``[N]``, P(promoter), what ``POST /predict/promoter`` answers
  as ``probability``; ``promoter-all`` adds ``variant_probabilities`` FP32 ``[N, k]``, one
  column per ensemble member in the order base, cnn, bilstm, cnn_bilstm_max, cnn_bilstm_avg
  (those loaded);
* lncRNA: ``scores`` FP32 ``[N, 3]``, the columns nucleus, cytoplasm, extracellular_vesicle,
  what ``POST /predict/lncrna-localization`` answers as ``scores``;
* both: ``scored`` BOOL ``[N]``. A sequence without any A, C, G or T (all ``N``) is answered,
  not refused, and not scored (``/predict`` answers it with null scores): ``scored`` is false
  and its FP32 values are NaN, written ``null`` in JSON (which has no NaN).

The work goes through the one request lifecycle (:mod:`service.api.lifecycle`) and the one
prediction path (:meth:`InferenceService.predict`): the same batching, admission (429),
deadlines (504), limits (413) and metrics (endpoint ``v2/<task>``) as ``/predict``.

Requests: the JSON form, and Triton's binary tensor extension (``binary_tensor_data``): with an
``Inference-Header-Content-Length`` header, the body is that many bytes of JSON followed by the
inputs whose ``parameters.binary_data_size`` is set (BYTES: a 4-byte little-endian length
before each element). Outputs are answered in JSON, or in binary where the request asks for it
(``outputs[].parameters.binary_data``, or ``parameters.binary_data_output`` for every output):
then the answer is ``application/octet-stream``, its ``Inference-Header-Content-Length`` header
giving the length of the JSON before the raw little-endian tensors. A gzip or deflate request
body (``Content-Encoding``) is decompressed within the same size limit; answers are not
compressed. Not supported, and refused with 400 naming what was asked: shared memory, the
classification extension, sequence batching, other request parameters (``priority``,
``timeout``, ...).

Errors are ``{"error": "<message>"}`` (:func:`v2_error`): 400 for an invalid request (its
message names the input or output and the element), 404 for an unknown model or version,
413 over a limit, then as ``/predict``.

Every model with a backbone graph is also served as ``<task>-<model>-embedding`` (the ids of
``GET /v1/models`` with ``-embedding`` after them): the same input, and the outputs
``embedding`` FP32 ``[N, dim]``, the mean-pooled hidden states that ``/v1/embeddings`` and
``/embed`` answer for the same sequence, and ``scored`` (false, with NaN values, for a sequence
without A, C, G or T).
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from service import __version__
from service.api.inputs import InvalidJson, UnsupportedMediaType, parse_json, read_body
from service.api.lifecycle import Call, InferenceCall, Offer
from service.api.routes import _NUCLEOTIDES
from service.contract.embedding import pool
from service.contract.errors import (
    DnabertError,
    InvalidFasta,
    InvalidSequence,
    ModelNotFound,
    ModelUnavailable,
    NoEmbedding,
    NotReady,
    PayloadTooLarge,
    TooManyRecords,
)
from service.contract.fasta import FastaRecord, StreamingGunzip, id_preview
from service.contract.prepare import records_of
from service.contract.results import LncRnaResponse, PromoterResponse
from service.contract.tasks import ALL, PROMOTER, TASKS
from service.runtime.inference import InferenceService, LoadedModel
from service.settings import Settings

v2 = APIRouter(tags=["v2"])
"""Inference and model metadata: behind the API key when one is configured."""

v2_probes = APIRouter(tags=["v2"])
"""Server metadata and health: open, like /healthz."""

SERVER_NAME = "dnabert-serve"
EXTENSIONS = ["binary_tensor_data"]
VERSION = "1"
"""The one version of every model."""
INPUT = "sequence"
"""The one input of every model (BYTES, one sequence per element)."""
EMBEDDING_SUFFIX = "-embedding"
"""``<task>-<model>-embedding``: the backbone of ``<task>-<model>``, answering pooled embeddings."""
HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUT_NAMES = ("probability", "variant_probabilities", "scores", "embedding", "scored")
"""Every output name of every model (each model has some of them: :func:`offered_outputs`)."""


class InvalidInferenceRequest(DnabertError):
    """The inference request does not fit the protocol or the model (400, as Triton answers)."""

    code = "invalid_inference_request"
    http_status = 400


def v2_error(code: str, message: str, *, record_id: str | None = None, line: int | None = None) -> dict:
    """The protocol's error body: ``{"error": "<message>"}``."""
    return {"error": message}


# ------------------------------------------------------------------------------------------
# response models (the OpenAPI schema; the inference answer is written by :func:`render`)


class V2Error(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any number of sequences")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = Field(description="onnxruntime_onnx, or ensemble for promoter-all")
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size: the tensor follows the JSON")
    data: list[float | bool | None] | None = Field(
        None, description="row-major; null for the NaN of a sequence that is not scored")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="the request's id, when it has one")
    outputs: list[OutputTensor]


# ------------------------------------------------------------------------------------------
# models and their outputs


@dataclass(frozen=True)
class Output:
    """One output tensor: FP32 or BOOL, ``[N]`` (``columns`` None) or ``[N, columns]``."""

    name: str
    datatype: str
    columns: int | None
    values: Callable[[list[Any]], np.ndarray]
    """The tensor of a /predict answer's results."""

    def metadata(self) -> TensorMetadata:
        return TensorMetadata(name=self.name, datatype=self.datatype,
                              shape=[-1] if self.columns is None else [-1, self.columns])


def _fp32(rows: list) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def _scored(result: Any) -> bool:
    """Whether /predict scored the record (not: no informative base, null scores)."""
    return getattr(result, "probability", None) is not None or getattr(result, "scores", None) is not None


def _outputs(task: str, members: Sequence[str]) -> dict[str, Output]:
    """The outputs of a model of ``task`` made of ``members`` (several: the ``all`` ensemble)."""
    if task == PROMOTER:
        outputs = [Output("probability", "FP32", None,
                          lambda rs: _fp32([math.nan if r.probability is None else r.probability for r in rs]))]
        if len(members) > 1:
            outputs.append(Output("variant_probabilities", "FP32", len(members), lambda rs: _fp32(
                [[math.nan] * len(members) if r.variant_probabilities is None
                 else [r.variant_probabilities[m] for m in members] for r in rs])))
    else:
        labels = TASKS[task].labels
        outputs = [Output("scores", "FP32", len(labels), lambda rs: _fp32(
            [[math.nan] * len(labels) if r.scores is None else [getattr(r.scores, label) for label in labels]
             for r in rs]))]
    outputs.append(Output("scored", "BOOL", None, lambda rs: np.array([_scored(r) for r in rs], dtype=bool)))
    return {o.name: o for o in outputs}


def _embedding_outputs(dim: int) -> dict[str, Output]:
    """The outputs of an embedding model: each record's vector (None: not scored) and ``scored``."""
    return {"embedding": Output("embedding", "FP32", dim,
                                lambda rs: _fp32([[math.nan] * dim if r is None else r for r in rs]).reshape(-1, dim)),
            "scored": Output("scored", "BOOL", None, lambda rs: np.array([r is not None for r in rs], dtype=bool))}


@dataclass(frozen=True)
class Pooled:
    """An embedding model's answer: per record its mean-pooled vector, or None (not scored)."""

    results: list[np.ndarray | None]


def split_embedding_name(name: str) -> tuple[str, str] | None:
    """``(task, model)`` of a v2 embedding model name ``<task>-<model>-embedding``; else None."""
    return split_name(name[: -len(EMBEDDING_SUFFIX)]) if name.endswith(EMBEDDING_SUFFIX) else None


def split_name(name: str) -> tuple[str, str] | None:
    """``(task, model)`` of a v2 model name ``<task>-<model>``; None for any other name."""
    for task in TASKS:
        model = name.removeprefix(f"{task}-")
        if model != name and model and not name.endswith(EMBEDDING_SUFFIX):
            return task, model
    return None


def offered_outputs(name: str) -> tuple[str, ...]:
    """The outputs of the v2 model ``name`` when its models are loaded (``promoter-all``: with
    ``variant_probabilities``); empty for a name that is not ``<task>-<model>``."""
    if split_embedding_name(name) is not None:
        return ("embedding", "scored")
    split = split_name(name)
    if split is None:
        return ()
    task, model = split
    members = TASKS[task].ensemble if model == ALL else (model,)
    return tuple(_outputs(task, members))


def served_names(service: InferenceService) -> list[str]:
    """The v2 name of every model served (and of each task's ensemble)."""
    names = {f"{task}-{name}" for task, name in service.models}
    names |= {f"{task}-{ALL}" for task, spec in TASKS.items()
              if spec.ensemble and any((task, m) in service.models for m in spec.ensemble)}
    names |= {f"{model_id}{EMBEDDING_SUFFIX}" for model_id in service.embedding_models()}
    return sorted(names)


def _unknown(service: InferenceService, name: str, version: str | None = None) -> ModelNotFound:
    if version is not None and version != VERSION and split_name(name) is not None:
        return ModelNotFound(f"model {id_preview(name)} has no version {id_preview(version)}; its only version "
                             f"is {VERSION!r}")
    if name.endswith(EMBEDDING_SUFFIX):
        embedding = ", ".join(f"{i}{EMBEDDING_SUFFIX}" for i in service.embedding_models()) or "none"
        return ModelNotFound(f"unknown embedding model {id_preview(name)} (a model without a backbone graph, or "
                             f"none of that name); the embedding models: {embedding}")
    served = ", ".join(served_names(service)) or "none"
    return ModelNotFound(f"unknown model {id_preview(name)}; the models are <task>-<model>: {served}")


def _target(service: InferenceService, name: str, version: str | None) -> tuple[str, str]:
    """``(task, model)`` of a model name and version, or 404."""
    split = split_name(name) or split_embedding_name(name)
    if split is None or version not in (None, VERSION):
        raise _unknown(service, name, version)
    return split


@dataclass(frozen=True)
class Served:
    """A v2 model and the loaded models that answer it."""

    name: str
    task: str
    members: list[LoadedModel]
    dim: int | None = None
    """An embedding model's vector size (None: a classifier)."""

    @property
    def outputs(self) -> dict[str, Output]:
        if self.dim is not None:
            return _embedding_outputs(self.dim)
        return _outputs(self.task, [lm.name for lm in self.members])

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(name=self.name, versions=[VERSION],
                             platform="ensemble" if len(self.members) > 1 else "onnxruntime_onnx",
                             inputs=[TensorMetadata(name=INPUT, datatype="BYTES", shape=[-1])],
                             outputs=[o.metadata() for o in self.outputs.values()])


def resolve(service: InferenceService, name: str, version: str | None) -> Served:
    """The served v2 model ``name``: 404 unknown, 503 not ready or not served (as /predict)."""
    task, model = _target(service, name, version)
    try:
        if split_embedding_name(name) is None:
            return Served(name, task, service.resolve(task, model))
        lm = service.resolve_embedding(task, model)
        assert lm.model.card.embedding is not None
        return Served(name, task, [lm], lm.model.card.embedding.dim)
    except (ModelNotFound, NoEmbedding):
        raise _unknown(service, name) from None


def _service(request: Request) -> InferenceService:
    return request.app.state.service


# ------------------------------------------------------------------------------------------
# reading an inference request


@dataclass(frozen=True)
class Wanted:
    """An output the request asks for, and whether it is answered in binary."""

    name: str
    binary: bool


@dataclass(frozen=True)
class Parsed:
    """An inference request, checked against the model."""

    id: str | None
    sequences: list[str]
    outputs: list[Wanted]


_REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
_INPUT_KEYS = ("name", "shape", "datatype", "parameters", "data")
_OUTPUT_KEYS = ("name", "parameters")
_UNSUPPORTED = {
    "shared_memory_region": "shared memory is not supported",
    "shared_memory_byte_size": "shared memory is not supported",
    "shared_memory_offset": "shared memory is not supported",
    "classification": "the classification extension is not supported",
    "sequence_id": "sequence batching is not supported", "sequence_start": "sequence batching is not supported",
    "sequence_end": "sequence batching is not supported",
}


def _fail(message: str) -> InvalidInferenceRequest:
    return InvalidInferenceRequest(message)


def _object(value: object, where: str, keys: Sequence[str]) -> dict:
    """``value`` as a JSON object with no key but ``keys`` (400 naming the others)."""
    if not isinstance(value, dict):
        raise _fail(f"{where} must be a JSON object")
    unknown = [k for k in value if k not in keys]
    if unknown:
        reason = _UNSUPPORTED.get(unknown[0])
        named = ", ".join(id_preview(k) for k in unknown[:5])
        raise _fail(f"{where}: {reason} ({named})" if reason else
                    f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {named}; accepted: {', '.join(keys)}")
    return value


def _flag(params: dict, key: str, where: str) -> bool | None:
    """The boolean ``params[key]``, None when absent (400 for anything but true or false)."""
    if key in params and not isinstance(params[key], bool):
        raise _fail(f"{where}.{key} must be true or false")
    return params.get(key)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shape(tensor: dict, where: str, settings: Settings) -> int:
    """N of the input's shape ``[N]`` or ``[N, 1]``, within ``max_records``."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise _fail(f"{where}: shape must be a list of non-negative integers")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise _fail(f"{where}: shape {shape} is not [N] or [N, 1] (one sequence per element)")
    if shape[0] == 0:
        raise _fail(f"{where}: no sequences (shape {shape})")
    if shape[0] > settings.max_records:
        raise TooManyRecords(f"{where} holds {shape[0]} sequences; at most {settings.max_records} per request")
    return shape[0]


def _json_elements(data: object, n: int, nested: bool, where: str) -> list[str]:
    """The strings of a JSON ``data`` array: flat, or (shape ``[N, 1]``) rows of one."""
    if not isinstance(data, list):
        raise _fail(f"{where}: data must be a list of strings")
    if len(data) != n:
        raise _fail(f"{where}: shape holds {n} element{'s' * (n != 1)} but data has {len(data)}")
    out = []
    for i, item in enumerate(data):
        if nested and isinstance(item, list) and len(item) == 1:
            item = item[0]
        elif isinstance(item, list):
            raise _fail(f"{where}: element {i}: a nested list; data is a flat list of strings"
                        + (", or rows of one string" if nested else ""))
        if not isinstance(item, str):
            raise _fail(f"{where}: element {i} is {type(item).__name__ if item is not None else 'null'}, "
                        "not a string (BYTES: one sequence per element)")
        out.append(item)
    return out


def _binary_elements(raw: bytes, n: int, where: str) -> list[str]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then UTF-8."""
    out, pos = [], 0
    for i in range(n):
        if pos + 4 > len(raw):
            raise _fail(f"{where}: the binary data ends before element {i} (shape holds {n})")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise _fail(f"{where}: element {i} is {size} bytes long, past the end of the binary data")
        try:
            out.append(raw[pos:pos + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise _fail(f"{where}: element {i} is not UTF-8 text") from None
        pos += size
    if pos != len(raw):
        raise _fail(f"{where}: binary_data_size is {len(raw)} bytes but {n} elements take {pos}")
    return out


def _input(doc: dict, binary: memoryview | None, settings: Settings) -> tuple[list[str], int]:
    """The sequences of the request's one input, and the binary bytes they took."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = f"{len(inputs)} inputs" if isinstance(inputs, list) else "no 'inputs' list"
        raise _fail(f"the model takes one input, {INPUT!r} (BYTES, shape [N]); the request has {got}")
    where = "inputs[0]"
    tensor = _object(inputs[0], where, _INPUT_KEYS)
    if tensor.get("name") != INPUT:
        raise _fail(f"{where}: unexpected input {id_preview(str(tensor.get('name')))}; "
                    f"the model's input is {INPUT!r}")
    where = f"input {INPUT!r}"
    if tensor.get("datatype") != "BYTES":
        raise _fail(f"{where}: datatype {id_preview(str(tensor.get('datatype')))}, expected BYTES")
    n = _shape(tensor, where, settings)
    params = _object(tensor.get("parameters", {}), f"{where} parameters", ("binary_data_size",))
    if "binary_data_size" not in params:
        if "data" not in tensor:
            raise _fail(f"{where}: no data (and no binary_data_size)")
        return _json_elements(tensor["data"], n, len(tensor["shape"]) == 2, where), 0
    size = params["binary_data_size"]
    if binary is None or not _count(size) or "data" in tensor:
        raise _fail(f"{where}: binary_data_size needs a non-negative size, no 'data', and a body with the "
                    f"{HEADER_LENGTH} header")
    if size > len(binary):
        raise _fail(f"{where}: binary_data_size {size} is past the end of the body ({len(binary)} binary bytes)")
    return _binary_elements(bytes(binary[:size]), n, where), size


def _wanted(doc: dict, outputs: Sequence[str], model: str) -> list[Wanted]:
    params = _object(doc.get("parameters", {}), "parameters", ("binary_data_output",))
    default = bool(_flag(params, "binary_data_output", "parameters"))
    asked = doc.get("outputs", [])
    if asked == []:
        return [Wanted(name, default) for name in outputs]
    if not isinstance(asked, list):
        raise _fail("outputs must be a list")
    wanted: list[Wanted] = []
    for i, item in enumerate(asked):
        where = f"outputs[{i}]"
        spec = _object(item, where, _OUTPUT_KEYS)
        name = spec.get("name")
        if name not in outputs:
            raise _fail(f"{where}: unknown output {id_preview(str(name))} for model {id_preview(model)}; "
                        f"its outputs: {', '.join(outputs)}")
        if any(w.name == name for w in wanted):
            raise _fail(f"{where}: output {name!r} is asked for twice")
        out = _object(spec.get("parameters", {}), f"{where} parameters", ("binary_data",))
        binary = _flag(out, "binary_data", f"{where} parameters")
        wanted.append(Wanted(name, default if binary is None else binary))
    return wanted


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its ``Content-Encoding`` (gzip, deflate), within ``limit`` bytes."""
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        gunzip = StreamingGunzip(limit)
        try:
            return gunzip.feed(body) + gunzip.finish()
        except InvalidFasta:
            raise _fail("the gzip request body is truncated or corrupt") from None
    if coding == "deflate":
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise _fail("the deflate request body is corrupt") from None
        if len(out) > limit:
            raise PayloadTooLarge(f"the request body is over the {limit}-byte limit once decompressed")
        if not inflater.eof or inflater.unused_data:
            raise _fail("the deflate request body is truncated or has data after its end")
        return out
    raise UnsupportedMediaType(f"unsupported Content-Encoding {id_preview(coding)}: send gzip, deflate or none")


def parse_request(body: bytes, header_length: str | None, content_encoding: str | None, settings: Settings,
                  model: str, outputs: Sequence[str]) -> Parsed:
    """An inference request (JSON, or JSON and binary tensors) checked against the model."""
    body = _decompress(body, content_encoding, settings.max_upload_bytes)
    binary: memoryview | None = None
    if header_length is not None:
        value = header_length.strip()
        if not value.isdigit() or int(value) > len(body):
            raise _fail(f"{HEADER_LENGTH} must be the length of the JSON at the start of the body "
                        f"({len(body)} bytes), got {id_preview(header_length)}")
        binary = memoryview(body)[int(value):]
        body = body[:int(value)]
    if not body.strip():
        raise _fail("the request body is empty; send an inference request (JSON)")
    try:
        doc = _object(parse_json(body), "the inference request", _REQUEST_KEYS)
    except InvalidJson as exc:
        raise _fail(exc.message) from None
    if "id" in doc and not isinstance(doc["id"], str):
        raise _fail("id must be a string")
    wanted = _wanted(doc, outputs, model)
    sequences, used = _input(doc, binary, settings)
    if binary is not None and used != len(binary):
        raise _fail(f"the body has {len(binary)} binary bytes after the JSON but the inputs' binary_data_size "
                    f"add up to {used}")
    for i, seq in enumerate(sequences):
        if len(seq) > settings.max_sequence_length and len("".join(seq.split())) > settings.max_sequence_length:
            raise _fail(f"input {INPUT!r}: element {i} is longer than {settings.max_sequence_length} nt")
    return Parsed(doc.get("id"), sequences, wanted)


# ------------------------------------------------------------------------------------------
# the answer


def _json_data(values: np.ndarray) -> list:
    """Row-major values for JSON: NaN (not scored) as null."""
    flat = values.reshape(-1).tolist()
    if values.dtype.kind == "f":
        return [None if v != v else v for v in flat]
    return flat


def render(name: str, parsed: Parsed, outputs: dict[str, Output], result: PromoterResponse | LncRnaResponse | Pooled
           ) -> Response:
    """The inference response: JSON, or (binary outputs asked for) JSON then the raw tensors."""
    head: dict[str, Any] = {"model_name": name, "model_version": VERSION}
    if parsed.id is not None:
        head["id"] = parsed.id
    tensors, blobs = [], []
    for want in parsed.outputs:
        out = outputs[want.name]
        values = out.values(result.results)
        tensor: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(values.shape)}
        if want.binary:
            blob = values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(values)
        tensors.append(tensor)
    head["outputs"] = tensors
    text = json.dumps(head, allow_nan=False, separators=(",", ":")).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(b"".join([text, *blobs]), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(text))})


class Exchange:
    """One inference request through the lifecycle: ``read`` parses it against the model,
    ``work`` predicts, an offer renders; errors about a sequence name its element."""

    def __init__(self, call: InferenceCall, name: str, task: str, model: str):
        self.call, self.name, self.task, self.model = call, name, task, model
        self.outputs: dict[str, Output] = {}
        self.parsed: Parsed | None = None
        self.offers = {"json": Offer("application/json", self.respond),
                       "binary": Offer("application/octet-stream", self.respond)}

    async def read(self, request: Request, settings: Settings) -> list[FastaRecord]:
        self.outputs = resolve(self.call.service, self.name, None).outputs
        body = await read_body(request, settings)
        parse = partial(parse_request, body, request.headers.get(HEADER_LENGTH),
                        request.headers.get("content-encoding"), settings, self.name, list(self.outputs))
        self.parsed = await asyncio.get_running_loop().run_in_executor(None, parse)
        return records_of(self.parsed.sequences)

    async def work(self, records: list[FastaRecord]) -> PromoterResponse | LncRnaResponse | Pooled:
        try:
            if split_embedding_name(self.name) is None:
                return await self.call.service.predict(self.task, records, self.model, {})
            result = await self.call.service.embed(self.task, records, self.model)
            return Pooled([pool(h, "mean") if result.prepared.scored(i) else None
                           for i, h in enumerate(result.hidden)])
        except InvalidSequence as exc:
            detail = exc.message.removeprefix(f"record {exc.record_id!r}: ")
            raise _fail(f"input {INPUT!r}: element {exc.record_id}: {detail}") from None

    def respond(self, result: PromoterResponse | LncRnaResponse | Pooled) -> Response:
        assert self.parsed is not None
        return render(self.name, self.parsed, self.outputs, result)


async def infer_with(call: InferenceCall, name: str, version: str | None) -> Response:
    """Run an inference request for the v2 model ``name`` through the request lifecycle."""
    try:
        task, model = _target(call.service, name, version)
    except ModelNotFound:
        call.service.metrics.requests.labels("v2", "unknown", "404").inc()
        raise
    exchange = Exchange(call, name, task, model)
    try:
        return await call.run(task, model, None, exchange.work, offers=exchange.offers, endpoint=f"v2/{task}",
                              read=exchange.read)
    except ModelNotFound:  # counted by the lifecycle; said in the protocol's names
        raise _unknown(call.service, name) from None


def readiness(service: InferenceService, name: str, version: str | None) -> JSONResponse:
    """200 ``ready`` when the model's sessions are warm; 503 while not (or not served); 404 unknown."""
    try:
        served = resolve(service, name, version)
        ready = service.started and all(lm.ready for lm in served.members)
    except (NotReady, ModelUnavailable):
        ready = False
    return JSONResponse(ModelReady(name=name, ready=ready).model_dump(), status_code=200 if ready else 503)


# ------------------------------------------------------------------------------------------
# the OpenAPI description

_SEQUENCE = {"type": "string", "pattern": f"^\\s*[{_NUCLEOTIDES}][\\s{_NUCLEOTIDES}]*$",
             "description": "DNA or RNA: A, C, G, T/U and IUPAC ambiguity codes, any case, whitespace ignored; at "
                            "most DNABERT_MAX_SEQUENCE_LENGTH nucleotides"}
_FLAG_PARAMS = {"type": "object", "additionalProperties": False}
INFERENCE_REQUEST = {
    "type": "object", "additionalProperties": False, "required": ["inputs"],
    "properties": {
        "id": {"type": "string", "description": "echoed in the response"},
        "parameters": {**_FLAG_PARAMS, "properties": {"binary_data_output": {
            "type": "boolean", "description": "answer every output in binary (default false)"}}},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string", "enum": [INPUT]},
                "datatype": {"type": "string", "enum": ["BYTES"]},
                "shape": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer", "minimum": 1},
                          "description": "[N] or [N, 1]: N the number of elements of data (at most "
                                         "DNABERT_MAX_RECORDS)"},
                "parameters": {**_FLAG_PARAMS, "properties": {}, "description": (
                    "binary_data_size, with the binary tensor extension only (see the request body)")},
                "data": {"type": "array", "minItems": 1, "description": "one sequence per element, flat or (shape "
                         "[N, 1]) rows of one", "items": {"anyOf": [
                             _SEQUENCE, {"type": "array", "minItems": 1, "maxItems": 1, "items": _SEQUENCE}]}},
            }}},
        "outputs": {"type": "array", "description": "the outputs to answer (default: all the model's), each once",
                    "items": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
                        "name": {"type": "string", "enum": list(OUTPUT_NAMES), "description": (
                            "promoter: probability, scored (promoter-all: and variant_probabilities); "
                            "lncrna-localization: scores, scored")},
                        "parameters": {**_FLAG_PARAMS, "properties": {"binary_data": {
                            "type": "boolean", "description": "answer this output in binary"}}}}}},
    },
}
"""The JSON inference request: every check the server makes that JSON Schema can state."""

_REQUEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": INFERENCE_REQUEST,
    "example": {"id": "42", "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [2],
                                        "data": ["TTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC", "ACGTTGCAACGTNNACGUUGCA"]}]}}},
    "description": (
        "An inference request (JSON). The input's shape must hold as many elements as data, and the outputs "
        "asked for must be the model's. With the binary tensor extension, the `Inference-Header-Content-Length` "
        "header gives the length of this JSON at the start of the body, and the input carries "
        "`parameters.binary_data_size` instead of `data`: that many bytes after the JSON, each element a 4-byte "
        "little-endian length then its UTF-8 bytes. `Content-Encoding: gzip` or `deflate` is accepted. At most "
        "DNABERT_MAX_RECORDS sequences and DNABERT_MAX_UPLOAD_BYTES bytes (413).")}}

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": V2Error, "description": desc} for code, desc in {
        404: "Unknown model (its name is <task>-<model>) or version (only 1)",
        503: "Not ready (starting or stopping), or the model failed to load at start-up",
    }.items()}
_INFER_ERRORS: dict[int | str, dict[str, Any]] = {**_ERRORS, **{
    code: {"model": V2Error, "description": desc} for code, desc in {
        400: "Invalid request: malformed JSON, an unknown key, input, output or parameter, a datatype other than "
             "BYTES, a shape that does not match data, a character that is not a nucleotide (naming the element), "
             "a sequence over DNABERT_MAX_SEQUENCE_LENGTH, malformed binary data",
        406: "An Accept header that accepts neither application/json nor application/octet-stream",
        408: "The request body did not arrive within DNABERT_BODY_TIMEOUT_S",
        413: "More sequences than DNABERT_MAX_RECORDS, or a body over DNABERT_MAX_UPLOAD_BYTES",
        415: "A Content-Encoding other than gzip or deflate",
        422: "A query parameter (none is accepted)",
        429: "Overloaded: retry after the Retry-After header's seconds",
        500: "Inference failed for the batch that held this request",
        504: "The request's deadline passed before its sequences ran",
    }.items()}}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The outputs: JSON, or with binary outputs application/octet-stream (the JSON, of the "
                         "length in the Inference-Header-Content-Length header, then the raw tensors)",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    **_INFER_ERRORS,
}

ModelName = Annotated[str, Path(description=(
    "<task>-<model>: promoter-<model> for each promoter model served (promoter-all: the mean of the five "
    "DNABERT-2 variants), lncrna-localization-lncrna"), json_schema_extra={"pattern": (
        "^(promoter-(all|base|cnn|bilstm|cnn_bilstm_max|cnn_bilstm_avg)|lncrna-localization-lncrna"
        "|(promoter|lncrna-localization)-[^/]+)$")})]
ModelVersion = Annotated[str, Path(description="the model's version: 1", json_schema_extra={"enum": [VERSION]})]


# ------------------------------------------------------------------------------------------
# the routes


@v2_probes.get("/v2", response_model=ServerMetadata, summary="Server metadata (Open Inference Protocol)")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)


@v2_probes.get("/v2/health/live", response_model=ServerLive, summary="Server liveness (Open Inference Protocol)")
async def server_live() -> ServerLive:
    return ServerLive(live=True)


@v2_probes.get("/v2/health/ready", response_model=ServerReady, responses={503: {"model": ServerReady}},
               summary="Server readiness (Open Inference Protocol): as /readyz, 200 or 503")
async def server_ready(request: Request) -> JSONResponse:
    serving = _service(request).serving
    return JSONResponse(ServerReady(ready=serving).model_dump(), status_code=200 if serving else 503)


@v2.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=_ERRORS, summary="Model metadata")
async def model_metadata(request: Request, model_name: ModelName) -> ModelMetadata:
    return resolve(_service(request), model_name, None).metadata()


@v2.get("/v2/models/{model_name}/versions/{model_version}", response_model=ModelMetadata, responses=_ERRORS,
        summary="Model metadata of a version")
async def model_version_metadata(request: Request, model_name: ModelName,
                                 model_version: ModelVersion) -> ModelMetadata:
    return resolve(_service(request), model_name, model_version).metadata()


_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 503: {"model": ModelReady, "description": "Not ready: starting, stopping, or not served"}}


@v2.get("/v2/models/{model_name}/ready", response_model=ModelReady, responses=_READY_RESPONSES,
        summary="Model readiness: 200 or 503")
async def model_ready(request: Request, model_name: ModelName) -> JSONResponse:
    return readiness(_service(request), model_name, None)


@v2.get("/v2/models/{model_name}/versions/{model_version}/ready", response_model=ModelReady,
        responses=_READY_RESPONSES, summary="Model readiness of a version: 200 or 503")
async def model_version_ready(request: Request, model_name: ModelName,
                              model_version: ModelVersion) -> JSONResponse:
    return readiness(_service(request), model_name, model_version)


@v2.post("/v2/models/{model_name}/infer", response_model=InferenceResponse, responses=_INFER_RESPONSES,
         openapi_extra=_REQUEST_BODY, summary="Inference (Open Inference Protocol)")
async def infer(call: Call, model_name: ModelName) -> Response:
    return await infer_with(call, model_name, None)


@v2.post("/v2/models/{model_name}/versions/{model_version}/infer", response_model=InferenceResponse,
         responses=_INFER_RESPONSES, openapi_extra=_REQUEST_BODY, summary="Inference with a model version")
async def infer_version(call: Call, model_name: ModelName, model_version: ModelVersion) -> Response:
    return await infer_with(call, model_name, model_version)
