"""The model card: the contract between an exported model folder and the service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CARD_FILE = "card.json"
CARD_SCHEMA_VERSION = 1


class ModelCard(BaseModel):
    """Everything needed to serve a model folder, and what is known about the model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int = CARD_SCHEMA_VERSION
    name: str
    task: Literal["promoter", "lncrna-localization"]
    variant: str
    architecture: str = Field(
        "dnabert2", description="dnabert2 (the default: cards without this field), dnabert1 (BERT over "
        "overlapping k-mers) or onehot (CNN/GRU baselines over one-hot bases)")
    description: str = ""
    labels: list[str]
    activation: Literal["softmax", "sigmoid"]
    positive_index: int | None = Field(None, description="softmax column of the positive class")
    inputs: list[str]
    output: str
    files: dict[str, str] = Field(description="role -> file name: graph, graph_fp16, graph_int8 (optional), "
                                  "tokenizer (tokenizer.json for kind bpe, vocab.txt for kind kmer)")
    sha256: dict[str, str]
    tokenization: dict[str, Any] = Field(description="kind (bpe, the default, or kmer with k and "
                                         "special_tokens) and the truncation policy; see service.tokenization")
    backbone: dict[str, Any]
    head: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any]
    export: dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path) -> ModelCard:
        return cls.model_validate(json.loads((Path(folder) / CARD_FILE).read_text()))
