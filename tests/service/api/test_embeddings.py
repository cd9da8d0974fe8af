"""Embeddings through clients we did not write: the ``openai`` package against ``/v1``, and
``/embed`` (JSON, npy, npz, per-token states), all against a real server on 127.0.0.1.

The vectors are checked against the PyTorch backbone of the same model folder (1e-4), against
each other, and alone against in a batch (1e-5).
"""

from __future__ import annotations

import io
import random

import httpx
import numpy as np
import pytest

from service.contract.card import ModelCard
from service.contract.prepare import prepare, records_of
from service.contract.tokenization import tokenizer_for_card
from tests.service.robustness import MODELS_DIR, ThreadedServer, make_settings, needs_models, small_models_dir

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")

PROMOTER_MODELS = ("cnn_bilstm_max", "base", "onehot_cnn", "dnabert1_linear1")


def _random_dna(n: int, rng: random.Random) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


RNG = random.Random(11)
SEQUENCES = [_random_dna(n, RNG) for n in (300, 37, 120, 300, 8, 251)]
SEQUENCES[2] = SEQUENCES[2][:50] + "NNNN" + SEQUENCES[2][54:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (MODELS_DIR / "promoter" / "cnn_bilstm_max" / "embedding.onnx").is_file():
        pytest.fail("the embedded models have no backbone graph (dnabert-train add-embedding)")
    root = small_models_dir(tmp_path_factory.mktemp("embed"), *PROMOTER_MODELS, lncrna=True)
    with ThreadedServer(make_settings(root, workers=1)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="not-needed", max_retries=0, timeout=60)


def reference_mean(task: str, name: str, sequences: list[str]) -> np.ndarray:
    """Mean of the PyTorch backbone's hidden states over each sequence's tokens ([CLS], [SEP] in)."""
    from training.export.embedding import backbone_hidden_states

    folder = MODELS_DIR / task / name
    tok = tokenizer_for_card(folder, ModelCard.load(folder))
    out = []
    for row in prepare(records_of(sequences), tok).tokens:  # one at a time: no padding at all
        ids, mask = tok.pad([row])
        hidden = backbone_hidden_states(folder, ids, mask)
        out.append(hidden[0, : len(row)].astype(np.float64).mean(axis=0))
    return np.array(out)


@needs_models
def test_openai_client_embeddings_equal_the_pytorch_backbone(client):
    got = client.embeddings.create(model="promoter-cnn_bilstm_max", input=SEQUENCES)  # base64 on the wire
    assert got.model == "promoter-cnn_bilstm_max" and got.object == "list"
    assert [d.index for d in got.data] == list(range(len(SEQUENCES)))
    vectors = np.array([d.embedding for d in got.data])
    assert vectors.shape == (len(SEQUENCES), 128)
    np.testing.assert_allclose(vectors, reference_mean("promoter", "cnn_bilstm_max", SEQUENCES), atol=1e-4, rtol=0)
    floats = client.embeddings.create(model="promoter-cnn_bilstm_max", input=SEQUENCES, encoding_format="float")
    np.testing.assert_array_equal(np.array([d.embedding for d in floats.data], dtype=np.float32),
                                  vectors.astype(np.float32))
    tokens = sum(len(r) for r in prepare(records_of(SEQUENCES), tokenizer_for_card(
        MODELS_DIR / "promoter" / "cnn_bilstm_max", ModelCard.load(MODELS_DIR / "promoter" / "cnn_bilstm_max"))).tokens)
    assert got.usage.prompt_tokens == got.usage.total_tokens == tokens


@needs_models
def test_each_model_has_its_own_backbone_and_dnabert1_and_lncrna_embed(client, server):
    listed = {m.id for m in client.models.list().data}
    assert listed == {"promoter-cnn_bilstm_max", "promoter-base", "promoter-dnabert1_linear1",
                      "lncrna-localization-lncrna"}  # the one-hot CNN has no backbone
    seqs = SEQUENCES[:3]
    for task, name in (("promoter", "base"), ("promoter", "dnabert1_linear1"), ("lncrna-localization", "lncrna")):
        got = client.embeddings.create(model=f"{task}-{name}", input=seqs, encoding_format="float")
        np.testing.assert_allclose(np.array([d.embedding for d in got.data]), reference_mean(task, name, seqs),
                                   atol=1e-4, rtol=0)
    a = client.embeddings.create(model="promoter-base", input=seqs[0]).data[0].embedding
    b = client.embeddings.create(model="promoter-cnn_bilstm_max", input=seqs[0]).data[0].embedding
    assert np.abs(np.array(a) - np.array(b)).max() > 1e-3  # fine-tuned backbones differ


@needs_models
def test_a_sequence_alone_or_in_a_batch_and_both_routes_agree(client, server):
    batch = np.array([d.embedding for d in client.embeddings.create(
        model="promoter-cnn_bilstm_max", input=SEQUENCES).data])
    for i, seq in enumerate(SEQUENCES):
        alone = client.embeddings.create(model="promoter-cnn_bilstm_max", input=seq).data[0].embedding
        np.testing.assert_allclose(alone, batch[i], atol=1e-5, rtol=0)
    fasta = "".join(f">r{i}\n{s}\n" for i, s in enumerate(SEQUENCES))
    r = httpx.post(f"{server.base}/embed", params={"model": "promoter-cnn_bilstm_max"}, content=fasta,
                   headers={"Content-Type": "text/x-fasta"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "promoter-cnn_bilstm_max" and body["dim"] == 128 and body["pooling"] == "mean"
    np.testing.assert_allclose(np.array([x["embedding"] for x in body["results"]]), batch, atol=1e-6, rtol=0)
    assert [x["id"] for x in body["results"]] == [f"r{i}" for i in range(len(SEQUENCES))]
    assert "ambiguous_bases" in body["results"][2]["flags"]
    cls = httpx.post(f"{server.base}/embed", params={"pooling": "cls", "model": "promoter-cnn_bilstm_max"},
                     content=fasta,
                     headers={"Content-Type": "text/x-fasta"}, timeout=60).json()
    tokens = httpx.post(f"{server.base}/embed", params={"output": "tokens", "model": "promoter-cnn_bilstm_max"},
                        content=fasta,
                        headers={"Content-Type": "text/x-fasta"}, timeout=60).json()
    for pooled, first, per_token in zip(body["results"], cls["results"], tokens["results"], strict=True):
        states = np.array([t["vector"] for t in per_token["hidden_states"]])
        assert len(states) == per_token["tokens"]
        np.testing.assert_allclose(states.mean(axis=0), pooled["embedding"], atol=1e-6)
        np.testing.assert_allclose(states[0], first["embedding"], atol=1e-6)


@needs_models
def test_npy_and_npz_carry_the_ids_and_the_same_vectors(server):
    fasta = "".join(f">rec{i}\n{s}\n" for i, s in enumerate(SEQUENCES)) + ">blank\nNNNNNNNN\n"
    post = lambda **params: httpx.post(f"{server.base}/embed", params=params, content=fasta,  # noqa: E731
                                       headers={"Content-Type": "text/x-fasta"}, timeout=60)
    js = post().json()["results"]
    assert js[-1]["embedding"] is None and "no_informative_bases" in js[-1]["flags"]
    npy = post(format="npy")
    assert npy.headers["content-type"] == "application/x-npy"
    table = np.load(io.BytesIO(npy.content), allow_pickle=False)
    assert list(table["id"]) == [f"rec{i}" for i in range(len(SEQUENCES))] + ["blank"]
    assert list(table["scored"]) == [True] * len(SEQUENCES) + [False]
    np.testing.assert_array_equal(table["embedding"][:-1], np.array([x["embedding"] for x in js[:-1]], np.float32))
    assert np.isnan(table["embedding"][-1]).all()
    npz = np.load(io.BytesIO(post(format="npz").content), allow_pickle=False)
    assert list(npz["ids"]) == list(table["id"]) and str(npz["model"]) == "promoter-base"  # the server's default
    np.testing.assert_array_equal(npz["embeddings"][:-1], table["embedding"][:-1])
    tok = np.load(io.BytesIO(post(format="npz", output="tokens").content), allow_pickle=False)
    per_token = post(output="tokens").json()["results"]
    for i, rec in enumerate(per_token):
        a, b = tok["offsets"][i], tok["offsets"][i + 1]
        np.testing.assert_array_equal(tok["hidden_states"][a:b], np.array([t["vector"] for t in rec["hidden_states"]],
                                                                           np.float32))
        assert [int(s) for s in tok["starts"][a:b]] == [t["start"] if t["start"] is not None else -1
                                                        for t in rec["hidden_states"]]
    refused = post(format="npy", output="tokens")
    assert refused.status_code == 406 and "npz" in refused.json()["error"]["message"]


@needs_models
def test_token_spans_point_into_the_sequence(server):
    seq = SEQUENCES[0]
    bpe = httpx.post(f"{server.base}/embed", params={"output": "tokens"}, content=f">s\n{seq}\n",
                     headers={"Content-Type": "text/x-fasta"}, timeout=60).json()["results"][0]["hidden_states"]
    assert bpe[0]["token"] == "[CLS]" and bpe[-1]["token"] == "[SEP]" and bpe[0]["start"] is None
    body = bpe[1:-1]
    assert "".join(t["token"] for t in body) == seq
    assert all(seq[t["start"]:t["end"]] == t["token"] for t in body)
    assert body[0]["start"] == 0 and body[-1]["end"] == len(seq)
    kmer = httpx.post(f"{server.base}/embed", params={"output": "tokens", "model": "promoter-dnabert1_linear1"},
                      content=f">s\n{seq}\n", headers={"Content-Type": "text/x-fasta"},
                      timeout=60).json()["results"][0]["hidden_states"][1:-1]
    assert len(kmer) == len(seq) - 5 and all(seq[t["start"]:t["end"]] == t["token"] for t in kmer)
    # lncRNA: only the 3' end is read (left truncation): the spans say where it starts
    long = _random_dna(3000, random.Random(3))
    lnc = httpx.post(f"{server.base}/embed", params={"output": "tokens", "model": "lncrna-localization-lncrna"},
                     content=f">l\n{long}\n", headers={"Content-Type": "text/x-fasta"}, timeout=60).json()
    rec = lnc["results"][0]
    assert rec["truncated"] and rec["tokens"] == len(rec["hidden_states"])
    spans = [t for t in rec["hidden_states"] if t["start"] is not None]
    assert spans[-1]["end"] == len(long) and all(long[t["start"]:t["end"]] == t["token"] for t in spans)
    assert all(a["end"] == b["start"] for a, b in zip(spans, spans[1:]))


@needs_models
def test_openai_errors_have_the_openai_shape(client, server):
    with pytest.raises(openai.NotFoundError) as nf:
        client.embeddings.create(model="promoter-nope", input="ACGT")
    assert nf.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model="promoter-base", input="ACGTACGT", dimensions=64)
    assert "dimensions" in dims.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.embeddings.create(model="promoter-base", input=["ACGTACGT", "ACGTXACG"])
    assert bad.value.body["param"] == "input[1]" and bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.UnprocessableEntityError) as none:
        client.embeddings.create(model="promoter-onehot_cnn", input="ACGTACGT")
    assert none.value.body["code"] == "no_embedding"
    for body, needle in (({"model": "promoter-base", "input": [[1, 2, 3]]}, "token-id"),
                         ({"model": "promoter-base", "input": []}, "empty"),
                         ({"model": "promoter-base", "input": "NNNN"}, "no A, C, G or T"),
                         ({"model": "promoter-base", "input": "ACGT", "temperature": 1}, "temperature")):
        r = httpx.post(f"{server.base}/v1/embeddings", json=body, timeout=30)
        assert 400 <= r.status_code < 500, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and needle in err["message"], err
    assert httpx.get(f"{server.base}/v1/models/promoter-onehot_cnn").json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{server.base}/embed", params={"model": "all"}, content=">a\nACGT\n", timeout=30)
    assert r.status_code == 404 and "error" in r.json() and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{server.base}/embed", params={"model": "promoter-all"}, content=">a\nACGT\n", timeout=30)
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_embedding"


@needs_models
def test_per_token_answers_are_bounded_before_anything_runs(server, monkeypatch):
    import service.api.embeddings as api

    monkeypatch.setattr(api, "MAX_TOKEN_VALUES", 128 * 100)
    fasta = "".join(f">r{i}\n{s}\n" for i, s in enumerate(SEQUENCES))
    r = httpx.post(f"{server.base}/embed", params={"output": "tokens", "model": "promoter-base"}, content=fasta,
                   headers={"Content-Type": "text/x-fasta"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text
    assert "12800 values" in r.json()["error"]["message"]
    pooled = httpx.post(f"{server.base}/embed", params={"model": "promoter-base"}, content=fasta,
                        headers={"Content-Type": "text/x-fasta"}, timeout=60)
    assert pooled.status_code == 200  # pooled vectors are not bounded by it
