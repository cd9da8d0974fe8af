"""Masked-language-model pre-training of a small DNABERT-2 backbone on the sequences at hand.

The output folder is a DNABERT-2 checkpoint directory in the published layout
(``config.json``, ``tokenizer.json``, ``model.safetensors`` with ``bert.*`` and
``cls.predictions.*`` keys), so fine-tuning starts from it exactly as from DNABERT-2-117M.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from service.contract.tokenization import SequenceTokenizer, TruncationPolicy
from training.data import pretraining_sequences
from training.models.dnabert2 import PRESETS, BertMLMHead, DnaBertConfig, DnaBertModel
from training.train import seed_everything


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, tok: SequenceTokenizer,
                prob: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: of ``prob`` of the non-special tokens, 80% [MASK], 10% random, 10% kept."""
    labels = ids.clone()
    chosen = (torch.rand(ids.shape, generator=gen) < prob) & ~special
    labels[~chosen] = -100
    ids = ids.clone()
    r = torch.rand(ids.shape, generator=gen)
    ids[chosen & (r < 0.8)] = tok.mask_id
    rand = chosen & (r >= 0.8) & (r < 0.9)
    ids[rand] = torch.randint(5, tok.vocab_size, ids.shape, generator=gen)[rand]
    return ids, labels


def pretrain_mlm(sequences: list[str], tokenizer: SequenceTokenizer, config: DnaBertConfig,
                 out: Path, steps: int = 3000, batch_size: int = 64, lr: float = 1e-3,
                 max_tokens: int = 128, mask_prob: float = 0.15, seed: int = 13) -> dict:
    """Train for ``steps`` optimiser steps (warmup 200, linear decay), save, report."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    # Long sequences are cut into windows that fit max_tokens (about 5 nt per token).
    window = max_tokens * 4
    pieces = [s[i : i + window] for s in sequences for i in range(0, len(s), window)]
    pieces = [p for p in pieces if len(p) >= 20]
    tok = SequenceTokenizer(tokenizer.backend, TruncationPolicy(max_tokens, "right"))
    encoded = [e.ids for e in tok.encode(pieces)]

    model = DnaBertModel(config, add_pooler=False)
    head = BertMLMHead(config, model.embeddings.word_embeddings)
    params = list(model.parameters()) + [p for n, p in head.named_parameters() if not n.startswith("word_embeddings")]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    start = time.monotonic()
    step, losses = 0, []
    model.train()
    head.train()
    bar = tqdm(total=steps, desc="mlm", leave=False, mininterval=5)
    while step < steps:
        # Length-bucketed batches: sort inside windows of 50 batches, then shuffle the batches.
        rng.shuffle(encoded)
        win = batch_size * 50
        ordered = [x for w in range(0, len(encoded), win) for x in sorted(encoded[w : w + win], key=len)]
        chunks = [ordered[i : i + batch_size] for i in range(0, len(ordered) - batch_size + 1, batch_size)]
        rng.shuffle(chunks)
        for batch in chunks:
            ids, mask = tok.pad(batch)
            ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
            special = (ids_t <= 4)
            inp, labels = mask_tokens(ids_t, special, tok, mask_prob, gen)
            warm = min(1.0, (step + 1) / 200)
            for g in opt.param_groups:
                g["lr"] = lr * warm * max(0.05, 1.0 - step / steps)
            hidden, _ = model(inp, mask_t)
            logits = head(hidden)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
            if step >= steps:
                break
    bar.close()

    out.mkdir(parents=True, exist_ok=True)
    state = {f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state.update({
        "cls.predictions.transform.dense.weight": head.transform_dense.weight.detach().contiguous(),
        "cls.predictions.transform.dense.bias": head.transform_dense.bias.detach().contiguous(),
        "cls.predictions.transform.LayerNorm.weight": head.transform_norm.weight.detach().contiguous(),
        "cls.predictions.transform.LayerNorm.bias": head.transform_norm.bias.detach().contiguous(),
        "cls.predictions.decoder.bias": head.decoder_bias.detach().contiguous(),
    })
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({**config.to_dict(), "architectures": ["BertForMaskedLM"]}, indent=2))
    tokenizer.backend.save(str(out / "tokenizer.json"))
    report = {
        "sequences": len(sequences),
        "windows": len(encoded),
        "steps": step,
        "seconds": round(time.monotonic() - start, 1),
        "first_loss": round(sum(losses[:20]) / max(1, len(losses[:20])), 4),
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
    }
    (out / "pretrain.json").write_text(json.dumps(report, indent=2))
    return report


def pretrain(tokenizer: str | Path, out: str | Path, preset: str = "small", steps: int = 3000,
             batch_size: int = 64, lr: float = 1e-3, seed: int = 13, threads: int | None = None) -> dict:
    """Masked-LM pre-training of a ``preset`` backbone with the BPE ``tokenizer`` (a
    ``tokenizer.json``) on every sequence at hand except the test splits; writes the checkpoint
    directory ``out`` and returns the report."""
    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    seqs = pretraining_sequences()
    tok = SequenceTokenizer.from_file(tokenizer)
    config = DnaBertConfig.from_dict({**PRESETS[preset].to_dict(), "vocab_size": tok.vocab_size})
    return pretrain_mlm(seqs, tok, config, Path(out), steps=steps, batch_size=batch_size, lr=lr, seed=seed)
