"""The one command that reproduces the embedded DNABERT-2 models in ``models/``.

Stages (each skipped when its output exists, so an interrupted build resumes where it stopped):

1. a 4,096-token BPE tokenizer trained on every sequence at hand except the test splits;
2. masked-LM pre-training of the ``small`` backbone on the same sequences (our stand-in for the
   pretrained DNABERT-2 that the published models start from);
3. the distillation set (:mod:`training.distill`): 200,000 sequences made from the promoter
   training split, labelled with the mean probability of the one-hot CNN, the CNN-GRU and
   DNABERT (6-mer) exported in ``models/promoter/`` (``dnabert-train compare`` makes those);
4. the ``base`` promoter student: the pre-trained backbone fine-tuned on the real training labels
   and the distillation set together, with early stopping on the dev split;
5. the four head variants, each starting from the backbone of that student (promoter-adapted) and
   trained the same way for a shorter time;
6. the lncRNA localization model: from the pre-trained backbone with each two-way loss
   temperature pair of :data:`LNCRNA_TEMPERATURES`, from the promoter student's backbone, and the
   head alone on the frozen pre-trained backbone; the run with the best *dev* macro AUROC is kept
   (test data plays no part in any choice);
7. every kept model exported to ``models/<task>/<variant>/`` and verified against PyTorch, its
   calibration (reliability tables, Brier score, a dev-chosen threshold) written into its card;
   the task's default model chosen by dev MCC among the five variants and ``all``
   (``models/promoter/task.json``); the curves drawn into ``docs/images/``.

``--ablation`` trains the ``base`` variant three more times, each for the same number of optimiser
steps: pre-trained and distilled, pre-trained only, distilled only; it writes
``runs/.../ablation.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from service.contract.card import Selection
from service.contract.tasks import LNCRNA, LNCRNA_VARIANT, PROMOTER, PROMOTER_VARIANTS
from service.contract.tokenization import tokenizer_for_card
from training.export.embedding import EMBEDDING_ROLE, verify_against_classifier
from training.export.onnx import export_run, export_summary
from training.job import TrainJob
from training.models.architectures import DESCRIPTIONS
from training.pretrain import pretrain
from training.tokenizer import train_tokenizer
from training.train import dev_score, train

STUDENT_RECIPE = dict(epochs=3, batch_size=64, lr=5e-4, head_lr=1e-3, patience=8, eval_every=400,
                      max_minutes=25.0, decay_by_time=True, head_dropout=0.1)
"""The ``base`` student: real labels + distillation set, from the pre-trained backbone."""
HEAD_RECIPE = dict(STUDENT_RECIPE, epochs=1, lr=2e-4, max_minutes=6.0, eval_every=250, patience=6)
"""The other four variants, from the student's backbone: a lower backbone rate, a new head."""
LNCRNA_RECIPE = dict(epochs=40, batch_size=16, lr=3e-4, head_lr=1e-3, patience=8, eval_every=0,
                     max_minutes=4.0, head_dropout=0.3)
# 176 training lncRNAs are few for fine-tuning a whole backbone: also try training the head alone
# on the pre-trained backbone (backbone learning rate 0) and keep the better by dev score.
LNCRNA_HEAD_ONLY_RECIPE = dict(LNCRNA_RECIPE, lr=0.0, head_lr=2e-3, epochs=60, patience=12)
LNCRNA_TEMPERATURES = ((4.0, 1.0), (1.0, 1.0), (2.0, 1.0), (8.0, 1.0), (1.0, 2.0), (2.0, 2.0), (4.0, 2.0), (8.0, 2.0))
"""Two-way loss temperatures (Tp, Tn) tried from the pre-trained backbone, the study's (4, 1) first;
the kept run is chosen with the other starts by dev macro AUROC. ``--quick`` tries the first two."""
PRETRAIN_STEPS = 2500
DISTILL_SEQUENCES = 200_000
ABLATION_STEPS = 500
"""Optimiser steps of each ablation run (batch 64): the same work for each, whatever the machine."""


def build_embedded(models: Path, runs: Path, only: list[str] | None = None, quick: bool = False,
                   ablation: bool = False, images: Path | None = Path("docs/images")) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    pretrained = _pretrained(runs, quick)
    distill = _distillation_set(runs, models, quick)

    def wanted(variant: str) -> bool:
        return not only or variant in only

    student = runs / f"{PROMOTER}-base-distilled"
    if wanted("base") or any(wanted(v) for v in PROMOTER_VARIANTS[1:]):
        _train(student, PROMOTER, "base", STUDENT_RECIPE, pretrained, quick, distill)
    for variant in PROMOTER_VARIANTS[1:]:
        if wanted(variant):
            _train(runs / f"{PROMOTER}-{variant}-distilled", PROMOTER, variant, HEAD_RECIPE,
                   student / "model", quick, distill)
    lncrna_runs = [(runs / lncrna_run_name(tp, tn), dict(LNCRNA_RECIPE, tp=tp, tn=tn), pretrained)
                   for tp, tn in LNCRNA_TEMPERATURES[: 2 if quick else None]]
    lncrna_runs += [(runs / f"{LNCRNA}-{LNCRNA_VARIANT}-from-promoter", LNCRNA_RECIPE, student / "model"),
                   (runs / f"{LNCRNA}-{LNCRNA_VARIANT}-head-only", LNCRNA_HEAD_ONLY_RECIPE, pretrained)]
    if wanted(LNCRNA_VARIANT):
        for run_dir, recipe, init in lncrna_runs:
            _train(run_dir, LNCRNA, LNCRNA_VARIANT, recipe, init, quick)

    exported = []
    for variant in PROMOTER_VARIANTS:
        if wanted(variant):
            run = student if variant == "base" else runs / f"{PROMOTER}-{variant}-distilled"
            _export(run, models / PROMOTER / variant, variant, pretrained, [run])
            exported.append(f"{PROMOTER}/{variant}")
    if wanted(LNCRNA_VARIANT):
        candidates = [r for r, _, _ in lncrna_runs]
        kept = max((c for c in candidates if (c / "metrics.json").is_file()), key=_dev_score)
        _export(kept, models / LNCRNA / LNCRNA_VARIANT, LNCRNA_VARIANT, pretrained, candidates)
        exported.append(f"{LNCRNA}/{LNCRNA_VARIANT}")
    _finish(models, runs, exported, images)
    if ablation:
        run_ablation(runs, pretrained, distill, quick)


def lncrna_run_name(tp: float, tn: float) -> str:
    """The run folder of an lncRNA run from the pre-trained backbone with these temperatures (the
    study's Tp=4, Tn=1 keeps the plain name)."""
    name = f"{LNCRNA}-{LNCRNA_VARIANT}"
    return name if (tp, tn) == (4.0, 1.0) else f"{name}-tp{tp:g}-tn{tn:g}"


def _pretrained(runs: Path, quick: bool) -> Path:
    tokenizer = runs / "tokenizer.json"
    if not tokenizer.is_file():
        tok, n = train_tokenizer(tokenizer, vocab_size=4096)
        print(f"trained BPE tokenizer (vocab {tok.get_vocab_size()}) on {n} sequences -> {tokenizer}")
    pretrained = runs / "pretrained"
    if not (pretrained / "model.safetensors").is_file():
        report = pretrain(tokenizer, pretrained, preset="tiny" if quick else "small",
                          steps=20 if quick else PRETRAIN_STEPS, batch_size=64, lr=1e-3, seed=13)
        print(json.dumps(report, indent=2, default=str))
    return pretrained


def _distillation_set(runs: Path, models: Path, quick: bool) -> Path:
    from training.data import promoter_dataset
    from training.distill import make_distillation_set

    path = runs / "distill.npz"
    if not path.is_file():
        made = make_distillation_set(promoter_dataset(), models, n=96 if quick else DISTILL_SEQUENCES)
        made.save(path)
        print(json.dumps(made.manifest, indent=2))
    return path


def _dev_score(run_dir: Path) -> float:
    meta = json.loads((run_dir / "model" / "classifier.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    return dev_score(meta["task"], metrics["dev"])


def _train(run_dir: Path, task: str, variant: str, recipe: dict, init_from: Path | None, quick: bool,
           distill: Path | None = None) -> None:
    if (run_dir / "model" / "model.safetensors").is_file():
        return
    recipe = dict(recipe)
    if quick:
        recipe.update(epochs=1, eval_every=0, max_minutes=0.5)
    result = train(TrainJob(task=task, variant=variant, init_from=init_from, run_dir=run_dir, distill=distill,
                            preset="tiny" if quick else "small", limit=48 if quick else None, **recipe))
    print(json.dumps(result.report(), indent=2, default=str))


def _initialised_from(run_dir: Path) -> str:
    name = run_dir.name
    if name.endswith("-head-only"):
        return "masked-LM pre-trained small backbone, kept frozen (head trained alone)"
    if name.endswith("-from-promoter"):
        return "backbone of the distilled promoter base model"
    if name.endswith("-distilled") and not name.startswith(f"{PROMOTER}-base-"):
        return "backbone of the distilled base model (promoter-adapted)"
    return "masked-LM pre-trained small backbone"


def _export(run_dir: Path, out: Path, variant: str, pretrained: Path, candidates: list[Path]) -> None:
    card = export_run(run_dir / "model", out, name=variant, description=DESCRIPTIONS[variant])
    print(json.dumps(export_summary(out, card), indent=2, default=str))
    # as add-embedding does: the backbone graph gives the classifier graph's own hidden state
    card.embedding.parity_vs_classifier_graph = verify_against_classifier(
        out / card.files["graph"], out / card.files[EMBEDDING_ROLE], tokenizer_for_card(out, card))
    card.training.pretrained_backbone = json.loads((pretrained / "pretrain.json").read_text())
    card.training.initialised_from = _initialised_from(run_dir)
    card.training.selection = Selection(
        rule="of the runs below, the one with the best dev score (MCC for promoters, macro AUROC for lncRNA)",
        dev_scores={c.name: _dev_score(c) for c in candidates if (c / "metrics.json").is_file()},
        kept=run_dir.name,
    )
    card.training.command = "dnabert-train embedded"
    card.save(out)


def _finish(models: Path, runs: Path, exported: list[str], images: Path | None) -> None:
    """Calibration in the new cards, the default model, the curves."""
    from training.calibration import calibrate_models
    from training.defaults import choose_default

    print(json.dumps(calibrate_models(models, exported), indent=2, default=str))
    if any(e.startswith(f"{PROMOTER}/") for e in exported):
        print(choose_default(models, PROMOTER).model_dump_json(indent=2))
    if images is not None:
        from training.curves import plot_curves

        images.mkdir(parents=True, exist_ok=True)
        for variant in PROMOTER_VARIANTS:
            run = runs / f"{PROMOTER}-{variant}-distilled"
            if (run / "curve.jsonl").is_file():
                plot_curves([run], images / f"curve_{PROMOTER}_{variant}.png")


ABLATION = {
    "pretrained+distilled": (True, True),
    "pretrained": (True, False),
    "distilled": (False, True),
}
"""Run name -> (masked-LM pre-trained backbone, distillation set). Neither (a fresh backbone on
the real labels alone) is the shared data notes' from-scratch figure and the models/README.md
note; it is left out to keep the ablation short."""


def run_ablation(runs: Path, pretrained: Path, distill: Path, quick: bool = False) -> dict:
    """``base`` three times with the same number of steps: with and without masked-LM
    pre-training, with and without the distillation set (each keeps its best dev state, as the
    build does). Dev MCC decides nothing here; the test parts are reported beside it."""
    recipe = dict(STUDENT_RECIPE, epochs=100, max_minutes=None, decay_by_time=False, max_steps=ABLATION_STEPS,
                  eval_every=200, patience=100)
    rows = {}
    for name, (use_pretrained, use_distill) in ABLATION.items():
        run = runs / "ablation" / name
        start = time.monotonic()
        job_recipe = dict(recipe)
        init = pretrained if use_pretrained else None
        if not use_pretrained:  # a fresh backbone of the same size, with the same tokenizer
            job_recipe["tokenizer"] = runs / "tokenizer.json"
        _train(run, PROMOTER, "base", job_recipe, init, quick, distill if use_distill else None)
        metrics = json.loads((run / "metrics.json").read_text())
        rows[name] = {"pretrained": use_pretrained, "distilled": use_distill,
                      "steps": metrics["steps"], "best_step": metrics["best_step"],
                      "seconds": round(time.monotonic() - start, 1),
                      **{split: {k: metrics["metrics"][split].get(k) for k in ("mcc", "accuracy", "auroc")}
                         for split in ("dev", "hl_test", "gue_test") if split in metrics["metrics"]}}
    (runs / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    return rows
