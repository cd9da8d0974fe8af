"""GPU benchmark: the full 117M-parameter DNABERT-2 with the ``cnn_bilstm_avg`` and lncRNA heads.

    python -m bench.gpu                                    # a CUDA host: export, raw, service
    python -m bench.gpu --backend torch                    # PyTorch CUDA fp16 (+ CUDA graphs) only
    python -m bench.gpu --preset tiny --device cpu --quick # seconds-long smoke, no GPU needed

Speed does not depend on the weights, so the models are randomly initialised (seeded). The
models are exported with the project's own exporter into real model folders (fp32 + fp16
graphs, tokenizer, card), so the same folders can be served: the service figure comes from a
``dnabert-serve`` process on them, driven by ``bench.loadgen`` in separate processes.

Backends, measured side by side where available:

* ``ort``: ONNX Runtime, CUDA execution provider, fp16 graph, IO binding (inputs copied to the
  GPU once per call, logits left on the GPU), through the service's own ``OnnxModel``;
* ``torch``: the same modules in PyTorch CUDA fp16, eager and replayed as CUDA graphs. This is
  the nearest real figure where ONNX Runtime's CUDA provider is not installed.

Model FLOPs are counted with ``torch.utils.flop_counter`` for everything but the LSTM, whose
FLOPs are added analytically (the counter does not see inside ``nn.LSTM``); utilisation is the
achieved FLOP/s over ``--peak-tflops`` (H200: about 790 dense fp16/bf16 TFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.run import REPO, machine, random_dna

PROMOTER_NT, LNCRNA_NT = 300, 2292
HEADS = {"promoter": "cnn_bilstm_avg", "lncrna-localization": "lncrna"}


# -- models ----------------------------------------------------------------------------------
def tokenizer_file() -> Path:
    published = REPO.parent / "shared" / "dnabert2" / "tokenizer.json"
    return published if published.is_file() else REPO / "models" / "promoter" / "base" / "tokenizer.json"


def model_flops(model, tokens: int) -> float:
    """Forward FLOPs of one sequence of ``tokens`` tokens (multiply-add = 2 FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.full((1, tokens), 5, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.cpu().float()(ids, torch.ones_like(ids))
    flops = float(counter.get_total_flops())
    for lstm in (m for m in model.modules() if isinstance(m, torch.nn.LSTM)):
        h, d = lstm.hidden_size, lstm.input_size
        steps = tokens // 2 if any(type(m).__name__ == "ConvBlock" for m in model.modules()) else tokens
        directions = 2 if lstm.bidirectional else 1
        # all steps both ways, then the backward direction's one-step pass at the last token
        flops += 2 * 4 * h * (d + h) * directions * (steps + 1)
    return flops


def build_and_export(preset: str, out: Path) -> dict[str, dict]:
    """Random-weight models of ``preset`` exported as servable model folders under ``out``."""
    import torch

    from service.contract.tokenization import SequenceTokenizer, TruncationPolicy
    from training.export.onnx import export_model_folder
    from training.models.dnabert2 import PRESETS
    from training.models.heads import SequenceClassifier

    made = {}
    for task, variant in HEADS.items():
        policy = (TruncationPolicy(max_tokens=482, max_nucleotides=LNCRNA_NT) if task != "promoter"
                  else TruncationPolicy(max_tokens=512))
        tok = SequenceTokenizer.from_file(tokenizer_file(), policy)
        config = PRESETS[preset]
        if config.vocab_size != tok.vocab_size:
            config = type(config).from_dict({**config.to_dict(), "vocab_size": tok.vocab_size})
        torch.manual_seed(0)
        model = SequenceClassifier(config, variant).eval()
        folder = out / task / variant
        t = time.perf_counter()
        export_model_folder(model, tok, folder, name=variant, task=task,
                            training={"weights": "random (speed benchmark only)", "preset": preset},
                            metrics={}, description=f"{preset} DNABERT-2, random weights, for benchmarks")
        params = sum(p.numel() for p in model.parameters())
        made[task] = {"variant": variant, "folder": folder, "model": model, "tokenizer": tok, "parameters": params,
                      "export_s": round(time.perf_counter() - t, 1),
                      "fp16_mb": round((folder / "model.fp16.onnx").stat().st_size / 2**20, 1)}
        print(f"  exported {task}/{variant}: {params / 1e6:.1f} M parameters in {made[task]['export_s']} s", flush=True)
    return made


def token_batch(tok, n_nt: int, batch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    return tok.pad([e.ids for e in tok.encode(random_dna(batch, n_nt, seed))])


# -- backends --------------------------------------------------------------------------------
def time_loop(step, sync, seconds: float, min_iters: int = 5) -> float:
    """Seconds per call (warm-up, then as many calls as fit in ``seconds``)."""
    for _ in range(3):
        step()
    sync()
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < seconds:
        step()
        n += 1
    sync()
    return (time.perf_counter() - start) / n


def bench_ort(folder: Path, tok, n_nt: int, batches: list[int], seconds: float, device: str) -> list[dict]:
    from service.runtime.model import OnnxModel
    from service.runtime.session import CUDA, choose_providers

    providers = choose_providers("gpu" if device == "cuda" else "cpu")
    model = OnnxModel(folder, providers=providers, precision="fp16" if device == "cuda" else "fp32")
    rows = []
    for bs in batches:
        ids, mask = token_batch(tok, n_nt, bs)
        if device == "cuda":
            step, sync = model.session.cuda_bound_step({"input_ids": ids, "attention_mask": mask},
                                                       model.card.output, (bs, len(model.card.labels)))
        else:
            def step(ids=ids, mask=mask):
                model.run(ids, mask)

            def sync():
                return None
        per_call = time_loop(step, sync, seconds)
        rows.append({"backend": f"onnxruntime {model.providers[0]}" + (" io-binding" if device == "cuda" else ""),
                     "precision": "fp16" if device == "cuda" else "fp32", "batch": bs, "tokens": int(ids.shape[1]),
                     "latency_ms": 1000 * per_call, "sequences_per_s": bs / per_call})
        assert model.providers[0] == (CUDA if device == "cuda" else "CPUExecutionProvider")
    return rows


def bench_torch(model, tok, n_nt: int, batches: list[int], seconds: float, device: str,
                graphs: bool) -> list[dict]:
    import torch

    dtype = torch.float16 if device == "cuda" else torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for bs in batches:
        ids_np, mask_np = token_batch(tok, n_nt, bs)
        ids, mask = torch.from_numpy(ids_np).to(device), torch.from_numpy(mask_np).to(device)
        modes = [("eager", None)]
        if graphs and device == "cuda":
            modes.append(("cuda graph", None))
        for mode, _ in modes:
            note = ""
            if mode == "eager":
                def step(ids=ids, mask=mask):
                    with torch.no_grad():
                        model(ids, mask)
            else:
                try:
                    static_ids, static_mask = ids.clone(), mask.clone()
                    stream = torch.cuda.Stream()
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream), torch.no_grad():
                        for _ in range(3):
                            model(static_ids, static_mask)
                    torch.cuda.current_stream().wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph), torch.no_grad():
                        model(static_ids, static_mask)

                    def step(graph=graph, static_ids=static_ids, ids=ids):
                        static_ids.copy_(ids)
                        graph.replay()
                except Exception as exc:  # noqa: BLE001 - report why capture failed, go on
                    rows.append({"backend": "torch cuda graph", "batch": bs, "error": " ".join(str(exc).split())[:200]})
                    continue
            per_call = time_loop(step, sync, seconds)
            rows.append({"backend": f"torch {device} {mode}", "precision": str(dtype).replace("torch.", ""),
                         "batch": bs, "tokens": int(ids.shape[1]), "latency_ms": 1000 * per_call,
                         "sequences_per_s": bs / per_call, **({"note": note} if note else {})})
    return rows


# -- report ----------------------------------------------------------------------------------
def report_md(r: dict) -> str:
    m = r["machine"]
    lines = ["# GPU benchmark report", "",
             f"Machine: {m.get('gpu', 'no GPU')}, {m['cpus']} CPUs, ONNX Runtime {m['onnxruntime']} "
             f"({', '.join(m['providers'])}), torch {m.get('torch', '-')}, commit {m['commit']}, {m['date']}.",
             f"Command: `{r['command']}`. Preset `{r['preset']}` (random weights).", "",
             "| task | head | params | input | backend | precision | batch | tokens | sequences/s | latency ms "
             "| TFLOP/s | utilisation |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["raw"]:
        if "error" in x:
            lines.append(f"| {x['task']} | {x['head']} | | {x['input_nt']} nt | {x['backend']} | | {x['batch']} "
                         f"| | failed: {x['error']} | | | |")
            continue
        lines.append(f"| {x['task']} | {x['head']} | {x['parameters'] / 1e6:.1f} M | {x['input_nt']} nt | {x['backend']} "
                     f"| {x['precision']} | {x['batch']} | {x['tokens']} | {x['sequences_per_s']:,.1f} "
                     f"| {x['latency_ms']:.2f} | {x['tflops']:.1f} | {x['utilisation']:.1%} |")
    if r.get("service"):
        s = r["service"]
        lines += ["", f"## Service end to end ({s['model']})", "",
                  "| records/request | clients | sequences/s | p50 ms | p95 ms | p99 ms | statuses |",
                  "|---|---|---|---|---|---|---|"]
        for x in s["loads"]:
            lines.append(f"| {x['records_per_request']} | {x['clients']} | {x['sequences_per_s']:,.1f} | {x['p50_ms']:.1f} "
                         f"| {x['p95_ms']:.1f} | {x['p99_ms']:.1f} | {x['statuses']} |")
        lines.append(f"\nIdle single-sequence latency p50 {s['idle']['p50_ms']:.1f} ms.")
    for note in r.get("notes", []):
        lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="dnabert2-117m", help="backbone size (tiny for a smoke run)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", choices=["all", "ort", "torch"], default="all")
    p.add_argument("--batches", default="1,32,128,512", help="promoter batch sizes; lncRNA uses a quarter")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row")
    p.add_argument("--peak-tflops", type=float, default=790.0, help="dense fp16 peak of the GPU")
    p.add_argument("--no-service", action="store_true", help="skip the end-to-end service run")
    p.add_argument("--export-dir", default="/tmp/dnabert-gpu-bench", help="where the model folders go")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    a = p.parse_args(argv)
    batches = [1, 8] if a.quick else [int(b) for b in a.batches.split(",")]
    seconds = 0.2 if a.quick else a.seconds
    r: dict = {"command": "python -m bench.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
               "preset": a.preset, "machine": machine(), "raw": [], "notes": []}
    if a.device == "cuda":
        r["machine"]["gpu"] = torch.cuda.get_device_name(0)
    made = build_and_export(a.preset, Path(a.export_dir))
    for task, info in made.items():
        n_nt = PROMOTER_NT if task == "promoter" else LNCRNA_NT
        task_batches = batches if task == "promoter" else sorted({max(1, b // 4) for b in batches})
        tokens = token_batch(info["tokenizer"], n_nt, 1)[0].shape[1]
        flops = model_flops(info["model"], tokens)
        rows = []
        if a.backend in ("all", "ort"):
            try:
                rows += bench_ort(info["folder"], info["tokenizer"], n_nt, task_batches, seconds, a.device)
            except Exception as exc:  # noqa: BLE001 - e.g. no CUDA provider: say so, measure torch
                msg = " ".join(str(exc).split())[:300]
                rows.append({"backend": "onnxruntime", "batch": "-", "error": msg})
                r["notes"].append(f"ONNX Runtime on {a.device} not measured for {task}: {msg}")
        if a.backend in ("all", "torch"):
            rows += bench_torch(info["model"], info["tokenizer"], n_nt, task_batches, seconds, a.device, graphs=True)
        for row in rows:
            row.update(task=task, head=info["variant"], parameters=info["parameters"], input_nt=n_nt,
                       flops_per_sequence=flops)
            if "error" not in row:
                row["tflops"] = row["sequences_per_s"] * flops / 1e12
                row["utilisation"] = row["tflops"] / a.peak_tflops
                print(f"  {task:20s} {row['backend']:42s} batch {row['batch']:4d}: "
                      f"{row['sequences_per_s']:10.1f} seq/s {row['tflops']:7.2f} TFLOP/s", flush=True)
            r["raw"].append(row)
        info["model"] = None  # free
    if not a.no_service:
        from bench.run import bench_service

        loads = [(10, 4)] if a.quick else [(100, 16), (1000, 16), (1000, 64)]
        env = {"DNABERT_DEVICE": "gpu" if a.device == "cuda" else "cpu",
               "DNABERT_MAX_BATCH_TOKENS": str(8192 if a.quick else 131072),
               "DNABERT_MAX_BATCH_SIZE": str(64 if a.quick else 1024), "DNABERT_WORKERS": "1" if a.quick else "2",
               "DNABERT_TOKENIZER_THREADS": "2" if a.quick else "8", "DNABERT_MAX_QUEUE": "200000"}
        r["service"] = bench_service(Path(a.export_dir), HEADS["promoter"], loads, 2 if a.quick else 15,
                                     5 if a.quick else 50, env)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu-quick" if a.quick else ("gpu" if a.device == "cuda" else "gpu-on-cpu")
    for row in r["raw"]:
        row.pop("model", None)
    (out / f"{name}.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text(report_md(r))
    print(report_md(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
