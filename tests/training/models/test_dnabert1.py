"""DNABERT (v1): presets, heads, a user's checkpoint directory, ONNX export, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.runtime.model import OnnxModel
from service.runtime.offline import predict_sequences
from service.runtime.session import Session
from training.cli import main as train_cli
from training.export.onnx import export_graph, export_model_folder, verify
from training.models.dnabert1 import (
    DNABERT1_VARIANTS,
    LONG_INPUT_NOTE,
    PRESETS,
    Dnabert1Classifier,
    Dnabert1Config,
    Linear1Head,
    Linear2Head,
    load_pretrained,
    make_tokenizer,
    preset,
)

TINY = Dnabert1Config(vocab_size=4**3 + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, k=3,
                      attention_probs_dropout_prob=0.0)


def make(variant: str, config: Dnabert1Config = TINY, seed: int = 0) -> Dnabert1Classifier:
    torch.manual_seed(seed)
    return Dnabert1Classifier(config, variant).eval()


def test_presets():
    full = preset("dnabert-6")
    assert (full.vocab_size, full.hidden_size, full.num_hidden_layers, full.num_attention_heads) == (4101, 768, 12, 12)
    assert full.max_position_embeddings == 512
    assert preset("small", k=4).vocab_size == 4**4 + 5
    assert set(PRESETS) == {"dnabert-6", "small", "tiny"}
    with pytest.raises(ValueError, match="k = 3 to 6"):
        preset("small", k=2)
    with pytest.raises(ValueError, match="unknown DNABERT preset"):
        preset("huge")


def test_heads():
    one, two = make("dnabert1_linear1"), make("dnabert1_linear2")
    assert isinstance(one.head, Linear1Head) and isinstance(two.head, Linear2Head)
    assert sum(isinstance(m, torch.nn.Linear) for m in one.head.modules()) == 1
    assert sum(isinstance(m, torch.nn.Linear) for m in two.head.modules()) == 2
    assert one.bert.config._attn_implementation == "eager"
    ids = torch.randint(5, TINY.vocab_size, (3, 10))
    assert one(ids, torch.ones_like(ids)).shape == (3, 2) == two(ids, torch.ones_like(ids)).shape
    with pytest.raises(ValueError, match="unknown DNABERT variant"):
        Dnabert1Classifier(TINY, "dnabert1_linear3")


@pytest.mark.parametrize("variant", DNABERT1_VARIANTS)
def test_score_is_the_same_alone_or_in_any_batch(variant):
    model = make(variant)
    tok = make_tokenizer(3)
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGTN"), int(n))) for n in (1, 3, 4, 10, 33, 60)]
    rows = [e.ids for e in tok.encode(seqs)]
    with torch.no_grad():
        alone = torch.cat([model(*map(torch.from_numpy, tok.pad([r]))) for r in rows])
        together = model(*map(torch.from_numpy, tok.pad(rows)))
        reversed_ = model(*map(torch.from_numpy, tok.pad(rows[::-1]))).flip(0)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(reversed_, alone, atol=1e-5, rtol=0)


def _hf_config(num_labels: int = 2):
    from transformers import BertConfig

    return BertConfig(vocab_size=4**6 + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=512, num_labels=num_labels,
                      attn_implementation="eager")


def test_loads_a_masked_lm_checkpoint_directory(tmp_path):
    from transformers import BertForMaskedLM

    torch.manual_seed(3)
    mlm = BertForMaskedLM(_hf_config()).eval()
    mlm.save_pretrained(tmp_path)  # config.json + model.safetensors, bert.* + cls.predictions.*
    make_tokenizer(6).save(tmp_path / "vocab.txt")
    model, tok, info = load_pretrained(tmp_path, "dnabert1_linear2")
    assert info["k"] == 6 and info["initialised"] == ["pooler.dense.weight", "pooler.dense.bias"]
    assert not info["classifier_loaded"]
    ours = model.bert.state_dict()
    for key, value in mlm.bert.state_dict().items():
        torch.testing.assert_close(ours[key], value, atol=0, rtol=0)
    ids, mask = tok.pad([e.ids for e in tok.encode(["ACGTACGTAC" * 5, "TTGACA"])])
    with torch.no_grad():
        want = mlm.bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        got = model.bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert tok.policy.max_tokens == 512


def test_a_sequence_classification_checkpoint_gives_its_logits(tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(4)
    clf = BertForSequenceClassification(_hf_config()).eval()
    # the published DNA_bert_6 ships a torch pickle, pytorch_model.bin, which transformers 5 no
    # longer writes: write the config with transformers and the weights with torch
    clf.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(clf.state_dict(), tmp_path / "pytorch_model.bin")
    model, tok, info = load_pretrained(tmp_path, "dnabert1_linear1")  # no vocab.txt: k from vocab_size
    assert info["k"] == 6 and info["classifier_loaded"] and info["initialised"] == []
    model.eval()
    ids, mask = tok.pad([e.ids for e in tok.encode(["ACGTTGCAAC" * 8, "TATAAAAGGC"])])
    with torch.no_grad():
        want = clf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
        got = model(torch.from_numpy(ids), torch.from_numpy(mask))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text('{"vocab_size": 4101, "hidden_size": 16, "num_hidden_layers": 1, '
                                          '"num_attention_heads": 2, "intermediate_size": 32}')
    save_file({"bert.encoder.layer.0.attention.self.Wqkv.weight": torch.zeros(48, 16)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="does not match the DNABERT"):
        load_pretrained(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("variant", DNABERT1_VARIANTS)
def test_onnx_matches_pytorch_and_is_batch_invariant(variant, tmp_path):
    config = Dnabert1Config.from_dict({**TINY.to_dict(), "max_position_embeddings": 512})
    model = make(variant, config)
    tok = make_tokenizer(3)
    graph = export_graph(model, tmp_path / "model.onnx")
    report = verify(model, graph, tok)
    assert report["max_abs_diff"] <= 1e-4
    assert max(c["shape"][1] for c in report["cases"]) == 512  # the position-embedding limit
    session = Session(graph)
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), int(n))) for n in (5, 40, 200, 514)]
    rows = [e.ids for e in tok.encode(seqs)]

    def run(batch):
        ids, mask = tok.pad(batch)
        return session.run({"input_ids": ids, "attention_mask": mask})

    alone = np.concatenate([run([r]) for r in rows])
    np.testing.assert_allclose(run(rows), alone, atol=1e-5)


@pytest.mark.slow
def test_model_folder_card_and_serving(tmp_path):
    config = Dnabert1Config.from_dict({**TINY.to_dict(), "k": 6, "vocab_size": 4101, "max_position_embeddings": 512})
    model = make("dnabert1_linear1", config)
    tok = make_tokenizer(6)
    out = tmp_path / "promoter" / "dnabert1_linear1"
    card = export_model_folder(model, tok, out, name="dnabert1_linear1", task="promoter",
                               training={}, metrics={},
                               tokenization_note=LONG_INPUT_NOTE)
    assert card.architecture == "dnabert1" and card.files["tokenizer"] == "vocab.txt"
    assert card.tokenization.kind == "kmer" and card.tokenization.k == 6
    assert card.tokenization.max_tokens == 512 and "truncated" in card.tokenization.note
    served = OnnxModel(out)
    long = "ACGT" * 300
    pred = predict_sequences(served, [long, long[:515], "ACGTN" * 20])
    assert pred.prepared.truncated == [True, False, False] and [len(t) for t in pred.prepared.tokens[:2]] == [512, 512]
    np.testing.assert_allclose(pred.scores[0], pred.scores[1], atol=1e-6)  # the first 515 bases
    with torch.no_grad():
        ids, mask = tok.pad([tok.encode(["ACGTN" * 20])[0].ids])
        ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).softmax(-1)[0, 1].item()
    assert pred.scores[2] == pytest.approx(ref, abs=1e-5)


def test_cli_refuses_more_tokens_than_positions(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("sequence,label\n" + "".join(f"{'ACGT' * 10},{i % 2}\n" for i in range(20)))
    rc = train_cli(["train", "--variant", "dnabert1_linear1", "--preset", "tiny", "--train", str(data),
                    "--max-tokens", "600", "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    assert rc == 2
    rc = train_cli(["train", "--task", "lncrna-localization", "--variant", "onehot_gru", "--train", str(data),
                    "--run-dir", str(tmp_path / "run")])
    assert rc == 2
