"""Train a DNABERT-2 style BPE tokenizer on the sequences at hand.

DNABERT-2 trained byte-pair encoding on DNA with a 4,096-token vocabulary, the special tokens
``[UNK] [CLS] [SEP] [PAD] [MASK]`` (ids 0-4), a whitespace pre-tokenizer, no normaliser and the
template ``[CLS] $A [SEP]``. We do the same with the ``tokenizers`` library. The alphabet is
limited to A, C, G, T: ``N`` (and every ambiguity code, normalised to ``N``) becomes ``[UNK]``,
as with the published tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from service.contract.tokenization import SPECIAL_TOKENS
from training.data import pretraining_sequences

PUBLISHED_VOCAB_SIZE = 4096


def train_bpe_tokenizer(sequences: Iterable[str], vocab_size: int = PUBLISHED_VOCAB_SIZE,
                        chunk: int = 1000) -> Tokenizer:
    """BPE over normalised sequences, split into ``chunk``-nt pieces (as DNABERT-2 did with
    genome fragments) so that very long lncRNAs do not dominate the pair counts."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list("ACGT"),
        limit_alphabet=4,
        show_progress=False,
    )

    def pieces() -> Iterable[str]:
        for seq in sequences:
            for i in range(0, len(seq), chunk):
                yield seq[i : i + chunk].replace("N", " ")

    tok.train_from_iterator(pieces(), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def save_tokenizer(tok: Tokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def train_tokenizer(out: str | Path, vocab_size: int = PUBLISHED_VOCAB_SIZE) -> tuple[Tokenizer, int]:
    """BPE on every sequence at hand except the test splits, saved to ``out``; returns the
    tokenizer and the number of sequences it learnt from."""
    seqs = pretraining_sequences()
    tok = train_bpe_tokenizer(seqs, vocab_size=vocab_size)
    save_tokenizer(tok, out)
    return tok, len(seqs)
