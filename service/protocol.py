"""Request and response models of the HTTP API (pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SequenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=1000, description="record identifier, unique in the request")
    sequence: str = Field(description="DNA or RNA; case, whitespace, U and IUPAC codes are normalised")


class PredictRequest(BaseModel):
    """JSON body for programmatic clients (FASTA uploads are the other accepted forms)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"sequences": [
        {"id": "seq1", "sequence": "TTGACAGCTAGCTCAGTCCTAGGTATAATGCTAGC"},
        {"id": "seq2", "sequence": "acgttgcaacgtnnacguugca"}]}]})

    sequences: list[SequenceIn] = Field(min_length=1)


class PromoterResult(BaseModel):
    id: str
    length: int = Field(description="nucleotides after normalisation")
    probability: float = Field(description="P(promoter); with model=all the mean of the five variants")
    label: Literal["promoter", "non_promoter"]
    model: str
    variant_probabilities: dict[str, float] | None = Field(
        None, description="with model=all: each variant's probability")
    truncated: bool = Field(description="the sequence was longer than the model's token limit and was cut")
    ambiguous_bases: int = Field(description="N and other IUPAC ambiguity codes in the record")
    flags: list[str] = Field(description="'ambiguous_bases', 'truncated', 'rna_input'")


class PromoterResponse(BaseModel):
    task: Literal["promoter"] = "promoter"
    model: str
    threshold: float
    count: int
    results: list[PromoterResult]


class LncRnaScores(BaseModel):
    nucleus: float
    cytoplasm: float
    extracellular_vesicle: float


class LncRnaResult(BaseModel):
    id: str
    length: int
    scores: LncRnaScores
    locations: list[str] = Field(description="labels whose score reaches its threshold")
    truncated: bool = Field(description="only the last 2,292 nt / 482 tokens (3' end) were used")
    ambiguous_bases: int
    flags: list[str]
    model: str


class LncRnaResponse(BaseModel):
    task: Literal["lncrna-localization"] = "lncrna-localization"
    model: str
    thresholds: dict[str, float]
    count: int
    results: list[LncRnaResult]


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
