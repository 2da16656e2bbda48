"""Benchmark: the CRF tagger on MEDDOCAN, trained on train, measured on dev (strict span P/R/F1).

Prints overall and per-category precision, recall and F1 of the CRF alone and, when the
Deidentifier (rules + CRF) is installed, of the combination, plus training and tagging times.
Counts and scores only, never a span's text.

    python benchmarks/deid_crf_meddocan.py                                  # full train -> dev
    python benchmarks/deid_crf_meddocan.py --train-docs 200 --dev-docs 100  # a quick run
    python benchmarks/deid_crf_meddocan.py --c1 0.05 --c2 0.01 --max-iterations 150 --model /tmp/m.crfsuite
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from medfactory.corpus.deid.crf import DEFAULT_C1, DEFAULT_C2, DEFAULT_MAX_ITERATIONS, CrfTagger
from medfactory.corpus.deid.spans import PhiSpan

MEDDOCAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meddocan"


def read_gold(folder: Path, limit: int | None = None) -> list[tuple[str, list[PhiSpan]]]:
    """(text, spans) per document of a BRAT folder, through medfactory's BRAT reader when it is installed."""
    try:
        from medfactory.corpus.deid.brat import read_brat_folder
    except ImportError:
        read_brat_folder = None
    if read_brat_folder is not None:
        documents = [(document.text, list(document.spans)) for document in read_brat_folder(folder)]
        return documents[:limit] if limit else documents
    documents = []
    for text_path in sorted(folder.glob("*.txt"))[:limit]:
        text = text_path.read_text(encoding="utf-8")
        spans = []
        for line in text_path.with_suffix(".ann").read_text(encoding="utf-8").splitlines():
            if line.startswith("T"):
                category, start, end = line.split("\t")[1].split(" ")[:3]
                spans.append(PhiSpan(int(start), int(end), category, "gold"))
        documents.append((text, spans))
    return documents


def strict_scores(gold: Iterable[list[PhiSpan]], found: Iterable[list[PhiSpan]]) -> dict[str, dict[str, float]]:
    """Strict span (start, end, category) precision / recall / F1, overall ('ALL') and per category."""
    true_positive, gold_count, found_count = Counter(), Counter(), Counter()
    for gold_spans, found_spans in zip(gold, found, strict=True):
        gold_keys = {(span.start, span.end, span.category) for span in gold_spans}
        found_keys = {(span.start, span.end, span.category) for span in found_spans}
        for keys, counter in ((gold_keys, gold_count), (found_keys, found_count), (gold_keys & found_keys, true_positive)):
            for key in keys:
                counter[key[2]] += 1
                counter["ALL"] += 1
    scores = {}
    for category in sorted(gold_count | found_count, key=lambda name: (name != "ALL", -gold_count[name])):
        precision = true_positive[category] / found_count[category] if found_count[category] else 0.0
        recall = true_positive[category] / gold_count[category] if gold_count[category] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[category] = {"precision": precision, "recall": recall, "f1": f1, "gold": gold_count[category], "found": found_count[category]}
    return scores


def print_scores(title: str, scores: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'category':34} {'P':>6} {'R':>6} {'F1':>6} {'gold':>6} {'found':>6}")
    for category, row in scores.items():
        print(f"{category:34} {row['precision']:6.3f} {row['recall']:6.3f} {row['f1']:6.3f} {row['gold']:6d} {row['found']:6d}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meddocan", type=Path, default=MEDDOCAN)
    parser.add_argument("--train", type=Path, default=None, help="train BRAT folder (default: MEDDOCAN's train/)")
    parser.add_argument("--dev", type=Path, default=None, help="evaluation BRAT folder (default: MEDDOCAN's dev/)")
    parser.add_argument("--language", choices=("es", "pt"), default="es")
    parser.add_argument("--train-docs", type=int, default=None)
    parser.add_argument("--dev-docs", type=int, default=None)
    parser.add_argument("--c1", type=float, default=DEFAULT_C1)
    parser.add_argument("--c2", type=float, default=DEFAULT_C2)
    parser.add_argument("--max-iterations", type=int, default=DEFAULT_MAX_ITERATIONS)
    parser.add_argument("--model", type=Path, default=Path("/tmp/deid_crf_meddocan_train.crfsuite"))
    parser.add_argument("--no-rules-features", action="store_true", help="train without rule-span features")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args()
    train_folder, dev_folder = args.train or args.meddocan / "train", args.dev or args.meddocan / "dev"
    if not train_folder.is_dir() or not dev_folder.is_dir():
        print(f"{train_folder} or {dev_folder} is not a folder (BRAT .txt + .ann expected); pass --meddocan DIR or --train / --dev.", file=sys.stderr)
        return 1
    train = read_gold(train_folder, args.train_docs)
    dev = read_gold(dev_folder, args.dev_docs)
    use_rules = not args.no_rules_features
    started = time.perf_counter()
    counts = CrfTagger.train(train, args.model, c1=args.c1, c2=args.c2, max_iterations=args.max_iterations, language=args.language, use_rules=use_rules)
    train_seconds = time.perf_counter() - started
    print(f"trained on {counts['documents']} documents, {counts['tokens']} tokens, {counts['spans']} spans in {train_seconds:.1f} s; "
          f"model {args.model.stat().st_size / 1e6:.2f} MB (c1={args.c1}, c2={args.c2}, max_iterations={args.max_iterations}, rule features={use_rules})")
    tagger = CrfTagger(args.model, language=args.language, use_rules=use_rules)
    started = time.perf_counter()
    found = tagger.find_many([text for text, _ in dev])
    tag_seconds = time.perf_counter() - started
    megabytes = sum(len(text.encode("utf-8")) for text, _ in dev) / 1e6
    print(f"tagged {len(dev)} dev documents ({megabytes:.2f} MB) in {tag_seconds:.1f} s: {megabytes / tag_seconds:.2f} MB/s on one core")
    results = {"crf": strict_scores([spans for _, spans in dev], found), "train_counts": counts, "c1": args.c1, "c2": args.c2,
               "max_iterations": args.max_iterations, "rule_features": use_rules}
    print_scores(f"CRF alone, {dev_folder} (strict span)", results["crf"])
    combined = _combined(dev, args.language, args.model)
    if combined is not None:
        results["rules_crf"] = combined
        print_scores(f"rules + CRF (Deidentifier), {dev_folder} (strict span)", combined)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _combined(dev: list[tuple[str, list[PhiSpan]]], language: str, model: Path) -> dict[str, dict[str, float]] | None:
    """Scores of the Deidentifier (rules + CRF) with this run's model, when it is installed."""
    try:
        from medfactory.corpus.deid.deidentifier import Deidentifier
    except ImportError:
        print("\n(the Deidentifier is not installed yet: rules + CRF not measured)")
        return None
    deidentifier = Deidentifier(language, model)
    return strict_scores([spans for _, spans in dev], deidentifier.find_many([text for text, _ in dev]))


if __name__ == "__main__":
    sys.exit(main())
