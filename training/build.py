"""From a :class:`~training.job.TrainJob` to its data splits and its untrained classifier and
tokenizer, for each architecture of :mod:`training.models.architectures`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from service.contract.tasks import LNCRNA
from service.contract.tokenization import SequenceTokenizer, SequenceTokenizerLike, TruncationPolicy
from training.data import Dataset, file_dataset, lncrna_dataset, promoter_dataset
from training.job import TrainJob
from training.models import baselines, dnabert1
from training.models.architectures import DNABERT1, DNABERT2
from training.models.dnabert2 import (
    PRESETS,
    DnaBertConfig,
    find_weights,
    load_backbone_state,
    read_state_dict,
)
from training.models.heads import SequenceClassifier
from training.tokenizer import train_bpe_tokenizer


def default_policy(task: str) -> TruncationPolicy:
    """A DNABERT-2 model's truncation. Promoters: 512 tokens, cut at the 3' end. lncRNA: the last
    2,292 nt, at most 482 tokens, keeping the 3' end (iLoc-lncRNA-BERT)."""
    if task == LNCRNA:
        return TruncationPolicy(482, "left", 2292, "left")
    return TruncationPolicy(512, "right", None, "left")


def load_data(job: TrainJob) -> Dataset:
    """The job's splits: its files or the task's shared data set, cut to ``limit``; without a test
    split, dev stands in for it (and the description says so)."""
    if job.train:
        data = file_dataset(job.train, job.task, job.dev, job.test)
    elif job.task == LNCRNA:
        data = lncrna_dataset()
    else:
        data = promoter_dataset()
    if job.limit:
        data.splits = {k: v[: job.limit] for k, v in data.splits.items()}
        data.description["limit"] = job.limit
    if not data["test"]:
        data.splits["test"] = data["dev"]
        data.description["test_is_dev"] = True
    return data


def _dnabert2_tokenizer_and_backbone(job: TrainJob, data: Dataset) -> tuple[SequenceTokenizer, DnaBertConfig]:
    """The BPE tokenizer and backbone configuration of a DNABERT-2 job: from ``init_from`` (a
    checkpoint, or a fine-tuned run's ``model/`` folder), else a preset with the job's tokenizer
    or one trained on the training split."""
    policy = default_policy(job.task)
    if job.max_tokens:
        policy = type(policy)(job.max_tokens, policy.truncation_side, policy.max_nucleotides,
                              policy.nucleotide_truncation_side)
    if job.init_from:
        ckpt = Path(job.init_from)
        tok = SequenceTokenizer.from_file(ckpt / "tokenizer.json", policy)
        if (ckpt / "classifier.json").is_file():  # a fine-tuned run's model/ folder: reuse its backbone
            return tok, DnaBertConfig.from_dict(json.loads((ckpt / "classifier.json").read_text())["backbone"])
        return tok, DnaBertConfig.from_json(ckpt / "config.json")
    config = DnaBertConfig.from_dict(PRESETS[job.preset].to_dict())
    if job.tokenizer:
        tok = SequenceTokenizer.from_file(job.tokenizer, policy)
    else:
        tok = SequenceTokenizer(train_bpe_tokenizer([e.sequence for e in data["train"]], job.vocab_size), policy)
    config.vocab_size = tok.vocab_size
    return tok, config


def _dnabert2_model(job: TrainJob, data: Dataset) -> tuple[nn.Module, SequenceTokenizer, dict[str, Any]]:
    """A DNABERT-2 classifier, its backbone loaded from ``init_from`` when given."""
    tok, config = _dnabert2_tokenizer_and_backbone(job, data)
    if job.hidden_dropout is not None:
        config.hidden_dropout_prob = job.hidden_dropout
    model = SequenceClassifier(config, job.variant, job.head_dropout)
    initialised: list[str] = []
    if job.init_from:
        initialised = load_backbone_state(model.bert, read_state_dict(find_weights(job.init_from)))
    extra = {"init_from": None if job.init_from is None else str(job.init_from),
             "pooler_initialised": initialised, "preset": None if job.init_from else job.preset}
    return model, tok, extra


def _dnabert1_model(job: TrainJob) -> tuple[nn.Module, SequenceTokenizerLike, dict[str, Any]]:
    """A DNABERT (v1) classifier and its k-mer tokenizer: from a checkpoint directory (a user's
    DNA_bert_6 or a run's model/ folder) or from a preset."""
    max_tokens = job.max_tokens or dnabert1.MAX_TOKENS
    policy = dnabert1.default_policy(max_tokens)
    if job.init_from and (Path(job.init_from) / "classifier.json").is_file():
        ckpt = Path(job.init_from)
        meta = json.loads((ckpt / "classifier.json").read_text())
        config = dnabert1.Dnabert1Config.from_dict(meta["backbone"])
        model = dnabert1.Dnabert1Classifier(config, job.variant, job.head_dropout)
        info = {"init_from": str(ckpt), "k": config.k,
                **dnabert1.load_encoder_state(model, load_file(str(ckpt / "model.safetensors")))}
        tok = dnabert1.make_tokenizer(config.k, ckpt / "vocab.txt", policy)
    elif job.init_from:
        model, tok, info = dnabert1.load_pretrained(job.init_from, job.variant, job.head_dropout, policy)
        config = model.config
    else:
        config = dnabert1.preset(job.preset, job.kmer)
        model = dnabert1.Dnabert1Classifier(config, job.variant, job.head_dropout)
        tok = dnabert1.make_tokenizer(config.k, policy=policy)
        info = {"init_from": None, "k": config.k}
    if max_tokens > config.max_position_embeddings:
        raise ValueError(f"--max-tokens {max_tokens} is more than the model's "
                         f"{config.max_position_embeddings} position embeddings")
    return model, tok, {**info, "preset": None if job.init_from else job.preset}


def _onehot_model(job: TrainJob) -> tuple[nn.Module, SequenceTokenizerLike, dict[str, Any]]:
    """A one-hot baseline (trained from scratch) and its one-token-per-base tokenizer."""
    if job.init_from:
        raise ValueError("the one-hot baselines train from scratch; --init-from is for DNABERT checkpoints")
    tok = baselines.make_tokenizer(job.max_tokens or baselines.MAX_TOKENS)
    model = baselines.build_baseline(baselines.config_for(tok, job.preset), job.variant, job.head_dropout)
    return model, tok, {"init_from": None, "preset": job.preset}


def build(job: TrainJob, data: Dataset) -> tuple[nn.Module, SequenceTokenizerLike, dict[str, Any]]:
    """The job's untrained classifier, its tokenizer, and what the run records about how they
    were made (``init_from``, ``preset``, ...)."""
    if job.architecture == DNABERT2:
        return _dnabert2_model(job, data)
    if job.architecture == DNABERT1:
        return _dnabert1_model(job)
    return _onehot_model(job)
