"""Benchmark: de-identification speed, MB/s per core and peak memory, rules only and rules + CRF.

The text is MEDDOCAN's clinical cases (train + dev, ../shared/data/meddocan) repeated until it is
``--megabytes`` large, or synthetic pt-BR notes (medfactory.corpus.synthetic_notes) with ``--synthetic``
or where MEDDOCAN is absent. Documents are spread over ``--workers`` processes
(multiprocessing.Pool, one Deidentifier per worker, built once). For each layer set it prints the
wall time, MB/s in total and per worker (per core), findings per MB, and the peak RSS of the
workers and of this process (resource.getrusage). Numbers only, never a note's text.

    python benchmarks/deid_speed.py                                # 20 MB of MEDDOCAN, every core
    python benchmarks/deid_speed.py --megabytes 5 --workers 1      # one core
    python benchmarks/deid_speed.py --synthetic --language pt      # synthetic pt-BR notes
    python benchmarks/deid_speed.py --model path/to/model.crfsuite # a model other than the embedded one
    python benchmarks/deid_speed.py --layers rules+crfsuite,rules+crf  # crfsuite's own tagging against crf_viterbi's

Target (issue 15): >= 2 MB/s per core with the tagger on; the paper's 2.4 GB within an hour on 12 vCPUs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from medfactory.corpus.deid import rules
from medfactory.corpus.deid.deidentifier import Deidentifier, default_model
from medfactory.corpus.deid.parallel import DEFAULT_BATCH_NOTES as BATCH_NOTES

MEDDOCAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meddocan"
_WORKER: dict[str, Any] = {}


def corpus(megabytes: float, synthetic: bool) -> tuple[list[str], str]:
    """Documents adding up to about ``megabytes`` MB of UTF-8, and where they came from."""
    folders = [MEDDOCAN / "train", MEDDOCAN / "dev"]
    if not synthetic and all(folder.is_dir() for folder in folders):
        base = [path.read_text(encoding="utf-8") for folder in folders for path in sorted(folder.glob("*.txt"))]
        source = "MEDDOCAN train + dev, repeated"
    else:
        from medfactory.corpus.synthetic_notes import generate_notes

        base = list(generate_notes(2000, seed=7))
        source = "synthetic pt-BR notes (medfactory.corpus.synthetic_notes), repeated"
    target = int(megabytes * 1e6)
    documents: list[str] = []
    size = 0
    while size < target:
        for text in base:
            documents.append(text)
            size += len(text.encode("utf-8"))
            if size >= target:
                break
    return documents, source


def _init(layers: str, language: str, model: str | None) -> None:
    if layers == "rules":
        _WORKER["find_many"] = lambda texts: [rules.find(text, language) for text in texts]
    else:
        deidentifier = Deidentifier(language, model=Path(model) if model else None, use_crf=layers != "rules+gazetteer")
        if layers == "rules+crfsuite":  # the same model tagged by pycrfsuite.Tagger.tag itself: the speed before crf_viterbi
            deidentifier._tagger._fast = None
        if layers == "rules+crf+surrogates":
            _WORKER["find_many"] = lambda texts: [spans for _, spans in deidentifier.apply_many(texts, [str(len(text) % 97) for text in texts], seed="bench")]
        else:
            _WORKER["find_many"] = deidentifier.find_many
        _WORKER["layers"] = deidentifier.layers


def _work(texts: list[str]) -> int:
    return sum(len(spans) for spans in _WORKER["find_many"](texts))


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def run(documents: list[str], layers: str, language: str, model: str | None, workers: int) -> dict[str, float]:
    """Time one layer set over the documents with ``workers`` processes."""
    size = sum(len(text.encode("utf-8")) for text in documents)
    with multiprocessing.Pool(workers, initializer=_init, initargs=(layers, language, model)) as pool:
        pool.map(_work, [documents[:1]] * workers, chunksize=1)  # warm up: imports, regex compilation, model load
        start = time.perf_counter()
        # Batches of 64 notes, as prepare and deid apply hand them to their workers (parallel.BatchedDeidentifier).
        batches = [documents[index : index + BATCH_NOTES] for index in range(0, len(documents), BATCH_NOTES)]
        findings = sum(pool.imap_unordered(_work, batches, chunksize=1))
        seconds = time.perf_counter() - start
        peaks = pool.map(_worker_peak, range(workers), chunksize=1)
    return {"megabytes": size / 1e6, "seconds": seconds, "mb_per_s": size / 1e6 / seconds, "per_core": size / 1e6 / seconds / workers,
            "findings_per_mb": findings / (size / 1e6), "worker_peak_mib": max(peaks) / 1024}  # fmt: skip


def _worker_peak(_: int) -> int:
    time.sleep(0.05)  # spread the calls over the workers
    return _peak_rss()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=20.0, help="size of the text to de-identify")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: every core)")
    parser.add_argument("--language", choices=("es", "pt"), default="es")
    parser.add_argument("--model", default=None, help="CRF model (default: the embedded model of the language)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic pt-BR notes instead of MEDDOCAN")
    layer_help = "comma-separated of: rules, rules+gazetteer, rules+crfsuite, rules+crf, rules+crf+surrogates"
    parser.add_argument("--layers", default="rules,rules+crf,rules+crf+surrogates", help=layer_help)
    args = parser.parse_args(argv)
    documents, source = corpus(args.megabytes, args.synthetic)
    has_model = bool(args.model) or default_model(args.language) is not None
    print(f"text: {source}; {len(documents):,} documents; workers: {args.workers} (cpu_count {os.cpu_count()}); language {args.language}")
    print(f"{'layers':<22} {'MB':>7} {'seconds':>8} {'MB/s':>7} {'MB/s/core':>10} {'findings/MB':>12} {'worker peak MiB':>16}")
    for layers in args.layers.split(","):
        if "crf" in layers and not has_model:
            print(f"{layers:<22} skipped: no CRF model (pass --model, or build the embedded one with `medfactory deid train`)")
            continue
        result = run(documents, layers, args.language, args.model, args.workers)
        print(f"{layers:<22} {result['megabytes']:>7.1f} {result['seconds']:>8.1f} {result['mb_per_s']:>7.2f} {result['per_core']:>10.2f} "
              f"{result['findings_per_mb']:>12,.0f} {result['worker_peak_mib']:>16.0f}")  # fmt: skip
    print(f"this process peak RSS: {_peak_rss() / 1024:.0f} MiB (it holds the text)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
