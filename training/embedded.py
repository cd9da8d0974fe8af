"""The one command that reproduces the embedded default models in ``models/``.

Stages (each skipped when its output exists, so an interrupted build resumes):

1. a 4,096-token BPE tokenizer trained on every sequence at hand except the test splits;
2. masked-LM pre-training of the ``small`` backbone on the same sequences (our stand-in for the
   pretrained DNABERT-2 that the published models start from);
3. each of the five promoter variants fine-tuned from that backbone on the 300 bp split;
4. the lncRNA localization model fine-tuned from it on the iLoc-lncRNA-BERT training set;
5. the four head variants trained a second time from the backbone of the fine-tuned ``base``
   model (a promoter-adapted backbone), and the lncRNA head trained alone on the frozen
   pre-trained backbone; for each model the run with the better *dev* score is kept (test data
   plays no part in the choice);
6. every kept model exported to ``models/<task>/<variant>/`` and verified against PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path

from service.contract.card import Selection
from service.contract.tasks import LNCRNA, LNCRNA_VARIANT, PROMOTER, PROMOTER_VARIANTS
from training.export.onnx import export_run, export_summary
from training.job import TrainJob
from training.models.architectures import DESCRIPTIONS
from training.pretrain import pretrain
from training.tokenizer import train_tokenizer
from training.train import dev_score, train

PROMOTER_RECIPE = dict(epochs=4, batch_size=32, lr=5e-4, head_lr=1e-3, patience=3, eval_every=200,
                       max_minutes=6.0, head_dropout=0.1)
LNCRNA_RECIPE = dict(epochs=40, batch_size=16, lr=3e-4, head_lr=1e-3, patience=8, eval_every=0,
                     max_minutes=5.0, head_dropout=0.3)
# 176 training lncRNAs are few for fine-tuning a whole backbone: also try training the head alone
# on the pre-trained backbone (backbone learning rate 0) and keep the better by dev score.
LNCRNA_HEAD_ONLY_RECIPE = dict(LNCRNA_RECIPE, lr=0.0, head_lr=2e-3, epochs=60, patience=12)
PRETRAIN_STEPS = 2500


def build_embedded(models: Path, runs: Path, only: list[str] | None = None, quick: bool = False) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    tokenizer = runs / "tokenizer.json"
    if not tokenizer.is_file():
        tok, n = train_tokenizer(tokenizer, vocab_size=4096)
        print(f"trained BPE tokenizer (vocab {tok.get_vocab_size()}) on {n} sequences -> {tokenizer}")
    pretrained = runs / "pretrained"
    if not (pretrained / "model.safetensors").is_file():
        report = pretrain(tokenizer, pretrained, preset="tiny" if quick else "small",
                          steps=20 if quick else PRETRAIN_STEPS, batch_size=64, lr=1e-3, seed=13)
        print(json.dumps(report, indent=2, default=str))
    jobs = [(PROMOTER, v, PROMOTER_RECIPE) for v in PROMOTER_VARIANTS]
    jobs.append((LNCRNA, LNCRNA_VARIANT, LNCRNA_RECIPE))
    for task, variant, recipe in jobs:
        if only and variant not in only:
            continue
        run_dir = runs / f"{task}-{variant}"
        if not (run_dir / "model" / "model.safetensors").is_file():
            _train(run_dir, task, variant, recipe, pretrained, quick)
    # Second pass: the head variants from the promoter-adapted backbone of the base model.
    base_model = runs / f"{PROMOTER}-base" / "model"
    for variant in PROMOTER_VARIANTS[1:]:
        if (only and variant not in only) or not (base_model / "model.safetensors").is_file():
            continue
        run_dir = runs / f"{PROMOTER}-{variant}-from-base"
        if not (run_dir / "model" / "model.safetensors").is_file():
            _train(run_dir, PROMOTER, variant, PROMOTER_RECIPE, base_model, quick)
    if not only or LNCRNA_VARIANT in only:
        run_dir = runs / f"{LNCRNA}-{LNCRNA_VARIANT}-head-only"
        if not (run_dir / "model" / "model.safetensors").is_file():
            _train(run_dir, LNCRNA, LNCRNA_VARIANT, LNCRNA_HEAD_ONLY_RECIPE, pretrained, quick)
    for task, variant, _ in jobs:
        if only and variant not in only:
            continue
        candidates = [runs / f"{task}-{variant}", runs / f"{task}-{variant}-from-base",
                      runs / f"{task}-{variant}-head-only"]
        kept = max((c for c in candidates if (c / "metrics.json").is_file()), key=_dev_score)
        _export(kept, models / task / variant, variant, pretrained, candidates)


def _dev_score(run_dir: Path) -> float:
    meta = json.loads((run_dir / "model" / "classifier.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    return dev_score(meta["task"], metrics["dev"])


def _train(run_dir: Path, task: str, variant: str, recipe: dict, init_from: Path, quick: bool) -> None:
    recipe = dict(recipe)
    if quick:
        recipe.update(epochs=1, eval_every=0, max_minutes=0.5)
    result = train(TrainJob(task=task, variant=variant, init_from=init_from, run_dir=run_dir,
                            limit=48 if quick else None, **recipe))
    print(json.dumps(result.report(), indent=2, default=str))


def _export(run_dir: Path, out: Path, variant: str, pretrained: Path, candidates: list[Path]) -> None:
    card = export_run(run_dir / "model", out, name=variant, description=DESCRIPTIONS[variant])
    print(json.dumps(export_summary(out, card), indent=2, default=str))
    card.training.pretrained_backbone = json.loads((pretrained / "pretrain.json").read_text())
    card.training.initialised_from = (
        "backbone of the fine-tuned base model (promoter-adapted)" if run_dir.name.endswith("-from-base")
        else "masked-LM pre-trained small backbone, kept frozen (head trained alone)"
        if run_dir.name.endswith("-head-only") else "masked-LM pre-trained small backbone")
    card.training.selection = Selection(
        rule="of the runs below, the one with the best dev score (MCC for promoters, macro AUROC for lncRNA)",
        dev_scores={c.name: _dev_score(c) for c in candidates if (c / "metrics.json").is_file()},
        kept=run_dir.name,
    )
    card.training.command = "dnabert-train embedded"
    card.save(out)
