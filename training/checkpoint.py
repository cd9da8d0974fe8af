"""Saving and loading trained classifiers (run folders) and building them from checkpoints.

A run folder holds ``model.safetensors`` (``bert.*`` + ``head.*``), the tokenizer file
(``tokenizer.json`` for BPE, ``vocab.txt`` for k-mers) and ``classifier.json`` (task,
architecture, variant, labels, backbone config, tokenization), which is all that is needed to
rebuild the model (nanoGPT-style: the checkpoint carries its own arguments). Run folders written
before the DNABERT (v1) and one-hot architectures existed have no ``architecture`` and load as
DNABERT-2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from service.contract import tasks
from service.contract.tokenization import SequenceTokenizerLike, tokenizer_from_entry
from training.models.architectures import DNABERT2, architecture, build_classifier


def save_classifier(model: nn.Module, tokenizer: SequenceTokenizerLike, out: Path,
                    task: str, extra: dict[str, Any] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    tokenizer.save(out / tokenizer.file_name)
    meta = {
        "task": task,
        "architecture": architecture(model),
        "variant": model.variant,
        "labels": list(tasks.task(task).labels),
        "head_dropout": model.head_dropout,
        "backbone": model.config.to_dict(),
        "tokenizer_file": tokenizer.file_name,
        "tokenization": tokenizer.card_tokenization(),
        **(extra or {}),
    }
    (out / "classifier.json").write_text(json.dumps(meta, indent=2))
    return out


def load_classifier(directory: str | Path) -> tuple[nn.Module, SequenceTokenizerLike, dict]:
    directory = Path(directory)
    meta = json.loads((directory / "classifier.json").read_text())
    model = build_classifier(meta.get("architecture", DNABERT2), meta["backbone"], meta["variant"],
                             meta.get("head_dropout", 0.1))
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    model.eval()
    tok = tokenizer_from_entry(directory / meta.get("tokenizer_file", "tokenizer.json"), meta["tokenization"])
    return model, tok, meta


def is_run_folder(directory: str | Path) -> bool:
    return (Path(directory) / "classifier.json").is_file()

