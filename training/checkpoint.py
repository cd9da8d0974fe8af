"""Saving and loading trained classifiers (run folders) and building them from checkpoints.

A run folder holds ``model.safetensors`` (``bert.*`` + ``head.*``), ``tokenizer.json`` and
``classifier.json`` (task, variant, labels, backbone config, truncation policy), which is all
that is needed to rebuild the model (nanoGPT-style: the checkpoint carries its own arguments).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from service.tokenization import SequenceTokenizer, TruncationPolicy
from training.dnabert2 import DnaBertConfig
from training.models import SequenceClassifier

TASK_PROMOTER = "promoter"
TASK_LNCRNA = "lncrna-localization"
TASKS = (TASK_PROMOTER, TASK_LNCRNA)


def default_policy(task: str) -> TruncationPolicy:
    """Promoters: 512 tokens, cut at the 3' end. lncRNA: the last 2,292 nt, at most 482
    tokens, keeping the 3' end (iLoc-lncRNA-BERT)."""
    if task == TASK_LNCRNA:
        return TruncationPolicy(482, "left", 2292, "left")
    return TruncationPolicy(512, "right", None, "left")


def save_classifier(model: SequenceClassifier, tokenizer: SequenceTokenizer, out: Path,
                    task: str, labels: list[str], extra: dict[str, Any] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    tokenizer.backend.save(str(out / "tokenizer.json"))
    meta = {
        "task": task,
        "variant": model.variant,
        "labels": labels,
        "head_dropout": model.head_dropout,
        "backbone": model.config.to_dict(),
        "tokenization": asdict(tokenizer.policy),
        **(extra or {}),
    }
    (out / "classifier.json").write_text(json.dumps(meta, indent=2))
    return out


def load_classifier(directory: str | Path) -> tuple[SequenceClassifier, SequenceTokenizer, dict]:
    directory = Path(directory)
    meta = json.loads((directory / "classifier.json").read_text())
    model = SequenceClassifier(DnaBertConfig.from_dict(meta["backbone"]), meta["variant"],
                               meta.get("head_dropout", 0.1))
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    model.eval()
    tok = SequenceTokenizer.from_file(directory / "tokenizer.json",
                                      TruncationPolicy(**meta["tokenization"]))
    return model, tok, meta


def is_run_folder(directory: str | Path) -> bool:
    return (Path(directory) / "classifier.json").is_file()

