"""Benchmark: near-duplicate removal at the Clinical-BR paper's scale (2.3 M notes, about 2.4 GB).

Writes synthetic pt-BR notes like benchmarks/corpus_scale.py (two pool notes per note, about
1.1 KB), 15 % of them copy-forward notes (a recent note with one to three words changed), one
normalised note per line. Then, each in a child process whose VmRSS is sampled from /proc:

* ``disk``: :class:`DiskNearDuplicateIndex` over every note, in batches as ``prepare`` does;
* ``memory``: today's :class:`NearDuplicateIndex` (``add_if_new`` note by note) on the first
  ``--sample`` notes;

and checks that both find the same pairs on the sample (the disk run's first ``--sample``
answers depend only on those notes). One row per run: MB, seconds, MB/s, peak RSS, RSS at
10 / 50 / 90 % of the input.

    python benchmarks/near_dedup_scale.py --notes 230000 2300000 --workdir /tmp
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_scale import POOL_SIZE, read_progress_bytes, rss_mib

from medfactory.corpus.dedup import NearDuplicateIndex, normalise_for_dedup
from medfactory.corpus.near_dedup import DiskNearDuplicateIndex
from medfactory.corpus.pipeline import NEAR_DUPLICATE_BATCH_NOTES
from medfactory.corpus.synthetic_notes import generate_notes

EDIT_WORDS = ["afebril", "estável", "refere", "melhora", "dor", "PA 120x80", "mantida", "conduta"]


def write_notes(path: Path, notes: int, seed: int = 7) -> int:
    """Write ``notes`` normalised notes, one a line, 15 % copy-forward; return the size in bytes."""
    rng = random.Random(seed)
    pool = list(generate_notes(POOL_SIZE, seed=seed))
    recent: list[str] = []
    with open(path, "w", encoding="utf-8") as handle:
        lines = []
        for number in range(notes):
            if recent and rng.random() < 0.15:
                words = rng.choice(recent).split(" ")
                for _ in range(rng.randint(1, 3)):
                    words[rng.randrange(len(words))] = rng.choice(EDIT_WORDS)
                text = " ".join(words)
            else:
                text = normalise_for_dedup(f"{pool[rng.randrange(POOL_SIZE)]}\nEvolução {number}: {pool[rng.randrange(POOL_SIZE)]}")
            recent.append(text)
            if len(recent) > 2000:
                recent = recent[-1000:]
            lines.append(text)
            if len(lines) == 10_000:
                handle.write("\n".join(lines) + "\n")
                lines = []
        if lines:
            handle.write("\n".join(lines) + "\n")
    return path.stat().st_size


def child(mode: str, corpus: Path, answers_path: Path, limit: int, workers: int) -> None:
    """Run one index over the corpus; write each note's answer (-1: kept, else the earlier note's number)."""
    with open(corpus, encoding="utf-8") as notes, open(answers_path, "wb") as answers:
        if mode == "memory":
            index = NearDuplicateIndex()
            for number, line in enumerate(notes):
                if number >= limit:
                    break
                found = index.add_if_new(f"{number:016x}", line.rstrip("\n"))
                answers.write(np.int64(-1 if found is None else int(found, 16)).tobytes())
            return
        with DiskNearDuplicateIndex(corpus.parent, workers=workers) as index:
            number, batch = 0, []
            for line in notes:
                batch.append(line.rstrip("\n"))
                if len(batch) == NEAR_DUPLICATE_BATCH_NOTES:
                    number = _decide(index, batch, number, answers)
                    batch = []
            _decide(index, batch, number, answers)


def _decide(index: DiskNearDuplicateIndex, batch: list[str], first: int, answers: object) -> int:
    found = index.add_batch([f"{number:016x}" for number in range(first, first + len(batch))], batch)
    answers.write(np.array([-1 if key is None else int(key, 16) for key in found], dtype=np.int64).tobytes())
    return first + len(batch)


def tree_rss_mib(pid: int) -> float:
    """VmRSS of a process and its children (threads share the process's)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return rss_mib(pid) + sum(tree_rss_mib(int(child)) for child in children)


def measure(mode: str, corpus: Path, size: int, limit: int, workers: int) -> dict:
    """Run a child, sampling its RSS (with its workers') and where it is in the corpus every 0.2 s."""
    answers = corpus.with_suffix(f".{mode}.answers")
    command = [sys.executable, __file__, "--child", mode, "--corpus", str(corpus), "--answers", str(answers), "--limit", str(limit), "--workers", str(workers)]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    peak, at_fraction = 0.0, {}
    while process.poll() is None:
        try:
            rss, position = tree_rss_mib(process.pid), read_progress_bytes(process.pid, corpus)
        except OSError:
            rss, position = 0.0, -1
        peak = max(peak, rss)
        for fraction in (0.1, 0.5, 0.9):
            if position >= fraction * size and fraction not in at_fraction:
                at_fraction[fraction] = rss
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{mode} child failed (exit {process.returncode})")
    found = np.fromfile(answers, dtype=np.int64)
    answers.unlink()
    at = {f"rss_{int(fraction * 100)}": at_fraction.get(fraction, float("nan")) for fraction in (0.1, 0.5, 0.9)}
    return {"mode": mode, "notes": len(found), "seconds": elapsed, "peak": peak, "found": found, **at}


def prefix_bytes(corpus: Path, notes: int) -> int:
    with open(corpus, "rb") as handle:
        return sum(len(line) for _, line in zip(range(notes), handle))


def row(result: dict, megabytes: float) -> str:
    return (
        f"| {result['mode']} | {result['notes']:,} | {megabytes:,.0f} | {result['seconds']:.1f} | {megabytes / result['seconds']:.1f} "
        f"| {result['peak']:.0f} | {result['rss_10']:.0f} / {result['rss_50']:.0f} / {result['rss_90']:.0f} | {int((result['found'] >= 0).sum()):,} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, nargs="+", default=[230_000], help="corpus sizes in notes (2300000 = paper scale)")
    parser.add_argument("--sample", type=int, default=50_000, help="notes given to today's in-memory index (and compared)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the notes and the index (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=1, help="threads hashing the disk index's notes (numba); the answers do not depend on it")
    parser.add_argument("--child", choices=("disk", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--answers", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.corpus, args.answers, args.limit, args.workers)
        return
    print("| index | notes | MB | seconds | MB/s | peak RSS (MiB) | RSS at 10 / 50 / 90 % (MiB) | near duplicates found |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for notes in args.notes:
        with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
            corpus = Path(workdir) / "notes.txt"
            size = write_notes(corpus, notes)
            disk = measure("disk", corpus, size, notes, args.workers)
            print(row(disk, size / 1e6), flush=True)
            sample = min(args.sample, notes)
            memory = measure("memory", corpus, prefix_bytes(corpus, sample), sample, 1)
            print(row(memory, prefix_bytes(corpus, sample) / 1e6), flush=True)
            same = np.array_equal(disk["found"][:sample], memory["found"])
            print(f"<!-- first {sample:,} notes: {int((memory['found'] >= 0).sum()):,} near-duplicate pairs in memory, identical answers on disk: {same}; "
                  f"in-memory index {memory['peak'] * 1024 / sample:.1f} KiB peak RSS per note -->", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
