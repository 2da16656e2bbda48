"""Benchmark: prepare a synthetic clinical corpus at the Clinical-BR paper's scale.

The paper trained on 2,100,546 SemClinBr notes + 73,040 BRATECA notes, about 2.4 GB. This
script writes a SemClinBr-style CSV of that size (synthetic pt-BR notes, about 1.1 KB each,
patient ids, a few planted identifiers, 1 % exact duplicates, a few cp1252 rows), then runs
``medfactory prepare semclinbr`` on it in a child process while sampling the child's memory.

It prints one row per run: size, notes, seconds, MB/s, peak RSS and the RSS at 10 %, 50 % and
100 % of the input (flat memory means the last three stay close).

    python benchmarks/corpus_scale.py --notes 2100546          # the paper's scale (~2.4 GB)
    python benchmarks/corpus_scale.py --notes 210000           # a 10 % run
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medfactory.corpus.synthetic_notes import generate_notes

POOL_SIZE = 20_000
VALID_CPF = "529.982.247-25"  # a well-known valid test CPF


def write_corpus(path: Path, notes: int, seed: int = 7) -> int:
    """Write ``notes`` rows (id, id_paciente, data, texto); return the file size in bytes."""
    rng = random.Random(seed)
    pool = list(generate_notes(POOL_SIZE, seed=seed))
    with open(path, "wb") as handle:
        handle.write(b"id,id_paciente,data,texto\n")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        previous = ""
        for number in range(notes):
            text = f"{pool[rng.randrange(POOL_SIZE)]}\nEvolução {number}: {pool[rng.randrange(POOL_SIZE)]}"
            if number % 997 == 0:
                text += f"\nContato: (11) 9{number % 10000:04d}-{number % 9000 + 1000:04d}, CPF {VALID_CPF}."
            if number % 100 == 1 and number > 1:
                text = previous  # an exact duplicate (copy-forward without a change)
            previous = text
            writer.writerow((f"n{number}", f"p{number // 7}", "2019-03-01", text))
            if number % 5000 == 4999:
                data = buffer.getvalue()
                handle.write(data.encode("cp1252") if number % 50000 == 4999 else data.encode("utf-8"))
                buffer.seek(0)
                buffer.truncate()
        handle.write(buffer.getvalue().encode("utf-8"))
    return path.stat().st_size


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def read_progress_bytes(pid: int, path: Path) -> int:
    """How far the child has read into the corpus file (from /proc/<pid>/fdinfo)."""
    proc = Path(f"/proc/{pid}/fd")
    for fd in proc.iterdir():
        try:
            if Path(fd.readlink()) == path:
                for line in (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text().splitlines():
                    if line.startswith("pos:"):
                        return int(line.split()[1])
        except OSError:
            continue
    return -1


def run(notes: int, workdir: Path, keep: bool, near_duplicates: float | None = None) -> dict:
    corpus = workdir / "semclinbr_export.csv"
    started = time.perf_counter()
    size = write_corpus(corpus, notes)
    generated = time.perf_counter() - started
    command = [sys.executable, "-m", "medfactory.cli", "prepare", "semclinbr", "--source", str(corpus), "--output-root", str(workdir)]
    if near_duplicates is not None:
        command += ["--near-duplicates", str(near_duplicates)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak, at_fraction = 0.0, {}
    while child.poll() is None:
        rss = rss_mib(child.pid) if Path(f"/proc/{child.pid}").exists() else 0.0
        peak = max(peak, rss)
        try:
            position = read_progress_bytes(child.pid, corpus)
        except OSError:
            position = -1
        for fraction in (0.1, 0.5, 0.9):
            if position >= fraction * size and fraction not in at_fraction:
                at_fraction[fraction] = rss
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    output = child.stdout.read()
    if child.returncode != 0:
        raise SystemExit(f"prepare failed (exit {child.returncode}):\n{output}")
    if not keep:
        corpus.unlink()
    return {
        "notes": notes,
        "mb": size / 1e6,
        "generate_s": generated,
        "prepare_s": elapsed,
        "mb_per_s": size / 1e6 / elapsed,
        "peak_rss_mib": peak,
        "rss_10": at_fraction.get(0.1, float("nan")),
        "rss_50": at_fraction.get(0.5, float("nan")),
        "rss_90": at_fraction.get(0.9, float("nan")),
        "summary": output.strip().splitlines(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, nargs="+", default=[210_000], help="corpus sizes in notes (2100546 = paper scale)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the corpus (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated CSV")
    parser.add_argument("--near-duplicates", type=float, default=None, help="also drop near duplicates at this Jaccard threshold (e.g. 0.85)")
    args = parser.parse_args()
    print("| notes | size (MB) | prepare (s) | MB/s | peak RSS (MiB) | RSS at 10 % / 50 % / 90 % (MiB) |")
    print("|---:|---:|---:|---:|---:|---|")
    for notes in args.notes:
        with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
            row = run(notes, Path(workdir), args.keep, args.near_duplicates)
        print(
            f"| {row['notes']:,} | {row['mb']:,.0f} | {row['prepare_s']:.1f} | {row['mb_per_s']:.1f} | {row['peak_rss_mib']:.0f} "
            f"| {row['rss_10']:.0f} / {row['rss_50']:.0f} / {row['rss_90']:.0f} |",
            flush=True,
        )
        for line in row["summary"]:
            print(f"<!-- {line} -->", file=sys.stderr)


if __name__ == "__main__":
    main()
