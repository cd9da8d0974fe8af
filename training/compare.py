"""``dnabert-train compare``: DNABERT-2 next to DNABERT (v1) and the one-hot baselines, one table.

1. DNABERT (6-mer, one- and two-layer heads) and the three one-hot baselines are trained with
   their small presets on :func:`training.data.promoter_dataset` (the 300 bp split the DNABERT-2
   models were trained on), with early stopping on dev, and exported like every other model
   (to ``models/promoter/<variant>/``, or into the run folder with ``--no-export``);
2. the five DNABERT-2 promoter models are read from their cards in ``models/`` (same split, same
   metrics code); ``--retrain-dnabert2`` rebuilds them first with ``dnabert-train embedded``;
3. every exported model's inference throughput is measured with :func:`measure_throughput`
   (ONNX Runtime on CPU, batch 32, 300 bp, the same conditions for all, in one process);
4. one table is written between the markers of ``docs/comparison.md`` (text outside the
   markers is kept), and every figure to ``<runs>/comparison.json``.

Each training run is skipped when its run folder has finished (``metrics.json``), so an
interrupted comparison resumes.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from service.contract.card import ModelCard, SplitMetrics, Tokenization
from service.contract.tasks import PROMOTER, PROMOTER_VARIANTS
from service.runtime.model import OnnxModel
from service.runtime.offline import batcher_config, predict_sequences
from training.embedded import build_embedded
from training.export.onnx import export_run, export_summary
from training.job import TrainJob
from training.models.architectures import DESCRIPTIONS, architecture_of
from training.models.baselines import ONEHOT_VARIANTS
from training.models.dnabert1 import DNABERT1_VARIANTS
from training.train import train

NEW_VARIANTS = (*DNABERT1_VARIANTS, *ONEHOT_VARIANTS)

# Budgeted for two CPU cores: the whole comparison in about 25 minutes on an otherwise idle
# machine. Runs are bounded by epochs, not by time, so that the metrics do not depend on how
# busy the machine is (seeded: a rerun gives the same models up to thread-level float noise);
# early stopping on dev MCC keeps the best evaluation. max_minutes is only a safety cap, about
# twice the idle-machine time, and a run's curve.jsonl shows whether it was reached.
_DNABERT1 = dict(preset="small", epochs=2, batch_size=32, lr=1e-3, head_lr=1e-3, patience=3,
                 eval_every=200, max_minutes=12.0, head_dropout=0.1)
_ONEHOT = dict(preset="small", batch_size=64, lr=2e-3, head_lr=2e-3, patience=3, eval_every=0,
               max_minutes=8.0, head_dropout=0.2)
RECIPES = {
    "dnabert1_linear1": _DNABERT1,
    "dnabert1_linear2": _DNABERT1,
    "onehot_cnn_gru": dict(_ONEHOT, epochs=6),
    "onehot_cnn": dict(_ONEHOT, epochs=6),
    "onehot_gru": dict(_ONEHOT, epochs=5),
}
QUICK = dict(preset="tiny", epochs=1, eval_every=0, max_minutes=0.5, limit=48)

BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def random_dna(n: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGT"))
    return ["".join(letters[rng.integers(0, 4, length)]) for _ in range(n)]


def _median_seconds(fn, min_seconds: float, min_iters: int = 3) -> float:
    fn()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure_throughput(folder: Path, batch: int = 32, length: int = 300, seconds: float = 2.0,
                       threads: int | None = None, seed: int = 1) -> dict:
    """Sequences per second of one exported model folder with ONNX Runtime on the CPU.

    ``graph_seq_per_s``: the ONNX graph alone on one padded batch (as ``bench/run.py``'s raw ONNX
    figure); ``predict_seq_per_s``: normalise + tokenize + batch + run + activate
    (:func:`service.runtime.offline.predict_sequences`, the service's prediction path).
    Both are medians of repeated calls after one warm-up call.
    """
    model = OnnxModel(folder, threads=threads or 0)
    seqs = random_dna(batch, length, seed)
    ids, mask = model.tokenizer.pad([e.ids for e in model.tokenizer.encode(seqs)])
    config = batcher_config(max_batch_size=batch)
    graph = _median_seconds(lambda: model.run(ids, mask), seconds)
    predict = _median_seconds(lambda: predict_sequences(model, seqs, config=config), seconds)
    return {"batch": batch, "length": length, "tokens": int(ids.shape[1]), "threads": threads or "all",
            "graph_seq_per_s": batch / graph, "predict_seq_per_s": batch / predict,
            "graph_latency_ms": 1000 * graph}


def train_one(variant: str, runs: Path, quick: bool = False) -> Path:
    """Train one new model on the promoter split (skipped when its run has finished)."""
    run_dir = runs / variant
    if not (run_dir / "metrics.json").is_file():
        recipe = dict(RECIPES[variant])
        if quick:
            recipe.update(QUICK)
        result = train(TrainJob(task=PROMOTER, variant=variant, run_dir=run_dir, **recipe))
        print(json.dumps(result.report(), indent=2, default=str))
    return run_dir


def export_one(variant: str, run_dir: Path, out: Path) -> ModelCard:
    card = export_run(run_dir / "model", out, name=variant, description=DESCRIPTIONS[variant])
    print(json.dumps(export_summary(out, card), indent=2, default=str))
    card.training.initialised_from = "random initialisation (no pre-training)"
    card.training.command = "dnabert-train compare"
    card.save(out)
    return card


def row_from_card(folder: Path, family: str) -> dict:
    card = ModelCard.load(folder)

    def split(name: str) -> dict:
        return card.metrics.get(name, SplitMetrics()).model_dump()

    return {
        "model": card.name, "family": family, "folder": str(folder),
        "parameters": card.head.parameters,
        "train_seconds": card.training.train_seconds,
        "train_cpu_seconds": card.training.train_cpu_seconds,
        "initialised_from": card.training.initialised_from or "",
        "dev": split("dev"), "hl_test": split("hl_test"), "gue_test": split("gue_test"), "test": split("test"),
        "graph_mb": (folder / card.files["graph"]).stat().st_size / 2**20,
        "tokenization": token_label(card.tokenization),
    }


def token_label(tokenization: Tokenization) -> str:
    if tokenization.kind == "bpe":
        return "BPE"
    return f"{tokenization.k}-mer" if tokenization.k > 1 else "base"


FAMILY = {"dnabert2": "DNABERT-2", "dnabert1": "DNABERT (6-mer)", "onehot": "one-hot baseline"}


def run_compare(models: Path, runs: Path, output: Path, only: list[str] | None = None, quick: bool = False,
                retrain_dnabert2: bool = False, export: bool = True, threads: int | None = None,
                table_only: bool = False) -> dict:
    """Train (unless ``table_only``) and export the compared models, then one table of every
    promoter model folder there, from the cards, with a throughput column measured here."""
    start = time.monotonic()
    runs.mkdir(parents=True, exist_ok=True)
    if retrain_dnabert2:
        build_embedded(models, runs / "dnabert2", only=list(PROMOTER_VARIANTS), quick=quick)
    variants = [v for v in NEW_VARIANTS if not only or v in only]
    unknown = sorted(set(only or ()) - set(NEW_VARIANTS))
    if unknown:
        raise ValueError(f"compare trains {', '.join(NEW_VARIANTS)}; not {', '.join(unknown)}")
    folders: list[tuple[str, Path]] = []
    for v in PROMOTER_VARIANTS:
        if (models / PROMOTER / v / "card.json").is_file():
            folders.append(("dnabert2", models / PROMOTER / v))
    for v in variants:
        if table_only:
            if (models / PROMOTER / v / "card.json").is_file():
                folders.append((architecture_of(v), models / PROMOTER / v))
            continue
        run_dir = train_one(v, runs, quick)
        out = models / PROMOTER / v if export else run_dir / "export"
        export_one(v, run_dir, out)
        folders.append((architecture_of(v), out))
    rows = []
    for arch, folder in folders:
        row = row_from_card(folder, FAMILY[arch])
        row["throughput"] = measure_throughput(folder, seconds=0.2 if quick else 3.0, threads=threads)
        print(f"  {row['model']:18s} {row['throughput']['graph_seq_per_s']:9.1f} seq/s (graph), "
              f"{row['throughput']['predict_seq_per_s']:9.1f} seq/s (predict)", flush=True)
        rows.append(row)
    result = {
        "command": "dnabert-train compare" + (" --quick" if quick else "") + (" --table-only" if table_only else ""),
        "rows": rows,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count()},
        "seconds": round(time.monotonic() - start, 1),
    }
    if rows:
        result["split"] = ModelCard.load(Path(rows[0]["folder"])).training.data or {}
    (runs / "comparison.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    write_markdown(output, result)
    return result


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def comparison_table(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "| model | family | tokens | params | HL acc | HL F1 | HL MCC | HL AUROC | GUE acc | GUE F1 | GUE MCC "
        "| GUE AUROC | train s | train CPU s | ORT seq/s | graph MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        hl, gue = r["hl_test"], r["gue_test"]
        lines.append(
            f"| {r['model']} | {r['family']} | {r['tokenization']} | {r['parameters']:,} "
            f"| {_f(hl.get('accuracy'))} | {_f(hl.get('f1'))} | {_f(hl.get('mcc'))} | {_f(hl.get('auroc'))} "
            f"| {_f(gue.get('accuracy'))} | {_f(gue.get('f1'))} | {_f(gue.get('mcc'))} | {_f(gue.get('auroc'))} "
            f"| {_f(r['train_seconds'], 0)} | {_f(r.get('train_cpu_seconds'), 0)} "
            f"| {_f(r['throughput']['graph_seq_per_s'], 0)} | {_f(r['graph_mb'], 2)} |")
    split = result.get("split", {})
    parts = split.get("test_parts", {})
    lines += [
        "",
        f"HL: the hearing-loss test split ({parts.get('hl_test', '?')} sequences); GUE: the held-out "
        f"part of the GUE 300 bp pool ({parts.get('gue_test', '?')} sequences). Train s: wall-clock "
        "seconds of fine-tuning (evaluations on dev included); train CPU s: CPU seconds of the training "
        "process (not recorded for the DNABERT-2 models). ORT seq/s: ONNX Runtime on the CPU, "
        f"batch 32, 300 bp, graph only ({result['rows'][0]['throughput']['threads'] if rows else '?'} threads; "
        f"{result['machine']['cpu_count']} cores: {result['machine']['processor']}).",
    ]
    return "\n".join(lines)


def write_markdown(output: Path, result: dict) -> None:
    """Replace the table between the markers; write a skeleton document when there is none."""
    block = f"{BEGIN}\n{comparison_table(result)}\n{END}"
    if output.is_file() and BEGIN in (text := output.read_text()) and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        output.write_text(before + block + after)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(f"# DNABERT-2 and the models before it\n\nReproduce with `{result['command']}`.\n\n"
                      f"{block}\n")
