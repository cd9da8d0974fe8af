"""Tokenization and truncation policy with the published DNABERT-2 tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from service.contract.sequence import normalize_sequence
from service.contract.tokenization import SequenceTokenizer, TruncationPolicy, pad_batch


@pytest.fixture(scope="module")
def tok(published_tokenizer_file):
    return SequenceTokenizer.from_file(published_tokenizer_file, TruncationPolicy(max_tokens=512))


def test_special_ids_and_template(tok):
    assert (tok.unk_id, tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id) == (0, 1, 2, 3, 4)
    ids = tok.encode(["ACGT"])[0].ids
    assert ids[0] == 1 and ids[-1] == 2


def test_normalised_lowercase_and_rna_tokenize_like_dna(tok):
    dna = tok.encode([normalize_sequence("ACGTTGCAACGT").sequence])[0].ids
    for variant in ("acgttgcaacgt", "ACGUUGCAACGU", "acg uug\ncaa cgu"):
        assert tok.encode([normalize_sequence(variant).sequence])[0].ids == dna


def test_ambiguous_bases_become_one_unk_each(tok):
    enc = tok.encode([normalize_sequence("ACGTRYNACGT").sequence])[0]
    assert enc.ids.count(tok.unk_id) == 3


def test_token_truncation_keeps_special_tokens(published_tokenizer_file):
    tok = SequenceTokenizer.from_file(published_tokenizer_file, TruncationPolicy(max_tokens=8))
    long, short = tok.encode(["ACGT" * 200, "ACGT"])
    assert len(long.ids) == 8 and long.truncated
    assert long.ids[0] == tok.cls_id and long.ids[-1] == tok.sep_id
    assert not short.truncated


def test_nucleotide_truncation_keeps_the_3_prime_end(published_tokenizer_file):
    policy = TruncationPolicy(max_tokens=482, truncation_side="left", max_nucleotides=10,
                              nucleotide_truncation_side="left")
    tok = SequenceTokenizer.from_file(published_tokenizer_file, policy)
    seq = "GGGGGGGGGG" + "ACGTTGCAAC"
    got = tok.encode([seq])[0]
    assert got.truncated
    assert got.ids == tok.encode(["ACGTTGCAAC"])[0].ids


def test_pad_batch_right_pads_with_mask():
    ids, mask = pad_batch([[1, 5, 2], [1, 2]], pad_id=3)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.tolist() == [[1, 5, 2], [1, 2, 3]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    with pytest.raises(ValueError):
        pad_batch([], 3)


@pytest.mark.parametrize("policy", [
    TruncationPolicy(),
    TruncationPolicy(max_tokens=40, truncation_side="left"),
    TruncationPolicy(max_tokens=40, truncation_side="right"),
    TruncationPolicy(max_tokens=482, max_nucleotides=2292),
    TruncationPolicy(max_tokens=3),
])
def test_the_bare_bpe_path_gives_the_ids_of_the_full_pipeline(policy):
    """encode() skips the pre-tokenizer, template and truncation stages of the tokenizers
    pipeline and applies them itself; the ids and truncation flags must be the same."""
    path = Path(__file__).resolve().parents[3] / "models" / "promoter" / "base" / "tokenizer.json"
    rng = random.Random(0)
    seqs = ["".join(rng.choice("ACGTN" if i % 3 == 0 else "ACGT") for _ in range(rng.randint(1, 3000)))
            for i in range(200)]
    tok = SequenceTokenizer.from_file(path, policy)
    assert tok._core is not None
    fast = [(e.ids, e.truncated) for e in tok.encode(seqs)]
    tok._core = None
    assert fast == [(e.ids, e.truncated) for e in tok.encode(seqs)]
    assert any(t for _, t in fast) == (policy.max_tokens < 600 or policy.max_nucleotides is not None)
