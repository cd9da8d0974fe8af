"""``dnabert-train``: train, evaluate and export DNABERT-2 classifiers.

Sub-commands::

    dnabert-train check-parity DIR [--output OUT.npz]
    dnabert-train tokenizer --out tokenizer.json
    dnabert-train pretrain --tokenizer tokenizer.json --out DIR [--preset small] [--steps N]
    dnabert-train train --task promoter --variant cnn [--data promoter_300bp | --train F ...]
    dnabert-train evaluate --model DIR --data FILE
    dnabert-train export --run RUN/model --out models/promoter/cnn
    dnabert-train embedded [--models models] [--runs runs/embedded]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from training.checkpoint import TASK_LNCRNA, TASK_PROMOTER, TASKS, default_policy


def _json(obj) -> str:
    return json.dumps(obj, indent=2, default=str)


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
    from training.data import lncrna_dataset, promoter_dataset, unlabelled_sequences
    from training.tokenizer import save_tokenizer, train_bpe_tokenizer

    held_out = {e.sequence for e in promoter_dataset()["test"]} | {e.sequence for e in lncrna_dataset()["test"]}
    seqs = unlabelled_sequences(exclude=held_out)
    tok = train_bpe_tokenizer(seqs, vocab_size=args.vocab_size)
    save_tokenizer(tok, args.out)
    print(f"trained BPE tokenizer (vocab {tok.get_vocab_size()}) on {len(seqs)} sequences -> {args.out}")
    return 0


def cmd_pretrain(args) -> int:
    import torch

    from service.tokenization import SequenceTokenizer
    from training.data import lncrna_dataset, promoter_dataset, unlabelled_sequences
    from training.dnabert2 import PRESETS
    from training.pretrain import pretrain_mlm
    from training.train import seed_everything

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    held_out = {e.sequence for e in promoter_dataset()["test"]} | {e.sequence for e in lncrna_dataset()["test"]}
    seqs = unlabelled_sequences(exclude=held_out)
    tok = SequenceTokenizer.from_file(args.tokenizer)
    config = PRESETS[args.preset]
    config.vocab_size = tok.vocab_size
    report = pretrain_mlm(seqs, tok, config, Path(args.out), steps=args.steps,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    print(_json(report))
    return 0


def _load_data(args, task: str):
    from training.data import file_dataset, lncrna_dataset, promoter_dataset

    if args.train:
        data = file_dataset(Path(args.train), task, Path(args.dev) if args.dev else None,
                            Path(args.test) if args.test else None)
    elif task == TASK_LNCRNA:
        data = lncrna_dataset()
    else:
        data = promoter_dataset()
    if args.limit:
        data.splits = {k: v[: args.limit] for k, v in data.splits.items()}
        data.description["limit"] = args.limit
    if not data["test"]:
        data.splits["test"] = data["dev"]
        data.description["test_is_dev"] = True
    return data


def _tokenizer_and_backbone(args, task: str, data):
    from service.tokenization import SequenceTokenizer
    from training.dnabert2 import PRESETS, DnaBertConfig
    from training.tokenizer import train_bpe_tokenizer

    policy = default_policy(task)
    if args.max_tokens:
        policy = type(policy)(args.max_tokens, policy.truncation_side, policy.max_nucleotides,
                              policy.nucleotide_truncation_side)
    if args.init_from:
        ckpt = Path(args.init_from)
        tok = SequenceTokenizer.from_file(ckpt / "tokenizer.json", policy)
        if (ckpt / "classifier.json").is_file():  # a fine-tuned run's model/ folder: reuse its backbone
            return tok, DnaBertConfig.from_dict(json.loads((ckpt / "classifier.json").read_text())["backbone"])
        return tok, DnaBertConfig.from_json(ckpt / "config.json")
    config = DnaBertConfig.from_dict(PRESETS[args.preset].to_dict())
    if args.tokenizer:
        tok = SequenceTokenizer.from_file(args.tokenizer, policy)
    else:
        tok = SequenceTokenizer(train_bpe_tokenizer([e.sequence for e in data["train"]], args.vocab_size), policy)
    config.vocab_size = tok.vocab_size
    return tok, config


def cmd_train(args) -> int:
    from training.checkpoint import load_classifier
    from training.export import export_model_folder
    from training.train import TrainConfig, build_model, labels_for, seed_everything, train_classifier

    task = args.task
    variant = args.variant or ("lncrna" if task == TASK_LNCRNA else "base")
    seed_everything(args.seed)
    data = _load_data(args, task)
    tok, config = _tokenizer_and_backbone(args, task, data)
    model, initialised = build_model(config, variant, args.head_dropout,
                                     Path(args.init_from) if args.init_from else None)
    cfg = TrainConfig(task=task, variant=variant, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, head_lr=args.head_lr, patience=args.patience,
                      eval_every=args.eval_every, max_minutes=args.max_minutes, seed=args.seed,
                      head_dropout=args.head_dropout, threads=args.threads,
                      extra={"init_from": args.init_from, "pooler_initialised": initialised,
                             "preset": None if args.init_from else args.preset})
    run_dir = Path(args.run_dir or f"runs/{task}-{variant}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = train_classifier(model, tok, data, cfg, run_dir)
    print(_json({"run_dir": str(run_dir), **summary}))
    if args.export:
        model, tok, meta = load_classifier(run_dir / "model")
        card = export_model_folder(
            model, tok, Path(args.export), name=args.name or variant, task=task,
            labels=labels_for(task), training=meta["training"], metrics=meta["metrics"],
            fp16=not args.no_fp16)
        print(f"exported {args.export} (ONNX vs PyTorch max abs diff "
              f"{card.export['parity_vs_pytorch']['max_abs_diff']:.2e})")
    return 0


def cmd_export(args) -> int:
    from training.checkpoint import load_classifier
    from training.export import export_model_folder
    from training.train import labels_for

    model, tok, meta = load_classifier(args.run)
    card = export_model_folder(model, tok, Path(args.out), name=args.name or meta["variant"],
                               task=meta["task"], labels=labels_for(meta["task"]),
                               training=meta.get("training", {}), metrics=meta.get("metrics", {}),
                               fp16=not args.no_fp16, description=args.description)
    print(_json({"out": args.out, "files": card.files, "parity": card.export["parity_vs_pytorch"]["max_abs_diff"],
                 "fp16": card.export["fp16"]}))
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


def cmd_embedded(args) -> int:
    from training.embedded import build_embedded

    build_embedded(Path(args.models), Path(args.runs), only=args.only, quick=args.quick)
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
    s.add_argument("--task", choices=TASKS, default=TASK_PROMOTER)
    s.add_argument("--variant", help="base, cnn, bilstm, cnn_bilstm_max, cnn_bilstm_avg (promoter) or lncrna")
    s.add_argument("--train", help="CSV (sequence,label) or labelled FASTA; default: the shared data set of the task")
    s.add_argument("--dev")
    s.add_argument("--test")
    s.add_argument("--limit", type=int, help="use at most N examples per split (smoke runs)")
    s.add_argument("--init-from", help="DNABERT-2 checkpoint directory (config.json, tokenizer.json, weights), "
                                       "or a fine-tuned run's model/ folder whose backbone to start from")
    s.add_argument("--preset", default="small", help="backbone size without --init-from: small, tiny, dnabert2-117m")
    s.add_argument("--tokenizer", help="tokenizer.json to use without --init-from (else one is trained)")
    s.add_argument("--vocab-size", type=int, default=4096)
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--lr", type=float, default=5e-4)
    s.add_argument("--head-lr", type=float, default=1e-3)
    s.add_argument("--head-dropout", type=float, default=0.1)
    s.add_argument("--patience", type=int, default=3)
    s.add_argument("--eval-every", type=int, default=0)
    s.add_argument("--max-minutes", type=float)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--threads", type=int)
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
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("report", help="metrics table of the exported models (from their cards)")
    s.add_argument("--models", default="models")
    s.add_argument("--output", help="also write it to this file (e.g. models/README.md)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("embedded", help="reproduce the embedded default models in models/")
    s.add_argument("--models", default="models")
    s.add_argument("--runs", default="runs/embedded")
    s.add_argument("--only", nargs="*", help="variants to (re)build; default all six")
    s.add_argument("--quick", action="store_true", help="a seconds-long smoke version (tiny preset, few examples)")
    s.set_defaults(func=cmd_embedded)
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
