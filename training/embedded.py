"""The one command that reproduces the embedded default models in ``models/``.

Stages (each skipped when its output exists, so an interrupted build resumes):

1. a 4,096-token BPE tokenizer trained on every sequence at hand except the test splits;
2. masked-LM pre-training of the ``small`` backbone on the same sequences (our stand-in for the
   pretrained DNABERT-2 that the published models start from);
3. each of the five promoter variants fine-tuned from that backbone on the 300 bp split;
4. the lncRNA localization model fine-tuned from it on the iLoc-lncRNA-BERT training set;
5. every model exported to ``models/<task>/<variant>/`` and verified against PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from training.checkpoint import TASK_LNCRNA, TASK_PROMOTER
from training.models import LNCRNA_VARIANT, PROMOTER_VARIANTS

PROMOTER_RECIPE = dict(epochs=4, batch_size=32, lr=5e-4, head_lr=1e-3, patience=3, eval_every=200,
                       max_minutes=6.0, head_dropout=0.1)
LNCRNA_RECIPE = dict(epochs=40, batch_size=16, lr=3e-4, head_lr=1e-3, patience=8, eval_every=0,
                     max_minutes=5.0, head_dropout=0.3)
PRETRAIN_STEPS = 2500

DESCRIPTIONS = {
    "base": "DNABERT-2 sequence classifier: pooler, dropout, linear",
    "cnn": "Conv1d(H->2H, k=3), ReLU, MaxPool(2), BatchNorm, dropout, first pooled position, linear",
    "bilstm": "BiLSTM(128 per direction), each sequence's last valid step, linear",
    "cnn_bilstm_max": "CNN block with max pooling, then BiLSTM, last valid step, linear",
    "cnn_bilstm_avg": "CNN block with average pooling, then BiLSTM, last valid step, linear",
    LNCRNA_VARIANT: "iLoc-lncRNA-BERT head: masked mean, dropout, H->64, dropout, 64->3, sigmoid",
}


def _train_args(**kw) -> SimpleNamespace:
    base = dict(train=None, dev=None, test=None, limit=None, init_from=None, preset="small",
                tokenizer=None, vocab_size=4096, max_tokens=None, seed=42, threads=None,
                run_dir=None, export=None, name=None, no_fp16=False)
    base.update(kw)
    return SimpleNamespace(**base)


def build_embedded(models: Path, runs: Path, only: list[str] | None = None, quick: bool = False) -> None:
    from training.cli import cmd_pretrain, cmd_tokenizer, cmd_train

    runs.mkdir(parents=True, exist_ok=True)
    tokenizer = runs / "tokenizer.json"
    if not tokenizer.is_file():
        cmd_tokenizer(SimpleNamespace(out=str(tokenizer), vocab_size=4096))
    pretrained = runs / "pretrained"
    if not (pretrained / "model.safetensors").is_file():
        cmd_pretrain(SimpleNamespace(tokenizer=str(tokenizer), out=str(pretrained),
                                     preset="tiny" if quick else "small",
                                     steps=20 if quick else PRETRAIN_STEPS, batch_size=64, lr=1e-3,
                                     seed=13, threads=None))
    jobs = [(TASK_PROMOTER, v, PROMOTER_RECIPE) for v in PROMOTER_VARIANTS]
    jobs.append((TASK_LNCRNA, LNCRNA_VARIANT, LNCRNA_RECIPE))
    for task, variant, recipe in jobs:
        if only and variant not in only:
            continue
        out = models / task / variant
        recipe = dict(recipe)
        if quick:
            recipe.update(epochs=1, eval_every=0, max_minutes=0.5)
        cmd_train(_train_args(task=task, variant=variant, init_from=str(pretrained),
                              run_dir=str(runs / f"{task}-{variant}"), export=str(out), name=variant,
                              limit=48 if quick else None, **recipe))
        card = json.loads((out / "card.json").read_text())
        card["description"] = DESCRIPTIONS[variant]
        card["training"]["pretrained_backbone"] = json.loads((pretrained / "pretrain.json").read_text())
        card["training"]["command"] = "dnabert-train embedded"
        (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
