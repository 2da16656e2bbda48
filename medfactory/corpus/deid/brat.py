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

The Label Studio annotation loop (export pre-annotated tasks, import corrected spans as BRAT) is
:mod:`medfactory.corpus.deid.label_studio`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from medfactory.base.atomic import atomic_write
from medfactory.base.errors import CorpusError
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
