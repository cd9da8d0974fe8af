"""The C byte-pair encoder (``service.contract._fastbpe``) gives the ids of ``tokenizers``.

Every tokenizer in ``models/`` and the published DNABERT-2 one, on random, biased, repetitive,
N-rich and real sequences from 0 to 5,000 nt; merge lists whose order the fast bucket queue does
not cover (the heap then runs); the hand-over to ``tokenizers`` for characters the C encoder does
not take; the same ids with 1, 2 or 8 threads.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import sysconfig
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from service.contract import bpe
from service.contract.tokenization import SequenceTokenizer, TruncationPolicy

REPO = Path(__file__).resolve().parents[3]
TOKENIZERS = sorted(REPO.glob("models/*/*/tokenizer.json"))


def reference(tokenizer_file: Path, seqs: list[str]) -> list[list[int]]:
    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    tok.no_padding()
    return [e.ids for e in tok.encode_batch(seqs, add_special_tokens=True)]


def varied_sequences(seed: int, count: int = 600) -> list[str]:
    rng = random.Random(seed)
    out = ["", "A", "N", "NNNNNNNN", "ACGT" * 75, "A" * 300, "AT" * 150, "GGC" * 100, "CA" * 1 + "N" * 40 + "TG"]
    for _ in range(count):
        n = rng.choice([1, 2, 3, 5, 17, 64, 150, 299, 300, 301, 482, 1000, rng.randrange(0, 3000)])
        kind = rng.randrange(6)
        if kind == 0:  # uniform
            s = "".join(rng.choice("ACGT") for _ in range(n))
        elif kind == 1:  # GC- or AT-rich
            w = [1, 4, 4, 1] if rng.random() < 0.5 else [4, 1, 1, 4]
            s = "".join(rng.choices("ACGT", weights=w, k=n))
        elif kind == 2:  # tandem repeats of a short unit, with a few point changes
            unit = "".join(rng.choice("ACGT") for _ in range(rng.randrange(1, 7)))
            s = list((unit * (n // len(unit) + 1))[:n])
            for _ in range(n // 50):
                s[rng.randrange(n)] = rng.choice("ACGT")
            s = "".join(s)
        elif kind == 3:  # N runs inside
            s = "".join(rng.choice("ACGT") if rng.random() > 0.05 else "N" * rng.randrange(1, 20) for _ in range(n))
        elif kind == 4:  # two letters only: long runs of the same merges
            s = "".join(rng.choice("AT" if rng.random() < 0.5 else "GC") for _ in range(n))
        else:  # homopolymer runs
            s = "".join(rng.choice("ACGT") * rng.randrange(1, 12) for _ in range(max(1, n // 6)))
        out.append(s)
    out.append("".join(random.Random(seed).choice("ACGT") for _ in range(5000)))
    return out


def test_the_c_encoder_is_built_where_a_compiler_is():
    if shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc") is None:
        pytest.skip("no C compiler here: the package is built without its C encoder")
    assert bpe._fastbpe is not None, "service.contract._fastbpe was not built: pip install -e . again"
    for path in TOKENIZERS:
        tok = SequenceTokenizer.from_file(path)
        assert tok._fast is not None, path
        assert tok._fast.monotone, path  # trained merge lists take the bucket queue


needs_c = pytest.mark.skipif(bpe._fastbpe is None, reason="built without the C encoder")


@needs_c
@pytest.mark.parametrize("path", TOKENIZERS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_embedded_tokenizers_give_the_ids_of_tokenizers(path):
    seqs = varied_sequences(seed=len(str(path)))
    tok = SequenceTokenizer.from_file(path, TruncationPolicy(max_tokens=1 << 20))
    assert [e.ids for e in tok.encode(seqs)] == reference(path, seqs)


@needs_c
def test_the_published_tokenizer_gives_the_ids_of_tokenizers(published_tokenizer_file):
    seqs = varied_sequences(seed=7, count=1500)
    tok = SequenceTokenizer.from_file(published_tokenizer_file, TruncationPolicy(max_tokens=1 << 20))
    assert tok._fast is not None and tok._fast.monotone
    assert [e.ids for e in tok.encode(seqs)] == reference(published_tokenizer_file, seqs)


@needs_c
def test_real_sequences_give_the_ids_of_tokenizers(published_tokenizer_file, shared_dir):
    from service.contract.sequence import normalize_sequence

    seqs = []
    for f in sorted((shared_dir / "data" / "lncrna").glob("*.fasta")):
        records = f.read_text().split(">")[1:1001]  # the data sets hold repeated ids: no strict reader here
        seqs += [normalize_sequence("".join(r.splitlines()[1:])).sequence for r in records]
    for f in sorted((shared_dir / "data" / "promoter").rglob("dev.csv")):
        seqs += [line.split(",")[0] for line in f.read_text().splitlines()[1:1001]]
    assert len(seqs) > 3000
    for path in [published_tokenizer_file, *TOKENIZERS[:1]]:
        tok = SequenceTokenizer.from_file(path, TruncationPolicy(max_tokens=1 << 20))
        assert [e.ids for e in tok.encode(seqs)] == reference(path, seqs), path


@needs_c
def test_threads_change_nothing():
    tok = SequenceTokenizer.from_file(TOKENIZERS[0])
    seqs = varied_sequences(seed=3, count=3000)
    one = tok._fast.encode(seqs, tok.cls_id, tok.sep_id, 1)
    assert tok._fast.encode(seqs, tok.cls_id, tok.sep_id, 2) == one
    assert tok._fast.encode(seqs, tok.cls_id, tok.sep_id, 8) == one
    assert one == reference(TOKENIZERS[0], seqs)


def hand_made(merges: list[tuple[str, str]], extra: list[str] = ()) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "A", "C", "G", "T"])}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for t in extra:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    spec = json.loads(tok.to_str())
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                           "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}},
    }
    return Tokenizer.from_str(json.dumps(spec))


@needs_c
@pytest.mark.parametrize("merges", [
    # a merge whose part is made later: a new pair can rank below the one being merged
    [("AC", "G"), ("A", "C"), ("C", "G"), ("G", "T"), ("ACG", "T"), ("T", "T"), ("A", "A")],
    # one token made by two merges
    [("A", "C"), ("C", "G"), ("AC", "G"), ("A", "CG"), ("T", "T"), ("ACG", "TT")],
    # overlapping same-letter merges
    [("A", "A"), ("AA", "A"), ("AA", "AA"), ("AAA", "AA"), ("G", "C"), ("GC", "GC"), ("T", "T")],
], ids=["part-made-later", "token-made-twice", "overlaps"])
def test_hand_made_merge_lists_give_the_ids_of_tokenizers(merges, tmp_path):
    tok = hand_made(merges)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    ours = SequenceTokenizer.from_file(path, TruncationPolicy(max_tokens=1 << 20))
    assert ours._fast is not None
    if merges[0] == ("A", "A"):
        assert ours._fast.monotone
    else:
        assert not ours._fast.monotone  # the heap runs
    rng = random.Random(5)
    seqs = varied_sequences(seed=11, count=300) + ["".join(rng.choice("ACGT") for _ in range(40)) for _ in range(500)]
    assert [e.ids for e in ours.encode(seqs)] == reference(path, seqs)


@needs_c
def test_characters_it_does_not_take_go_to_tokenizers():
    path = TOKENIZERS[0]
    tok = SequenceTokenizer.from_file(path, TruncationPolicy(max_tokens=1 << 20))
    with pytest.raises(ValueError):
        tok._fast.encode(["ACGT", "ACGT ACGT"], tok.cls_id, tok.sep_id, 1)
    with pytest.raises(ValueError):
        tok._fast.encode(["ACGTé"], tok.cls_id, tok.sep_id, 1)
    # (input of encode is normalised, so these do not reach it from a request: A, C, G, T, N only)
    odd = ["acgtACGT", "ACGT-NNNA", "ACGTé", "ACGT"]
    assert [e.ids for e in tok.encode(odd)] == reference(path, odd)


@needs_c
def test_truncation_of_the_c_encoder_ids():
    path = TOKENIZERS[0]
    seqs = varied_sequences(seed=9, count=200)
    for side in ("left", "right"):
        policy = TruncationPolicy(max_tokens=20, truncation_side=side)
        tok = SequenceTokenizer.from_file(path, policy)
        ref = Tokenizer.from_file(str(path))
        ref.no_padding()
        ref.enable_truncation(20, direction=side)
        want = [(e.ids, bool(e.overflowing)) for e in ref.encode_batch(seqs)]
        assert [(e.ids, e.truncated) for e in tok.encode(seqs)] == want


def test_it_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("DNABERT_FAST_BPE", "0")
    assert SequenceTokenizer.from_file(TOKENIZERS[0])._fast is None


@needs_c
def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        bpe._fastbpe.Encoder(b"\0" * 10, b"")
    with pytest.raises(ValueError):
        bpe._fastbpe.Encoder(struct.pack("<128i", *([-1] * 128)), struct.pack("<4i", -1, 0, 0, 5))
    enc = bpe._fastbpe.Encoder(struct.pack("<128i", *([-1] * 128)), b"")
    with pytest.raises(TypeError):
        enc.encode(("ACGT",), -1, -1, 1)
    assert enc.encode([], -1, -1, 2) == []
