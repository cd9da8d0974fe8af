"""Embeddings: the OpenAI-compatible ``POST /v1/embeddings`` and ``GET /v1/models``, and
``POST /embed`` for FASTA uploads.

Both run the records through the model's backbone graph and its own batcher
(:meth:`service.runtime.inference.InferenceService.embed`) and pool the hidden states the same
way (:mod:`service.contract.embedding`), so a sequence's vector is the same from either route,
alone or in a batch. Models are named by their served id, ``<task>-<model>`` (``GET /v1/models``).
Errors under ``/v1/`` come in the OpenAI shape (:func:`openai_error`).
"""

from __future__ import annotations

import base64
import io
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.api.inputs import parse_json, read_body
from service.api.lifecycle import Call, Offer, json_body
from service.api.probes import ServiceDep
from service.api.routes import _BODY, _ERRORS
from service.contract.embedding import DEFAULT_POOLING, pool, token_spans, usage_tokens
from service.contract.errors import (
    DnabertError,
    InvalidSequence,
    ModelNotFound,
    SequenceTooLong,
    TooManyRecords,
)
from service.contract.fasta import FastaRecord
from service.contract.sequence import normalize_sequence
from service.contract.tasks import PROMOTER, parse_served_id, served_id
from service.runtime.inference import Embedded, InferenceService
from service.settings import Settings

embeddings = APIRouter(tags=["embeddings"])
"""Embeddings: behind the API key when one is configured."""

OWNER = "dnabert-serve"


def openai_error(status: int, code: str, message: str, *, record_id: str | None = None,
                 line: int | None = None) -> dict:
    """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_exceeded"
    return {"error": {"message": message, "type": kind, "param": record_id, "code": code}}


class InvalidRequest(DnabertError):
    """A ``/v1/embeddings`` body that the OpenAI API would refuse, or asks for what is not offered."""

    code = "invalid_request_error"
    http_status = 400


# -- OpenAI shapes --------------------------------------------------------------------------------
class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request; the inputs are DNA or RNA sequences."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model": "promoter-cnn_bilstm_max", "input": ["TATAAAAGGCGCGCGCTATATAAGCGC", "ACGTACGTAGCTAGCTAGCATCG"]}]})

    input: str | list[str] = Field(description="one sequence, or a list of them (at most DNABERT_MAX_RECORDS)")
    model: str = Field(max_length=128, description="a model id from GET /v1/models, e.g. promoter-cnn_bilstm_max")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes, base64-encoded")
    user: str | None = Field(None, description="accepted and ignored")
    dimensions: int | None = Field(None, description="not supported: the vectors have the model's hidden size")
    pooling: Literal["mean", "cls"] = Field(
        DEFAULT_POOLING, description="extension: mean of every token's last hidden state, [CLS] and [SEP] "
                                     "included (default), or the [CLS] token's")


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: Usage


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the model folder was exported (0 when the card does not say)")
    owned_by: str = OWNER


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorBody


_OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIError, "description": desc} for code, desc in {
        400: "Invalid request: a body that is not the OpenAI embeddings request (token arrays as input, "
             "dimensions, an empty input)",
        404: "Unknown model (GET /v1/models lists them)",
        413: "More inputs or a longer sequence than the server takes",
        422: "A sequence with characters that are not nucleotides, or no A, C, G or T (param names the input), "
             "or a model without a backbone graph (no_embedding)",
        429: "Overloaded: retry after the Retry-After header's seconds",
        503: "Not ready, or shutting down",
        504: "The request's deadline passed before its sequences ran",
    }.items()}


_IUPAC = "ACGTUNRYSWKMBDHVacgtunryswkmbdhv"
_SEQUENCE_PATTERN = f"^[\\s{_IUPAC}]*[ACGTUacgtu][\\s{_IUPAC}]*$"


def embedding_ids(settings: Settings) -> list[str]:
    """The ids of the models in the models folder that have a backbone graph (what the schema
    offers; the served ones are listed by ``GET /v1/models``)."""
    from service.runtime.inference import discover
    from service.runtime.model import load_card

    ids = []
    try:
        for task, name, folder in discover(settings.models_dir):
            if "embedding" in load_card(folder).files:
                ids.append(served_id(task, name))
    except DnabertError:
        return []
    return ids


def document(schema: dict, settings: Settings) -> None:
    """State in the OpenAPI schema what the embedding routes check: the model ids, the sequence
    alphabet, the limits on inputs; ``dimensions`` only as null (not supported)."""
    ids = embedding_ids(settings)
    paths = schema.get("paths", {})
    if "/v1/embeddings" not in paths:
        return
    body = paths["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    one = {"type": "string", "pattern": _SEQUENCE_PATTERN,
           "description": f"DNA or RNA (IUPAC codes, any case, whitespace ignored), at most "
                          f"{settings.max_sequence_length} nt, with at least one A, C, G, T or U"}
    props = body["properties"]
    props["input"] = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1,
                                      "maxItems": settings.max_records}],
                      "description": props["input"].get("description", "")}
    if ids:
        props["model"].update(enum=ids)
    props["dimensions"] = {"type": "null", "description": props["dimensions"].get("description", "")}
    for path, where in (("/embed", "query"), ("/v1/models/{model_id}", "path")) if ids else ():
        for operation in paths.get(path, {}).values():
            for param in operation.get("parameters", []):
                if param.get("in") == where and param["name"] in ("model", "model_id"):
                    param["schema"] = {**{k: v for k, v in param["schema"].items() if k != "anyOf"},
                                       "type": "string", "enum": ids}


def _model_objects(service: InferenceService) -> list[ModelObject]:
    out = []
    for model_id, lm in service.embedding_models().items():
        created = lm.model.card.export.created if lm.model.card.export is not None else None
        stamp = int(datetime.fromisoformat(created).timestamp()) if isinstance(created, str) else 0
        out.append(ModelObject(id=model_id, created=stamp))
    return out


def _resolve_id(model_id: str) -> tuple[str, str]:
    parsed = parse_served_id(model_id)
    if parsed is None:
        raise ModelNotFound(f"unknown model {model_id[:128]!r}: model ids are <task>-<model>, as GET /v1/models "
                            "lists them (e.g. promoter-cnn_bilstm_max)")
    return parsed


class OpenAIBody:
    """Reads and checks a ``/v1/embeddings`` body (the lifecycle's ``read`` and ``target``)."""

    def __init__(self) -> None:
        self.request: EmbeddingsRequest | None = None

    async def read(self, request: Request, settings: Settings) -> list[FastaRecord]:
        body = await read_body(request, settings)
        if not body.strip():
            raise InvalidRequest("the body is empty: send {\"model\": ..., \"input\": ...}")
        self.request = req = _validated(parse_json(body))
        if req.dimensions is not None:
            raise InvalidRequest("dimensions is not supported: every vector has the model's hidden size "
                                 "(GET /models states it)")
        inputs = [req.input] if isinstance(req.input, str) else req.input
        if not inputs:
            raise InvalidRequest("input is empty: give a sequence or a list of sequences")
        if len(inputs) > settings.max_records:
            raise TooManyRecords(f"{len(inputs)} inputs; at most {settings.max_records} per request")
        records = []
        for i, text in enumerate(inputs):
            rid = f"input[{i}]"
            if len("".join(text.split())) > settings.max_sequence_length:
                raise SequenceTooLong(f"{rid} is longer than {settings.max_sequence_length} nt", record_id=rid)
            if not normalize_sequence(text, rid).sequence.strip("N"):
                raise InvalidSequence(rid, "no A, C, G or T: nothing to embed (an all-N sequence has no "
                                      "informative base)")
            records.append(FastaRecord(rid, rid, text, 0))
        return records

    def target(self) -> tuple[str, str]:
        assert self.request is not None
        return _resolve_id(self.request.model)


def _validated(doc: object) -> EmbeddingsRequest:
    if isinstance(doc, dict) and isinstance(doc.get("input"), list) and any(
            not isinstance(x, str) for x in doc["input"]):
        raise InvalidRequest("input must be a sequence or a list of sequences (strings); token-id arrays are "
                             "not accepted: the server tokenizes")
    try:
        return EmbeddingsRequest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))[:200]
        raise InvalidRequest(f"invalid request body at {where or 'body'}: {first.get('msg')}") from None


def _openai_answer(model_id: str, pooling: str, encoding: str, result: Embedded) -> EmbeddingsResponse:
    data = []
    for i, hidden in enumerate(result.hidden):
        vector = pool(hidden, pooling)
        value: list[float] | str = (base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
                                    if encoding == "base64" else vector.tolist())
        data.append(EmbeddingObject(index=i, embedding=value))
    tokens = usage_tokens(result.prepared.tokens)
    return EmbeddingsResponse(data=data, model=model_id, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


_OPENAI_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": EmbeddingsRequest.model_json_schema()}}}}


@embeddings.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=_OPENAI_ERRORS,
                 openapi_extra=_OPENAI_BODY, summary="OpenAI-compatible embeddings of DNA sequences")
async def create_embeddings(call: Call) -> Response:
    body = OpenAIBody()

    async def work(records: list[FastaRecord]) -> EmbeddingsResponse:
        req, (task, name) = body.request, body.target()
        assert req is not None
        result = await call.service.embed(task, records, name)
        return _openai_answer(req.model, req.pooling, req.encoding_format, result)

    return await call.run(PROMOTER, None, None, work, offers={"json": Offer("application/json", _json)},
                          endpoint="embeddings", read=body.read, target=body.target)


@embeddings.get("/v1/models", response_model=ModelList, summary="The embedding models (OpenAI list shape)")
async def list_models(service: ServiceDep) -> ModelList:
    return ModelList(data=_model_objects(service))


@embeddings.get("/v1/models/{model_id}", response_model=ModelObject, responses={404: _OPENAI_ERRORS[404]},
                summary="One embedding model (OpenAI shape)")
async def retrieve_model(model_id: str, service: ServiceDep) -> ModelObject:
    for model in _model_objects(service):
        if model.id == model_id:
            return model
    raise ModelNotFound(f"unknown model {model_id[:128]!r}; GET /v1/models lists the embedding models")


def _json(result: BaseModel) -> Response:
    return json_body(result, exclude_none=True)


# -- POST /embed ------------------------------------------------------------------------------------
class TokenState(BaseModel):
    token: str
    start: int | None = Field(description="0-based start of the token in the normalised sequence (null: [CLS]/[SEP])")
    end: int | None = Field(description="exclusive end (null: [CLS]/[SEP])")
    vector: list[float]


class EmbedResult(BaseModel):
    id: str
    length: int = Field(description="nucleotides")
    tokens: int = Field(description="tokens the model read, [CLS] and [SEP] included")
    embedding: list[float] | None = Field(None, description="the pooled vector (output=pooled); null for a "
                                                            "record with no A, C, G or T")
    hidden_states: list[TokenState] | None = Field(None, description="output=tokens: every token's vector")
    truncated: bool
    flags: list[str]


class EmbedResponse(BaseModel):
    model: str
    pooling: str | None
    output: Literal["pooled", "tokens"]
    dim: int
    count: int
    results: list[EmbedResult]


MAX_TOKEN_VALUES = 8_000_000
"""``output=tokens``: at most this many numbers (tokens x hidden size) per request (413 beyond):
about 1,000 records of 300 bp with the embedded models' 128 dimensions."""

EMBED_MEDIA = {"json": "application/json", "npy": "application/x-npy", "npz": "application/x-npz"}


class Embedding:
    """An ``/embed`` answer in the making: the records' hidden states and how to present them."""

    def __init__(self, pooling: str, output: str, result: Embedded, records: list[FastaRecord]):
        self.model_id = served_id(result.task, result.model)
        self.pooling, self.output, self.result, self.records = pooling, output, result, records

    def vectors(self) -> np.ndarray:
        """(N, dim) pooled vectors; NaN rows for records that have no informative base."""
        prep = self.result.prepared
        out = np.full((len(prep.ids), self.result.dim), np.nan, dtype=np.float32)
        for i, hidden in enumerate(self.result.hidden):
            if prep.scored(i):
                out[i] = pool(hidden, self.pooling)
        return out

    def spans(self, i: int) -> list[tuple[int, int] | None]:
        """Each token's span in record ``i``'s normalised sequence (None: [CLS], [SEP])."""
        record = self.records[i]
        sequence = normalize_sequence(record.sequence, record.id).sequence
        return token_spans(self.result.tokenizer, sequence, len(self.result.hidden[i]))  # type: ignore[arg-type]

    def to_json(self) -> Response:
        prep, vectors = self.result.prepared, self.vectors() if self.output == "pooled" else None
        results = []
        for i, rid in enumerate(prep.ids):
            item = EmbedResult(id=rid, length=prep.lengths[i], tokens=len(prep.tokens[i]),
                               truncated=prep.truncated[i], flags=prep.flags(i))
            if vectors is not None:
                item.embedding = vectors[i].tolist() if prep.scored(i) else None
            else:
                names = self.result.tokenizer.token_text
                item.hidden_states = [
                    TokenState(token=names(t), start=s[0] if s else None, end=s[1] if s else None, vector=v.tolist())
                    for t, s, v in zip(prep.tokens[i], self.spans(i), self.result.hidden[i], strict=True)]
            results.append(item)
        body = EmbedResponse(model=self.model_id, pooling=self.pooling if self.output == "pooled" else None,
                             output=self.output, dim=self.result.dim, count=len(results), results=results)
        unused = "hidden_states" if self.output == "pooled" else "embedding"
        return JSONResponse(body.model_dump(mode="json", exclude={"results": {"__all__": {unused}}}))

    def to_npy(self) -> Response:
        if self.output == "tokens":
            raise EmbedFormat("output=tokens gives arrays of different lengths: ask for format=npz or json")
        ids = self.result.prepared.ids
        table = np.zeros(len(ids), dtype=[("id", f"<U{max(len(i) for i in ids)}"), ("scored", "?"),
                                          ("embedding", "<f4", (self.result.dim,))])
        table["id"], table["embedding"] = ids, self.vectors()
        table["scored"] = [self.result.prepared.scored(i) for i in range(len(ids))]
        return _binary(lambda fh: np.save(fh, table, allow_pickle=False), "application/x-npy", "embeddings.npy")

    def to_npz(self) -> Response:
        prep = self.result.prepared
        arrays: dict[str, np.ndarray] = {"ids": np.array(prep.ids), "scored": np.array(
            [prep.scored(i) for i in range(len(prep.ids))]), "model": np.array(self.model_id)}
        if self.output == "pooled":
            arrays.update(embeddings=self.vectors(), pooling=np.array(self.pooling))
        else:
            spans = [s for i in range(len(prep.ids)) for s in self.spans(i)]
            arrays.update(
                hidden_states=np.concatenate(self.result.hidden).astype(np.float32),
                offsets=np.cumsum([0] + [len(h) for h in self.result.hidden]).astype(np.int64),
                token_ids=np.concatenate([np.asarray(t, dtype=np.int64) for t in prep.tokens]),
                starts=np.array([s[0] if s else -1 for s in spans], dtype=np.int64),
                ends=np.array([s[1] if s else -1 for s in spans], dtype=np.int64))
        return _binary(lambda fh: np.savez(fh, **arrays), "application/x-npz", "embeddings.npz")


class EmbedFormat(DnabertError):
    code = "unsupported_format"
    http_status = 406


def _binary(write, media: str, filename: str) -> Response:
    fh = io.BytesIO()
    write(fh)
    return Response(fh.getvalue(), media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


_EMBED_OFFERS = {"json": Offer(EMBED_MEDIA["json"], Embedding.to_json),
                 "npy": Offer(EMBED_MEDIA["npy"], Embedding.to_npy),
                 "npz": Offer(EMBED_MEDIA["npz"], Embedding.to_npz)}

ModelIdQuery = Annotated[str | None, Query(max_length=128, description=(
    "a model id from GET /v1/models (<task>-<model>, e.g. promoter-cnn, lncrna-localization-lncrna); default: "
    "the default promoter model"))]
_EMBED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "One vector (or, with output=tokens, one per token) per record, in input order",
          "content": {EMBED_MEDIA["npy"]: {"schema": {"type": "string", "format": "binary"}},
                      EMBED_MEDIA["npz"]: {"schema": {"type": "string", "format": "binary"}}}},
    **_ERRORS}


@embeddings.post("/embed", response_model=EmbedResponse, responses=_EMBED_RESPONSES, openapi_extra=_BODY,
                 summary="Embeddings of FASTA records: pooled vectors or per-token hidden states")
async def embed(call: Call, model: ModelIdQuery = None,
                pooling: Annotated[Literal["mean", "cls"], Query(description="mean (default) or cls")] = "mean",
                output: Annotated[Literal["pooled", "tokens"], Query(description="pooled vectors (default) or every "
                                                                     "token's hidden state with its span")] = "pooled",
                format: Annotated[str | None, Query(description="json (default), npy or npz",
                                                    json_schema_extra={"enum": list(EMBED_MEDIA)})] = None) -> Response:
    task, name = _resolve_id(model) if model is not None else (PROMOTER, None)
    work = _embed_work(call.service, task, name, pooling, output)
    return await call.run(task, name, format, work, offers=_EMBED_OFFERS, endpoint="embed")


def _embed_work(service: InferenceService, task: str, name: str | None, pooling: str, output: str):
    async def work(records: list[FastaRecord]) -> Embedding:
        limit = MAX_TOKEN_VALUES if output == "tokens" else None
        return Embedding(pooling, output, await service.embed(task, records, name, max_values=limit), records)
    return work
