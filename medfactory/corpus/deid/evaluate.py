"""MEDDOCAN's official measures, per category and overall, plus the token leak; a Markdown table and a bar figure.

What is computed (after the official script, PlanTL-GOB-ES/MEDDOCAN-Evaluation-Script, ``classes.py``):

- **Subtrack 1 (NER), strict**: a prediction is right when ``(category, start, end)`` equals a gold
  span of the same document. Per document, TP = gold ∩ predicted, FP = predicted − gold, FN =
  gold − predicted (sets); precision, recall and F1 are micro-averaged over all documents (sums of
  TP, FP, FN), F1 = 2PR / (P + R), 0 where a denominator is 0. Per category the same, restricted
  to that category's spans.
- **Subtrack 2 strict (spans)**: the same on ``(start, end)`` only: any category counts.
- **Subtrack 2 merged**: spans separated only by non-alphanumeric characters are merged (in gold and
  in predictions, over the sorted spans); TP = (strict gold ∩ strict predicted) ∪ (merged gold ∩
  merged predicted); a strict FP or FN contained in a TP span is no longer counted. One deviation:
  a merged span ends at the later of the two ends (the script keeps the second span's end, which
  shrinks a span nested in its predecessor; gold never nests, so gold scores are the same).
- **Leak (official)**: subtrack 1 false negatives / sentences. The script counts sentences from
  Freeling-split files it does not distribute (and prints "NA" without them); here sentences are
  the non-blank stretches between line breaks and ``.``, ``!``, ``?`` followed by a space: an
  approximation, stated as such in the output.
- **Token leak ("any PHI token left")**: gold PHI tokens are the ``\\w+`` tokens with at least one
  character inside a gold span; a token leaks when one of those characters is covered by no
  predicted span, whatever its category. Reported: leaked / gold PHI tokens, and the number of
  documents with at least one leaked token.

Two choices differ from the script and are said in the output: a gold document with no prediction
counts as "nothing found" (the script evaluates only documents present on both sides, so a skipped
file would not count), and documents are matched by file name.

Everything here is counts and offsets: no value of a span reaches the scores, the table or the figure.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.errors import CorpusError
from medfactory.base.tables import markdown_table
from medfactory.corpus.deid.brat import PROGRESS_MIN_DOCUMENTS, BratDocument, read_annotations, read_brat_folder
from medfactory.corpus.deid.spans import CATEGORIES, PhiSpan

TOKEN = re.compile(r"\w+")
SENTENCE_BREAK = re.compile(r"[.!?](?=\s)|\n")
MEASURES = ("subtrack1_ner", "subtrack2_strict", "subtrack2_merged")
MEASURE_NAMES = {"subtrack1_ner": "Subtrack 1 (NER, category + offsets)", "subtrack2_strict": "Subtrack 2 strict (offsets, any category)",
                 "subtrack2_merged": "Subtrack 2 merged"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScoredDocument:
    """One document to score: its text and its gold and predicted spans (offsets into ``text``)."""

    name: str
    text: str
    gold: Sequence[PhiSpan]
    predicted: Sequence[PhiSpan]


def prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    """Counts with precision, recall and F1 (0 where a denominator is 0, as the official script does)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "gold": tp + fn, "predicted": tp + fp, "precision": precision, "recall": recall, "f1": f1}


def merge_spans(text: str, spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted spans with those separated only by non-alphanumeric characters (or nothing) merged."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and not any(character.isalnum() for character in text[merged[-1][1] : start]):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _contained(span: tuple[int, int], containers: Iterable[tuple[int, int]]) -> bool:
    return any(start <= span[0] and span[1] <= end for start, end in containers)


def merged_counts(text: str, gold: set[tuple[int, int]], predicted: set[tuple[int, int]]) -> tuple[int, int, int]:
    """TP, FP, FN of subtrack 2 merged for one document (the official script's EvaluateSubtrack2merged)."""
    hits = (gold & predicted) | (set(merge_spans(text, gold)) & set(merge_spans(text, predicted)))
    fp = sum(1 for span in predicted - gold if not _contained(span, hits))
    fn = sum(1 for span in gold - predicted if not _contained(span, hits))
    return len(hits), fp, fn


def count_sentences(text: str) -> int:
    """Non-blank stretches between line breaks and sentence-final punctuation (stands in for Freeling's split)."""
    return sum(1 for piece in SENTENCE_BREAK.split(text) if piece.strip())


def token_leaks(text: str, gold: Sequence[PhiSpan], predicted: Sequence[PhiSpan]) -> tuple[int, int]:
    """Gold PHI tokens and, of them, those with a gold character no predicted span covers."""
    in_gold, covered = bytearray(len(text)), bytearray(len(text))
    for span in gold:
        in_gold[span.start : span.end] = b"\x01" * (span.end - span.start)
    for span in predicted:
        covered[span.start : span.end] = b"\x01" * (span.end - span.start)
    phi_tokens = leaked = 0
    for match in TOKEN.finditer(text):
        positions = [index for index in range(match.start(), match.end()) if in_gold[index]]
        if positions:
            phi_tokens += 1
            leaked += any(not covered[index] for index in positions)
    return phi_tokens, leaked


class _Tally:
    """Running counts over documents (micro averages are sums)."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {measure: Counter() for measure in MEASURES}
        self.categories: dict[str, Counter[str]] = {}
        self.leak: Counter[str] = Counter()

    def add(self, document: ScoredDocument) -> None:
        gold_ner = {(span.category, span.start, span.end) for span in document.gold}
        predicted_ner = {(span.category, span.start, span.end) for span in document.predicted}
        self._add("subtrack1_ner", len(gold_ner & predicted_ner), len(predicted_ner - gold_ner), len(gold_ner - predicted_ner))
        for name, group in (("tp", gold_ner & predicted_ner), ("fp", predicted_ner - gold_ner), ("fn", gold_ner - predicted_ner)):
            for category, _, _ in group:
                self.categories.setdefault(category, Counter())[name] += 1
        gold_spans = {(span.start, span.end) for span in document.gold}
        predicted_spans = {(span.start, span.end) for span in document.predicted}
        self._add("subtrack2_strict", len(gold_spans & predicted_spans), len(predicted_spans - gold_spans), len(gold_spans - predicted_spans))
        self._add("subtrack2_merged", *merged_counts(document.text, gold_spans, predicted_spans))
        phi_tokens, leaked = token_leaks(document.text, document.gold, document.predicted)
        self.leak.update(documents=1, sentences=count_sentences(document.text), gold_tokens=phi_tokens, leaked_tokens=leaked,
                         documents_with_phi=int(phi_tokens > 0), documents_with_leak=int(leaked > 0))  # fmt: skip

    def _add(self, measure: str, tp: int, fp: int, fn: int) -> None:
        self.counts[measure].update(tp=tp, fp=fp, fn=fn)


def _category_order(category: str) -> tuple[int, str]:
    return (CATEGORIES.index(category) if category in CATEGORIES else len(CATEGORIES), category)


def evaluate_documents(documents: Iterable[ScoredDocument]) -> dict[str, Any]:
    """The scores of ``documents``: each measure overall (micro), subtrack 1 per category, both leak measures."""
    tally = _Tally()
    for document in documents:
        tally.add(document)
    scores: dict[str, Any] = {measure: prf(**{key: tally.counts[measure][key] for key in ("tp", "fp", "fn")}) for measure in MEASURES}
    scores["categories"] = {
        category: prf(tally.categories[category]["tp"], tally.categories[category]["fp"], tally.categories[category]["fn"])
        for category in sorted(tally.categories, key=_category_order)
    }
    leak = tally.leak
    scores["documents"] = leak["documents"]
    scores["leak_official"] = {
        "false_negatives": tally.counts["subtrack1_ner"]["fn"], "sentences": leak["sentences"],
        "score": tally.counts["subtrack1_ner"]["fn"] / leak["sentences"] if leak["sentences"] else 0.0,
        "note": "subtrack 1 false negatives per sentence; sentences split at line breaks and . ! ? (the official script uses Freeling's split)",
    }  # fmt: skip
    scores["token_leak"] = {
        "gold_tokens": leak["gold_tokens"], "leaked_tokens": leak["leaked_tokens"],
        "share": leak["leaked_tokens"] / leak["gold_tokens"] if leak["gold_tokens"] else 0.0,
        "documents_with_phi": leak["documents_with_phi"], "documents_with_leak": leak["documents_with_leak"],
    }  # fmt: skip
    return scores


def _row(name: str, values: dict[str, Any]) -> list[str]:
    counts = [f"{values[key]:,}" for key in ("gold", "predicted", "tp")]
    return [name, *counts, *(f"{values[key]:.4f}" for key in ("precision", "recall", "f1"))]


def score_tables(scores: dict[str, Any]) -> str:
    """Markdown: per-category subtrack 1 scores, the three measures overall, and the leak measures."""
    header = ["category", "gold", "predicted", "TP", "precision", "recall", "F1"]
    per_category = [_row(category, values) for category, values in scores["categories"].items()]
    per_category.append(_row("all (micro)", scores["subtrack1_ner"]))
    overall = [_row(MEASURE_NAMES[measure], scores[measure]) for measure in MEASURES]
    overall[-1][1:4] = ["-", "-", overall[-1][3]]  # merged TP mixes strict and merged spans: no gold / predicted count
    official, tokens = scores["leak_official"], scores["token_leak"]
    leaks = [
        ["leak (FN per sentence, approximate sentences)", f"{official['score']:.4f}",
         f"{official['false_negatives']:,} FN / {official['sentences']:,} sentences"],
        ["PHI tokens left (any category)", f"{tokens['share']:.4f}", f"{tokens['leaked_tokens']:,} / {tokens['gold_tokens']:,} gold PHI tokens"],
        ["documents with a PHI token left", f"{tokens['documents_with_leak']:,}",
         f"of {tokens['documents_with_phi']:,} with PHI ({scores['documents']:,} in all)"],
    ]  # fmt: skip
    tables = [markdown_table(header, per_category), markdown_table(["measure", *header[1:]], overall), markdown_table(["leak", "value", "counts"], leaks)]
    return "\n\n".join(tables)


def category_figure(scores: dict[str, Any], path: Path) -> Path:
    """Horizontal bars of subtrack 1 precision, recall and F1 per category, as PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    categories = list(scores["categories"])
    figure = Figure(figsize=(8, 0.42 * max(len(categories), 1) + 1.6), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    height = 0.27
    for offset, (measure, color) in enumerate((("precision", "#4477aa"), ("recall", "#ee6677"), ("f1", "#228833"))):
        values = [scores["categories"][category][measure] for category in categories]
        ax.barh([index + (offset - 1) * height for index in range(len(categories))], values, height=height, color=color, label=measure)
    ax.set_yticks(range(len(categories)), [f"{category} ({scores['categories'][category]['gold']:,})" for category in categories], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("strict span score (category + offsets); gold spans in brackets")
    figure.legend(loc="outside upper center", ncols=3, fontsize=7)
    path = Path(path)
    with atomic_write(path, mode="wb") as handle:
        figure.savefig(handle, format="png", dpi=150)
    return path


# --- folders: gold BRAT against predicted BRAT (or `deid apply`'s spans.jsonl), or against a finder ------


def _spans_jsonl(path: Path, texts: dict[str, str]) -> dict[str, list[PhiSpan]]:
    """``deid apply``'s ``spans.jsonl`` by document stem, each span checked against its gold text."""
    from medfactory.base.jsonl import iter_jsonl

    found: dict[str, list[PhiSpan]] = {}
    for number, record in iter_jsonl(path):
        try:
            stem, start, end, category = Path(str(record["document"])).stem, int(record["start"]), int(record["end"]), str(record["category"])
        except (KeyError, TypeError, ValueError) as error:
            raise CorpusError(f"{path}:{number}: expected document, start, end and category. Fix: write it with `medfactory deid apply`.") from error
        if category not in CATEGORIES:
            raise CorpusError(f"{path}:{number}: unknown category {category!r}. Fix: use one of medfactory.corpus.deid.spans.CATEGORIES.")
        text = texts.get(stem)
        if text is not None and not 0 <= start < end <= len(text):
            raise CorpusError(f"{path}:{number}: span {start}-{end} is outside its document ({len(text)} characters). Fix: apply to the gold texts again.")
        found.setdefault(stem, []).append(PhiSpan(start, end, category, "predicted"))
    return found


def _predicted_spans(predicted_dir: Path, gold: list[BratDocument]) -> tuple[dict[str, list[PhiSpan]], int]:
    """Predicted spans by document stem, and how many predicted documents have no gold counterpart."""
    predicted_dir = Path(predicted_dir)
    if not predicted_dir.is_dir():
        raise CorpusError(f"{predicted_dir}: not a folder. Fix: pass the folder of predicted .ann files (or of `deid apply`'s output).")
    texts = {document.name: document.text for document in gold}
    annotations = sorted(predicted_dir.glob("*.ann"))
    if not annotations and (predicted_dir / "spans.jsonl").is_file():
        found = _spans_jsonl(predicted_dir / "spans.jsonl", texts)
    else:
        found = {}
        for ann in annotations:
            if ann.stem in texts:  # checked against the gold text: a different text shows as a value mismatch
                found[ann.stem] = read_annotations(ann, texts[ann.stem], allow_overlaps=True, source="predicted")[0]
    return found, sum(1 for stem in found if stem not in texts) + sum(1 for ann in annotations if ann.stem not in texts)


def compare_folders(gold_dir: Path, predicted_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Scores of the predictions in ``predicted_dir`` against the BRAT gold of ``gold_dir`` (documents matched by name).

    A gold document without predictions counts as "nothing found" (``documents_without_prediction``).
    """
    gold = list(read_brat_folder(gold_dir, progress=progress))
    found, unmatched = _predicted_spans(predicted_dir, gold)
    scores = evaluate_documents(ScoredDocument(doc.name, doc.text, doc.spans, found.get(doc.name, [])) for doc in gold)
    scores["documents_without_prediction"] = sum(1 for document in gold if document.name not in found)
    scores["predictions_without_gold"] = unmatched
    return scores


def score_finder(
    gold_dir: Path, find_many: Callable[[Sequence[str]], list[list[PhiSpan]]], *, progress: bool = True, batch: int = 64
) -> dict[str, Any]:
    """Scores of ``find_many(texts) -> spans per text`` (e.g. ``Deidentifier.find_many``) against the BRAT gold of ``gold_dir``."""
    gold = list(read_brat_folder(gold_dir, progress=progress))
    found: list[list[PhiSpan]] = []
    with tqdm(total=len(gold), desc="de-identify", unit=" docs", disable=not progress or len(gold) < PROGRESS_MIN_DOCUMENTS) as bar:
        for start in range(0, len(gold), batch):  # batches: the CRF decodes a batch's notes together
            found += find_many([doc.text for doc in gold[start : start + batch]])
            bar.update(min(batch, len(gold) - start))
    scores = evaluate_documents(ScoredDocument(doc.name, doc.text, doc.spans, spans) for doc, spans in zip(gold, found, strict=True))
    scores["documents_without_prediction"] = 0
    scores["predictions_without_gold"] = 0
    return scores


MEASURE_NOTES = (
    "Measures (after the official MEDDOCAN evaluation script):",
    "",
    "- Subtrack 1: a span is right when its category and both offsets equal a gold span's; micro-averaged over documents.",
    "- Subtrack 2 strict: both offsets equal, any category. Merged: spans separated only by non-alphanumeric characters are merged"
    " on both sides first; a strict error inside a merged hit no longer counts.",
    "- Leak: subtrack 1 false negatives per sentence (sentences split at line breaks and . ! ?; the official script uses Freeling's split).",
    "- PHI tokens left: gold PHI tokens (\\w+) with a character no predicted span covers, whatever its category.",
    "- A gold document without predictions is scored as nothing found.",
)
REPORT_FILES = ("report.md", "scores.json", "category_scores.png")


def write_report(scores: dict[str, Any], output_dir: Path, header: Sequence[str] = ()) -> list[Path]:
    """``report.md`` (``header`` lines, then the tables), ``scores.json`` and ``category_scores.png`` in ``output_dir``, each atomically."""
    output_dir = Path(output_dir)
    report, scores_json, figure = (output_dir / name for name in REPORT_FILES)
    lines = ["# De-identification scores (MEDDOCAN measures)", "", *header, "", score_tables(scores), "", f"![per-category scores]({figure.name})", "",
             *MEASURE_NOTES, ""]  # fmt: skip
    with atomic_write(report) as handle:
        handle.write("\n".join(lines))
    write_json_atomic(scores_json, scores)
    category_figure(scores, figure)
    return [report, scores_json, figure]
