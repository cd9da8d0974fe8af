"""DNABERT (v1): a standard BERT encoder over overlapping k-mers, with one- or two-layer heads.

* Encoder: transformers' ``BertModel`` (absolute position embeddings, so at most
  ``max_position_embeddings`` = 512 tokens, as DNABERT has), with the eager attention
  implementation: it exports to ONNX with dynamic axes and matches PyTorch.
* Tokens: :class:`service.contract.kmer.KmerTokenizer` with ``[CLS] k-mers [SEP]`` (k = 3..6; the
  published DNA_bert_6 vocabulary is 5 special tokens + 4,096 6-mers = 4,101 ids).
* Heads (the two compared in the promoter study that fine-tuned DNABERT with one and with two
  classification layers):
  - ``dnabert1_linear1``: pooled [CLS] -> dropout -> linear (= ``BertForSequenceClassification``);
  - ``dnabert1_linear2``: pooled [CLS] -> dropout -> linear(H, H) -> ReLU -> dropout -> linear.
* :func:`load_pretrained` reads a user's DNA_bert_6 checkpoint directory (``config.json``,
  ``pytorch_model.bin`` or ``model.safetensors``, ``vocab.txt``): the ``bert.*`` weights of
  ``BertForMaskedLM`` or ``BertForSequenceClassification``, and the latter's ``classifier.*``
  into the one-layer head. Nothing is downloaded.

Input longer than 512 tokens (515 nt for 6-mers) is **truncated** (the first 510 k-mers are
kept, i.e. the first 515 bases) and flagged ``truncated`` by the service, the same policy as
the DNABERT-2 promoter models; see :data:`LONG_INPUT_NOTE`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from service.contract.kmer import KmerTokenizer, kmer_vocab, read_vocab
from service.contract.tokenization import TruncationPolicy
from training.models.dnabert2 import find_weights, read_state_dict

ARCHITECTURE = "dnabert1"
DNABERT1_VARIANTS = ("dnabert1_linear1", "dnabert1_linear2")
MAX_TOKENS = 512

LONG_INPUT_NOTE = (
    "DNABERT has 512 position embeddings: at most 512 tokens ([CLS] + 510 k-mers + [SEP], i.e. "
    "510 + k - 1 bases). Longer input is truncated deliberately, keeping the 5' start (the first "
    "510 k-mers), and flagged 'truncated' in every response, as the DNABERT-2 promoter models do; "
    "it is not an error, so that one long record does not fail a whole file, and not windowed, "
    "since the models were trained on single 300 bp windows. Split long sequences yourself to "
    "score windows."
)


@dataclass
class Dnabert1Config:
    """The fields of a DNABERT ``config.json`` that define the architecture, plus ``k``."""

    vocab_size: int = 4101
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    k: int = 6

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if not 3 <= self.k <= 6:
            raise ValueError(f"DNABERT uses k = 3 to 6, not {self.k}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dnabert1Config:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_bert(self):
        from transformers import BertConfig

        values = {k: v for k, v in asdict(self).items() if k != "k"}
        # eager attention: exports to ONNX with dynamic axes (and is what DNABERT used)
        return BertConfig(**values, attn_implementation="eager")


def vocab_size_for(k: int) -> int:
    return 4**k + 5


PRESETS: dict[str, Dnabert1Config] = {
    # the published DNA_bert_6 size (vocabulary 4,101, 768/12/12)
    "dnabert-6": Dnabert1Config(),
    # trains on two CPU cores within minutes: 6-mers give ~297 tokens per 300 bp (DNABERT-2's BPE
    # gives ~70), and attention costs grow with the square of that, so this is smaller than the
    # DNABERT-2 "small" preset (128/3/4); no dropout on the (B, heads, 297, 297) attention
    # probabilities (a fifth of the step time), as in DNABERT-2
    "small": Dnabert1Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                            attention_probs_dropout_prob=0.0),
    # tests and smoke runs
    "tiny": Dnabert1Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           attention_probs_dropout_prob=0.0),
}


def preset(name: str, k: int = 6) -> Dnabert1Config:
    if name not in PRESETS:
        raise ValueError(f"unknown DNABERT preset {name!r}; choose from {', '.join(PRESETS)}")
    return Dnabert1Config.from_dict({**PRESETS[name].to_dict(), "k": k, "vocab_size": vocab_size_for(k)})


def default_policy(max_tokens: int = MAX_TOKENS) -> TruncationPolicy:
    return TruncationPolicy(max_tokens=max_tokens, truncation_side="right")


def make_tokenizer(k: int = 6, vocab_file: str | Path | None = None,
                   policy: TruncationPolicy | None = None) -> KmerTokenizer:
    """``[CLS] k-mers [SEP]`` with a checkpoint's ``vocab.txt`` or the standard DNABERT vocabulary."""
    vocab = read_vocab(vocab_file) if vocab_file is not None else kmer_vocab(k)
    return KmerTokenizer(vocab, k, special_tokens=True, policy=policy or default_policy())


class Linear1Head(nn.Module):
    def __init__(self, hidden: int, dropout: float, num_labels: int = 2):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))


class Linear2Head(nn.Module):
    def __init__(self, hidden: int, dropout: float, num_labels: int = 2):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.relu(self.dense(self.dropout(pooled)))))


class Dnabert1Classifier(nn.Module):
    """``(input_ids, attention_mask) -> logits`` with a BERT encoder and a linear head."""

    architecture = ARCHITECTURE

    def __init__(self, config: Dnabert1Config, variant: str = "dnabert1_linear1", head_dropout: float = 0.1):
        super().__init__()
        from transformers import BertModel

        if variant not in DNABERT1_VARIANTS:
            raise ValueError(f"unknown DNABERT variant {variant!r}; choose from {', '.join(DNABERT1_VARIANTS)}")
        self.config = config
        self.variant = variant
        self.head_dropout = head_dropout
        self.bert = BertModel(config.to_bert(), add_pooling_layer=True)
        head = Linear1Head if variant == "dnabert1_linear1" else Linear2Head
        self.head = head(config.hidden_size, head_dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                        token_type_ids=torch.zeros_like(input_ids))
        return self.head(out.pooler_output)

    def describe(self) -> dict[str, Any]:
        return {"variant": self.variant, "head_dropout": self.head_dropout,
                "head_class": type(self.head).__name__,
                "parameters": sum(p.numel() for p in self.parameters())}


# --------------------------------------------------------------------------------------------
# Checkpoints


def _rename(key: str) -> str:
    # checkpoints written by old transformers / TF conversions name LayerNorm gamma/beta
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``bert.*`` keys (prefix dropped): embeddings, encoder and pooler; MLM head dropped."""
    out = {}
    for key, value in state.items():
        key = _rename(key)
        if key.startswith("bert."):
            key = key[len("bert."):]
        if key.split(".", 1)[0] in ("embeddings", "encoder", "pooler"):
            out[key] = value
    return out


def load_encoder_state(model: Dnabert1Classifier, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Load published weights; return what was initialised instead of loaded.

    Only the pooler may be missing (``BertForMaskedLM`` has none); ``classifier.*`` of a
    ``BertForSequenceClassification`` goes into the one-layer head when the shapes match.
    """
    weights = encoder_state(state)
    result = model.bert.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the DNABERT (BERT) architecture: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    info: dict[str, Any] = {"initialised": [k for k in result.missing_keys if k.startswith("pooler.")],
                            "classifier_loaded": False}
    w, b = state.get("classifier.weight"), state.get("classifier.bias")
    head = model.head
    if (isinstance(head, Linear1Head) and w is not None and b is not None
            and tuple(w.shape) == tuple(head.classifier.weight.shape)):
        head.classifier.load_state_dict({"weight": w, "bias": b})
        info["classifier_loaded"] = True
    return info


def _k_of(directory: Path, config: dict[str, Any]) -> int:
    vocab = directory / "vocab.txt"
    if vocab.is_file():
        words = [t for t in read_vocab(vocab) if not t.startswith("[")]
        if words:
            return len(words[0])
    for k in range(3, 7):
        if config.get("vocab_size") == vocab_size_for(k):
            return k
    raise ValueError(f"{directory}: cannot tell k (no vocab.txt and vocab_size {config.get('vocab_size')} "
                     "is not 4**k + 5)")


def load_pretrained(directory: str | Path, variant: str = "dnabert1_linear1", head_dropout: float = 0.1,
                    policy: TruncationPolicy | None = None) -> tuple[Dnabert1Classifier, KmerTokenizer, dict]:
    """A classifier and tokenizer from a DNABERT checkpoint directory (e.g. DNA_bert_6)."""
    directory = Path(directory)
    raw = json.loads((directory / "config.json").read_text())
    k = _k_of(directory, raw)
    config = Dnabert1Config.from_dict({**raw, "k": k})
    model = Dnabert1Classifier(config, variant, head_dropout)
    info = load_encoder_state(model, read_state_dict(find_weights(directory)))
    policy = policy or default_policy(min(MAX_TOKENS, config.max_position_embeddings))
    vocab = directory / "vocab.txt"
    tok = make_tokenizer(k, vocab if vocab.is_file() else None, policy)
    if tok.vocab_size != config.vocab_size:
        raise ValueError(f"{directory}: vocab.txt has {tok.vocab_size} tokens, config.json says {config.vocab_size}")
    return model.eval(), tok, {"init_from": str(directory), "k": k, **info}
