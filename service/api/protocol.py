"""Request and response models of the HTTP API (pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.contract.fasta import MAX_ID_LENGTH
from service.contract.results import LncRnaResponse, PromoterResponse

__all__ = ["LncRnaResponse", "PromoterResponse"]


class SequenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description=(
        "record identifier, unique in the request; no control or bidirectional-text characters"))
    sequence: str = Field(description="DNA or RNA; case, whitespace, U and IUPAC codes are normalised")


class PredictRequest(BaseModel):
    """JSON body for programmatic clients (FASTA uploads are the other accepted forms)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"sequences": [
        {"id": "seq1", "sequence": "TTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC"},
        {"id": "seq2", "sequence": "acgttgcaacgtnnacguugca"}]}]})

    sequences: list[SequenceIn] = Field(min_length=1)


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable error code")
    message: str
    record_id: str | None = None
    line: int | None = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelInfo(BaseModel):
    task: str
    name: str
    providers: list[str]
    precision: str
    ready: bool
    card: dict
    error: str | None = Field(None, description="why the model is not served (failed to load or warm up)")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    available_providers: list[str]
    default_promoter_model: str


class Health(BaseModel):
    status: Literal["ok", "ready", "degraded", "not_ready"] = Field(
        description="ready: every model serves; degraded: some models failed at start-up (allow_partial_start) "
                    "but the others, the default promoter model among them, serve; not_ready: starting, "
                    "stopping, or the default promoter model is not available")
    detail: dict[str, bool] | None = Field(None, description="task/name -> whether the model serves")
    errors: dict[str, str] | None = Field(None, description="task/name -> why it does not serve")
