"""Read and validate the Likert ratings: filled rater XLSX, long CSV and Label Studio exports.

Whatever the mix of inputs, the result is the canonical long table (``LONG_COLUMNS``: card_id,
rater, criterion, score, observation) with ``score`` as pandas ``Int64``. Validation collects
EVERY problem first, each with its place (file and sheet/cell, CSV line, or Label Studio task
and annotation), and raises one :class:`RatingsError` listing them all; nothing is returned or
written when there is any problem.

Rater names: an XLSX file's rater is the name written by ``cards`` in cell ``B1`` of its
``Instruções`` sheet (beside the label in ``A1``), else the file stem; a long CSV has a
``rater`` column; a Label Studio annotation's rater is ``ls:<id>`` from ``completed_by``
(an int id, or a dict's ``id``, else its ``email``, or a plain string).

Every rater present must have rated every card on every criterion: an empty score cell or an
absent row is a "missing score" problem, unless ``allow_missing=True`` (a study in progress),
where missing scores become NA rows and their number is ``df.attrs["missing"]``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from medfactory.base.atomic import atomic_write
from medfactory.base.jsonl import read_jsonl

from . import CARDS_FILE, CRITERIA, CRITERION_KEYS, KEY_FILE, LONG_COLUMNS, SCORES
from .cards import (
    CARD_ID_HEADER,
    CARDS_SHEET,
    COMPLETION_HEADER,
    EXCERPT_HEADER,
    INSTRUCTIONS_SHEET,
    OBSERVATION_CONTROL,
    RATER_CELL,
    RATER_LABEL,
)

RATINGS_FILE = "ratings.csv"
MAX_LISTED = 200

XLSX_SUFFIXES = {".xlsx", ".xlsm"}
CSV_SUFFIXES = {".csv"}
JSON_SUFFIXES = {".json"}

_CRITERION_BY_NAME = {**{c.key.casefold(): c.key for c in CRITERIA}, **{c.name.casefold(): c.key for c in CRITERIA}}
_OBSERVATION_NAMES = {"observações", "observacoes", "observação", "observation", "observations"}
_SCORE_TEXT = re.compile(r"[+-]?\d+(?:[.,]0+)?")


class RatingsError(ValueError):
    """Bad ratings: ``problems`` holds every problem found, one line each, with its place."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        listed = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(listed)
        lines = [f"{len(self.problems)} problem(s) in the ratings:", *(f"- {p}" for p in listed)]
        if more:
            lines.append(f"... and {more} more")
        super().__init__("\n".join(lines))


@dataclass
class _Rating:
    card_id: str
    rater: str
    criterion: str
    score: int | None
    observation: str
    place: str  # where this one score is (a cell, a line, an annotation's criterion)
    row_place: str  # where its card row is (a sheet row, a line, an annotation)
    source: str  # the file


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def parse_score(raw: Any) -> tuple[int | None, str | None]:
    """``(score, None)`` for 1..5, ``(None, None)`` for an empty value, ``(None, reason)`` otherwise.

    Accepts ints, integral floats (``4.0``) and their text (``" 4 "``, ``"4.0"``, ``"4,0"``);
    rejects booleans, fractions, words and anything outside 1..5.
    """
    if raw is None:
        return None, None
    bad = f"score {raw!r} is not a whole number from {min(SCORES)} to {max(SCORES)}"
    if isinstance(raw, bool):
        return None, bad
    if isinstance(raw, float):
        if math.isnan(raw):
            return None, None
        if not raw.is_integer():
            return None, bad
        value = int(raw)
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, str):
        text = raw.strip()
        if not text:
            return None, None
        if not _SCORE_TEXT.fullmatch(text):
            return None, bad
        value = int(re.split(r"[.,]", text)[0])
    else:
        return None, bad
    if value not in SCORES:
        return None, f"score {raw!r} is out of range ({min(SCORES)} to {max(SCORES)})"
    return value, None


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _at(values: tuple | list, index: int | None) -> Any:
    """values[index], or None when the column is absent or the row is short."""
    return values[index] if index is not None and index < len(values) else None


class _Problems(list):
    def add(self, place: str, message: str) -> None:
        self.append(f"{place}: {message}")


def _score(raw: Any, place: str, problems: _Problems, allow_missing: bool) -> int | None:
    score, reason = parse_score(raw)
    if reason:
        problems.add(place, reason)
    elif score is None and not allow_missing:
        problems.add(place, "missing score")
    return score


# --------------------------------------------------------------------------------------------
# Readers, one per format
# --------------------------------------------------------------------------------------------


def _xlsx_rater(workbook: Any, path: Path) -> str:
    if INSTRUCTIONS_SHEET in workbook.sheetnames:
        sheet = workbook[INSTRUCTIONS_SHEET]
        if _text(sheet["A1"].value) == RATER_LABEL and _text(sheet[RATER_CELL].value):
            return _text(sheet[RATER_CELL].value)
    return path.stem


@dataclass
class _XlsxColumns:
    """Where the card id, each criterion and the observation are in a Cards sheet (0-based)."""

    card: int
    criteria: dict[str, int]
    observation: int | None


def _load_cards_sheet(path: Path, problems: _Problems) -> tuple[str, list[tuple]] | None:
    """(rater, rows of the Cards sheet as values), or None after reporting why it cannot be read."""
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, data_only=True)
    except Exception as error:
        problems.add(str(path), f"cannot read the workbook ({type(error).__name__}: {error})")
        return None
    try:
        rater = _xlsx_rater(workbook, path)
        if CARDS_SHEET not in workbook.sheetnames:
            problems.add(str(path), f"no sheet named {CARDS_SHEET!r} (sheets: {', '.join(workbook.sheetnames)})")
            return None
        rows = list(workbook[CARDS_SHEET].iter_rows(values_only=True))
    finally:
        workbook.close()
    return rater, rows


def _xlsx_columns(header_row: tuple, where: str, problems: _Problems) -> _XlsxColumns | None:
    """The columns named by the header row, or None when a required one is absent or doubled."""
    from openpyxl.utils import get_column_letter

    card_column: int | None = None
    observation_column: int | None = None
    criterion_columns: dict[str, int] = {}
    header_ok = True
    for index, header in enumerate(header_row):
        name = _text(header)
        folded = name.casefold()
        cell = f"{get_column_letter(index + 1)}1"
        if not name or folded in (EXCERPT_HEADER, COMPLETION_HEADER):
            continue
        if folded == CARD_ID_HEADER:
            card_column = index
        elif folded in _CRITERION_BY_NAME:
            key = _CRITERION_BY_NAME[folded]
            if key in criterion_columns:
                problems.add(f"{where}, cell {cell}", f"second column for criterion {key!r} ({name!r})")
                header_ok = False
            criterion_columns[key] = index
        elif folded in _OBSERVATION_NAMES or folded.split(" /")[0] in _OBSERVATION_NAMES:
            observation_column = index
        else:
            problems.add(
                f"{where}, cell {cell}",
                f"unknown criterion column {name!r} (expected {', '.join(c.name for c in CRITERIA)})",
            )
    if card_column is None:
        problems.add(f"{where}, row 1", f"no {CARD_ID_HEADER!r} column")
        header_ok = False
    for criterion in CRITERIA:
        if criterion.key not in criterion_columns:
            problems.add(f"{where}, row 1", f"no column for criterion {criterion.name!r}")
            header_ok = False
    return _XlsxColumns(card_column, criterion_columns, observation_column) if header_ok else None


def _xlsx_ratings(
    rows: list[tuple], columns: _XlsxColumns, rater: str, where: str, path: Path, problems: _Problems, allow_missing: bool
) -> list[_Rating]:
    """One rating per card row and criterion; a row without a card id must hold nothing."""
    from openpyxl.utils import get_column_letter

    ratings: list[_Rating] = []
    for row_number, values in enumerate(rows, start=2):
        rated = [_at(values, index) for index in columns.criteria.values()] + [_at(values, columns.observation)]
        card_id = _text(_at(values, columns.card))
        row_place = f"{where}, row {row_number}"
        if not card_id:
            if any(_text(value) for value in rated):
                problems.add(row_place, f"scores or observation without a {CARD_ID_HEADER}")
            continue
        observation = _text(_at(values, columns.observation))
        for key in CRITERION_KEYS:
            index = columns.criteria[key]
            place = f"{where}, cell {get_column_letter(index + 1)}{row_number} (card {card_id}, {key})"
            score = _score(_at(values, index), place, problems, allow_missing)
            ratings.append(_Rating(card_id, rater, key, score, observation, place, row_place, str(path)))
    return ratings


def _read_xlsx(path: Path, problems: _Problems, allow_missing: bool) -> list[_Rating]:
    loaded = _load_cards_sheet(path, problems)
    if loaded is None:
        return []
    rater, rows = loaded
    where = f"{path}, sheet {CARDS_SHEET}"
    if not rows:
        problems.add(where, "the sheet is empty")
        return []
    columns = _xlsx_columns(rows[0], where, problems)
    if columns is None:
        return []
    return _xlsx_ratings(rows[1:], columns, rater, where, path, problems, allow_missing)


def _read_long_csv(path: Path, problems: _Problems, allow_missing: bool) -> list[_Rating]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        problems.add(str(path), f"cannot read the file ({type(error).__name__}: {error})")
        return []
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if ";" in first_line and "," not in first_line else ","  # pt-BR Excel saves with ';'
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        problems.add(str(path), "empty file (expected the header " + ",".join(LONG_COLUMNS) + ")")
        return []
    columns = {_text(name).casefold(): index for index, name in enumerate(header)}
    missing = [name for name in LONG_COLUMNS[:4] if name not in columns]
    if missing:
        problems.add(f"{path}, line 1", f"header lacks column(s) {', '.join(missing)} (expected {','.join(LONG_COLUMNS)})")
        return []
    observation_index = columns.get("observation")

    ratings: list[_Rating] = []
    line_end = reader.line_num
    for row in reader:
        line = line_end + 1
        line_end = reader.line_num
        if not any(field.strip() for field in row):
            continue
        place = f"{path}, line {line}"
        card_id, rater = _text(_at(row, columns["card_id"])), _text(_at(row, columns["rater"]))
        criterion_text = _text(_at(row, columns["criterion"]))
        criterion = _CRITERION_BY_NAME.get(criterion_text.casefold())
        bad = False
        if not card_id:
            problems.add(place, "no card_id")
            bad = True
        if not rater:
            problems.add(place, "no rater")
            bad = True
        if criterion is None:
            problems.add(place, f"unknown criterion {criterion_text!r} (expected {', '.join(CRITERION_KEYS)})")
            bad = True
        score = _score(_at(row, columns["score"]), place, problems, allow_missing)
        if bad:
            continue
        observation = _text(_at(row, observation_index))
        ratings.append(_Rating(card_id, rater, criterion, score, observation, place, place, str(path)))
    return ratings


def ls_rater(completed_by: Any) -> str | None:
    if isinstance(completed_by, dict):
        ident = completed_by.get("id")
        if ident is None or ident == "":
            ident = completed_by.get("email")
        completed_by = ident
    if completed_by is None or isinstance(completed_by, bool) or _text(completed_by) == "":
        return None
    return f"ls:{_text(completed_by)}"


def _ls_value(value: dict, place: str, problems: _Problems) -> Any:
    """The raw score of one Label Studio result value (Choices, Rating or Number)."""
    if "choices" in value:
        choices = value["choices"]
        if not isinstance(choices, list) or len(choices) != 1:
            problems.add(place, f"expected exactly one choice, got {choices!r}")
            return None
        return choices[0]
    for field in ("rating", "number"):
        if field in value:
            return value[field]
    problems.add(place, f"result holds no choices/rating (value keys: {', '.join(map(str, value)) or 'none'})")
    return None


def _ls_results(annotation: dict, annotation_place: str, problems: _Problems) -> tuple[dict[str, Any], str]:
    """The raw score per criterion and the observation text of one annotation's results."""
    raw_scores: dict[str, Any] = {}
    observation_parts: list[str] = []
    for result_number, result in enumerate(annotation.get("result") or [], start=1):
        result_place = f"{annotation_place}, result {result_number}"
        if not isinstance(result, dict):
            problems.add(result_place, "not a result object")
            continue
        name = _text(result.get("from_name"))
        value = result.get("value") if isinstance(result.get("value"), dict) else {}
        if name == OBSERVATION_CONTROL:
            text = value.get("text")
            parts = text if isinstance(text, list) else [text]
            observation_parts += [_text(part) for part in parts if _text(part)]
            continue
        key = _CRITERION_BY_NAME.get(name.casefold())
        if key is None:
            problems.add(result_place, f"unknown criterion {name!r} (expected {', '.join(CRITERION_KEYS)})")
            continue
        if key in raw_scores:
            problems.add(result_place, f"second result for criterion {key!r} in one annotation")
            continue
        raw_scores[key] = _ls_value(value, f"{result_place} ({key})", problems)
    return raw_scores, "\n".join(observation_parts)


def _ls_annotation_ratings(
    annotation: Any, annotation_place: str, card_id: str, path: Path, problems: _Problems, allow_missing: bool
) -> list[_Rating]:
    """The ratings of one annotation of a task (none for a cancelled one)."""
    if not isinstance(annotation, dict):
        problems.add(annotation_place, "not an annotation object")
        return []
    if annotation.get("was_cancelled"):
        return []  # a skipped task: no ratings (a missing score if it stays skipped)
    rater = ls_rater(annotation.get("completed_by"))
    if rater is None:
        problems.add(annotation_place, "no completed_by (cannot tell the rater)")
        return []
    annotation_place += f" ({rater})"
    raw_scores, observation = _ls_results(annotation, annotation_place, problems)
    ratings: list[_Rating] = []
    for key in CRITERION_KEYS:
        place = f"{annotation_place}, {key}"
        score = _score(raw_scores.get(key), place, problems, allow_missing)
        ratings.append(_Rating(card_id, rater, key, score, observation, place, annotation_place, str(path)))
    return ratings


def _ls_task_ratings(task: Any, task_place: str, path: Path, problems: _Problems, allow_missing: bool) -> list[_Rating]:
    """The ratings of every annotation of one Label Studio task."""
    if not isinstance(task, dict):
        problems.add(task_place, "not a task object")
        return []
    if task.get("id") is not None:
        task_place += f" (id {task['id']})"
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    card_id = _text(data.get("card_id"))
    annotations = task.get("annotations", task.get("completions")) or []
    if not isinstance(annotations, list):
        problems.add(task_place, "'annotations' is not a list")
        return []
    if not card_id:
        if annotations:
            problems.add(task_place, "no data.card_id")
        return []
    ratings: list[_Rating] = []
    for annotation_number, annotation in enumerate(annotations, start=1):
        annotation_place = f"{task_place}, annotation {annotation_number}"
        ratings += _ls_annotation_ratings(annotation, annotation_place, card_id, path, problems, allow_missing)
    return ratings


def _read_label_studio(path: Path, problems: _Problems, allow_missing: bool) -> list[_Rating]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.add(str(path), f"cannot read the Label Studio export ({type(error).__name__}: {error})")
        return []
    if not isinstance(tasks, list):
        problems.add(str(path), "expected a Label Studio JSON export (a list of tasks)")
        return []
    ratings: list[_Rating] = []
    for task_number, task in enumerate(tasks, start=1):
        ratings += _ls_task_ratings(task, f"{path}, task {task_number}", path, problems, allow_missing)
    return ratings


# --------------------------------------------------------------------------------------------
# Cards and key
# --------------------------------------------------------------------------------------------


def _listing(ids: list[str], limit: int = 50) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _read_card_ids(cards_path: Path, problems: _Problems) -> list[str] | None:
    try:
        cards = read_jsonl(cards_path)
    except (OSError, ValueError) as error:
        problems.add(str(cards_path), f"cannot read the cards ({error})")
        return None
    ids: list[str] = []
    seen: set[str] = set()
    for number, card in enumerate(cards, start=1):
        card_id = _text(card.get("card_id"))
        if not card_id:
            problems.add(f"{cards_path}, card {number}", "no card_id")
        elif card_id in seen:
            problems.add(f"{cards_path}, card {number}", f"card_id {card_id} repeats")
        else:
            seen.add(card_id)
            ids.append(card_id)
    return ids


def _check_key(key_path: Path, card_ids: list[str] | None, problems: _Problems) -> None:
    try:
        text = Path(key_path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        problems.add(str(key_path), f"cannot read the key ({type(error).__name__}: {error})")
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or "card_id" not in reader.fieldnames:
        problems.add(f"{key_path}, line 1", "no card_id column (expected card_id,note_id,model,position)")
        return
    key_ids: list[str] = []
    seen: set[str] = set()
    for row in reader:
        card_id = _text(row.get("card_id"))
        if not card_id:
            problems.add(f"{key_path}, line {reader.line_num}", "no card_id")
        elif card_id in seen:
            problems.add(f"{key_path}, line {reader.line_num}", f"card_id {card_id} repeats")
        else:
            seen.add(card_id)
            key_ids.append(card_id)
    if card_ids is None:
        return
    card_set = set(card_ids)
    extra = [card_id for card_id in key_ids if card_id not in card_set]
    missing = [card_id for card_id in card_ids if card_id not in seen]
    if extra:
        problems.add(str(key_path), f"key mismatch: {len(extra)} card id(s) not in {CARDS_FILE}: {_listing(extra)}")
    if missing:
        problems.add(str(key_path), f"key mismatch: {len(missing)} card id(s) of {CARDS_FILE} missing from the key: {_listing(missing)}")


# --------------------------------------------------------------------------------------------
# Reading everything
# --------------------------------------------------------------------------------------------


_READERS = {
    **{suffix: _read_xlsx for suffix in XLSX_SUFFIXES},
    **{suffix: _read_long_csv for suffix in CSV_SUFFIXES},
    **{suffix: _read_label_studio for suffix in JSON_SUFFIXES},
}


def _read_inputs(paths: list[Path], problems: _Problems, allow_missing: bool) -> list[_Rating]:
    """Every rating of every input file, each file read by the reader of its suffix."""
    ratings: list[_Rating] = []
    if not paths:
        problems.add("ratings", "no ratings files given")
    for path in map(Path, paths):
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            problems.add(str(path), "unsupported file type (expected .xlsx, .csv or a Label Studio .json export)")
        elif not path.is_file():
            problems.add(str(path), "no such file")
        else:
            ratings += reader(path, problems, allow_missing)
    return ratings


def _known_ratings(ratings: list[_Rating], card_ids: list[str] | None, problems: _Problems) -> list[_Rating]:
    """The ratings of cards in ``cards.jsonl``; each card row with an unknown id is reported once."""
    if card_ids is None:
        return ratings
    known = set(card_ids)
    reported: set[str] = set()
    for rating in ratings:
        if rating.card_id not in known and rating.row_place not in reported:
            reported.add(rating.row_place)
            problems.add(rating.row_place, f"unknown card id {rating.card_id!r} (not in {CARDS_FILE})")
    return [rating for rating in ratings if rating.card_id in known]


def _by_triple(ratings: list[_Rating]) -> dict[tuple[str, str, str], list[_Rating]]:
    """The ratings grouped by (card_id, rater, criterion)."""
    groups: dict[tuple[str, str, str], list[_Rating]] = defaultdict(list)
    for rating in ratings:
        groups[(rating.card_id, rating.rater, rating.criterion)].append(rating)
    return groups


def _report_duplicates(by_triple: dict[tuple[str, str, str], list[_Rating]], problems: _Problems) -> None:
    """One problem per card row rated twice by one rater, naming the criteria and both places."""
    duplicated: dict[tuple[str, str, tuple[str, ...]], list[str]] = defaultdict(list)
    for (card_id, rater, criterion), group in by_triple.items():
        if len(group) > 1:
            duplicated[(card_id, rater, tuple(dict.fromkeys(r.row_place for r in group)))].append(criterion)
    for (card_id, rater, places), criteria in duplicated.items():
        problems.add(
            places[-1] if len(places) > 1 else places[0],
            f"duplicated rating of card {card_id} by rater {rater!r} ({', '.join(criteria)}); "
            f"also at {'; '.join(places[:-1]) if len(places) > 1 else 'the same place'}",
        )


def _missing_ratings(
    ratings: list[_Rating],
    by_triple: dict[tuple[str, str, str], list[_Rating]],
    card_ids: list[str],
    problems: _Problems,
    allow_missing: bool,
) -> list[_Rating]:
    """Every rater present must rate every card on every criterion: NA rows, or problems."""
    files_of: dict[str, list[str]] = defaultdict(list)
    for rating in ratings:
        if rating.source not in files_of[rating.rater]:
            files_of[rating.rater].append(rating.source)
    missing_rows: list[_Rating] = []
    for rater in sorted(files_of):
        for card_id in card_ids:
            absent = [key for key in CRITERION_KEYS if (card_id, rater, key) not in by_triple]
            if not absent:
                continue
            if allow_missing:
                missing_rows += [_Rating(card_id, rater, key, None, "", "", "", "") for key in absent]
            else:
                problems.add(
                    f"rater {rater!r} ({', '.join(files_of[rater])})",
                    f"missing score: no rating of card {card_id} ({', '.join(absent)})",
                )
    return missing_rows


def _long_frame(ratings: list[_Rating], card_ids: list[str] | None) -> pd.DataFrame:
    """The long table, sorted by rater, then card (``cards.jsonl`` order), then criterion."""
    order = {card_id: index for index, card_id in enumerate(card_ids or [])}
    criterion_order = {key: index for index, key in enumerate(CRITERION_KEYS)}
    rows = sorted(
        ratings,
        key=lambda r: (r.rater, order.get(r.card_id, len(order)), r.card_id, criterion_order[r.criterion]),
    )
    frame = pd.DataFrame(
        {
            "card_id": pd.Series([r.card_id for r in rows], dtype=object),
            "rater": pd.Series([r.rater for r in rows], dtype=object),
            "criterion": pd.Series([r.criterion for r in rows], dtype=object),
            "score": pd.array([r.score for r in rows], dtype="Int64"),
            "observation": pd.Series([r.observation for r in rows], dtype=object),
        },
        columns=list(LONG_COLUMNS),
    )
    frame.attrs["missing"] = int(frame["score"].isna().sum())
    return frame


def read_ratings(
    paths: list[Path],
    cards_path: Path,
    key_path: Path,
    allow_missing: bool = False,
) -> pd.DataFrame:
    """The validated long table (``LONG_COLUMNS``) of all ratings in ``paths``.

    ``paths`` mixes rater workbooks (``.xlsx``), long CSV files (``.csv``) and Label Studio JSON
    exports (``.json``). Raises :class:`RatingsError` listing every problem with its place:
    unreadable file, score not an integer 1-5, missing score (unless ``allow_missing``),
    duplicated (card_id, rater, criterion), unknown card id, unknown criterion, key mismatch.
    Rows are sorted by rater, then card (``cards.jsonl`` order), then criterion.
    """
    problems = _Problems()
    card_ids = _read_card_ids(Path(cards_path), problems)
    _check_key(Path(key_path), card_ids, problems)
    ratings = _known_ratings(_read_inputs(paths, problems, allow_missing), card_ids, problems)
    by_triple = _by_triple(ratings)
    _report_duplicates(by_triple, problems)
    missing_rows = _missing_ratings(ratings, by_triple, card_ids, problems, allow_missing) if card_ids is not None else []
    if problems:
        raise RatingsError(problems)
    return _long_frame(ratings + missing_rows, card_ids)


def write_ratings(df: pd.DataFrame, path: Path) -> Path:
    """The canonical long CSV (header ``LONG_COLUMNS``; an NA score is an empty field), atomically."""
    absent = [column for column in LONG_COLUMNS if column not in df.columns]
    if absent:
        raise ValueError(f"ratings table lacks column(s) {absent}; expected {list(LONG_COLUMNS)}")
    path = Path(path)
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(LONG_COLUMNS)
        for card_id, rater, criterion, score, observation in df.loc[:, list(LONG_COLUMNS)].itertuples(index=False):
            writer.writerow([card_id, rater, criterion, "" if pd.isna(score) else int(score), _text(observation)])
    return path


def ratings_command(
    inputs: Annotated[list[Path], typer.Argument(help="Filled rater .xlsx, long .csv and Label Studio .json exports")],
    study_dir: Annotated[Path, typer.Option("--study-dir", "-s", help=f"Study folder holding {CARDS_FILE} and {KEY_FILE}")],
    out: Annotated[Path | None, typer.Option(help=f"Long CSV to write; default: <study-dir>/{RATINGS_FILE}")] = None,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Keep empty scores as NA (a study in progress)")] = False,
) -> None:
    """Validate the ratings and write the canonical long CSV (prints counts only)."""
    study_dir = Path(study_dir)
    try:
        frame = read_ratings(inputs, study_dir / CARDS_FILE, study_dir / KEY_FILE, allow_missing=allow_missing)
    except RatingsError as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    target = write_ratings(frame, out or study_dir / RATINGS_FILE)
    typer.echo(
        f"{len(frame)} ratings ({frame['card_id'].nunique()} cards, {frame['rater'].nunique()} raters, "
        f"{len(CRITERION_KEYS)} criteria), {frame.attrs['missing']} missing -> {target}"
    )
