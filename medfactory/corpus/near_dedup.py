"""Near-duplicate removal in bounded memory: the answers of :class:`~medfactory.corpus.dedup.NearDuplicateIndex`, with the history on disk.

:class:`NearDuplicateIndex` keeps every kept note's signature and LSH buckets in RAM (about 6 KB a
note: 14 GB at the Clinical-BR paper's 2.3 M notes). :class:`DiskNearDuplicateIndex` gives the same
answers, note for note, with memory that does not grow with the corpus:

* signatures are computed a batch at a time by :func:`batch_signatures`, bit-identical to
  datasketch's ``MinHash.update_batch`` (affine32 scheme) but compiled (numba), about 4x faster;
* each LSH band becomes a 64-bit key; the kept notes' band keys go to disk as one sorted run per
  batch, and a batch is joined against every run in fixed-size chunks (no memory map, so the
  resident memory stays flat);
* the kept notes' signatures (``4 * num_perm`` bytes each) and keys go to files; candidates'
  signatures are gathered through a map closed right after (nothing stays resident) and verified exactly as datasketch's LSH + the in-memory index do
  (a band equal value for value, and at least ``ceil(threshold * num_perm)`` equal values). A
  64-bit band-key collision therefore only adds a candidate that verification removes.

Why and the measured speed and memory: docs/corpora.md ("De-duplication", "Scale").
"""

from __future__ import annotations

import ctypes
import mmap
import os
import tempfile
from collections.abc import Iterable, Iterator
from math import ceil
from pathlib import Path
from types import TracebackType

import numpy as np
from datasketch import MinHash

from medfactory.corpus.dedup import DEFAULT_LSH_RECALL, DEFAULT_NUM_PERM, DEFAULT_SEED, DEFAULT_SHINGLE_SIZE, DEFAULT_THRESHOLD, lsh_params, normalise_for_dedup

_MIX = np.uint64(0x9E3779B97F4A7C15)
_CHUNK_ENTRIES = 1 << 20  # band keys read per chunk: 8 MB, whatever the history size
# Runs are cut into key ranges (top 8 bits): merges and joins hold one range of one run at a time.
_PARTITIONS = 256
_BOUNDARIES = np.arange(1, _PARTITIONS, dtype=np.uint64) << np.uint64(56)
_VERIFY_PAIRS = 32768  # candidate pairs compared at once: 4 MB of booleans
_KEY_WIDTH = 16  # bytes per stored key: a key_hex string
try:  # glibc only; elsewhere freed memory stays with the allocator, which changes the resident size, not the answers
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):
    _LIBC = None


def batch_signatures(
    texts: list[str],
    num_perm: int = DEFAULT_NUM_PERM,
    seed: int = DEFAULT_SEED,
    shingle_size: int = DEFAULT_SHINGLE_SIZE,
    threads: int = 1,
) -> np.ndarray:
    """MinHash signatures, ``(len(texts), num_perm)`` uint32, equal to ``NearDuplicateIndex.minhash(text).hashvalues``.

    Texts are normalised with :func:`normalise_for_dedup` first, as the in-memory index does: a
    no-op on normalised text, and skipping it (an eighth of the time) would trust every caller; a
    benchmark that passed un-normalised copies got other answers. The hashing runs compiled
    (:mod:`medfactory.corpus.minhash_kernel`) on up to ``threads`` threads, notes shared among
    them; the answers do not depend on ``threads``.
    """
    if shingle_size < 1:
        raise ValueError(f"shingle size must be >= 1, got {shingle_size}")
    from medfactory.corpus import minhash_kernel  # numba loads in about a second: only when a run de-duplicates

    permutations = MinHash(num_perm=num_perm, seed=seed).permutations
    encoded = [normalise_for_dedup(text).encode("utf-8") for text in texts]
    return minhash_kernel.signatures(encoded, shingle_size, permutations, threads)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(n, bands)`` uint64: a 64-bit mix of each band's ``rows`` values (and the band's number,
    so equal values in different bands do not meet). Equal bands give equal keys."""
    values = signatures[:, : bands * rows].reshape(len(signatures), bands, rows).astype(np.uint64)
    keys = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * _MIX, (len(signatures), bands)).copy()
    for row in range(rows):
        keys ^= values[:, :, row]
        keys *= _MIX
        keys ^= keys >> np.uint64(29)
    return keys


def _expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(which, position)``: for each ``i``, the positions ``starts[i] .. starts[i] + counts[i] - 1``."""
    total = int(counts.sum())
    which = np.repeat(np.arange(len(starts)), counts)
    firsts = np.cumsum(counts) - counts
    return which, np.repeat(starts, counts) + (np.arange(total) - np.repeat(firsts, counts))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unique_pairs(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(first, second)`` pairs (both < 2**32), sorted (a sort and a neighbour test: numpy's unique hashes first, twice the time)."""
    codes = (first.astype(np.int64) << 32) | second.astype(np.int64)
    codes.sort()
    codes = codes[np.r_[True, codes[1:] != codes[:-1]]] if len(codes) else codes
    return codes >> 32, codes & 0xFFFF_FFFF


class _Run:
    """One sorted run of (band key, kept row) on disk, and where each key range starts in it."""

    def __init__(self, keys_fd: int, rows_fd: int, offsets: np.ndarray, paths: tuple[Path, Path]) -> None:
        self.keys_fd, self.rows_fd, self.offsets, self.paths = keys_fd, rows_fd, offsets, paths

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    def read(self, first: int, end: int, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Band keys ``first:end`` (into ``out`` when given: no new memory) and, without ``out``, their rows."""
        keys = np.empty(end - first, dtype=np.uint64) if out is None else out[: end - first]
        os.preadv(self.keys_fd, [keys], first * 8)
        if out is not None:
            return keys, None
        return keys, np.frombuffer(os.pread(self.rows_fd, (end - first) * 4, first * 4), dtype=np.uint32)

    def remove(self) -> None:
        os.close(self.keys_fd)
        os.close(self.rows_fd)
        for path in self.paths:
            path.unlink()


def _return_freed_memory() -> None:
    """Hand the heap's freed pages back to the system after a batch (glibc ``malloc_trim``): a batch's
    temporary arrays differ in size from batch to batch, and without this the allocator keeps the
    largest ones' pages, so the resident size would creep up with the history rather than stay flat."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _offsets(sorted_keys: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.searchsorted(sorted_keys, _BOUNDARIES), [len(sorted_keys)])).astype(np.int64)


class DiskNearDuplicateIndex:
    """:meth:`NearDuplicateIndex.add_if_new` note after note, in memory that does not grow: the history is on disk.

    ``add_batch(keys, texts)`` answers as if each note were offered to the in-memory index in
    order: the key of the best earlier kept near duplicate (most equal signature values, ties in
    insertion order), or None and the note is kept. Keys are ASCII strings of at most 16 bytes
    (``key_hex``); each must be new (the caller's exact de-duplication sees to that).
    The files live in a private folder under ``directory`` and are removed by :meth:`close`
    (use the index as a context manager).
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        num_perm: int = DEFAULT_NUM_PERM,
        shingle_size: int = DEFAULT_SHINGLE_SIZE,
        seed: int = DEFAULT_SEED,
        recall: float = DEFAULT_LSH_RECALL,
        workers: int = 1,
    ) -> None:
        if shingle_size < 1:
            raise ValueError(f"shingle size must be >= 1, got {shingle_size}")
        self.threshold, self.num_perm, self.shingle_size, self.seed = float(threshold), int(num_perm), int(shingle_size), int(seed)
        self.bands, self.rows = lsh_params(self.threshold, self.num_perm, recall)
        self._min_equal = ceil(self.threshold * self.num_perm - 1e-9)  # as NearDuplicateIndex: compare counts
        self.folder = Path(tempfile.mkdtemp(prefix=".near-duplicates-", dir=directory))
        self._fds = {name: self._open(name) for name in ("signatures.u32", "keys.bin")}
        self._runs: list[_Run] = []  # sorted runs of (band key, row), sizes about halving: O(log n) runs
        self._run_names = 0
        self._kept = 0
        self._chunk = np.empty(_CHUNK_ENTRIES, dtype=np.uint64)  # reused by every join: flat memory
        # Hashing the shingles is most of the time: workers > 1 hash a batch's notes on that many
        # threads (numba's; no process start, no copies); the answers are the same.
        self.workers = int(workers)

    def __len__(self) -> int:
        return self._kept

    def __enter__(self) -> DiskNearDuplicateIndex:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close and remove the index's files (idempotent)."""
        for fd in self._fds.values():
            os.close(fd)
        for run in self._runs:
            run.remove()
        self._fds, self._runs = {}, []
        if self.folder.exists():
            for path in self.folder.iterdir():
                path.unlink()
            self.folder.rmdir()

    def add_batch(self, keys: list[str], normalised_texts: list[str]) -> list[str | None]:
        """For each note in order: the key of its best earlier kept near duplicate, or None (the note is then kept)."""
        if len(keys) != len(normalised_texts):
            raise ValueError(f"{len(keys)} keys for {len(normalised_texts)} texts")
        encoded = [key.encode("ascii") for key in keys]
        if any(not 0 < len(key) <= _KEY_WIDTH or key.endswith(b"\0") for key in encoded):
            raise ValueError(f"near-duplicate index keys are 1 to {_KEY_WIDTH} ASCII characters (key_hex)")
        if not keys:
            return []
        signatures = self._signatures(normalised_texts)
        bands = band_keys(signatures, self.bands, self.rows)
        order = np.argsort(bands.ravel(), kind="stable")  # stable: a key's notes stay in batch order
        sorted_keys, owners = bands.ravel()[order], (order // self.bands).astype(np.int64)
        base = self._kept
        notes, candidates, equal = self._history_matches(signatures, sorted_keys, owners)
        later, earlier, batch_equal = self._batch_pairs(signatures, sorted_keys, owners)
        notes, candidates, equal = np.concatenate((notes, later)), np.concatenate((candidates, earlier + base)), np.concatenate((equal, batch_equal))
        best = self._decide(len(keys), notes, candidates, equal, base)
        kept = np.flatnonzero(best < 0)
        self._append(signatures[kept], bands[kept], [encoded[i] for i in kept])
        history_keys = self._read_keys(best[(best >= 0) & (best < base)])
        _return_freed_memory()
        return [None if row < 0 else keys[row - base] if row >= base else history_keys[int(row)] for row in best.tolist()]

    def _signatures(self, texts: list[str]) -> np.ndarray:
        return batch_signatures(texts, self.num_perm, self.seed, self.shingle_size, threads=self.workers)

    def _open(self, name: str) -> int:
        return os.open(self.folder / name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)

    def _history_matches(self, signatures: np.ndarray, sorted_keys: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Verified ``(note, kept row, equal values)`` of the batch's notes against every run on disk."""
        found_notes, found_rows = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        batch_offsets = _offsets(sorted_keys)
        for run in self._runs:
            for part in range(_PARTITIONS):
                wanted = sorted_keys[batch_offsets[part] : batch_offsets[part + 1]]
                if not len(wanted):
                    continue
                for first in range(int(run.offsets[part]), int(run.offsets[part + 1]), _CHUNK_ENTRIES):
                    end = min(first + _CHUNK_ENTRIES, int(run.offsets[part + 1]))
                    chunk, _ = run.read(first, end, self._chunk)
                    low, high = np.searchsorted(chunk, wanted, "left"), np.searchsorted(chunk, wanted, "right")
                    hit = np.flatnonzero(high > low)
                    if not len(hit):
                        continue
                    which, positions = _expand(low[hit], (high - low)[hit])
                    span = int(positions.min()), int(positions.max()) + 1
                    rows = np.frombuffer(os.pread(run.rows_fd, (span[1] - span[0]) * 4, (first + span[0]) * 4), dtype=np.uint32)
                    found_notes.append(owners[batch_offsets[part] + hit[which]])
                    found_rows.append(rows[positions - span[0]].astype(np.int64))
        rows, notes = _unique_pairs(np.concatenate(found_rows), np.concatenate(found_notes))  # by row: nearby signatures read together
        equal, ok = np.empty(len(rows), np.int64), np.empty(len(rows), bool)
        for start in range(0, len(rows), _VERIFY_PAIRS):
            part = slice(start, start + _VERIFY_PAIRS)
            equal[part], ok[part] = self._compare(self._read_signatures(rows[part]), signatures[notes[part]])
        return notes[ok], rows[ok], equal[ok]

    def _read_signatures(self, rows: np.ndarray) -> np.ndarray:
        """The stored signatures of ``rows`` (a copy), gathered through a map closed before returning.

        One gather instead of a ``pread`` per row (a system call each was a sixth of the time at 1.2 M notes);
        unmapping right away gives the touched pages back, so the resident size does not grow with the history.
        """
        with mmap.mmap(self._fds["signatures.u32"], self._kept * 4 * self.num_perm, access=mmap.ACCESS_READ) as mapped:
            table = np.frombuffer(mapped, dtype=np.uint32).reshape(self._kept, self.num_perm)
            gathered = table[rows]
            del table  # the map cannot close while a view of it is alive
        return gathered

    def _read_keys(self, rows: np.ndarray) -> dict[int, str]:
        fd = self._fds["keys.bin"]
        return {row: os.pread(fd, _KEY_WIDTH, row * _KEY_WIDTH).rstrip(b"\0").decode("ascii") for row in set(rows.tolist())}

    def _compare(self, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(equal values, a near duplicate?) per pair: datasketch's LSH proposes a pair when a band is
        equal value for value; the index accepts it with at least ceil(threshold * num_perm) equal values."""
        from medfactory.corpus import minhash_kernel  # loaded by the signatures already

        return minhash_kernel.compare_pairs(first, second, self.bands, self.rows, self._min_equal)

    def _batch_pairs(self, signatures: np.ndarray, sorted_keys: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Verified ``(later note, earlier note, equal values)`` of the batch that share a band key."""
        positions = np.arange(len(sorted_keys))
        group_start = np.maximum.accumulate(np.where(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]], positions, 0))
        counts = positions - group_start
        which, earlier_positions = _expand(group_start[counts > 0], counts[counts > 0])
        later, earlier = owners[positions[counts > 0][which]], owners[earlier_positions]
        distinct = later != earlier  # a 64-bit collision between two bands of one note
        later, earlier = _unique_pairs(later[distinct], earlier[distinct])
        equal, ok = np.empty(len(later), np.int64), np.empty(len(later), bool)
        for start in range(0, len(later), _VERIFY_PAIRS):
            part = slice(start, start + _VERIFY_PAIRS)
            equal[part], ok[part] = self._compare(signatures[later[part]], signatures[earlier[part]])
        return later[ok], earlier[ok], equal[ok]

    @staticmethod
    def _decide(count: int, notes: np.ndarray, candidates: np.ndarray, equal: np.ndarray, base: int) -> np.ndarray:
        """Each note's best kept candidate (-1: none, the note is kept), deciding the notes in order.

        A candidate ``>= base`` is the batch's note ``candidate - base``: it counts only if it was
        kept itself. Sorted by (note, most equal values, candidate), as the in-memory index ranks."""
        order = np.lexsort((candidates, -equal, notes))
        best = [-1] * count
        for note, candidate in zip(notes[order].tolist(), candidates[order].tolist()):
            if best[note] < 0 and (candidate < base or best[candidate - base] < 0):
                best[note] = candidate
        return np.array(best, dtype=np.int64)

    def _append(self, signatures: np.ndarray, bands: np.ndarray, keys: list[bytes]) -> None:
        """Store the kept notes' signatures, keys and band keys (a new sorted run, merged down)."""
        rows = np.arange(self._kept, self._kept + len(keys), dtype=np.uint32)
        _write_all(self._fds["signatures.u32"], np.ascontiguousarray(signatures, dtype=np.uint32).tobytes())
        _write_all(self._fds["keys.bin"], b"".join(key.ljust(_KEY_WIDTH, b"\0") for key in keys))
        self._kept += len(keys)
        if not len(keys):
            return
        flat = bands.ravel()
        order = np.argsort(flat, kind="stable")
        self._runs.append(self._write_run([(flat[order], np.repeat(rows, self.bands)[order])]))
        while len(self._runs) > 1 and self._runs[-2].size < 2 * self._runs[-1].size:
            newer, older = self._runs.pop(), self._runs.pop()
            self._runs.append(self._merge(older, newer))

    def _write_run(self, parts: Iterable[tuple[np.ndarray, np.ndarray]]) -> _Run:
        """A run from ``(keys, rows)`` parts, each sorted and all in key-range order."""
        self._run_names += 1
        paths = (self.folder / f"run-{self._run_names}.keys", self.folder / f"run-{self._run_names}.rows")
        keys_fd, rows_fd = self._open(paths[0].name), self._open(paths[1].name)
        counts = np.zeros(_PARTITIONS, dtype=np.int64)
        for keys, rows in parts:
            _write_all(keys_fd, keys.astype(np.uint64).tobytes())
            _write_all(rows_fd, rows.astype(np.uint32).tobytes())
            counts += np.diff(_offsets(keys))
        return _Run(keys_fd, rows_fd, np.concatenate(([0], np.cumsum(counts))), paths)

    def _merge(self, older: _Run, newer: _Run) -> _Run:
        """Merge two runs one key range at a time (memory: one range of both, not the runs)."""

        def ranges() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for part in range(_PARTITIONS):
                keys_a, rows_a = older.read(int(older.offsets[part]), int(older.offsets[part + 1]))
                keys_b, rows_b = newer.read(int(newer.offsets[part]), int(newer.offsets[part + 1]))
                keys, rows = np.concatenate((keys_a, keys_b)), np.concatenate((rows_a, rows_b))
                order = np.argsort(keys, kind="stable")
                yield keys[order], rows[order]

        merged = self._write_run(ranges())
        older.remove()
        newer.remove()
        return merged
