"""MinHash signatures of word shingles compiled with numba: datasketch's answers at about 4x the speed.

datasketch's ``MinHash.update_batch`` (affine32 scheme) hashes each shingle with the first four
bytes, read little-endian, of its SHA-1. It premixes that value with MurmurHash3's 32-bit
finalizer and keeps, for each permutation ``(a, b)``, the minimum of ``a * h + b`` modulo 2**32.
``hashlib`` costs about 450 ns a call on a 35-byte shingle, which is mostly the call itself. That
was two thirds of near-duplicate removal's time, so :func:`signatures` runs SHA-1 (FIPS 180-4)
and the permutations in one compiled loop over a batch of notes. A shingle is the text from its
first word to its last, split on every single space, exactly as ``medfactory.corpus.dedup``
makes it. tests/test_near_dedup.py checks the output against datasketch bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_MASK = 0xFFFFFFFF  # every value is an int64 below 2**32; products wrap modulo 2**64, whose low 32 bits are right
_SPACE = 32


@njit(cache=True, inline="always")
def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & 0xFFFFFFFF


@njit(cache=True)
def _sha1_hash32(data: np.ndarray, start: int, length: int, schedule: np.ndarray) -> int:
    """datasketch's ``sha1_hash32``: the first four bytes of SHA-1(data[start:start + length]), little-endian."""
    h0, h1, h2, h3, h4 = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
    total = ((length + 8) // 64 + 1) * 64
    for block in range(0, total, 64):
        # The block's 16 big-endian words: message bytes, then 0x80, zeros and the length in bits (FIPS 180-4, 5.1.1).
        for t in range(16):
            schedule[t] = 0
        for index in range(block, min(block + 64, length)):
            schedule[(index - block) >> 2] |= np.int64(data[start + index]) << (24 - 8 * (index & 3))
        if block <= length < block + 64:
            schedule[(length - block) >> 2] |= 0x80 << (24 - 8 * (length & 3))
        if block + 64 == total:
            schedule[14] = (length * 8) >> 32
            schedule[15] = (length * 8) & _MASK
        for t in range(16, 80):
            schedule[t] = _rotl(schedule[t - 3] ^ schedule[t - 8] ^ schedule[t - 14] ^ schedule[t - 16], 1)
        a, b, c, d, e = h0, h1, h2, h3, h4
        for t in range(20):
            mixed = (_rotl(a, 5) + ((b & c) | (~b & d & _MASK)) + e + 0x5A827999 + schedule[t]) & _MASK
            a, b, c, d, e = mixed, a, _rotl(b, 30), c, d
        for t in range(20, 40):
            mixed = (_rotl(a, 5) + (b ^ c ^ d) + e + 0x6ED9EBA1 + schedule[t]) & _MASK
            a, b, c, d, e = mixed, a, _rotl(b, 30), c, d
        for t in range(40, 60):
            mixed = (_rotl(a, 5) + ((b & c) | (b & d) | (c & d)) + e + 0x8F1BBCDC + schedule[t]) & _MASK
            a, b, c, d, e = mixed, a, _rotl(b, 30), c, d
        for t in range(60, 80):
            mixed = (_rotl(a, 5) + (b ^ c ^ d) + e + 0xCA62C1D6 + schedule[t]) & _MASK
            a, b, c, d, e = mixed, a, _rotl(b, 30), c, d
        h0, h1, h2, h3, h4 = (h0 + a) & _MASK, (h1 + b) & _MASK, (h2 + c) & _MASK, (h3 + d) & _MASK, (h4 + e) & _MASK
    return ((h0 & 0xFF) << 24) | ((h0 & 0xFF00) << 8) | ((h0 >> 8) & 0xFF00) | (h0 >> 24)


@njit(cache=True, inline="always")
def _fmix32(value: int) -> int:
    """MurmurHash3's 32-bit finalizer (``datasketch.minhash._fmix``)."""
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & _MASK
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & _MASK
    value ^= value >> 16
    return value


@njit(cache=True)
def _note_signature(data: np.ndarray, start: int, end: int, size: int, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """The signature of the note ``data[start:end]`` (UTF-8 bytes) into ``out``."""
    schedule = np.empty(80, dtype=np.int64)
    spaces = np.empty(end - start + 1, dtype=np.int64)
    count = 0
    for index in range(start, end):
        if data[index] == _SPACE:
            spaces[count] = index
            count += 1
    minimum = np.full(len(a), _MASK, dtype=np.int64)
    words = count + 1
    grams = 1 if words <= size else words - size + 1
    for gram in range(grams):
        first = start if gram == 0 else spaces[gram - 1] + 1
        last = end if words <= size or gram + size - 1 >= count else spaces[gram + size - 1]
        value = _fmix32(_sha1_hash32(data, first, last - first, schedule))
        for perm in range(len(a)):  # branch-free, so the compiler can vectorise it
            minimum[perm] = min(minimum[perm], (a[perm] * value + b[perm]) & _MASK)
    out[:] = minimum


@njit(cache=True)
def _signatures_serial(data: np.ndarray, bounds: np.ndarray, size: int, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for note in range(len(bounds) - 1):
        _note_signature(data, bounds[note], bounds[note + 1], size, a, b, out[note])


# One thread goes through the serial loop: no threading layer, so callers on several Python threads are safe.
@njit(cache=True, parallel=True)
def _signatures_parallel(data: np.ndarray, bounds: np.ndarray, size: int, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for note in prange(len(bounds) - 1):
        _note_signature(data, bounds[note], bounds[note + 1], size, a, b, out[note])


def signatures(encoded: list[bytes], shingle_size: int, permutations: tuple[np.ndarray, np.ndarray], threads: int = 1) -> np.ndarray:
    """``(len(encoded), num_perm)`` uint32 MinHash signatures of UTF-8 notes (already normalised), on ``threads`` threads."""
    a, b = (np.ascontiguousarray(values, dtype=np.int64) for values in permutations)
    bounds = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(note) for note in encoded], out=bounds[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.empty(0, dtype=np.uint8)
    out = np.empty((len(encoded), len(a)), dtype=np.uint32)
    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    if threads == 1 or len(encoded) < 2:
        _signatures_serial(data, bounds, int(shingle_size), a, b, out)
        return out
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        _signatures_parallel(data, bounds, int(shingle_size), a, b, out)
    finally:
        numba.set_num_threads(previous)
    return out


@njit(cache=True)
def _compare_pairs(first: np.ndarray, second: np.ndarray, bands: int, rows: int, min_equal: int, equal: np.ndarray, ok: np.ndarray) -> None:
    for pair in range(first.shape[0]):
        count = 0
        for value in range(first.shape[1]):
            if first[pair, value] == second[pair, value]:
                count += 1
        band_equal = False
        if count >= min_equal:  # the band test only where the count already passes
            for band in range(bands):
                start, same = band * rows, True
                for value in range(start, start + rows):
                    if first[pair, value] != second[pair, value]:
                        same = False
                        break
                if same:
                    band_equal = True
                    break
        equal[pair], ok[pair] = count, band_equal


def compare_pairs(first: np.ndarray, second: np.ndarray, bands: int, rows: int, min_equal: int) -> tuple[np.ndarray, np.ndarray]:
    """(equal values, near duplicate?) per row pair of two ``(pairs, num_perm)`` uint32 arrays: at least ``min_equal``
    equal values and one of the ``bands`` bands of ``rows`` values equal throughout (what the numpy test computed, without its
    ``pairs x num_perm`` boolean temporaries)."""
    equal, ok = np.empty(first.shape[0], np.int64), np.empty(first.shape[0], np.bool_)
    _compare_pairs(np.ascontiguousarray(first), np.ascontiguousarray(second), bands, rows, min_equal, equal, ok)
    return equal, ok
