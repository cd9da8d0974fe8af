"""The front end (records -> normalise -> tokenize) gives exactly the ids of the ``tokenizers``
pipeline, whatever the input: property tests of ``prepare`` and ``SequenceTokenizer.encode``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from service.contract.errors import InvalidSequence
from service.contract.prepare import prepare, records_of
from service.contract.sequence import looks_like_protein, normalize_sequence
from service.contract.tokenization import SequenceTokenizer, TruncationPolicy

TOKENIZER = Path(__file__).resolve().parents[3] / "models" / "promoter" / "base" / "tokenizer.json"
POLICIES = [TruncationPolicy(), TruncationPolicy(max_tokens=24, truncation_side="left"),
            TruncationPolicy(max_tokens=24, truncation_side="right"),
            TruncationPolicy(max_tokens=60, max_nucleotides=150, nucleotide_truncation_side="left"),
            TruncationPolicy(max_tokens=60, max_nucleotides=150, nucleotide_truncation_side="right")]

# Raw nucleotide text as users send it: mostly clean DNA, sometimes lower case, RNA, N and IUPAC codes.
clean = st.text(alphabet="ACGT", min_size=1, max_size=400)
raw = st.text(alphabet="ACGTacgtUuNnRYSWKMBDHV", min_size=1, max_size=400)
sequences = st.lists(st.one_of(clean, clean, raw), min_size=1, max_size=12)


def pipeline_ids(policy: TruncationPolicy, normalised: list[str]) -> list[tuple[list[int], bool]]:
    """The reference: the full ``tokenizers`` pipeline (pre-tokenizer, ``[CLS] $A [SEP]`` template,
    truncation to ``max_tokens``) on the nucleotide-clipped normalised sequences."""
    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.no_padding()
    tok.enable_truncation(policy.max_tokens, direction=policy.truncation_side)
    clipped = [policy.clip(s) for s in normalised]
    return [(e.ids, cut or bool(e.overflowing))
            for e, (_, cut) in zip(tok.encode_batch([s for s, _ in clipped]), clipped, strict=True)]


@pytest.fixture(scope="module", params=range(len(POLICIES)), ids=lambda i: f"policy{i}")
def tokenizer(request):
    return SequenceTokenizer.from_file(TOKENIZER, POLICIES[request.param])


@settings(max_examples=60, deadline=None)
@given(seqs=sequences)
def test_prepare_gives_the_ids_of_the_tokenizers_pipeline(tokenizer, seqs):
    normalised = [normalize_sequence(s) for s in seqs]
    if any(looks_like_protein(n) for n in normalised):
        with pytest.raises(InvalidSequence, match="protein"):
            prepare(records_of(seqs), tokenizer)
        return
    prepared = prepare(records_of(seqs), tokenizer)
    expected = pipeline_ids(tokenizer.policy, [n.sequence for n in normalised])
    assert list(zip(prepared.tokens, prepared.truncated, strict=True)) == expected
    assert prepared.lengths == [len(n.sequence) for n in normalised]
    assert prepared.ambiguous == [n.n_ambiguous for n in normalised]
    assert prepared.rna == [("U" in s or "u" in s) for s in seqs]


@settings(max_examples=40, deadline=None)
@given(seqs=st.lists(clean, min_size=1, max_size=30))
def test_encode_of_clean_dna_gives_the_ids_of_the_tokenizers_pipeline(tokenizer, seqs):
    encoded = tokenizer.encode(seqs)
    assert [(e.ids, e.truncated) for e in encoded] == pipeline_ids(tokenizer.policy, seqs)
    # each row is a fresh list: changing one leaves the next encoding alone
    encoded[0].ids.append(-1)
    assert tokenizer.encode(seqs[:1])[0].ids == pipeline_ids(tokenizer.policy, seqs[:1])[0][0]


def test_prepare_refuses_protein_and_names_the_first_bad_record(tokenizer):
    peptide = "MKVHRSWYDMKVHRSWYDMKVHRSWYDRRSS"
    with pytest.raises(InvalidSequence, match="protein") as info:
        prepare(records_of(["ACGT", peptide, "ACGT7"]), tokenizer)
    assert info.value.record_id == "1"
    with pytest.raises(InvalidSequence, match="invalid character") as info:
        prepare(records_of(["ACGT", "ACGT7", peptide]), tokenizer)
    assert info.value.record_id == "1"
