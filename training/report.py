"""``dnabert-train report``: the metrics table of the exported models, from their cards."""

from __future__ import annotations

from pathlib import Path

from service.contract.card import Calibration, ModelCard, SplitMetrics
from service.contract.taskfile import TaskFile
from service.contract.tasks import ALL, LNCRNA, PROMOTER, TASKS

EMBEDDING_NOTE = """\
Every DNABERT-2 and DNABERT (6-mer) folder also holds `embedding.onnx`, the backbone without its
head: inputs `input_ids` and `attention_mask` (int64, dynamic batch and sequence axes), one
output `last_hidden_state` (float32, batch x sequence x hidden) with exactly 0 at padded
positions. Its sha256 is in the card, whose `embedding` section gives the hidden size, the
poolings (`mean` over every non-padding token, [CLS] and [SEP] included, the default; `cls`),
the parity figures and how the graph was made. The one-hot baselines have no backbone and no
embedding graph. `dnabert-train export` (and `embedded`, `compare`) write it with every new
folder; for the folders above, exported before it existed, `dnabert-train add-embedding
MODEL_FOLDER ...` recovered the backbone weights from `model.onnx` into PyTorch, exported the
graph from that backbone and verified it against PyTorch and against the hidden-state tensor
inside `model.onnx` (both within 1e-4; the classifier graphs are unchanged)."""


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _or_blank(x) -> str:
    return "" if x is None else str(x)


def _split(card: ModelCard, name: str) -> SplitMetrics:
    """A split's metrics, empty (every figure n/a) when the card has none for it."""
    return card.metrics.get(name) or SplitMetrics()


def _token_label(card: ModelCard) -> str:
    tok = card.tokenization
    if tok.kind == "bpe":
        return "bpe"
    return f"{tok.k}-mer" if tok.k > 1 else "base"


def _brier(cal: Calibration | None, split: str) -> str:
    figures = cal.splits.get(split) if cal is not None else None
    return _f(figures.brier if figures is not None else None)


def _calibration_row(name: str, cal: Calibration | None) -> str:
    th = cal.threshold if cal is not None else None
    if th is None:
        threshold = "n/a | n/a | n/a | n/a"
    else:
        threshold = (f"{th.value:.2f} | {'yes' if th.adopted else 'no (0.5 stays)'} | {_f(th.dev_mcc_at_0_5)} "
                     f"| {_f(th.dev_mcc_at_threshold)}")
    return (f"| {name} | {_brier(cal, 'dev')} | {_brier(cal, 'hl_test')} | {_brier(cal, 'gue_test')} "
            f"| {threshold} |")


def calibration_lines(promoter: list[ModelCard], lncrna: list[ModelCard], task_file: TaskFile | None) -> list[str]:
    """The calibration tables (from the cards' ``calibration`` sections and, for ``all``, the task
    file), the default promoter model and its reliability table on the GUE test part."""
    lines = ["## Calibration, thresholds and the default model", "",
             "From the cards' `calibration` sections (`dnabert-train calibrate`: the service's own scores, fp32 "
             "graphs) and, for `all` (the mean of the five DNABERT-2 variants), from `promoter/task.json` "
             "(`dnabert-train choose-default`). Brier score: mean (P(promoter) - label)^2, lower is better. "
             "The threshold is chosen on dev (best dev MCC over 0.05..0.95) and adopted as the service's "
             "default only if it lies at least 0.1 from 0.5 and beats 0.5 by at least 0.01 dev MCC; "
             "otherwise 0.5 stays.", ""]
    if promoter:
        lines += ["| promoter model | dev Brier | HL test Brier | GUE test Brier | dev threshold | adopted "
                  "| dev MCC at 0.5 | dev MCC at threshold |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [_calibration_row(c.variant, c.calibration) for c in promoter]
        if task_file is not None and task_file.all is not None:
            lines.append(_calibration_row(f"{ALL} (mean of {len(TASKS[PROMOTER].ensemble)})", task_file.all))
        missing = [c.variant for c in promoter if c.calibration is None]
        if missing:
            lines += ["", f"Not calibrated yet (served at 0.5): {', '.join(missing)}."]
        lines.append("")
    for c in lncrna:
        if c.calibration is None:
            lines += [f"lncRNA model {c.variant}: not calibrated yet.", ""]
            continue
        labels = list(c.labels)
        lines += [f"lncRNA model {c.variant}, Brier score per label (sigmoid scores; thresholds unchanged):", "",
                  "| split | n | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
        for split, figures in c.calibration.splits.items():
            per = figures.per_label_brier or {}
            lines.append(f"| {split} | {figures.n} | " + " | ".join(_f(per.get(label)) for label in labels) + " |")
        lines.append("")
    lines += default_model_lines(promoter, task_file)
    return lines


def default_model_lines(promoter: list[ModelCard], task_file: TaskFile | None) -> list[str]:
    """The default promoter model, why, and its reliability table on the GUE test part."""
    if task_file is None:
        return [f"Default promoter model: **{TASKS[PROMOTER].default_model}** (the project's default in "
                "`service/contract/tasks.py`: no `promoter/task.json` yet; `dnabert-train choose-default` "
                "writes one).", ""]
    default = task_file.default_model
    mccs = ", ".join(f"{name} {value:.3f}" + (f" (at {task_file.thresholds[name]:.2f})"
                                             if task_file.thresholds and name in task_file.thresholds else "")
                     for name, value in task_file.dev_mcc.items())
    lines = [f"Default promoter model: **{default}** (`promoter/task.json`, `dnabert-train choose-default`), "
             f"chosen on {task_file.split}" + (f" ({task_file.n} sequences)" if task_file.n else "")
             + f" by {task_file.rule}. Dev MCC: {mccs}.", ""]
    if default == ALL:
        cal = task_file.all
    else:
        cal = next((c.calibration for c in promoter if c.variant == default), None)
    table = cal.splits.get("gue_test") if cal is not None else None
    if table is None or not table.reliability:
        return lines + [f"No reliability table for {default} on the GUE test part (not calibrated).", ""]
    lines += [f"Reliability of {default} on the GUE test part ({table.n} sequences, Brier {_f(table.brier)}):", "",
              "| P(promoter) | n | mean predicted | observed frequency |", "|---|---|---|---|"]
    for b in table.reliability:
        lines.append(f"| {b.lo:.1f}-{b.hi:.1f} | {b.n} | {_f(b.mean_predicted)} | {_f(b.observed_frequency)} |")
    return lines + [""]


def _label_auroc(figures: dict, n: int | None) -> str:
    """A label's AUROC with the positives and negatives behind it: ``0.612 (30+/9-)``."""
    pos = figures.get("n_positive")
    if pos is None or n is None:
        return _f(figures.get("auroc"))
    return f"{_f(figures.get('auroc'))} ({pos}+/{n - pos}-)"


def models_report(models: Path) -> str:
    cards = [ModelCard.load(p.parent) for p in sorted(models.glob("*/*/card.json"))]
    lines = ["# Embedded models", "",
             "Generated by `dnabert-train report` from the cards. The DNABERT-2 models are reproduced by "
             "`dnabert-train embedded`; DNABERT (v1, 6-mer) and the one-hot baselines by "
             "`dnabert-train compare` (see docs/comparison.md).",
             "Test splits were never used for training or model selection.", ""]
    promoter = [c for c in cards if c.task == PROMOTER]
    if promoter:
        split = (promoter[0].training.data or {}).get("split", "")
        lines += ["## Promoter (300 bp)", "", f"Split: {split}.", "",
                  "| variant | architecture | tokens | backbone start | params | dev MCC | HL test acc | HL test MCC "
                  "| HL test AUROC | GUE test acc | GUE test MCC | GUE test AUROC | train s | graph MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in promoter:
            hl, gue = _split(c, "hl_test"), _split(c, "gue_test")
            size = (models / c.task / c.variant / c.files["graph"]).stat().st_size / 2**20
            lines.append(
                f"| {c.variant} | {c.architecture} | {_token_label(c)} | {_or_blank(c.training.initialised_from)} "
                f"| {c.head.parameters or 0:,} "
                f"| {_f(c.metrics['dev'].mcc)} | {_f(hl.accuracy)} | {_f(hl.mcc)} | {_f(hl.auroc)} "
                f"| {_f(gue.accuracy)} | {_f(gue.mcc)} | {_f(gue.auroc)} "
                f"| {_or_blank(c.training.train_seconds)} | {size:.1f} |")
        task_file = TaskFile.load(models, PROMOTER)
        if task_file is not None and task_file.all_metrics:
            members = [c for c in promoter if c.variant in TASKS[PROMOTER].ensemble]
            am = {k: task_file.all_metrics.get(k) or {} for k in ("dev", "hl_test", "gue_test")}
            lines.append(
                f"| {ALL} | mean of the {len(members)} DNABERT-2 variants | bpe | (theirs) "
                f"| {sum(c.head.parameters or 0 for c in members):,} | {_f(am['dev'].get('mcc'))} "
                f"| {_f(am['hl_test'].get('accuracy'))} | {_f(am['hl_test'].get('mcc'))} | {_f(am['hl_test'].get('auroc'))} "
                f"| {_f(am['gue_test'].get('accuracy'))} | {_f(am['gue_test'].get('mcc'))} "
                f"| {_f(am['gue_test'].get('auroc'))} |  |  |")
        n = {k: _split(promoter[0], k).n for k in ("hl_test", "gue_test")}
        lines += ["", f"HL test: the hearing-loss test split ({n['hl_test']} sequences); GUE test: the "
                  f"held-out part of the GUE 300 bp pool ({n['gue_test']} sequences).", ""]
    for c in (c for c in cards if c.task == LNCRNA):
        t, d = c.metrics["test"], c.metrics["dev"]
        lines += ["## lncRNA localization", "", f"Split: {(c.training.data or {}).get('split', '')}.",
                  f"Backbone: {_or_blank(c.training.initialised_from)}.", "",
                  "| split | n | nucleus AUROC | cytoplasm AUROC | EV AUROC | macro AUROC | micro AUROC "
                  "| Hamming loss | subset acc | labels without positives |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in (("dev", d), ("test (LncLocFormer)", t)):
            extra = m.model_extra or {}
            pl = extra["per_label"]
            lines.append(
                f"| {name} | {m.n} | {_label_auroc(pl['nucleus'], m.n)} | {_label_auroc(pl['cytoplasm'], m.n)} "
                f"| {_label_auroc(pl['extracellular_vesicle'], m.n)} | {_f(m.macro_auroc)} | {_f(m.micro_auroc)} "
                f"| {_f(extra['hamming_loss'])} | {_f(extra['subset_accuracy'])} "
                f"| {', '.join(extra['labels_without_positives']) or '-'} |")
        lines.append("")
    lncrna = [c for c in cards if c.task == LNCRNA]
    if promoter or lncrna:
        lines += calibration_lines(promoter, lncrna, TaskFile.load(models, PROMOTER))
    if any("embedding" in c.files for c in cards):
        lines += ["", "## Embedding graphs", "", EMBEDDING_NOTE]
    return "\n".join(lines)
