"""Overlapping k-mer tokenization (DNABERT v1) and one-token-per-base (the one-hot baselines).

The tokenizer file is a DNABERT ``vocab.txt``: one token per line, the special tokens
``[PAD] [UNK] [CLS] [SEP] [MASK]`` and every k-mer over ``ACGT`` (the published 6-mer file has
[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4 and the 4,096 6-mers in the order A, T, C, G).
Ids are always read from the file, never assumed.

A normalised sequence (``ACGTN`` only, see :func:`service.contract.sequence.normalize_sequence`) of
``L`` bases gives ``L - k + 1`` overlapping k-mers, as DNABERT's ``seq2kmer`` does; a k-mer that
contains ``N`` is ``[UNK]``. With ``special_tokens`` the ids are ``[CLS] k-mers [SEP]``
(DNABERT), without them just the k-mers (the baselines, ``k = 1``: one token per base). A
sequence shorter than ``k`` has no k-mer: DNABERT gives ``[CLS] [SEP]``; without special tokens
it becomes one ``[UNK]``, so that no row is empty.

Truncation reuses :class:`service.contract.tokens.TruncationPolicy`: ``max_nucleotides`` clips the
sequence first, then ``max_tokens`` (special tokens included) keeps the first
(``truncation_side="right"``) or last (``"left"``) k-mers. For overlapping k-mers, keeping
``n`` k-mers is the same as keeping ``n + k - 1`` bases, so a cut sequence reads exactly like
the shorter sequence would.

Everything is vectorised over the whole batch with numpy: bases -> codes 0..3 (4 = not ACGT),
k-mer index ``sum(code_j * 4**(k-1-j))`` at every position, one lookup through a ``4**k`` table.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.contract.tokens import Encoded, TruncationPolicy, pad_batch

KMER_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""The order of DNABERT's ``vocab.txt`` (and of the files :func:`kmer_vocab` writes)."""

DNABERT_BASE_ORDER = "ATCG"
MAX_K = 6

_CODES = np.full(256, 4, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODES[_b] = _i


def kmer_vocab(k: int) -> list[str]:
    """A DNABERT-style vocabulary: the 5 special tokens, then every k-mer (order A, T, C, G)."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, not {k}")
    return [*KMER_SPECIAL_TOKENS, *("".join(p) for p in itertools.product(DNABERT_BASE_ORDER, repeat=k))]


def read_vocab(path: str | Path) -> list[str]:
    lines = Path(path).read_text().splitlines()
    return [t.strip() for t in lines if t.strip()]


def seq2kmer(seq: str, k: int) -> list[str]:
    """DNABERT's ``seq2kmer`` (as a list): every overlapping k-mer, in order."""
    return [seq[i : i + k] for i in range(len(seq) + 1 - k)]


class KmerTokenizer:
    """Same interface as :class:`service.contract.tokenization.SequenceTokenizer`."""

    kind = "kmer"
    file_name = "vocab.txt"

    def __init__(self, vocab: Sequence[str], k: int, special_tokens: bool = True,
                 policy: TruncationPolicy | None = None):
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, not {k}")
        policy = policy or TruncationPolicy()
        if policy.max_tokens < (3 if special_tokens else 1):
            raise ValueError("max_tokens must leave room for [CLS], one token and [SEP]" if special_tokens
                             else "max_tokens must be at least 1")
        self.vocab = list(vocab)
        index = {t: i for i, t in enumerate(self.vocab)}
        if len(index) != len(self.vocab):
            raise ValueError("the k-mer vocabulary has duplicate tokens")
        missing = [t for t in KMER_SPECIAL_TOKENS if t not in index]
        if missing:
            raise ValueError(f"k-mer vocabulary lacks special tokens {missing}")
        self.k = k
        self.special_tokens = special_tokens
        self.policy = policy
        self.pad_id = index["[PAD]"]
        self.unk_id = index["[UNK]"]
        self.cls_id = index["[CLS]"]
        self.sep_id = index["[SEP]"]
        self.mask_id = index["[MASK]"]
        self.vocab_size = len(self.vocab)
        # table[sum(code_j * 4**(k-1-j))] = id of that k-mer (codes A=0, C=1, G=2, T=3)
        table = np.empty(4**k, dtype=np.int64)
        absent = []
        for n, kmer in enumerate(itertools.product("ACGT", repeat=k)):
            word = "".join(kmer)
            if word not in index:
                absent.append(word)
            else:
                table[n] = index[word]
        if absent:
            raise ValueError(f"the vocabulary is not a {k}-mer vocabulary: {len(absent)} of the "
                             f"{4**k} {k}-mers are missing (e.g. {absent[0]})")
        # index 4**k: a window that holds a base other than ACGT (N) -> [UNK]
        self._table = np.append(table, self.unk_id)
        self._weights = 4 ** np.arange(k - 1, -1, -1, dtype=np.int64)

    @classmethod
    def from_file(cls, path: str | Path, k: int, special_tokens: bool = True,
                  policy: TruncationPolicy | None = None) -> KmerTokenizer:
        return cls(read_vocab(path), k, special_tokens, policy)

    @classmethod
    def for_k(cls, k: int, special_tokens: bool = True, policy: TruncationPolicy | None = None) -> KmerTokenizer:
        """A tokenizer with the standard DNABERT vocabulary for ``k`` (see :func:`kmer_vocab`)."""
        return cls(kmer_vocab(k), k, special_tokens, policy)

    def save(self, path: str | Path) -> None:
        Path(path).write_text("\n".join(self.vocab) + "\n")

    def card_tokenization(self) -> dict:
        """The card's ``tokenization`` entry: kind, k, special tokens and the truncation policy."""
        return {"kind": self.kind, "k": self.k, "special_tokens": self.special_tokens,
                **self.policy.as_card_entry()}

    @property
    def max_kmers(self) -> int:
        return self.policy.max_tokens - (2 if self.special_tokens else 0)

    def _window_ids(self, sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids of every k-mer window of the concatenated sequences, with each sequence's start
        in that array and its number of k-mers (windows that cross from one sequence into the
        next are computed and never used)."""
        k = self.k
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        starts = np.zeros(len(sequences), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        counts = np.maximum(lengths - (k - 1), 0)
        codes = _CODES[np.frombuffer("".join(sequences).encode("ascii", "replace"), dtype=np.uint8)]
        n = len(codes) - k + 1
        if n <= 0:
            return np.empty(0, dtype=np.int64), starts, counts
        idx = codes[:n].copy()
        for j in range(1, k):
            idx <<= 2
            idx += codes[j : j + n]
        # a window with a base other than ACGT (code 4) -> the [UNK] slot at index 4**k
        unknown = np.zeros(len(codes) + 1, dtype=np.int64)
        np.cumsum(codes == 4, out=unknown[1:])
        idx[(unknown[k:] - unknown[:-k]) > 0] = 4**k
        return self._table[idx], starts, counts

    def encode(self, sequences: Sequence[str]) -> list[Encoded]:
        """Encode normalised sequences (see :func:`service.contract.sequence.normalize_sequence`)."""
        if not sequences:
            return []
        clipped = [self.policy.clip(s) for s in sequences]
        ids, starts, counts = self._window_ids([s for s, _ in clipped])
        limit = self.max_kmers
        kept = np.minimum(counts, limit)
        if self.policy.truncation_side == "left":
            starts = starts + (counts - kept)
        # one output array for the whole batch: [CLS] k-mers [SEP] per sequence (or the k-mers
        # alone, or one [UNK] for a sequence without k-mers), gathered in one go
        extra = 2 if self.special_tokens else 0
        out_len = kept + extra if self.special_tokens else np.maximum(kept, 1)
        ends = np.cumsum(out_len)
        offsets = ends - out_len
        pos = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(offsets, out_len)  # position in row
        src = np.repeat(starts - (1 if self.special_tokens else 0), out_len) + pos
        table = np.append(ids, self.unk_id)  # src == len(ids): the [UNK] of an empty row
        flat = table[np.clip(src, 0, len(ids))]
        if self.special_tokens:
            flat[offsets] = self.cls_id
            flat[ends - 1] = self.sep_id
        else:
            flat[offsets[kept == 0]] = self.unk_id
        values = flat.tolist()
        cut = (kept < counts).tolist()
        return [Encoded(values[a:b], c or clip)
                for a, b, c, (_, clip) in zip(offsets.tolist(), ends.tolist(), cut, clipped, strict=True)]

    def pad(self, batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        return pad_batch(batch, self.pad_id)

    def token_text(self, token_id: int) -> str:
        return self.vocab[int(token_id)] if 0 <= int(token_id) < len(self.vocab) else "[UNK]"
