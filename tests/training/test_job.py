"""TrainJob: the command line's options as data, with the same defaults; PyTorch scores through
the service's batcher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from service.contract.tokenization import SequenceTokenizer, TruncationPolicy
from training.cli import build_parser, train_job
from training.job import DEFAULT_LR, TrainJob
from training.tokenizer import train_bpe_tokenizer
from training.train import predict_scores

from .models.test_heads import make_model


def test_command_line_defaults_are_the_jobs():
    args = build_parser().parse_args(["train"])
    before = dict(vars(args))
    assert train_job(args) == TrainJob()
    assert vars(args) == before  # the arguments are read, never changed


def test_job_fills_in_the_variant_and_paths():
    assert TrainJob().variant == "base"
    assert TrainJob(task="lncrna-localization").variant == "lncrna"
    job = TrainJob(train="data/train.csv", run_dir="runs/x", init_from="ckpt/")
    assert job.train == Path("data/train.csv") and job.run_dir == Path("runs/x")
    assert job.init_from == "ckpt/"  # recorded in the run as given


def test_job_refuses_what_cannot_be_trained():
    with pytest.raises(ValueError, match="promoter"):
        TrainJob(task="lncrna-localization", variant="onehot_gru")
    with pytest.raises(ValueError, match="unknown variant"):
        TrainJob(variant="transformer_xl")
    with pytest.raises(ValueError, match="unknown task"):
        TrainJob(task="splicing")


def test_two_way_loss_temperatures_reach_the_loss():
    """--tp/--tn (lncRNA) travel from the command line through the job to the training loss."""
    from training.train import loss_fn, train_config

    args = build_parser().parse_args(["train", "--task", "lncrna-localization", "--tp", "2", "--tn", "0.5"])
    cfg = train_config(train_job(args), {})
    assert (cfg.tp, cfg.tn) == (2.0, 0.5)
    logits = torch.tensor([[1.5, -0.3, 0.2], [-1.0, 0.7, 2.0]])
    y = torch.tensor([[1, 0, 0], [0, 1, 1]])
    default = train_config(TrainJob(task="lncrna-localization"), {})
    assert (default.tp, default.tn) == (4.0, 1.0)  # the study's
    assert not torch.isclose(loss_fn(cfg.task, logits, y, cfg), loss_fn(default.task, logits, y, default))
    with pytest.raises(ValueError, match="temperatures"):
        TrainJob(task="lncrna-localization", tp=0.0)


def test_hidden_dropout_sets_the_backbone_dropout(tmp_path):
    """--hidden-dropout reaches the DNABERT-2 backbone; without it the preset's 0.1 stays."""
    from training.build import build
    from training.data import Dataset, Example

    seqs = ["ACGTTGCAACGGTACCATGA" * 3, "TTGACAGGCTAGCTAGGATC" * 3]
    data = Dataset({"train": [Example(f"s{i}", s, i % 2) for i, s in enumerate(seqs)]})
    args = build_parser().parse_args(["train", "--preset", "tiny", "--vocab-size", "16", "--hidden-dropout", "0"])
    job = train_job(args)
    assert job.hidden_dropout == 0.0
    model, _, _ = build(job, data)
    rates = {m.p for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and name.startswith("bert.")}
    assert model.config.hidden_dropout_prob == 0.0 and rates == {0.0}
    default, _, _ = build(TrainJob(preset="tiny", vocab_size=16), data)
    assert default.config.hidden_dropout_prob == 0.1
    with pytest.raises(ValueError, match="hidden-dropout"):
        TrainJob(hidden_dropout=1.0)


def test_learning_rates_default_by_architecture():
    assert TrainJob().learning_rates() == DEFAULT_LR["dnabert2"]
    assert TrainJob(variant="dnabert1_linear1").learning_rates() == DEFAULT_LR["dnabert1"]
    assert TrainJob(variant="dnabert1_linear1", init_from="DNA_bert_6").learning_rates() == DEFAULT_LR["dnabert1-pretrained"]
    assert TrainJob(variant="onehot_cnn", lr=0.5).learning_rates() == (0.5, DEFAULT_LR["onehot"][1])


@pytest.fixture(scope="module")
def tok() -> SequenceTokenizer:
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 200)) for _ in range(50)]
    return SequenceTokenizer(train_bpe_tokenizer(seqs, vocab_size=64), TruncationPolicy(max_tokens=128))


@pytest.mark.parametrize("variant, task", [("cnn_bilstm_max", "promoter"), ("lncrna", "lncrna-localization")])
def test_predict_scores_are_each_sequence_alone_in_input_order(variant, task, tok):
    model = make_model(variant)
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), int(n))) for n in (300, 7, 90, 12, 500, 41)]
    scores = predict_scores(model, tok, seqs, task, batch_size=4)
    with torch.no_grad():
        logits = [model(*map(torch.from_numpy, tok.pad([e.ids]))).double() for e in tok.encode(seqs)]
    if task == "promoter":
        want = np.array([lg.softmax(-1)[0, 1].item() for lg in logits])
        assert scores.shape == (6,)
    else:
        want = np.concatenate([torch.sigmoid(lg).numpy() for lg in logits])
        assert scores.shape == (6, 3)
    np.testing.assert_allclose(scores, want, atol=1e-6)
    assert predict_scores(model, tok, [], task).shape == ((0,) if task == "promoter" else (0, 3))


def test_bf16_trains_under_autocast_and_keeps_fp32_weights(tmp_path, monkeypatch):
    """--bf16: the training steps' matrix multiplies run in bfloat16; the weights, the dev scoring
    (which picks the kept state) and the saved model stay fp32."""
    from training import train as train_module
    from training.synth import write_synthetic

    folder = tmp_path / "synth"
    write_synthetic(folder, n=60, length=60, seed=3)
    args = build_parser().parse_args(["train", "--bf16"])
    assert train_job(args).bf16 and not TrainJob().bf16
    seen: dict[str, set] = {"train": set(), "eval": set()}
    made = {}
    real_build = train_module.build

    def build_and_hook(job, data):
        model, tok, extra = real_build(job, data)
        first = next(m for m in model.bert.modules() if isinstance(m, torch.nn.Linear))
        first.register_forward_hook(
            lambda mod, inp, out: seen["train" if mod.training else "eval"].add(out.dtype))
        made["model"] = model
        return model, tok, extra

    monkeypatch.setattr(train_module, "build", build_and_hook)
    result = train_module.train(TrainJob(variant="base", preset="tiny", train=folder / "train.csv",
                                         dev=folder / "dev.csv", test=folder / "test.csv", vocab_size=64,
                                         epochs=1, batch_size=16, bf16=True, run_dir=tmp_path / "run"))
    assert seen["train"] == {torch.bfloat16} and seen["eval"] == {torch.float32}
    assert {p.dtype for p in made["model"].parameters()} == {torch.float32}
    assert result.summary["steps"] > 0
    assert '"bf16": true' in (tmp_path / "run" / "config.json").read_text()
