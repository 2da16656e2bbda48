"""Duplicate clinical notes: exact (an 8-byte key per note) and near ("copy-forward" notes, MinHash + LSH).

The one definition of "duplicate" is here, used by ``prepare`` (:mod:`medfactory.corpus.pipeline`)
and ``contamination`` alike: two texts are exact duplicates when their :func:`duplicate_key` (a
64-bit blake2b of :func:`normalise_for_dedup`: case-folded, whitespace collapsed, invisible
characters dropped) is equal; near duplicates when :class:`NearDuplicateIndex` (MinHash over word
5-gram shingles of that same normalised text, in a :class:`datasketch.MinHashLSH`) says so.
Exact duplicates are kept out by :class:`SeenKeys`. Why case-folded, determinism, the LSH banding
and the memory per note are in docs/corpora.md ("De-duplication").
"""

from __future__ import annotations

import hashlib
import unicodedata
from math import ceil

import numpy as np
from datasketch import MinHash, MinHashLSH

from medfactory.corpus.text import remove_invisible


class SeenKeys:
    """Exact-duplicate memory at 8 bytes a note: a sorted int64 array plus a small set of recent keys.

    A plain set of ints costs about 70 bytes a note (150 MB at the paper's 2.1 M notes); this
    keeps memory nearly flat as the corpus grows (17 MB at 2.1 M notes).
    """

    def __init__(self, buffer_size: int = 65536) -> None:
        self._sorted = np.empty(0, dtype=np.int64)
        self._recent: set[int] = set()
        self._buffer_size = buffer_size

    def add_if_new(self, key: int) -> bool:
        """Record ``key``; False if it was seen before."""
        if key in self._recent:
            return False
        position = self._sorted.searchsorted(key)  # keys are signed 64-bit: numpy's fast path
        if position < len(self._sorted) and int(self._sorted[position]) == key:
            return False
        self._recent.add(key)
        if len(self._recent) >= self._buffer_size:
            merged = np.concatenate((self._sorted, np.fromiter(self._recent, dtype=np.int64)))
            merged.sort()
            self._sorted, self._recent = merged, set()
        return True

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)


DEFAULT_THRESHOLD = 0.85
DEFAULT_NUM_PERM = 128
DEFAULT_SHINGLE_SIZE = 5
DEFAULT_SEED = 1
# Probability that the LSH banding proposes a pair whose Jaccard equals the threshold.
DEFAULT_LSH_RECALL = 0.99
NORMALISATION = (
    "Unicode NFC, control and zero-width characters dropped, case-folded, whitespace runs collapsed to one space, trimmed"
)
DUPLICATE_KEY = "blake2b (8 bytes) of the normalised text"


def normalise_for_dedup(text: str) -> str:
    """Case-folded, whitespace-collapsed text (NFC, no invisible characters): what duplicates compare.

    ``"Paciente  EVOLUI\\n bem"`` and ``"paciente evolui bem"`` normalise to the same string;
    composed and decomposed accents (``"é"`` / ``"e" + U+0301``) do too, and so do texts that
    differ only by the control and zero-width characters ``prepare`` drops. Punctuation is kept.
    """
    # NFC first makes canonically equivalent inputs identical before case folding; folding can
    # leave a few characters decomposed, hence the second (usually no-op) check.
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    spaced = text.replace("\n", " ")
    # Hot path (prepare keys every note): printable text holds no character remove_invisible
    # drops and no whitespace but " ", so collapsing is a replace; the rest takes the long way.
    printable = spaced.isprintable()
    folded = (spaced if printable else remove_invisible(text)).casefold()
    if not folded.isascii() and not unicodedata.is_normalized("NFC", folded):
        folded = unicodedata.normalize("NFC", folded)
    if not printable or "  " in folded:
        return " ".join(folded.split())
    return folded.strip(" ")


def key_of_normalised(normalised: str) -> int:
    """:func:`duplicate_key` of a text already passed through :func:`normalise_for_dedup`."""
    digest = hashlib.blake2b(normalised.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)  # signed: SeenKeys' int64 array


def duplicate_key(text: str) -> int:
    """The exact-duplicate key of ``text`` (a signed 64-bit int): equal keys are duplicates, in
    ``prepare`` and in ``contamination`` alike. 64 bits: a chance collision among 2.1 M notes
    has probability about 1e-7."""
    return key_of_normalised(normalise_for_dedup(text))


def key_hex(key: int) -> str:
    """A duplicate key as 16 hex digits (for index keys and sampling; never the text)."""
    return f"{key & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def _shingles_of_normalised(normalised: str, size: int) -> set[bytes]:
    words = normalised.encode("utf-8").split(b" ")
    if len(words) <= size:
        return {b" ".join(words)}
    return {b" ".join(words[start : start + size]) for start in range(len(words) - size + 1)}


def shingles(text: str, size: int = DEFAULT_SHINGLE_SIZE) -> set[bytes]:
    """Word ``size``-gram shingles (UTF-8) of the normalised text.

    A text of ``size`` words or fewer (the empty text included) gives one shingle: the whole
    normalised text.
    """
    if size < 1:
        raise ValueError(f"shingle size must be >= 1, got {size}")
    return _shingles_of_normalised(normalise_for_dedup(text), size)


def _candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    return 1.0 - (1.0 - jaccard**rows) ** bands


def lsh_params(threshold: float, num_perm: int, recall: float = DEFAULT_LSH_RECALL) -> tuple[int, int]:
    """``(bands, rows)``: the fewest candidates that still propose a pair at ``threshold`` with
    probability >= ``recall`` (the longest bands that do; datasketch needs at least 2 bands)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    for rows in range(num_perm // 2, 0, -1):
        bands = num_perm // rows
        if _candidate_probability(threshold, bands, rows) >= recall:
            return bands, rows
    return num_perm, 1


class NearDuplicateIndex:
    """An LSH index of note signatures that answers "which indexed notes is this one a near copy of?".

    ``query`` returns only keys whose *estimated* Jaccard similarity (fraction of equal MinHash
    values) with the query is >= ``threshold``, best first; the LSH buckets only propose
    candidates. Keys are strings chosen by the caller; the text itself is never stored. See the
    module docstring for the memory cost per note (about 6 KB with the defaults).
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        num_perm: int = DEFAULT_NUM_PERM,
        shingle_size: int = DEFAULT_SHINGLE_SIZE,
        seed: int = DEFAULT_SEED,
        recall: float = DEFAULT_LSH_RECALL,
    ) -> None:
        if shingle_size < 1:
            raise ValueError(f"shingle size must be >= 1, got {shingle_size}")
        self.threshold = float(threshold)
        self.num_perm = int(num_perm)
        self.shingle_size = int(shingle_size)
        self.seed = int(seed)
        self.bands, self.rows = lsh_params(self.threshold, self.num_perm, recall)
        # Estimated Jaccard = equal values / num_perm; compare counts, not floats.
        self._min_equal = ceil(self.threshold * self.num_perm - 1e-9)
        self._lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, params=(self.bands, self.rows))
        # Built once: every signature copies its permutations (no RandomState per note).
        self._empty = MinHash(num_perm=self.num_perm, seed=self.seed)
        self._keys: list[str] = []
        self._rows: dict[str, int] = {}
        self._signatures = np.empty((1024, self.num_perm), dtype=self._empty.hashvalues.dtype)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def settings(self) -> dict[str, object]:
        """The parameters that decide the answers (for reports)."""
        return {
            "threshold": self.threshold,
            "num_perm": self.num_perm,
            "shingle_size": self.shingle_size,
            "seed": self.seed,
            "lsh_bands": self.bands,
            "lsh_rows": self.rows,
            "minhash_scheme": self._empty.scheme,
            "normalisation": NORMALISATION,
        }

    def minhash(self, text: str) -> MinHash:
        """The MinHash signature of ``text``'s shingles."""
        signature = self._empty.copy()
        signature.update_batch(_shingles_of_normalised(normalise_for_dedup(text), self.shingle_size))
        return signature

    def jaccard(self, first: MinHash, second: MinHash) -> float:
        """Estimated Jaccard similarity of two signatures made by this index."""
        return float(np.count_nonzero(first.hashvalues == second.hashvalues)) / self.num_perm

    def add(self, key: str, text: str) -> None:
        """Index ``text`` under ``key``; a key already in the index raises ValueError."""
        self.add_minhash(key, self.minhash(text))

    def add_minhash(self, key: str, signature: MinHash) -> None:
        """Index a signature made by :meth:`minhash` (saves hashing a text twice)."""
        if key in self._rows:
            raise ValueError(f"key {key!r} is already in the near-duplicate index")
        row = len(self._keys)
        if row == len(self._signatures):
            grown = np.empty((2 * row, self.num_perm), dtype=self._signatures.dtype)
            grown[:row] = self._signatures
            self._signatures = grown
        self._signatures[row] = signature.hashvalues
        self._lsh.insert(row, signature, check_duplication=False)
        self._keys.append(key)
        self._rows[key] = row

    def query(self, text: str) -> list[str]:
        """Keys of indexed texts with estimated Jaccard >= threshold, most similar first."""
        return [key for key, _ in self.query_minhash(self.minhash(text))]

    def query_minhash(self, signature: MinHash) -> list[tuple[str, float]]:
        """``(key, estimated Jaccard)`` of the indexed near duplicates of a signature, best first
        (ties in insertion order)."""
        candidates = self._lsh.query(signature)
        if not candidates:
            return []
        rows = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        equal = np.count_nonzero(self._signatures[rows] == signature.hashvalues, axis=1)
        keep = equal >= self._min_equal
        if not keep.any():
            return []
        rows, equal = rows[keep], equal[keep]
        order = np.lexsort((rows, -equal))
        return [(self._keys[rows[i]], float(equal[i]) / self.num_perm) for i in order]

    def add_if_new(self, key: str, text: str) -> str | None:
        """Return the key of an indexed near duplicate of ``text`` (and add nothing), or add
        ``text`` under ``key`` and return None. A key already in the index raises ValueError."""
        if key in self._rows:
            raise ValueError(f"key {key!r} is already in the near-duplicate index")
        signature = self.minhash(text)
        matches = self.query_minhash(signature)
        if matches:
            return matches[0][0]
        self.add_minhash(key, signature)
        return None
