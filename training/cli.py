"""``dnabert-train``: train, evaluate and export DNABERT-2 classifiers.

Sub-commands::

    dnabert-train check-parity DIR [--output OUT.npz]
    dnabert-train tokenizer --out tokenizer.json
    dnabert-train pretrain --tokenizer tokenizer.json --out DIR [--preset small] [--steps N]
    dnabert-train train --task promoter --variant cnn [--data promoter_300bp | --train F ...]
    dnabert-train train --variant dnabert1_linear1 [--kmer 6] [--init-from DNA_bert_6]
    dnabert-train train --variant onehot_cnn_gru --export models/promoter/onehot_cnn_gru
    dnabert-train evaluate --model DIR --data FILE
    dnabert-train export --run RUN/model --out models/promoter/cnn
    dnabert-train add-embedding models/promoter/cnn [MODEL_FOLDER ...] [--force]
    dnabert-train embedded [--models models] [--runs runs/embedded]
    dnabert-train synth --length 300 --n 2000 --seed 0 --out DIR
    dnabert-train compare [--models models] [--runs runs/compare] [--output docs/comparison.md]
    dnabert-train calibrate [--models models] [--only promoter/base ...]
    dnabert-train choose-default [--models models] [--task promoter]
    dnabert-train curves RUN_DIR ... [--out docs/images/curve_{name}.png]

Variants: DNABERT-2 base, cnn, bilstm, cnn_bilstm_max, cnn_bilstm_avg, lncrna; DNABERT (v1,
k-mers) dnabert1_linear1, dnabert1_linear2; one-hot baselines onehot_cnn_gru, onehot_cnn,
onehot_gru.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.contract.tasks import TASK_NAMES
from training.job import TrainJob


def _json(obj) -> str:
    return json.dumps(obj, indent=2, default=str)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


# ---------------------------------------------------------------------------------------------
def cmd_check_parity(args) -> int:
    from training.parity import run_parity

    diffs = run_parity(args.directory, args.output)
    failed = False
    for key, value in diffs.items():
        if value is None:
            print(f"{key:20s} not compared (nothing expected)")
            continue
        ok = value == 0.0 if key == "input_ids" else value <= args.atol
        failed |= not ok
        shown = ("identical" if value == 0.0 else "DIFFER") if key == "input_ids" else f"{value:.3e}"
        print(f"{key:20s} max abs diff {shown:>12s}  {'ok' if ok else 'FAIL'}")
    if all(v is None for v in diffs.values()):
        print("no expected.npz: outputs written, nothing compared")
    return 1 if failed else 0


def cmd_tokenizer(args) -> int:
    from training.tokenizer import train_tokenizer

    tok, n = train_tokenizer(args.out, vocab_size=args.vocab_size)
    print(f"trained BPE tokenizer (vocab {tok.get_vocab_size()}) on {n} sequences -> {args.out}")
    return 0


def cmd_pretrain(args) -> int:
    from training.pretrain import pretrain

    report = pretrain(args.tokenizer, args.out, preset=args.preset, steps=args.steps, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed, threads=args.threads)
    print(_json(report))
    return 0


def train_job(args) -> TrainJob:
    """The job that ``dnabert-train train`` arguments describe."""
    return TrainJob(
        task=args.task, variant=args.variant, train=_path(args.train), dev=_path(args.dev), test=_path(args.test),
        limit=args.limit, init_from=args.init_from, preset=args.preset, kmer=args.kmer,
        tokenizer=_path(args.tokenizer), vocab_size=args.vocab_size, max_tokens=args.max_tokens,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
        head_dropout=args.head_dropout, hidden_dropout=args.hidden_dropout, patience=args.patience,
        eval_every=args.eval_every, max_minutes=args.max_minutes, max_steps=args.max_steps,
        decay_by_time=args.decay_by_time, distill=_path(args.distill), tp=args.tp, tn=args.tn, seed=args.seed,
        threads=args.threads, bf16=args.bf16, run_dir=_path(args.run_dir), export=_path(args.export), name=args.name,
        fp16=not args.no_fp16)


def cmd_train(args) -> int:
    from training.train import train

    result = train(train_job(args))
    print(_json(result.report()))
    if result.card is not None:
        print(f"exported {args.export} (ONNX vs PyTorch max abs diff "
              f"{result.card.export.parity_vs_pytorch.max_abs_diff:.2e})")
    return 0


def cmd_export(args) -> int:
    from training.export.onnx import export_run, export_summary

    card = export_run(args.run, args.out, name=args.name, description=args.description, fp16=not args.no_fp16,
                      fused_attention=args.fused_attention)
    print(_json(export_summary(args.out, card)))
    return 0


def cmd_add_embedding(args) -> int:
    from training.export.embedding import add_embedding, check_addable

    folders = [Path(f) for f in args.folders]
    for folder in folders:  # refuse before writing anything
        check_addable(folder, args.force)
    for folder in folders:
        card = add_embedding(folder, args.force)
        emb = card.embedding
        print(_json({"folder": str(folder), "file": card.files["embedding"], "dim": emb.dim,
                     "parity_vs_pytorch": emb.parity_vs_pytorch.max_abs_diff,
                     "parity_vs_classifier_graph": emb.parity_vs_classifier_graph.max_abs_diff,
                     "classifier_tensor": emb.parity_vs_classifier_graph.model_extra.get("tensor")}))
    return 0


def cmd_evaluate(args) -> int:
    from training.evaluate import evaluate_model_dir

    print(_json(evaluate_model_dir(Path(args.model), Path(args.data), args.threshold)))
    return 0


def cmd_report(args) -> int:
    from training.report import models_report

    text = models_report(Path(args.models))
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


def cmd_quantize(args) -> int:
    from training.export.quantize import quantize_models

    figures = quantize_models(Path(args.models), op_types=args.op_types, speed_seconds=args.speed_seconds,
                              only=args.only, per_channel=args.per_channel,
                              fused_attention=args.attention == "fused", tolerance=args.gate_tolerance,
                              replace=args.replace)
    print(_json(figures))
    return 0 if all(f.get("written") or "error" not in f for f in figures.values()) else 1


def cmd_embedded(args) -> int:
    from training.embedded import build_embedded

    build_embedded(Path(args.models), Path(args.runs), only=args.only, quick=args.quick, ablation=args.ablation,
                   images=Path(args.images))
    return 0


def cmd_synth(args) -> int:
    from training.synth import write_synthetic

    info = write_synthetic(Path(args.out), length=args.length, n=args.n, seed=args.seed,
                           dev_fraction=args.dev_fraction, test_fraction=args.test_fraction)
    print(_json(info))
    return 0


def cmd_compare(args) -> int:
    from training.compare import run_compare

    run_compare(Path(args.models), Path(args.runs), Path(args.output), only=args.only, quick=args.quick,
                retrain_dnabert2=args.retrain_dnabert2, export=not args.no_export,
                threads=args.threads, table_only=args.table_only)
    return 0


def cmd_calibrate(args) -> int:
    from training.calibration import calibrate_models

    print(_json(calibrate_models(Path(args.models), only=args.only, threads=args.threads)))
    return 0


def cmd_choose_default(args) -> int:
    from training.defaults import choose_default

    chosen = choose_default(Path(args.models), args.task, threads=args.threads)
    print(_json({"default_model": chosen.default_model, "dev_mcc": chosen.dev_mcc,
                 "thresholds": chosen.thresholds, "written": str(chosen.path(args.models, args.task))}))
    return 0


def cmd_curves(args) -> int:
    from training.curves import plot_curves

    for name, path in plot_curves(args.runs, args.out).items():
        print(f"{name}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnabert-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("check-parity", help="compare our DNABERT-2 with a checkpoint's expected outputs")
    s.add_argument("directory")
    s.add_argument("--output", help="write input_ids, last_hidden_state, pooled_output, classifier_logits here (.npz)")
    s.add_argument("--atol", type=float, default=1e-4)
    s.set_defaults(func=cmd_check_parity)

    s = sub.add_parser("tokenizer", help="train a 4,096-token BPE tokenizer on the data at hand")
    s.add_argument("--out", required=True)
    s.add_argument("--vocab-size", type=int, default=4096)
    s.set_defaults(func=cmd_tokenizer)

    s = sub.add_parser("pretrain", help="masked-LM pre-training of a small backbone")
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--preset", default="small")
    s.add_argument("--steps", type=int, default=3000)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--seed", type=int, default=13)
    s.add_argument("--threads", type=int)
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("train", help="fine-tune one classifier (and optionally export it)")
    s.add_argument("--task", choices=TASK_NAMES, default=TrainJob.task)
    s.add_argument("--variant", help="DNABERT-2: base, cnn, bilstm, cnn_bilstm_max, cnn_bilstm_avg (promoter) "
                                     "or lncrna; DNABERT (v1): dnabert1_linear1, dnabert1_linear2; one-hot "
                                     "baselines: onehot_cnn_gru, onehot_cnn, onehot_gru (promoter)")
    s.add_argument("--train", help="CSV (sequence,label) or labelled FASTA; default: the shared data set of the task")
    s.add_argument("--dev")
    s.add_argument("--test")
    s.add_argument("--limit", type=int, help="use at most N examples per split (smoke runs)")
    s.add_argument("--init-from", help="DNABERT-2 checkpoint directory (config.json, tokenizer.json, weights), "
                                       "a DNABERT (v1) one such as DNA_bert_6 (config.json, vocab.txt, weights) "
                                       "for dnabert1_*, or a fine-tuned run's model/ folder whose backbone to start from")
    s.add_argument("--preset", default=TrainJob.preset,
                   help="size without --init-from: small or tiny; also dnabert2-117m, medium (256/4), "
                        "deep (128/6) and mini (64/2) for DNABERT-2, dnabert-6 (768/12/12) for DNABERT v1")
    s.add_argument("--kmer", type=int, default=TrainJob.kmer, choices=(3, 4, 5, 6),
                   help="k of a DNABERT (v1) model from a preset")
    s.add_argument("--tokenizer", help="tokenizer.json to use without --init-from (else one is trained)")
    s.add_argument("--vocab-size", type=int, default=TrainJob.vocab_size)
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--epochs", type=int, default=TrainJob.epochs)
    s.add_argument("--batch-size", type=int, default=TrainJob.batch_size)
    s.add_argument("--lr", type=float, help="backbone learning rate; default 5e-4 (DNABERT-2), 1e-3 (DNABERT v1 "
                                            "from a preset, 5e-5 from a checkpoint), 2e-3 (one-hot baselines)")
    s.add_argument("--head-lr", type=float, help="head learning rate; default 1e-3 (2e-3 for the baselines)")
    s.add_argument("--head-dropout", type=float, default=TrainJob.head_dropout)  # the baselines: 0.2 in compare
    s.add_argument("--hidden-dropout", type=float,
                   help="DNABERT-2 backbone dropout (hidden_dropout_prob); default: the preset's (0.1) or the checkpoint's")
    s.add_argument("--patience", type=int, default=TrainJob.patience)
    s.add_argument("--eval-every", type=int, default=TrainJob.eval_every)
    s.add_argument("--max-minutes", type=float)
    s.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    s.add_argument("--decay-by-time", action="store_true",
                   help="with --max-minutes: the learning rate reaches 0 at the time budget if that comes first")
    s.add_argument("--distill", help="a distillation set (.npz of made sequences with teacher probabilities, "
                                     "runs/embedded/distill.npz of dnabert-train embedded), trained on beside "
                                     "the real labels (promoter)")
    s.add_argument("--tp", type=float, default=TrainJob.tp,
                   help="two-way multi-label loss, positive temperature (lncRNA; default %(default)s as in the study)")
    s.add_argument("--tn", type=float, default=TrainJob.tn,
                   help="two-way multi-label loss, negative temperature (lncRNA; default %(default)s)")
    s.add_argument("--seed", type=int, default=TrainJob.seed)
    s.add_argument("--threads", type=int)
    s.add_argument("--bf16", action="store_true",
                   help="train under bfloat16 autocast (fast on CPUs with AMX/AVX512-BF16); weights stay fp32")
    s.add_argument("--run-dir")
    s.add_argument("--export", help="model folder to export the trained model to")
    s.add_argument("--name")
    s.add_argument("--no-fp16", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="metrics of a model folder or run on a labelled file, as JSON")
    s.add_argument("--model", required=True, help="exported model folder (card.json) or run model folder")
    s.add_argument("--data", required=True, help="CSV (sequence,label) or labelled FASTA")
    s.add_argument("--threshold", type=float, default=0.5)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("export", help="export a trained run to an ONNX model folder")
    s.add_argument("--run", required=True, help="run folder's model/ (classifier.json + model.safetensors)")
    s.add_argument("--out", required=True)
    s.add_argument("--name")
    s.add_argument("--description", default="")
    s.add_argument("--no-fp16", action="store_true")
    s.add_argument("--fused-attention", action="store_true",
                   help="DNABERT-2 attention as ONNX Runtime's MultiHeadAttention in the fp32 and fp16 graphs, "
                        "the plain graphs kept as fallbacks (model.plain.onnx, model.fp16.plain.onnx)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("add-embedding", help="add the backbone graph (embedding.onnx) to model folders exported "
                                             "before, its weights recovered from their model.onnx")
    s.add_argument("folders", nargs="+", metavar="MODEL_FOLDER", help="DNABERT-2 or DNABERT (v1) model folders")
    s.add_argument("--force", action="store_true", help="replace an embedding graph the card already lists")
    s.set_defaults(func=cmd_add_embedding)

    s = sub.add_parser("report", help="metrics table of the exported models (from their cards)")
    s.add_argument("--models", default="models")
    s.add_argument("--output", help="also write it to this file (e.g. models/README.md)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("quantize", help="add int8 graphs (CPU) to exported model folders, measured vs fp32 on test data")
    s.add_argument("--models", default="models")
    s.add_argument("--op-types", nargs="+", default=["MatMul", "Gemm"],
                   help="operators to quantize (LSTM and Conv lose accuracy or speed; see training/export/quantize.py)")
    s.add_argument("--speed-seconds", type=float, default=2.0, help="0 skips the fp32/int8 speed check")
    s.add_argument("--only", nargs="*", help="task/name folders, e.g. promoter/cnn_bilstm_max (default: all)")
    s.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="one int8 scale per weight column (default) or one per matrix")
    s.add_argument("--attention", choices=["fused", "plain"], default="fused",
                   help="fused: DNABERT-2 attention as MultiHeadAttention before quantizing, the plain int8 graph "
                        "kept as model.int8.plain.onnx (default); plain: the exported graph quantized as it is")
    s.add_argument("--gate-tolerance", type=float, default=0.01,
                   help="largest |test MCC (or macro AUROC) int8 - fp32| written; a folder over it is left unchanged")
    s.add_argument("--replace", choices=["always", "if-faster"], default="always",
                   help="if-faster: keep a folder's int8 graph unless the new one takes less CPU time per sequence "
                        "(interleaved, batch 32)")
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("embedded", help="reproduce the embedded default models in models/")
    s.add_argument("--models", default="models")
    s.add_argument("--runs", default="runs/embedded")
    s.add_argument("--only", nargs="*", help="variants to (re)build; default all six")
    s.add_argument("--quick", action="store_true", help="a seconds-long smoke version (tiny preset, few examples)")
    s.add_argument("--ablation", action="store_true",
                   help="also train base with and without pre-training and distillation (same short budget each)")
    s.add_argument("--images", default="docs/images", help="where the training-curve pictures go")
    s.set_defaults(func=cmd_embedded)

    s = sub.add_parser("synth", help="synthetic TATA-box data: train.csv, dev.csv, test.csv (no external data)")
    s.add_argument("--length", type=int, default=300)
    s.add_argument("--n", type=int, default=2000, help="number of sequences in all (half contain TATAAA)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dev-fraction", type=float, default=0.1)
    s.add_argument("--test-fraction", type=float, default=0.1, help="0 writes no test.csv")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("compare", help="train DNABERT (v1) and the baselines on the 300 bp split; one table "
                                       "with the DNABERT-2 models")
    s.add_argument("--models", default="models")
    s.add_argument("--runs", default="runs/compare")
    s.add_argument("--output", default="docs/comparison.md")
    s.add_argument("--only", nargs="*", help="variants to (re)train; default all five")
    s.add_argument("--retrain-dnabert2", action="store_true",
                   help="also rebuild the five DNABERT-2 promoter models (dnabert-train embedded; about 2 h on 2 cores)")
    s.add_argument("--table-only", action="store_true",
                   help="train nothing: the table of the promoter model folders there, from their cards")
    s.add_argument("--no-export", action="store_true", help="do not export the trained models into --models")
    s.add_argument("--threads", type=int, help="ONNX Runtime threads for the throughput column (default: all)")
    s.add_argument("--quick", action="store_true", help="a seconds-long smoke version (tiny presets, few examples)")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("calibrate", help="reliability tables, Brier scores and a dev-chosen threshold into the "
                                         "cards of model folders (scored with the service's path)")
    s.add_argument("--models", default="models")
    s.add_argument("--only", nargs="*", help="task/name folders, e.g. promoter/base (default: all)")
    s.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: the library default)")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("choose-default", help="pick the task's default model by dev MCC (the five DNABERT-2 "
                                              "variants and all) and write models/<task>/task.json")
    s.add_argument("--models", default="models")
    s.add_argument("--task", choices=TASK_NAMES, default="promoter")
    s.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: the library default)")
    s.set_defaults(func=cmd_choose_default)

    s = sub.add_parser("curves", help="training-curve pictures (dev score and train loss by step) of run folders")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders with a curve.jsonl")
    s.add_argument("--out", default="docs/images/curve_{name}.png",
                   help="PNG file; {name} stands for each run's variant (needed with several runs)")
    s.set_defaults(func=cmd_curves)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"dnabert-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
