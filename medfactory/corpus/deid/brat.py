"""BRAT stand-off annotations (MEDDOCAN's format): read and validate gold ``.txt`` + ``.ann`` pairs, write predictions.

A document is ``NAME.txt`` (UTF-8, offsets count characters as stored, ``\\r`` included) and ``NAME.ann``
with one text-bound annotation a line: ``T<n>\\t<CATEGORY> <start> <end>\\t<covered text>``. Gold is
checked strictly, because a wrong offset silently turns a found name into a "miss" and a "false
positive": malformed lines, categories not in :data:`~medfactory.corpus.deid.spans.CATEGORIES`,
offsets past the text or ``start >= end``, overlapping spans and a covered-text column that differs
from ``text[start:end]`` (the usual sign of CRLF line ends or another encoding) are refused with a
:class:`~medfactory.base.errors.CorpusError` naming the ``.ann`` file and line, never the value.

Discontinuous spans (``T1 TYPE 0 5;7 9``) are refused too: MEDDOCAN has none (its 1,000 train and
dev documents were checked), and a de-identifier's span is one stretch of text. Other annotation
lines (notes ``#``, relations ``R``, attributes ``A``/``M``, events ``E``, normalisations ``N``,
equivalences ``*``) carry no offsets of their own; they are skipped and counted.

Label Studio (the annotation loop for Portuguese): :func:`label_studio_tasks` exports documents
with predicted spans as pre-annotated tasks; :func:`spans_from_label_studio` reads a completed
task's annotation back, to be written with :func:`write_brat` and trained on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from medfactory.base.atomic import atomic_write
from medfactory.base.errors import CorpusError
from medfactory.base.names import safe_component
from medfactory.corpus.deid.spans import CATEGORIES, PhiSpan

# Lines of other BRAT annotation kinds: skipped (they annotate T-lines, they add no PHI offsets).
SKIPPED_PREFIXES = ("#", "R", "A", "M", "E", "N", "*")
TEXT_BOUND = re.compile(r"T\d+")
OFFSETS = re.compile(r"(\S+) (\d+) (\d+)")
KNOWN_CATEGORIES = frozenset(CATEGORIES)
PROGRESS_MIN_DOCUMENTS = 50  # a bar only where reading takes long enough to wait for


@dataclass(frozen=True, slots=True)
class BratDocument:
    """One annotated document: its name (the file stem), text, spans in text order, and skipped non-T lines."""

    name: str
    text: str
    spans: list[PhiSpan]
    skipped_lines: int = 0


def read_text(path: Path) -> str:
    """The ``.txt`` exactly as stored (UTF-8, no newline translation: BRAT offsets count ``\\r``)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as error:
        raise CorpusError(f"{path}: no such text file. Fix: put the .txt beside its .ann (same name).") from error
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: byte {error.start} is not UTF-8. Fix: re-save the text as UTF-8 and re-export its annotations against it.") from error


def one_line(value: str) -> str:
    # BRAT keeps one annotation a line: line breaks inside a covered text are written as spaces.
    return value.replace("\r", " ").replace("\n", " ")


def _fail(ann: Path, number: int, what: str, fix: str) -> CorpusError:
    return CorpusError(f"{ann}:{number}: {what}. Fix: {fix}.")


def _parse_offsets(ann: Path, number: int, middle: str) -> tuple[str, int, int]:
    """``CATEGORY start end`` of a T-line, or the error saying what is wrong with it."""
    if ";" in middle:
        raise _fail(ann, number, "discontinuous span (fragments separated by ';'); MEDDOCAN has none", "split it into one T-line per fragment")
    match = OFFSETS.fullmatch(middle)
    if match is None:
        raise _fail(ann, number, "malformed text-bound annotation (expected 'T<n><TAB>CATEGORY START END<TAB>TEXT')", "correct the line or remove it")
    category, start, end = match.group(1), int(match.group(2)), int(match.group(3))
    if category not in KNOWN_CATEGORIES:
        raise _fail(ann, number, f"unknown category {category!r}", "use one of medfactory.corpus.deid.spans.CATEGORIES (MEDDOCAN's and the Brazilian ones)")
    return category, start, end


def _check_span(ann: Path, number: int, text: str, start: int, end: int, value: str) -> None:
    if start >= end:
        raise _fail(ann, number, f"empty or reversed span (start {start} >= end {end})", "give the span's end after its start")
    if end > len(text):
        raise _fail(ann, number, f"span {start}-{end} ends past the text ({len(text)} characters)", "re-export the annotations against this exact .txt")
    covered = text[start:end]
    if value != covered and value != one_line(covered):
        raise _fail(
            ann, number, f"the covered-text column differs from the text at {start}-{end} (lengths {len(value)} and {len(covered)})",
            "the offsets are wrong (often CRLF line ends or a non-UTF-8 .txt): re-export the annotations against this exact .txt",
        )  # fmt: skip


def _check_overlaps(ann: Path, entries: list[tuple[PhiSpan, int]]) -> None:
    """Gold spans never overlap (one character, one category): name both lines of the first overlap."""
    ordered = sorted(entries)
    for (previous, previous_line), (span, line) in zip(ordered, ordered[1:]):
        if span.overlaps(previous):
            first, second = sorted((previous_line, line))
            raise _fail(
                ann, second, f"span {span.start}-{span.end} overlaps span {previous.start}-{previous.end} of line {first}",
                "keep one of the two (or split them so they do not share characters)",
            )  # fmt: skip


def read_annotations(ann: Path, text: str, *, allow_overlaps: bool = False, source: str = "gold") -> tuple[list[PhiSpan], int]:
    """The spans of ``ann`` (validated against ``text``) in text order, and the number of skipped non-T lines.

    ``allow_overlaps`` is for predictions (a system may emit overlapping spans; the measures take sets).
    """
    ann = Path(ann)
    try:
        lines = ann.read_bytes().decode("utf-8").removeprefix("\ufeff").split("\n")  # a BOM holds no offsets
    except FileNotFoundError as error:
        raise CorpusError(f"{ann}: no such annotation file. Fix: put the .ann beside its .txt (same name).") from error
    except UnicodeDecodeError as error:
        raise CorpusError(f"{ann}: byte {error.start} is not UTF-8. Fix: re-save the annotations as UTF-8.") from error
    entries: list[tuple[PhiSpan, int]] = []
    seen_ids: dict[str, int] = {}
    skipped = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if line.startswith(SKIPPED_PREFIXES):
            skipped += 1
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3 or not TEXT_BOUND.fullmatch(fields[0]):
            what = "malformed line (expected 'T<n><TAB>CATEGORY START END<TAB>TEXT', or a #, R, A, M, E, N or * line)"
            raise _fail(ann, number, what, "correct the line or remove it")
        if fields[0] in seen_ids:
            raise _fail(ann, number, f"annotation id {fields[0]} is already used on line {seen_ids[fields[0]]}", "give each T-line its own id")
        seen_ids[fields[0]] = number
        category, start, end = _parse_offsets(ann, number, fields[1])
        _check_span(ann, number, text, start, end, fields[2])
        entries.append((PhiSpan(start, end, category, source), number))
    if not allow_overlaps:
        _check_overlaps(ann, entries)
    return sorted(span for span, _ in entries), skipped


def read_brat(stem: Path, *, missing_ann: Literal["error", "empty"] = "error", allow_overlaps: bool = False, source: str = "gold") -> BratDocument:
    """The document ``stem.txt`` + ``stem.ann`` (``stem`` may also name either file).

    ``missing_ann="empty"`` reads a ``.txt`` without ``.ann`` as a document with no PHI.
    """
    stem = Path(stem)
    if stem.suffix in (".txt", ".ann"):
        stem = stem.with_suffix("")
    text = read_text(stem.with_name(stem.name + ".txt"))
    ann = stem.with_name(stem.name + ".ann")
    if not ann.is_file():
        if missing_ann == "empty":
            return BratDocument(stem.name, text, [], 0)
        raise CorpusError(f"{stem.with_name(stem.name + '.txt')}: no {ann.name} beside it. Fix: add the annotations (an empty .ann if it has no PHI).")
    spans, skipped = read_annotations(ann, text, allow_overlaps=allow_overlaps, source=source)
    return BratDocument(stem.name, text, spans, skipped)


def document_stems(folder: Path, *, missing_ann: Literal["error", "empty"] = "error") -> list[Path]:
    """The sorted document stems of ``folder`` (not recursive); an ``.ann`` without its ``.txt`` is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: not a folder. Fix: pass the folder holding the .txt and .ann files.")
    texts = {path.stem for path in folder.glob("*.txt")}
    annotations = {path.stem for path in folder.glob("*.ann")}
    orphans = sorted(annotations - texts)
    if orphans:
        first = folder / (orphans[0] + ".ann")
        raise CorpusError(f"{first}: no .txt beside it ({len(orphans)} such .ann in the folder). Fix: add the texts or remove the .ann.")
    if missing_ann == "error" and texts - annotations:
        lacking = sorted(texts - annotations)
        raise CorpusError(
            f"{folder / (lacking[0] + '.txt')}: no .ann beside it ({len(lacking)} such .txt in the folder). "
            "Fix: add the annotations (an empty .ann if a text has no PHI), or treat such texts as PHI-free (missing_ann='empty')."
        )
    return [folder / name for name in sorted(texts)]


def read_brat_folder(
    folder: Path, *, missing_ann: Literal["error", "empty"] = "error", allow_overlaps: bool = False, source: str = "gold", progress: bool = True
) -> Iterator[BratDocument]:
    """Every document of ``folder`` in sorted name order, each validated; a progress bar for long folders."""
    stems = document_stems(folder, missing_ann=missing_ann)
    bar = tqdm(stems, desc=f"read {Path(folder).name}", unit=" docs", disable=not progress or len(stems) < PROGRESS_MIN_DOCUMENTS)
    for stem in bar:
        yield read_brat(stem, missing_ann=missing_ann, allow_overlaps=allow_overlaps, source=source)


def brat_annotations(text: str, spans: Iterable[PhiSpan]) -> str:
    """The ``.ann`` content of ``spans`` over ``text`` (T1, T2 ... in text order)."""
    lines = []
    for number, span in enumerate(sorted(spans), start=1):
        if not 0 <= span.start < span.end <= len(text):
            raise ValueError(f"span {span.start}-{span.end} is outside the text ({len(text)} characters)")
        lines.append(f"T{number}\t{span.category} {span.start} {span.end}\t{one_line(text[span.start : span.end])}\n")
    return "".join(lines)


def write_brat(stem: Path, text: str, spans: Iterable[PhiSpan]) -> tuple[Path, Path]:
    """Write ``stem.txt`` (exactly ``text``) and ``stem.ann``, each atomically; returns both paths."""
    stem = Path(stem)
    content = brat_annotations(text, spans)  # validated before anything is written
    txt, ann = stem.with_name(stem.name + ".txt"), stem.with_name(stem.name + ".ann")
    with atomic_write(txt, mode="wb") as handle:
        handle.write(text.encode("utf-8"))  # bytes: no newline translation, so the offsets stay right
    with atomic_write(ann, mode="wb") as handle:
        handle.write(content.encode("utf-8"))
    return txt, ann


# --- Label Studio: tasks with predictions out, completed annotations back -----------------------------

LABEL_STUDIO_FROM = "label"  # the <Labels name="label" toName="text"> of the labelling config
LABEL_STUDIO_TO = "text"
LABEL_STUDIO_CONFIG = (
    '<View>\n  <Labels name="label" toName="text">\n'
    + "".join(f'    <Label value="{category}"/>\n' for category in CATEGORIES)
    + '  </Labels>\n  <Text name="text" value="$text"/>\n</View>\n'
)  # the labelling config the tasks expect: paste it in the project's settings


def label_studio_tasks(documents: Iterable[BratDocument], model_version: str = "medfactory-deid") -> list[dict[str, Any]]:
    """Label Studio import tasks: each document's text with its spans as a prediction to correct."""
    tasks = []
    for document in documents:
        result = [
            {
                "id": f"s{index}", "from_name": LABEL_STUDIO_FROM, "to_name": LABEL_STUDIO_TO, "type": "labels",
                "value": {"start": span.start, "end": span.end, "text": document.text[span.start : span.end], "labels": [span.category]},
            }
            for index, span in enumerate(document.spans)
        ]  # fmt: skip
        tasks.append({"data": {"text": document.text, "document": document.name}, "predictions": [{"model_version": model_version, "result": result}]})
    return tasks


def _region_span(region: dict[str, Any], text: str, where: str) -> PhiSpan:
    """One labelled region as a gold span, its offsets checked against the task text."""
    value = region.get("value") or {}
    labels = value.get("labels") or []
    if "start" not in value or "end" not in value or len(labels) != 1:
        raise CorpusError(f"{where}: expected one label with start and end. Fix: give the region exactly one label.")
    start, end, category = int(value["start"]), int(value["end"]), str(labels[0])
    if category not in KNOWN_CATEGORIES:
        raise CorpusError(f"{where}: unknown category {category!r}. Fix: use the labels of medfactory.corpus.deid.spans.CATEGORIES (LABEL_STUDIO_CONFIG).")
    if not 0 <= start < end <= len(text):
        raise CorpusError(f"{where}: span {start}-{end} is outside the text ({len(text)} characters). Fix: redraw the region.")
    # Label Studio has counted offsets in UTF-16 units or after folding CRLF in some versions: its own
    # copy of the selected text tells when its offsets are not Python's.
    if "text" in value and str(value["text"]) not in (text[start:end], one_line(text[start:end])):
        raise CorpusError(
            f"{where}: the region's text differs from the task text at {start}-{end}. Fix: export texts with LF line ends and no emoji "
            "(Label Studio counted the offsets differently), or redraw the region."
        )
    return PhiSpan(start, end, category, "gold")


def spans_from_label_studio(task: dict[str, Any], *, where: str = "task") -> BratDocument:
    """The document of a completed Label Studio task (its last non-cancelled annotation) as gold spans.

    ``where`` names the task in errors (e.g. ``export.json task 12``). Spans are validated as a
    gold ``.ann`` is: known category, inside the text, the region's own text matching, no overlaps.
    """
    data = task.get("data") or {}
    text = data.get("text")
    if not isinstance(text, str):
        raise CorpusError(f"{where}: no data.text. Fix: export the project as JSON (not JSON-MIN or CSV).")
    name = str(data.get("document") or task.get("id") or "document")
    annotations = [item for item in task.get("annotations") or [] if not item.get("was_cancelled")]
    if not annotations:
        raise CorpusError(f"{where}: no completed annotation. Fix: finish the task in Label Studio, or leave it out of the export.")
    regions = [region for region in annotations[-1].get("result") or [] if region.get("type", "labels") == "labels"]
    ordered = sorted(_region_span(region, text, f"{where} region {index}") for index, region in enumerate(regions, start=1))
    for previous, span in zip(ordered, ordered[1:]):
        if span.overlaps(previous):
            raise CorpusError(f"{where}: spans {previous.start}-{previous.end} and {span.start}-{span.end} overlap. Fix: keep one of them.")
    return BratDocument(name, text, ordered, 0)


def export_label_studio(documents: Iterable[BratDocument], path: Path, model_version: str = "medfactory-deid") -> int:
    """Write Label Studio import tasks (JSON, atomically) for ``documents``; returns the number of tasks."""
    tasks = label_studio_tasks(documents, model_version)
    with atomic_write(Path(path)) as handle:
        json.dump(tasks, handle, ensure_ascii=False, indent=1)
    return len(tasks)


def import_label_studio(path: Path, folder: Path) -> int:
    """Write each completed task of a Label Studio JSON export as ``folder/NAME.txt`` + ``.ann``; returns the count.

    Tasks without a completed annotation are refused (finish or leave them out): a half-done export
    would otherwise train the tagger on notes whose PHI nobody marked.
    """
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorpusError(f"{path}: not a readable Label Studio JSON export ({type(error).__name__}). Fix: export the project as JSON.") from error
    if not isinstance(tasks, list):
        raise CorpusError(f"{path}: expected a list of tasks. Fix: export the project as JSON (not JSON-MIN).")
    documents = [spans_from_label_studio(task, where=f"{path} task {index}") for index, task in enumerate(tasks, start=1)]
    names = [safe_component(document.name, "document name", f"{path} task {index}", show_value=False) for index, document in enumerate(documents, 1)]
    if len(set(names)) != len(names):
        raise CorpusError(f"{path}: two tasks have the same document name. Fix: give each task its own data.document.")
    for name, document in zip(names, documents):
        write_brat(Path(folder) / name, document.text, document.spans)
    return len(documents)
