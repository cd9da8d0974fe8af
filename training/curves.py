"""Training-curve pictures: ``dnabert-train curves RUN_DIR ... --out docs/images/curve_{name}.png``.

A run folder's ``curve.jsonl`` holds one JSON object per dev evaluation, written by
:func:`training.train.train_classifier` as training goes: ``step``, ``epoch``, ``train_loss``
(the mean loss since the previous evaluation), ``dev_score`` (the model-selection score: dev
MCC for promoters, dev macro AUROC for lncRNA) and ``seconds``. Each run gets one picture: the
dev score against the step, the kept (best) step marked, and the training loss against the step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

from matplotlib.figure import Figure  # noqa: E402 - after the backend is chosen

from service.contract.tasks import LNCRNA  # noqa: E402

CURVE_FILE = "curve.jsonl"
NAME_FIELD = "{name}"
"""Stands for each run's name in ``out_png`` (needed with several runs)."""
KEYS = ("step", "train_loss", "dev_score")


def read_curve(run_dir: str | Path) -> list[dict]:
    """The points of a run's ``curve.jsonl`` in file order (blank lines skipped)."""
    path = Path(run_dir) / CURVE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CURVE_FILE} (not a training run folder?)")
    points = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            point = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{i}: not JSON: {exc.msg}") from None
        missing = [k for k in KEYS if point.get(k) is None]
        if missing:
            raise ValueError(f"{path}:{i}: no {', '.join(missing)}")
        points.append(point)
    if not points:
        raise ValueError(f"{path}: no points (the run has not reached its first dev evaluation)")
    return points


def run_info(run_dir: str | Path) -> tuple[str, str | None]:
    """(name, task) of a run: the variant and task of its ``config.json`` when it has one, else
    the folder's name and None."""
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    if config.is_file():
        train = json.loads(config.read_text()).get("train") or {}
        return str(train.get("variant") or run_dir.name), train.get("task")
    return run_dir.name, None


def score_label(task: str | None) -> str:
    if task == LNCRNA:
        return "dev macro AUROC"
    return "dev MCC" if task else "dev score (MCC for promoters)"


def plot_run(points: Sequence[dict], name: str, task: str | None = None) -> Figure:
    """One run's picture: dev score (left) and training loss (right) against the step."""
    steps = [p["step"] for p in points]
    dev = [p["dev_score"] for p in points]
    loss = [p["train_loss"] for p in points]
    best = max(range(len(points)), key=lambda i: (dev[i], -i))  # the step training keeps
    fig = Figure(figsize=(10, 3.6), dpi=100)
    left, right = fig.subplots(1, 2)
    left.plot(steps, dev, marker="o", markersize=3, color="tab:blue", label=score_label(task))
    left.plot([steps[best]], [dev[best]], marker="*", markersize=12, color="tab:red", linestyle="none",
              label=f"kept: step {steps[best]} ({dev[best]:.3f})")
    left.set_xlabel("step")
    left.set_ylabel(score_label(task))
    left.set_title(f"{name}: {score_label(task)}")
    left.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    right.plot(steps, loss, marker="o", markersize=3, color="tab:orange", label="train loss")
    right.set_xlabel("step")
    right.set_ylabel("train loss (mean since the previous evaluation)")
    right.set_title(f"{name}: training loss")
    right.grid(alpha=0.3)
    for ax in (left, right):  # epoch boundaries
        for i in range(1, len(points)):
            if points[i].get("epoch") != points[i - 1].get("epoch"):
                ax.axvline(steps[i - 1], color="grey", alpha=0.25, linewidth=0.8)
    fig.tight_layout()
    return fig


def plot_curves(run_dirs: Sequence[str | Path], out_png: str | Path) -> dict[str, Path]:
    """One PNG per run (a picture per variant): ``out_png`` with ``{name}`` replaced by the run's
    name (:func:`run_info`); a single run may be given a plain file name. Returns name -> file."""
    if not run_dirs:
        raise ValueError("no run folders")
    out = str(out_png)
    if len(run_dirs) > 1 and NAME_FIELD not in out:
        raise ValueError(f"several runs need {NAME_FIELD} in the output name (e.g. docs/images/curve_{{name}}.png)")
    runs = [(Path(d), *run_info(d)) for d in run_dirs]
    names = [name for _, name, _ in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"several runs are named {', '.join(twice)}: their pictures would overwrite each other")
    curves = [(name, task, read_curve(d)) for d, name, task in runs]  # every file checked before writing
    written = {}
    for name, task, points in curves:
        path = Path(out.replace(NAME_FIELD, name))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = plot_run(points, name, task)
        fig.savefig(path, format="png")
        written[name] = path
    return written
