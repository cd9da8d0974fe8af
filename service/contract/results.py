"""What a prediction returns, per task: the result models the service answers with and the
offline commands write (JSON, or CSV/TSV through :mod:`service.api.formats`).

A record with no informative base (only ``N`` or other ambiguity codes after normalisation) is
answered but not scored: ``probability``, ``label`` and ``variant_probabilities`` (promoter) or
``scores`` (lncRNA) are null, ``locations`` is empty and ``flags`` holds ``no_informative_bases``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FLAGS_DOC = ("'ambiguous_bases' (some N or IUPAC codes), 'mostly_ambiguous' (more than half of the bases "
             "ambiguous; scored), 'no_informative_bases' (no A/C/G/T at all; not scored), 'truncated', "
             "'rna_input'")


class PromoterResult(BaseModel):
    id: str
    length: int = Field(description="nucleotides after normalisation")
    probability: float | None = Field(
        description="P(promoter); with model=all the mean of the five variants; "
                    "null when the record has no informative base (flag 'no_informative_bases')")
    label: Literal["promoter", "non_promoter"] | None = Field(
        description="null when the record is not scored (flag 'no_informative_bases')")
    model: str
    variant_probabilities: dict[str, float] | None = Field(
        None, description="with model=all: each variant's probability (null when the record is not scored)")
    truncated: bool = Field(description="the sequence was longer than the model's token limit and was cut")
    ambiguous_bases: int = Field(description="N and other IUPAC ambiguity codes in the record")
    flags: list[str] = Field(description=FLAGS_DOC)


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
    scores: LncRnaScores | None = Field(
        description="one sigmoid score per label; null when the record has no informative base "
                    "(flag 'no_informative_bases')")
    locations: list[str] = Field(description="labels whose score reaches its threshold (empty when not scored)")
    truncated: bool = Field(description="only the last 2,292 nt / 482 tokens (3' end) were used")
    ambiguous_bases: int
    flags: list[str] = Field(description=FLAGS_DOC)
    model: str


class LncRnaResponse(BaseModel):
    task: Literal["lncrna-localization"] = "lncrna-localization"
    model: str
    thresholds: dict[str, float]
    count: int
    results: list[LncRnaResult]
