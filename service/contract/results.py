"""What a prediction returns, per task: the result models the service answers with and the
offline commands write (JSON, or CSV/TSV through :mod:`service.api.formats`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


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
