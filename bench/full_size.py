"""Full-size benchmark on CPU: DNABERT-2-117M, our PyTorch eager path against ONNX Runtime fp32 and
int8 (plain and fused attention) and the service end to end, measured side by side in one run.

    python -m bench.full_size                          # random 117M weights; ~10-15 min on 2 cores
    python -m bench.full_size --checkpoint DNABERT-2-117M   # a user's checkpoint directory
    python -m bench.full_size --skip-lncrna            # without the slow 482-token rows
    python -m bench.full_size --quick                  # seconds-long smoke (tiny preset)

The model is the ``base`` classifier (DNABERT-2's pooler + linear, the published sequence
classifier) with seeded random weights, or with the backbone of ``--checkpoint``. It is exported
with the project's exporter (``export_model_folder(fused_attention=True)``) into a real model
folder, and given its int8 graph by ``dnabert-train quantize``'s code (per-channel weights, fused
attention), which gates it on a subset of the promoter test split; the pooled output of the
int8 graph is compared with fp32 on real sequences (cosine, gate >= 0.999).

Rows, all measured interleaved (each round runs every backend once at every shape, the order
alternating between rounds; the figures are medians over the rounds):

* ``eager``: our PyTorch modules (``training.models``), ``torch.no_grad``, the baseline;
* ``fp32 before``: the plain exported graph, ONNX Runtime with its default optimizers (what the
  service ran before fused attention and the SkipLayerNormalization change);
* ``fp32 plain`` / ``fp32 fused``: the plain graph and the fused-attention graph in the project's
  session (:class:`service.runtime.session.Session`);
* ``int8 before``: per-tensor dynamic int8 of the plain graph, default optimizers (the earlier
  ``dnabert-train quantize``);
* ``int8 plain`` / ``int8 fused``: the new int8 graphs (per-channel weights), fused the one served.

Shapes: 300 bp (about 66 tokens) at batches 1, 8 and 32, and the lncRNA length (482 tokens) at
batches 1 and 8. Each row has its GFLOP/s (model FLOPs from ``torch.utils.flop_counter``) and
its share of the machine's matrix-product ceiling, measured in the same rounds: a large fp32
product (ONNX Runtime ``MatMul``) for fp32 and eager rows, a large dynamic int8 product
(``DynamicQuantizeMatMul``) for int8 rows. The service (``dnabert-serve`` on the exported folder,
fp32 and int8, the load generator in its own processes) is compared with raw ONNX Runtime at
batch 32 measured just before and after it. Figures are printed and written to
``bench/results/full_size.{md,json}``; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.run import REPO, bench_service, machine, random_dna

PROMOTER_NT, LNCRNA_NT, LNCRNA_TOKENS = 300, 2292, 482
COSINE_GATE = 0.999
BACKENDS_300 = ["eager", "fp32 before", "fp32 plain", "fp32 fused", "int8 before", "int8 plain", "int8 fused"]
BACKENDS_482 = ["eager", "fp32 plain", "fp32 fused", "int8 plain", "int8 fused"]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def tokenizer_file(checkpoint: Path | None) -> Path:
    if checkpoint is not None:
        return checkpoint / "tokenizer.json"
    published = REPO.parent / "shared" / "dnabert2" / "tokenizer.json"
    return published if published.is_file() else REPO / "models" / "promoter" / "base" / "tokenizer.json"


def build_model(preset: str, checkpoint: Path | None, vocab_size: int):
    """The ``base`` classifier: seeded random weights, or the backbone of a checkpoint directory."""
    import torch

    from training.models.dnabert2 import (
        PRESETS,
        DnaBertConfig,
        find_weights,
        load_backbone_state,
        read_state_dict,
    )
    from training.models.heads import SequenceClassifier

    torch.manual_seed(0)
    if checkpoint is not None:
        config = DnaBertConfig.from_json(checkpoint / "config.json")
        model = SequenceClassifier(config, "base")
        load_backbone_state(model.bert, read_state_dict(find_weights(checkpoint)))
        return model.eval(), f"checkpoint {checkpoint}"
    config = PRESETS[preset]
    if config.vocab_size != vocab_size:
        config = DnaBertConfig.from_dict({**config.to_dict(), "vocab_size": vocab_size})
    return SequenceClassifier(config, "base").eval(), f"preset {preset}, random weights (seed 0)"


def real_examples(n: int, seed: int = 0) -> tuple[list, str]:
    """Labelled promoter test sequences (the gate's data), or random DNA where the data is absent."""
    from training.data import Example

    try:
        from training.export.quantize import test_examples

        examples = test_examples("promoter")
        rng = np.random.default_rng(seed)
        picked = [examples[i] for i in sorted(rng.choice(len(examples), min(n, len(examples)), replace=False))]
        return picked, f"{len(picked)} sequences of the promoter test split"
    except (FileNotFoundError, OSError) as exc:
        seqs = random_dna(n, PROMOTER_NT, seed)
        return [Example(str(i), s, i % 2) for i, s in enumerate(seqs)], f"random DNA ({exc})"


def export_folders(model, tok, out: Path, examples: list) -> dict:
    """The model folder (fused fp32 + plain fallback, embedding graph, tokenizer, card) with its
    int8 graphs, and the earlier per-tensor int8 graph beside it for the ``before`` rows."""
    from service.runtime.session import quantize_dynamic_graph
    from training.export.onnx import export_model_folder
    from training.export.quantize import DEFAULT_OP_TYPES, add_int8

    folder = out / "promoter" / "base"
    info: dict = {}
    t = time.perf_counter()
    card = export_model_folder(model, tok, folder, name="base", task="promoter", fp16=False,
                               training={"weights": "benchmark model"}, metrics={},
                               description="DNABERT-2 for the full-size CPU benchmark", fused_attention=True)
    info["export_s"] = round(time.perf_counter() - t, 1)
    info["parity_vs_pytorch"] = card.export.parity_vs_pytorch.max_abs_diff
    info["attention"] = card.export.model_extra.get("attention")
    t = time.perf_counter()
    info["int8"] = add_int8(folder, examples, speed_seconds=0)
    info["quantize_s"] = round(time.perf_counter() - t, 1)
    before = out / "int8_before.onnx"
    quantize_dynamic_graph(folder / "model.plain.onnx", before, DEFAULT_OP_TYPES, per_channel=False)
    info["folder"], info["int8_before"] = folder, before
    return info


def pooled_cosine(folder: Path, tok, sequences: list[str]) -> dict:
    """Cosine of the pooled output ([CLS] dense + tanh) of the int8 graphs against fp32, per
    sequence, on real sequences: the same graphs with the pooler's tensor as an extra output."""
    import onnx

    from service.runtime.session import Session

    def pooled(graph: Path, tmp: Path) -> np.ndarray:
        model = onnx.load(str(graph))
        tanh = [n.output[0] for n in model.graph.node if n.op_type == "Tanh"]
        if len(tanh) != 1:
            raise RuntimeError(f"{graph}: expected one Tanh (the pooler), found {len(tanh)}")
        model.graph.output.append(onnx.helper.make_tensor_value_info(tanh[0], onnx.TensorProto.FLOAT, None))
        path = tmp / graph.name
        onnx.save(model, str(path))
        session = Session(path)
        rows = []
        for i in range(0, len(sequences), 16):
            ids, mask = tok.pad([e.ids for e in tok.encode(sequences[i:i + 16])])
            rows.append(session.run({"input_ids": ids, "attention_mask": mask}, tanh[0]))
        return np.concatenate(rows)

    with tempfile.TemporaryDirectory() as tmp:
        ref = pooled(folder / "model.onnx", Path(tmp))
        out = {}
        for name in ("model.int8.onnx", "model.int8.plain.onnx"):
            got = pooled(folder / name, Path(tmp))
            cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
            out[name] = {"min": float(cos.min()), "mean": float(cos.mean()), "passed": bool(cos.min() >= COSINE_GATE)}
    return {"sequences": len(sequences), "gate": COSINE_GATE, **out}


def ceilings() -> dict[str, Callable[[], float]]:
    """Steps of one large fp32 and one large int8 matrix product (ONNX Runtime, 2048 x 768 x 3072):
    what the machine's matrix-product ceiling is measured with."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from service.runtime.session import Session

    m, k, n = 2048, 768, 3072
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
    steps = {}
    graphs = {
        "fp32": ([helper.make_node("MatMul", ["x", "w"], ["y"])], [numpy_helper.from_array(w, "w")]),
        "int8": ([helper.make_node("DynamicQuantizeMatMul", ["x", "wq", "s", "z"], ["y"], domain="com.microsoft")],
                 [numpy_helper.from_array(np.clip(np.round(w / 0.001), -127, 127).astype(np.int8), "wq"),
                  numpy_helper.from_array(np.array(0.001, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]),
    }
    for name, (nodes, inits) in graphs.items():  # a session holds its graph: the file can go
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                        helper.make_opsetid("com.microsoft", 1)])
        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(model, str(Path(tmp) / f"{name}.onnx"))
            session = Session(Path(tmp) / f"{name}.onnx")

        def step(session=session) -> float:
            t = time.perf_counter()
            session.run({"x": x})
            return 2 * m * k * n / (time.perf_counter() - t) / 1e9

        steps[name] = step
    return steps


def interleaved(runners: dict[tuple[str, int, int], Callable[[], None]], ceiling: dict[str, Callable[[], float]],
                rounds: int, min_seconds: float) -> tuple[dict, dict]:
    """Sequences per second of every (backend, tokens, batch) runner: each round runs each of them
    (for at least ``min_seconds``, at least once), the order alternating; medians over rounds.
    The ceilings are the best product rate seen in any round (a ceiling is a maximum)."""
    keys = list(runners)
    for key in keys:  # warm-up
        runners[key]()
    rates: dict = {key: [] for key in keys}
    peaks: dict = {name: [] for name in ceiling}
    for r in range(rounds):
        for name, step in ceiling.items():
            peaks[name].append(max(step() for _ in range(8)))
        for key in keys if r % 2 == 0 else reversed(keys):
            n, start = 0, time.perf_counter()
            while n < 1 or time.perf_counter() - start < min_seconds:
                runners[key]()
                n += 1
            rates[key].append(key[2] * n / (time.perf_counter() - start))
        print(f"  round {r + 1}/{rounds} done, load average {load_average()}", flush=True)
    return ({key: {"median": statistics.median(v), "best": max(v), "rounds": v} for key, v in rates.items()},
            {name: max(v) for name, v in peaks.items()})


def make_runners(model, folder: Path, before_int8: Path, batches: dict[int, tuple[np.ndarray, np.ndarray]],
                 backends: list[str]) -> dict:
    import torch

    from service.runtime.session import Session

    graphs = {"fp32 before": (folder / "model.plain.onnx", ()), "fp32 plain": (folder / "model.plain.onnx", None),
              "fp32 fused": (folder / "model.onnx", None), "int8 before": (before_int8, ()),
              "int8 plain": (folder / "model.int8.plain.onnx", None), "int8 fused": (folder / "model.int8.onnx", None)}
    sessions = {name: Session(path, disabled_optimizers=disabled) for name, (path, disabled) in graphs.items()
                if name in backends}
    runners = {}
    for (tokens, batch), (ids, mask) in batches.items():
        feeds = {"input_ids": ids, "attention_mask": mask}
        tids, tmask = torch.from_numpy(ids), torch.from_numpy(mask)
        for backend in backends:
            if backend == "eager":
                def run(tids=tids, tmask=tmask) -> None:
                    with torch.no_grad():
                        model(tids, tmask)
            else:
                def run(session=sessions[backend], feeds=feeds) -> None:
                    session.run(feeds)
            runners[(backend, tokens, batch)] = run
    return runners


def service_vs_raw(folder_root: Path, folder: Path, tok, seconds: float, quick: bool) -> list[dict]:
    """The service end to end (fp32, int8) against raw ONNX Runtime on the same graph at batch 32,
    measured just before and just after the service run."""
    from service.runtime.session import Session

    ids, mask = tok.pad([e.ids for e in tok.encode(random_dna(32, PROMOTER_NT, seed=7))])
    out = []
    for precision, graph in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        session = Session(folder / graph)

        def raw(session=session) -> float:
            session.run({"input_ids": ids, "attention_mask": mask})
            n, start = 0, time.perf_counter()
            while n < 2 or time.perf_counter() - start < seconds / 3:
                session.run({"input_ids": ids, "attention_mask": mask})
                n += 1
            return 32 * n / (time.perf_counter() - start)

        before = raw()
        loads = [(32, 2)] if quick else [(64, 4)]
        result = bench_service(folder_root, "base", loads, seconds, 3 if quick else 5,
                               {"DNABERT_PRECISION": precision, "DNABERT_MAX_QUEUE": "100000"})
        after = raw()
        del session
        best = max(x["sequences_per_s"] for x in result["loads"])
        raw_mean = (before + after) / 2
        out.append({"precision": precision, "graph": graph, "service_sequences_per_s": best,
                    "raw_batch32_before": before, "raw_batch32_after": after, "raw_batch32": raw_mean,
                    "service_over_raw": best / raw_mean, "loads": result["loads"], "idle": result["idle"]})
        print(f"  service {precision}: {best:.1f} seq/s, raw ONNX Runtime batch 32 {raw_mean:.1f} seq/s "
              f"({best / raw_mean:.0%})", flush=True)
    return out


def report_md(r: dict) -> str:
    m = r["machine"]
    lines = ["# Full-size benchmark: DNABERT-2-117M on CPU", "",
             f"Machine: {m['cpus']} CPUs ({r['cpu']}), {m['platform']}, Python {m['python']}, ONNX Runtime "
             f"{m['onnxruntime']}, torch {m.get('torch', '-')}, commit {m['commit']}, {m['date']}.",
             f"Command: `{r['command']}`. Model: {r['model']['weights']}, {r['model']['parameters'] / 1e6:.1f} M "
             f"parameters, head `base`. Export {r['export']['export_s']} s, int8 {r['export']['quantize_s']} s.",
             f"Load average (1, 5, 15 min) at the start {r['load_average']['start']}, at the end "
             f"{r['load_average']['end']}: other work shares these two cores, so the figures are medians of "
             f"{r['rounds']} interleaved rounds (the best round beside it).", "",
             "## Summary", "", "| figure | value | target |", "|---|---|---|"]
    for k, v in r["summary"].items():
        lines.append(f"| {k} | {v['value']} | {v.get('target', '')} |")
    lines += ["", "## Throughput (sequences/s; x = against eager at the same shape)", "",
              f"Matrix-product ceiling, the best rate seen in the same rounds: fp32 {r['ceiling']['fp32']:.0f} "
              f"GFLOP/s, int8 {r['ceiling']['int8']:.0f} GOP/s (ONNX Runtime ``MatMul`` and "
              "``DynamicQuantizeMatMul``, 2048 x 768 x 3072, both cores). GFLOP/s counts the model's FLOPs "
              "(an int8 row's attention products and element-wise work included), so a share is of the "
              "product rate alone.", "",
              "| input | tokens | batch | backend | sequences/s (median) | x eager | best round | x eager (best) "
              "| GFLOP/s | share of ceiling |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['input']} | {x['tokens']} | {x['batch']} | {x['backend']} | {x['sequences_per_s']:.2f} "
                     f"| {x['x_eager']:.2f} | {x['best_sequences_per_s']:.2f} | {x['x_eager_best']:.2f} "
                     f"| {x['gflops']:.0f} | {x['share_of_ceiling']:.0%} |")
    a = r["export"]["attention"] or {}
    g = r["export"]["int8"]["gate"]
    c = r["cosine"]
    lines += ["", "## Graphs and accuracy", "",
              f"- fp32 graph vs PyTorch: max |logit diff| {r['export']['parity_vs_pytorch']:.2e} (export fails above 1e-4); "
              f"fused attention: {json.dumps({k: v.get('attention_layers') for k, v in a.items()})} layers as "
              f"`com.microsoft.MultiHeadAttention`, fused fp32 vs PyTorch "
              f"{(a.get('graph') or {}).get('check', {}).get('max_abs_diff', float('nan')):.2e}.",
              f"- int8 gate on {r['export']['int8']['test_sequences']} test sequences ({r['examples']}): "
              f"{g['metric']} fp32 {g['fp32']:.4f}, int8 {g['int8']:.4f} (|diff| {g['abs_diff']:.4f}, "
              f"tolerance {g['tolerance']}): {'passed' if g['passed'] else 'FAILED'}. Max |score diff| "
              f"{r['export']['int8']['max_abs_diff_scores_vs_fp32']:.4f}.",
              f"- Pooled-output cosine int8 vs fp32 on {c['sequences']} real sequences: fused int8 min "
              f"{c['model.int8.onnx']['min']:.5f} (mean {c['model.int8.onnx']['mean']:.5f}), plain int8 min "
              f"{c['model.int8.plain.onnx']['min']:.5f}; gate >= {c['gate']}: "
              f"{'passed' if c['model.int8.onnx']['passed'] else 'FAILED'}."]
    if r.get("service"):
        lines += ["", "## Service end to end (dnabert-serve on the exported folder)", "",
                  "| precision | service seq/s | raw ONNX Runtime batch 32 (before / after) | service / raw |",
                  "|---|---|---|---|"]
        for s in r["service"]:
            lines.append(f"| {s['precision']} | {s['service_sequences_per_s']:.1f} | {s['raw_batch32']:.1f} "
                         f"({s['raw_batch32_before']:.1f} / {s['raw_batch32_after']:.1f}) | {s['service_over_raw']:.0%} |")
    lines += ["", "GPU: no GPU machine was available to this work; the GPU figures (bench/gpu.py) are still open."]
    for note in r.get("notes", []):
        lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = "AVX-512 VNNI" if "avx512_vnni" in flags else ("AVX-VNNI" if "avx_vnni" in flags else
                                                        ("AVX2" if "avx2" in flags else "no AVX2"))
    return f"{name}, {isa}"


def main(argv: list[str] | None = None) -> int:
    import torch

    from bench.gpu import model_flops
    from service.contract.tokenization import SequenceTokenizer, TruncationPolicy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="a DNABERT-2-117M checkpoint directory (config.json, "
                                                   "tokenizer.json, weights); default: random weights")
    p.add_argument("--preset", default="dnabert2-117m", help="size without --checkpoint")
    p.add_argument("--skip-lncrna", action="store_true", help="leave out the slow 482-token rows")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--min-seconds", type=float, default=0.5, help="shortest timed stretch per row and round")
    p.add_argument("--service-seconds", type=float, default=20.0)
    p.add_argument("--no-service", action="store_true")
    p.add_argument("--gate-sequences", type=int, default=256, help="real sequences for the int8 gate and cosine")
    p.add_argument("--export-dir", type=Path, default=Path(tempfile.gettempdir()) / "dnabert-full-size")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny preset)")
    a = p.parse_args(argv)
    if a.quick:
        a.preset, a.rounds, a.min_seconds, a.service_seconds, a.gate_sequences = "tiny", 1, 0.05, 2.0, 32
    r: dict = {"command": "python -m bench.full_size " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine(), "cpu": cpu_name(), "rounds": a.rounds,
               "load_average": {"start": load_average()}, "notes": []}
    torch.set_num_threads(os.cpu_count() or 1)
    tok = SequenceTokenizer.from_file(tokenizer_file(a.checkpoint), TruncationPolicy(max_tokens=512))
    model, weights = build_model(a.preset, a.checkpoint, tok.vocab_size)
    r["model"] = {"weights": weights, "parameters": sum(x.numel() for x in model.parameters()),
                  "config": model.config.to_dict()}
    examples, r["examples"] = real_examples(a.gate_sequences)
    print(f"exporting {weights} to {a.export_dir}", flush=True)
    info = export_folders(model, tok, a.export_dir, examples)
    folder = info["folder"]
    r["export"] = {k: v for k, v in info.items() if k not in ("folder", "int8_before")}
    r["cosine"] = pooled_cosine(folder, tok, [e.sequence for e in examples])
    print(f"  int8 gate {info['int8']['gate']}, cosine {r['cosine']}", flush=True)

    shapes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for batch in (1, 8, 32):
        shapes[(PROMOTER_NT, batch)] = tok.pad([e.ids for e in tok.encode(random_dna(batch, PROMOTER_NT, seed=1))])
    if not a.skip_lncrna:
        lnc = SequenceTokenizer(tok.backend, TruncationPolicy(max_tokens=LNCRNA_TOKENS, max_nucleotides=LNCRNA_NT))
        for batch in (1, 8):
            shapes[(LNCRNA_NT, batch)] = lnc.pad([e.ids for e in lnc.encode(random_dna(batch, LNCRNA_NT, seed=2))])
    runners = {}
    for (nt, batch), arrays in shapes.items():
        backends = BACKENDS_300 if nt == PROMOTER_NT else BACKENDS_482
        for (backend, _, b), run in make_runners(model, folder, info["int8_before"], {(nt, batch): arrays},
                                                 backends).items():
            runners[(backend, nt, b)] = run
    print(f"measuring {len(runners)} rows x {a.rounds} rounds", flush=True)
    rates, peaks = interleaved(runners, ceilings(), a.rounds, a.min_seconds)
    r["ceiling"] = peaks
    flops = {tokens: model_flops(model, tokens) for tokens in {int(ids.shape[1]) for ids, _ in shapes.values()}}
    rows = []
    for (backend, nt, batch), rate in rates.items():
        tokens = int(shapes[(nt, batch)][0].shape[1])
        gflops = rate["median"] * flops[tokens] / 1e9
        ceiling = peaks["int8" if backend.startswith("int8") else "fp32"]
        eager = rates[("eager", nt, batch)]
        rows.append({"input": f"{nt} nt", "tokens": tokens, "batch": batch, "backend": backend,
                     "sequences_per_s": rate["median"], "x_eager": rate["median"] / eager["median"],
                     "best_sequences_per_s": rate["best"], "x_eager_best": rate["best"] / eager["best"],
                     "rounds_sequences_per_s": rate["rounds"], "gflops": gflops, "share_of_ceiling": gflops / ceiling})
    rows.sort(key=lambda x: (x["tokens"] > 100, x["batch"], BACKENDS_300.index(x["backend"])))
    r["rows"] = rows
    for x in rows:
        print(f"  {x['input']:8s} batch {x['batch']:3d} {x['backend']:12s} {x['sequences_per_s']:8.2f} seq/s "
              f"x{x['x_eager']:.2f} (best {x['x_eager_best']:.2f}) {x['gflops']:6.0f} GFLOP/s", flush=True)
    model = None  # the service run needs the memory more than the PyTorch model
    if not a.no_service:
        r["service"] = service_vs_raw(a.export_dir, folder, tok, a.service_seconds, a.quick)
    r["load_average"]["end"] = load_average()
    r["summary"] = summary(r)
    a.out.mkdir(parents=True, exist_ok=True)
    name = "full_size-quick" if a.quick else "full_size"
    (a.out / f"{name}.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    (a.out / f"{name}.md").write_text(report_md(r))
    print(report_md(r))
    return 0


def _ratio(row: dict) -> str:
    return f"{row['x_eager']:.2f}x (best rounds {row['x_eager_best']:.2f}x)"


def summary(r: dict) -> dict:
    def row(backend: str, nt: int, batch: int) -> dict | None:
        return next((x for x in r["rows"] if x["backend"] == backend and x["input"] == f"{nt} nt"
                     and x["batch"] == batch), None)

    out: dict = {}
    for batch, target in ((1, ">= 6x"), (8, ">= 5x"), (32, ">= 5x")):
        x = row("int8 fused", PROMOTER_NT, batch)
        if x:
            out[f"300 bp int8 (fused) / eager, batch {batch}"] = {"value": _ratio(x), "target": target}
    for batch, target in ((1, ">= 1.9x"), (32, ">= 1.2x")):
        x = row("fp32 fused", PROMOTER_NT, batch)
        if x:
            out[f"300 bp fp32 (fused) / eager, batch {batch}"] = {"value": _ratio(x), "target": target}
    for backend in BACKENDS_482[1:]:
        x = row(backend, LNCRNA_NT, 8)
        if x:
            out[f"482 tokens {backend} / eager, batch 8"] = {"value": _ratio(x), "target": "reported"}
    g = r["export"]["int8"]["gate"]
    out["int8 accuracy gate (test " + g["metric"] + ")"] = {
        "value": f"|{g['int8']:.4f} - {g['fp32']:.4f}| = {g['abs_diff']:.4f}", "target": f"<= {g['tolerance']}"}
    out["int8 pooled-output cosine vs fp32 (min)"] = {"value": f"{r['cosine']['model.int8.onnx']['min']:.5f}",
                                                      "target": f">= {COSINE_GATE}"}
    for s in r.get("service", []):
        out[f"service / raw ONNX Runtime ({s['precision']})"] = {"value": f"{s['service_over_raw']:.0%}",
                                                                  "target": ">= 85%"}
    return out


if __name__ == "__main__":
    sys.exit(main())
