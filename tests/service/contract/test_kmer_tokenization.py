"""Overlapping k-mer tokenization (DNABERT v1) and one token per base (the one-hot baselines)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from service.contract.errors import ModelArtifactError
from service.contract.kmer import KmerTokenizer, kmer_vocab, read_vocab, seq2kmer
from service.contract.sequence import normalize_sequence
from service.contract.tokenization import (
    SequenceTokenizer,
    TruncationPolicy,
    tokenizer_for_card,
    tokenizer_from_entry,
)
from tests.conftest import SHARED

VOCAB_6MER = SHARED / "dnabert1_6mer" / "vocab.txt"


@pytest.fixture(scope="module")
def vocab_file():
    if not VOCAB_6MER.is_file():
        pytest.skip(f"DNABERT 6-mer vocabulary not found at {VOCAB_6MER}")
    return VOCAB_6MER


@pytest.fixture(scope="module")
def tok6(vocab_file) -> KmerTokenizer:
    return KmerTokenizer.from_file(vocab_file, 6, True, TruncationPolicy(max_tokens=512))


def reference(seq: str, vocab: list[str], k: int, special_tokens: bool = True) -> list[int]:
    """What DNABERT (v1) does: ``seq2kmer`` (space-separated k-mers), then BertTokenizer's
    vocabulary lookup of each word, unknown words -> [UNK], and [CLS] ... [SEP] around."""
    index = {t: i for i, t in enumerate(vocab)}
    words = " ".join(seq2kmer(seq, k)).split()
    ids = [index.get(w, index["[UNK]"]) for w in words]
    if special_tokens:
        return [index["[CLS]"], *ids, index["[SEP]"]]
    return ids or [index["[UNK]"]]


def test_published_vocabulary_ids_by_hand(tok6):
    # vocab.txt: [PAD] [UNK] [CLS] [SEP] [MASK], then the 6-mers in the order A, T, C, G
    assert (tok6.pad_id, tok6.unk_id, tok6.cls_id, tok6.sep_id, tok6.mask_id) == (0, 1, 2, 3, 4)
    assert tok6.vocab_size == 4101
    got = [e.ids for e in tok6.encode(["AAAAAA", "AAAAAAT", "AAAAAATA", "GGGGGG", "TTTTTT", "CCCCCC"])]
    assert got == [[2, 5, 3], [2, 5, 6, 3], [2, 5, 6, 9, 3], [2, 4100, 3], [2, 1370, 3], [2, 2735, 3]]
    # ACGTAC: A0 C2 G3 T1 A0 C2 in base 4 (A=0, T=1, C=2, G=3) + 5
    assert tok6.encode(["ACGTAC"])[0].ids == [2, 5 + int("023102", 4), 3]


def test_standard_vocabulary_is_the_published_one(vocab_file):
    assert read_vocab(vocab_file) == kmer_vocab(6)


def test_every_kmer_with_n_is_unk(tok6):
    enc = tok6.encode(["AAAAAANAAAAAA"])[0]
    assert enc.ids == [2, 5, 1, 1, 1, 1, 1, 1, 5, 3]
    assert tok6.encode([normalize_sequence("aaaaaryaaaaaa").sequence])[0].ids.count(1) == 7


def test_shorter_than_k_gives_cls_sep(tok6):
    assert [e.ids for e in tok6.encode(["A", "ACGTA"])] == [[2, 3], [2, 3]]
    assert [e.ids for e in tok6.encode(["A"])] == [[2, 3]]  # no window in the whole batch


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_matches_the_slow_reference(k):
    vocab = kmer_vocab(k)
    tok = KmerTokenizer(vocab, k, True, TruncationPolicy(max_tokens=10_000))
    rng = np.random.default_rng(k)
    seqs = ["".join(rng.choice(list("ACGTN"), int(n), p=[0.24, 0.24, 0.24, 0.24, 0.04]))
            for n in rng.integers(1, 400, 300)]
    seqs += ["N" * 10, "ACGT"[: k - 1], "ACGT" * 3]
    assert [e.ids for e in tok.encode(seqs)] == [reference(s, vocab, k) for s in seqs]
    assert not any(e.truncated for e in tok.encode(seqs))


def test_published_vocabulary_matches_the_reference(tok6, vocab_file):
    vocab = read_vocab(vocab_file)
    rng = np.random.default_rng(6)
    seqs = ["".join(rng.choice(list("ACGTN"), 300, p=[0.245, 0.245, 0.245, 0.245, 0.02])) for _ in range(200)]
    assert [e.ids for e in tok6.encode(seqs)] == [reference(s, vocab, 6) for s in seqs]


def test_one_token_per_base_without_special_tokens():
    tok = KmerTokenizer.for_k(1, special_tokens=False, policy=TruncationPolicy(max_tokens=2048))
    assert tok.vocab[5:] == ["A", "T", "C", "G"]
    assert tok.encode(["ACGTN"])[0].ids == [5, 7, 8, 6, 1]
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGTN"), int(n))) for n in rng.integers(1, 50, 50)]
    assert [e.ids for e in tok.encode(seqs)] == [reference(s, tok.vocab, 1, False) for s in seqs]
    # k > 1 without special tokens: a sequence with no k-mer becomes one [UNK], never an empty row
    tok3 = KmerTokenizer.for_k(3, special_tokens=False)
    assert tok3.encode(["AC", "ACGT"])[0].ids == [tok3.unk_id]
    assert len(tok3.encode(["ACGT"])[0].ids) == 2


@pytest.mark.parametrize("special", [True, False])
def test_token_truncation_keeps_the_chosen_end_and_reads_like_the_shorter_sequence(special):
    k, limit = 4, 12
    extra = 2 if special else 0
    rng = np.random.default_rng(1)
    seq = "".join(rng.choice(list("ACGT"), 40))
    n_kmers = limit - extra
    for side, kept in (("right", seq[: n_kmers + k - 1]), ("left", seq[-(n_kmers + k - 1):])):
        tok = KmerTokenizer.for_k(k, special, TruncationPolicy(max_tokens=limit, truncation_side=side))
        long, exact = tok.encode([seq, kept])
        assert len(long.ids) == limit and long.truncated and not exact.truncated
        assert long.ids == exact.ids
        if special:
            assert long.ids[0] == tok.cls_id and long.ids[-1] == tok.sep_id


def test_dnabert_limit_is_512_tokens_515_bases(tok6):
    enc = tok6.encode(["ACGT" * 200, ("ACGT" * 200)[:515], ("ACGT" * 200)[:516]])
    assert [len(e.ids) for e in enc] == [512, 512, 512]
    assert [e.truncated for e in enc] == [True, False, True]


def test_nucleotide_clip_before_kmers():
    tok = KmerTokenizer.for_k(3, True, TruncationPolicy(max_tokens=100, max_nucleotides=10,
                                                        nucleotide_truncation_side="left"))
    seq = "G" * 10 + "ACGTTGCAAC"
    got = tok.encode([seq])[0]
    assert got.truncated and got.ids == tok.encode(["ACGTTGCAAC"])[0].ids


def test_pad_uses_the_vocabulary_pad_id(tok6):
    ids, mask = tok6.pad([e.ids for e in tok6.encode(["AAAAAAT", "AAAAAA"])])
    assert ids.tolist() == [[2, 5, 6, 3], [2, 5, 3, 0]] and mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert tok6.encode([]) == []


def test_bad_vocabularies_are_refused(tmp_path):
    with pytest.raises(ValueError, match="special tokens"):
        KmerTokenizer(kmer_vocab(3)[5:], 3)
    with pytest.raises(ValueError, match="not a 4-mer vocabulary"):
        KmerTokenizer(kmer_vocab(3), 4)
    with pytest.raises(ValueError, match="between 1 and 6"):
        KmerTokenizer.for_k(7)
    with pytest.raises(ValueError, match="max_tokens"):
        KmerTokenizer.for_k(3, True, TruncationPolicy(max_tokens=2))


def test_card_entry_picks_the_tokenizer(tmp_path, published_tokenizer_file):
    KmerTokenizer.for_k(3).save(tmp_path / "vocab.txt")
    entry = {"kind": "kmer", "k": 3, "special_tokens": True, "max_tokens": 64, "truncation_side": "right",
             "max_nucleotides": None, "nucleotide_truncation_side": "left", "note": "free text"}
    tok = tokenizer_from_entry(tmp_path / "vocab.txt", entry)
    assert isinstance(tok, KmerTokenizer) and tok.k == 3 and tok.policy.max_tokens == 64
    # the entry written for a card reads back to the same tokenizer
    assert tokenizer_from_entry(tmp_path / "vocab.txt", tok.card_tokenization()).card_tokenization() == tok.card_tokenization()
    # no kind: BPE, as every card written before k-mers existed
    bpe = tokenizer_from_entry(published_tokenizer_file, {"max_tokens": 512, "truncation_side": "right",
                                                          "max_nucleotides": None, "nucleotide_truncation_side": "left"})
    assert isinstance(bpe, SequenceTokenizer) and bpe.kind == "bpe"
    assert set(bpe.card_tokenization()) == {"max_tokens", "truncation_side", "max_nucleotides",
                                            "nucleotide_truncation_side"}
    with pytest.raises(ValueError, match="unknown tokenization kind"):
        tokenizer_from_entry(tmp_path / "vocab.txt", {"kind": "wordpiece"})
    with pytest.raises(ValueError, match="unknown tokenization keys"):
        tokenizer_from_entry(tmp_path / "vocab.txt", {**entry, "stride": 2})
    with pytest.raises(ValueError, match="integer 'k'"):
        tokenizer_from_entry(tmp_path / "vocab.txt", {"kind": "kmer"})
    card = SimpleNamespace(files={"tokenizer": "vocab.txt"}, tokenization={**entry, "k": 5})
    with pytest.raises(ModelArtifactError, match="not a 5-mer vocabulary"):
        tokenizer_for_card(tmp_path, card)
    card = SimpleNamespace(files={"tokenizer": "missing.txt"}, tokenization=entry)
    with pytest.raises(ModelArtifactError, match="missing"):
        tokenizer_for_card(tmp_path, card)
