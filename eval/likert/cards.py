"""Blind rating cards for the Likert study: completions -> cards, key, rater files, Label Studio.

A card is one completion of one excerpt, shown to raters without the model or the note id.
Card ids are random (``C`` + 8 hex digits from ``random.Random(seed)``), so they encode
neither. Cards of the same note are kept together (notes in a seeded shuffled order) and the
models' order inside each note is shuffled per note, so a card's position reveals nothing.
Everything is deterministic for a seed and independent of the order of ``completions.jsonl``.

Files written into the study folder (every one atomically):

* ``cards.jsonl``  card_id, note_index (1-based group number), excerpt, completion;
* ``key.csv``      card_id, note_id, model, position -- the key; raters never get it;
* ``ratings_template.csv``  the canonical long CSV with one empty score per card, rater, criterion;
* ``raters/<rater>.xlsx``   one workbook per rater (sheets Cards, Critérios, Instruções);
* ``label_studio/config.xml`` and ``label_studio/tasks.json``: the same study as a Label Studio project.
"""

from __future__ import annotations

import csv
import io
import random
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.jsonl import read_jsonl, write_jsonl
from medfactory.base.names import confined_path

from . import (
    CARDS_FILE,
    CRITERIA,
    KEY_FILE,
    LONG_COLUMNS,
    RATINGS_TEMPLATE_FILE,
    SCORES,
)

KEY_COLUMNS = ("card_id", "note_id", "model", "position")

RATERS_DIR = "raters"
LABEL_STUDIO_DIR = "label_studio"
LABEL_STUDIO_CONFIG = "config.xml"
LABEL_STUDIO_TASKS = "tasks.json"

# The rater workbook.
CARDS_SHEET = "Cards"
CRITERIA_SHEET = "Critérios"
INSTRUCTIONS_SHEET = "Instruções"
CARD_ID_HEADER = "card_id"
EXCERPT_HEADER = "excerpt"
COMPLETION_HEADER = "completion"
OBSERVATION_HEADER = "Observações"
RATER_LABEL = "Avaliador(a) / Rater"
RATER_CELL = "B1"  # on the Instruções sheet, beside RATER_LABEL in A1: the rater's name
# Label Studio control names: the criterion keys, plus the observations TextArea.
OBSERVATION_CONTROL = "observation"

SCALE_LABELS = {
    1: "Muito ruim / Very poor",
    2: "Ruim / Poor",
    3: "Aceitável / Acceptable",
    4: "Bom / Good",
    5: "Excelente / Excellent",
}

_RATER_NAME = re.compile(r"^\w[\w.-]*$")


# --------------------------------------------------------------------------------------------
# Reading completions and cards
# --------------------------------------------------------------------------------------------


def read_cards(path: Path) -> list[dict[str, Any]]:
    """The cards of ``cards.jsonl``, in file order (ValueError naming file and line on a bad line)."""
    return read_jsonl(path)


# --------------------------------------------------------------------------------------------
# Building the cards
# --------------------------------------------------------------------------------------------


def _record_problems(number: int, record: Any) -> list[str]:
    """The problems of one completion record on its own (missing or non-string fields)."""
    if not isinstance(record, dict):
        return [f"record {number}: expected an object, got {type(record).__name__}"]
    where = f"record {number}"
    problems: list[str] = []
    for field in ("note_id", "model"):
        value = record.get(field)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: '{field}' is missing or empty")
    for field in ("excerpt", "completion"):
        if not isinstance(record.get(field), str):
            problems.append(f"{where}: '{field}' is missing or not a string")
    return problems


def _missing_model_problems(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """One line per note that lacks a completion of some model seen elsewhere."""
    pairs = list(pairs)
    models = sorted({model for _, model in pairs})
    by_note: dict[str, set[str]] = defaultdict(set)
    for note, model in pairs:
        by_note[note].add(model)
    problems: list[str] = []
    for note in sorted(by_note):
        missing = [model for model in models if model not in by_note[note]]
        if missing:
            problems.append(f"note '{note}': no completion for model(s) {', '.join(missing)}")
    return problems


def _check_completions(completions: list[dict]) -> list[str]:
    """Every problem of the completions, one line each (empty when they are fine)."""
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    excerpts: dict[str, str] = {}
    for number, record in enumerate(completions, start=1):
        record_problems = _record_problems(number, record)
        if record_problems:
            problems += record_problems
            continue
        note, model = record["note_id"], record["model"]
        where = f"record {number} (note '{note}', model '{model}')"
        if (note, model) in seen:
            problems.append(f"{where}: duplicated (note, model) pair, first seen in record {seen[(note, model)]}")
        else:
            seen[(note, model)] = number
        if not record["completion"].strip():
            problems.append(f"{where}: empty completion")
        if not record["excerpt"].strip():
            problems.append(f"{where}: empty excerpt")
        elif note in excerpts and excerpts[note] != record["excerpt"]:
            problems.append(f"{where}: excerpt differs from the other models' excerpt of this note")
        else:
            excerpts.setdefault(note, record["excerpt"])
    problems += _missing_model_problems(seen)
    if not completions:
        problems.append("no completions at all")
    return problems


def new_card_id(rng: random.Random, used: set[str]) -> str:
    """A fresh random card id (``C`` + 8 hex digits) not in ``used``, which it joins: ids encode neither note nor model."""
    card_id = f"C{rng.getrandbits(32):08x}"
    while card_id in used:
        card_id = f"C{rng.getrandbits(32):08x}"
    used.add(card_id)
    return card_id


def build_cards(completions: list[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Blind cards and their key, deterministically for ``seed``.

    Returns ``(cards, key)``: cards ``{"card_id", "excerpt", "completion"}`` in presentation
    order (grouped by note) and key rows ``{"card_id", "note_id", "model", "position"}`` in the
    same order (``position`` is 1-based within the note). Raises ValueError listing every
    problem: a note without a completion for some model, a duplicated (note, model) pair, an
    empty completion or excerpt, or excerpts of one note that differ between models.
    """
    problems = _check_completions(completions)
    if problems:
        raise ValueError("cannot build cards from these completions:\n" + "\n".join(problems))
    rng = random.Random(seed)
    by_note: dict[str, dict[str, dict]] = defaultdict(dict)
    for record in completions:
        by_note[record["note_id"]][record["model"]] = record
    notes = sorted(by_note)
    rng.shuffle(notes)
    cards: list[dict] = []
    key: list[dict] = []
    used: set[str] = set()
    for note in notes:
        models = sorted(by_note[note])
        rng.shuffle(models)
        for position, model in enumerate(models, start=1):
            card_id = new_card_id(rng, used)
            record = by_note[note][model]
            cards.append({"card_id": card_id, "excerpt": record["excerpt"], "completion": record["completion"]})
            key.append({"card_id": card_id, "note_id": note, "model": model, "position": position})
    return cards, key


def _note_indexes(key: list[dict]) -> dict[str, int]:
    """card_id -> 1-based number of its note in presentation order."""
    numbers: dict[str, int] = {}
    result: dict[str, int] = {}
    for row in key:
        numbers.setdefault(row["note_id"], len(numbers) + 1)
        result[row["card_id"]] = numbers[row["note_id"]]
    return result


# --------------------------------------------------------------------------------------------
# Rater files
# --------------------------------------------------------------------------------------------


def parse_raters(raters: str | list[str]) -> list[str]:
    """Rater names from a comma-separated string or a list; ValueError on bad or repeated names.

    A name becomes a file name (``raters/<name>.xlsx``) and the ``rater`` column of the ratings,
    so it is letters, digits, ``_``, ``.`` and ``-`` (accents allowed), not starting with ``.``
    or ``-``, and unique regardless of case.
    """
    names = [name.strip() for name in (raters.split(",") if isinstance(raters, str) else raters)]
    names = [unicodedata.normalize("NFC", name) for name in names if name]
    problems = [
        f"rater name {name!r}: use letters, digits, '_', '.' or '-' (e.g. ana_souza)"
        for name in names
        if not _RATER_NAME.match(name)
    ]
    folded: dict[str, str] = {}
    for name in names:
        if name.casefold() in folded:
            problems.append(f"rater name {name!r} repeats {folded[name.casefold()]!r} (names must differ regardless of case)")
        folded.setdefault(name.casefold(), name)
    if not names:
        problems.append("no rater names given")
    if problems:
        raise ValueError("\n".join(problems))
    return names


def cell_text(text: str) -> str:
    """Text a worksheet cell accepts: model output can hold control characters XLSX forbids."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    return ILLEGAL_CHARACTERS_RE.sub("\ufffd", text)


# The Instruções sheet: numbered (Portuguese, English) pairs, one row each.
INSTRUCTION_LINES: tuple[tuple[str, str], ...] = (
    (
        ("Estudo cego: cada continuação foi escrita por um de vários sistemas, e você não sabe qual. "
         "Não tente adivinhar; avalie só o texto."),
        ("Blind study: each continuation was written by one of several systems and you do not know which. "
         "Do not try to guess; rate the text only."),
    ),
    (
        (f"Cada linha da planilha {CARDS_SHEET} é um cartão: o início de uma nota clínica ({EXCERPT_HEADER}) e "
         f"uma continuação ({COMPLETION_HEADER}). Avalie a continuação, considerando o início."),
        (f"Each row of the {CARDS_SHEET} sheet is one card: the start of a clinical note ({EXCERPT_HEADER}) and "
         f"a continuation ({COMPLETION_HEADER}). Rate the continuation, given the start."),
    ),
    (
        (f"Dê uma nota de 1 a 5 (número inteiro) para cada critério em cada cartão; as definições estão na "
         f"planilha {CRITERIA_SHEET}."),
        (f"Give one score from 1 to 5 (whole number) per criterion per card; definitions are on the "
         f"{CRITERIA_SHEET} sheet."),
    ),
    (
        "Cartões do mesmo início de nota aparecem juntos (mesma cor de fundo); avalie cada continuação por si.",
        "Cards of the same note start are grouped (same background); rate each continuation on its own.",
    ),
    (
        f"A coluna {OBSERVATION_HEADER} é opcional.",
        f"The {OBSERVATION_HEADER} (observations) column is optional.",
    ),
    (
        ("Não altere card_id, o início nem a continuação; não renomeie nem apague colunas. Salve como .xlsx e "
         "devolva o arquivo."),
        ("Do not edit card_id, the start or the continuation; do not rename or delete columns. Save as .xlsx "
         "and send the file back."),
    ),
)


class _Styles(NamedTuple):
    """The few cell styles of the rater workbook."""

    wrap_top: Any
    bold: Any
    header_fill: Any
    group_fill: Any


def _workbook_styles() -> _Styles:
    from openpyxl.styles import Alignment, Font, PatternFill

    return _Styles(
        wrap_top=Alignment(wrap_text=True, vertical="top"),
        bold=Font(bold=True),
        header_fill=PatternFill("solid", start_color="DDEBF7"),
        group_fill=PatternFill("solid", start_color="F2F2F2"),
    )


def _score_validation(n_cards: int) -> Any:
    """Score cells accept a whole number 1-5 (or nothing), with a bilingual prompt and error."""
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    first, last = get_column_letter(4), get_column_letter(3 + len(CRITERIA))
    validation = DataValidation(
        type="whole",
        operator="between",
        formula1=str(min(SCORES)),
        formula2=str(max(SCORES)),
        allow_blank=True,
        showErrorMessage=True,
        errorStyle="stop",
        errorTitle="Nota inválida / Invalid score",
        error="Use um número inteiro de 1 a 5.\nUse a whole number from 1 to 5.",
        showInputMessage=True,
        promptTitle="Nota 1–5 / Score 1–5",
        prompt="1 = muito ruim / very poor ... 5 = excelente / excellent",
    )
    validation.add(f"{first}2:{last}{max(n_cards + 1, 2)}")
    return validation


def _fill_cards_sheet(sheet: Any, cards: list[dict], note_indexes: dict[str, int], styles: _Styles) -> None:
    """One row per card (no model, no note id), the criteria as score columns, notes shaded in turn."""
    from openpyxl.comments import Comment
    from openpyxl.utils import get_column_letter

    sheet.title = CARDS_SHEET
    headers = [CARD_ID_HEADER, EXCERPT_HEADER, COMPLETION_HEADER, *(c.name for c in CRITERIA), OBSERVATION_HEADER]
    sheet.append(headers)
    for column in range(1, len(headers) + 1):
        cell = sheet.cell(row=1, column=column)
        cell.font = styles.bold
        cell.fill = styles.header_fill
        cell.alignment = styles.wrap_top
    for offset, criterion in enumerate(CRITERIA):
        sheet.cell(row=1, column=4 + offset).comment = Comment(f"{criterion.question}\n(1–5)", "medfactory")
    for row_number, card in enumerate(cards, start=2):
        sheet.append([card["card_id"], cell_text(card["excerpt"]), cell_text(card["completion"]), *([None] * len(CRITERIA)), None])
        shaded = note_indexes[card["card_id"]] % 2 == 0
        for column in range(1, len(headers) + 1):
            cell = sheet.cell(row=row_number, column=column)
            cell.alignment = styles.wrap_top
            if shaded:
                cell.fill = styles.group_fill
    widths = [13, 60, 60, *([20] * len(CRITERIA)), 40]
    for column, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(column)].width = width
    sheet.row_dimensions[1].height = 45
    sheet.freeze_panes = "B2"
    sheet.add_data_validation(_score_validation(len(cards)))


def _fill_criteria_sheet(sheet: Any, styles: _Styles) -> None:
    """The criteria with their definitions, then the meaning of each scale point."""
    sheet.append(["Critério / Criterion", "Definição / Definition"])
    for criterion in CRITERIA:
        sheet.append([criterion.name, criterion.question])
    sheet.append([])
    sheet.append(["Escala / Scale", "Significado / Meaning"])
    scale_header_row = sheet.max_row
    for score in SCORES:
        sheet.append([score, SCALE_LABELS.get(score, "")])
    for row in sheet.iter_rows():
        for cell in row:
            cell.alignment = styles.wrap_top
    for row_number in (1, scale_header_row):
        for cell in sheet[row_number]:
            cell.font = styles.bold
            cell.fill = styles.header_fill
    sheet.column_dimensions["A"].width = 40
    sheet.column_dimensions["B"].width = 100


def _fill_instructions_sheet(sheet: Any, rater: str, styles: _Styles) -> None:
    """The rater's name (read back by the ratings reader) and the numbered instructions."""
    sheet["A1"] = RATER_LABEL
    sheet[RATER_CELL] = rater
    sheet["A1"].font = styles.bold
    sheet["A3"] = "Instruções"
    sheet["B3"] = "Instructions"
    sheet["A3"].font = styles.bold
    sheet["B3"].font = styles.bold
    for number, (portuguese, english) in enumerate(INSTRUCTION_LINES, start=1):
        sheet.append([f"{number}. {portuguese}", f"{number}. {english}"])
    for row in sheet.iter_rows(min_row=4):
        for cell in row:
            cell.alignment = styles.wrap_top
    sheet.column_dimensions["A"].width = 70
    sheet.column_dimensions["B"].width = 70


def rater_workbook_bytes(cards: list[dict], note_indexes: dict[str, int], rater: str) -> bytes:
    """The XLSX a rater fills in: sheets Cards, Critérios and Instruções (no model, no note id)."""
    from openpyxl import Workbook

    styles = _workbook_styles()
    workbook = Workbook()
    _fill_cards_sheet(workbook.active, cards, note_indexes, styles)
    _fill_criteria_sheet(workbook.create_sheet(CRITERIA_SHEET), styles)
    _fill_instructions_sheet(workbook.create_sheet(INSTRUCTIONS_SHEET), rater, styles)
    workbook.properties.creator = "medfactory"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def workbook_has_values(path: Path, sheet: str, columns: set[str]) -> bool:
    """Whether ``sheet`` of a workbook holds a non-blank value under any header in ``columns``.

    True when the file cannot be read or lacks the sheet: a caller about to overwrite it must keep it.
    """
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception:
        return True
    try:
        if sheet not in workbook.sheetnames:
            return True
        rows = workbook[sheet].iter_rows(values_only=True)
        header = next(rows, ())
        indexes = [index for index, name in enumerate(header) if isinstance(name, str) and name.strip() in columns]
        return any(index < len(row) and row[index] is not None and str(row[index]).strip() for row in rows for index in indexes)
    finally:
        workbook.close()


def has_filled_scores(path: Path) -> bool:
    """Whether a rater workbook already holds a score or observation (True if unreadable)."""
    return workbook_has_values(path, CARDS_SHEET, {c.name for c in CRITERIA} | {OBSERVATION_HEADER})


# --------------------------------------------------------------------------------------------
# Label Studio
# --------------------------------------------------------------------------------------------


def label_studio_config() -> str:
    """The labeling config: excerpt and completion as Text, one single-radio Choices 1-5 per
    criterion (named by the criterion key) and a TextArea for observations.

    Choices rather than Rating: the export then holds the score as the literal chosen value
    (``value.choices == ["4"]``), each scale point is visibly numbered, "no answer" is an
    absent result rather than a 0 default, and ``required`` blocks submitting a card with a
    criterion left out. The ratings reader also accepts ``value.rating`` should the config be
    changed to Rating tags.
    """
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="$card_id", size="6")
    ET.SubElement(view, "Header", value="Início da nota / Note start", size="5")
    ET.SubElement(view, "Text", name="excerpt", value="$excerpt")
    ET.SubElement(view, "Header", value="Continuação a avaliar / Continuation to rate", size="5")
    ET.SubElement(view, "Text", name="completion", value="$completion")
    for criterion in CRITERIA:
        block = ET.SubElement(view, "View")
        ET.SubElement(block, "Header", value=criterion.name, size="5")
        ET.SubElement(block, "Header", value=criterion.question, size="6")
        choices = ET.SubElement(
            block,
            "Choices",
            name=criterion.key,
            toName="completion",
            choice="single-radio",
            showInline="true",
            required="true",
            requiredMessage=f"Dê uma nota de 1 a 5 / Give a score from 1 to 5: {criterion.name}",
        )
        for score in SCORES:
            ET.SubElement(choices, "Choice", value=str(score))
    ET.SubElement(view, "Header", value="Observações (opcional) / Observations (optional)", size="5")
    ET.SubElement(
        view,
        "TextArea",
        name=OBSERVATION_CONTROL,
        toName="completion",
        rows="3",
        editable="true",
        maxSubmissions="1",
        placeholder="Opcional / Optional",
    )
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="unicode") + "\n"


def label_studio_tasks(cards: list[dict]) -> list[dict]:
    """Label Studio tasks, one per card, in presentation order."""
    return [{"data": {"card_id": c["card_id"], "excerpt": c["excerpt"], "completion": c["completion"]}} for c in cards]


# --------------------------------------------------------------------------------------------
# Writing the study
# --------------------------------------------------------------------------------------------


def csv_text(header: tuple[str, ...] | list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _study_paths(out_dir: Path) -> dict[str, Path]:
    """The files of a study folder, rater workbooks aside."""
    return {
        "cards": out_dir / CARDS_FILE,
        "key": out_dir / KEY_FILE,
        "template": out_dir / RATINGS_TEMPLATE_FILE,
        "label_studio_config": out_dir / LABEL_STUDIO_DIR / LABEL_STUDIO_CONFIG,
        "label_studio_tasks": out_dir / LABEL_STUDIO_DIR / LABEL_STUDIO_TASKS,
    }


def _refuse_study_in_progress(key_path: Path, key_text: str, rater_paths: list[Path]) -> None:
    """FileExistsError when a different key or a rater workbook with scores would be replaced."""
    conflicts = []
    if key_path.exists() and key_path.read_text(encoding="utf-8") != key_text:
        conflicts.append(f"{key_path} holds a different key (other completions or seed)")
    conflicts += [f"{path} already holds scores" for path in rater_paths if path.exists() and has_filled_scores(path)]
    if conflicts:
        raise FileExistsError(
            "refusing to overwrite a study in progress (use a new folder, or force=True / --force):\n"
            + "\n".join(conflicts)
        )


def write_study(
    completions_path: Path,
    out_dir: Path,
    raters: list[str] | str,
    seed: int = 0,
    force: bool = False,
) -> dict[str, Any]:
    """Write the blind study for ``completions_path`` into ``out_dir``; return a summary.

    Everything is built and checked in memory before the first file is written, and each file
    is written atomically. Without ``force`` it refuses to replace a different ``key.csv``
    (ratings collected under it would no longer match) or a rater workbook that already holds
    scores.
    """
    out_dir = Path(out_dir)
    rater_names = parse_raters(raters)
    completions = read_jsonl(Path(completions_path))
    cards, key = build_cards(completions, seed=seed)
    note_indexes = _note_indexes(key)

    key_text = csv_text(KEY_COLUMNS, [[row[column] for column in KEY_COLUMNS] for row in key])
    card_records = [
        {"card_id": c["card_id"], "note_index": note_indexes[c["card_id"]], "excerpt": c["excerpt"], "completion": c["completion"]}
        for c in cards
    ]
    template_text = csv_text(
        LONG_COLUMNS,
        [[c["card_id"], rater, criterion.key, "", ""] for rater in rater_names for c in cards for criterion in CRITERIA],
    )
    workbooks = {rater: rater_workbook_bytes(cards, note_indexes, rater) for rater in rater_names}

    paths = _study_paths(out_dir)
    rater_paths = {rater: confined_path(out_dir / RATERS_DIR, f"{rater}.xlsx", what="rater name") for rater in rater_names}

    if not force:
        _refuse_study_in_progress(paths["key"], key_text, list(rater_paths.values()))

    with atomic_write(paths["key"]) as handle:
        handle.write(key_text)
    write_jsonl(paths["cards"], card_records)
    with atomic_write(paths["template"]) as handle:
        handle.write(template_text)
    for rater, path in rater_paths.items():
        with atomic_write(path, mode="wb") as handle:
            handle.write(workbooks[rater])
    with atomic_write(paths["label_studio_config"]) as handle:
        handle.write(label_studio_config())
    write_json_atomic(paths["label_studio_tasks"], label_studio_tasks(cards))

    return {
        "seed": seed,
        "notes": len({row["note_id"] for row in key}),
        "models": len({row["model"] for row in key}),
        "cards": len(cards),
        "raters": rater_names,
        "criteria": len(CRITERIA),
        "template_rows": len(rater_names) * len(cards) * len(CRITERIA),
        "paths": {name: str(path) for name, path in paths.items()},
        "rater_files": {rater: str(path) for rater, path in rater_paths.items()},
    }


def cards_command(
    completions: Annotated[Path, typer.Argument(help="completions.jsonl (note_id, model, excerpt, completion, reference)")],
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="Study folder to write the cards, key and rater files into")],
    raters: Annotated[str, typer.Option(help="Comma-separated rater names, e.g. ana,bruno,carla")],
    seed: Annotated[int, typer.Option(help="Seed of the card ids and of the presentation order")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a different key or filled rater files")] = False,
) -> None:
    """Blind cards, key, rater workbooks, long-CSV template and Label Studio project (prints counts only)."""
    try:
        summary = write_study(completions, out_dir, raters, seed=seed, force=force)
    except (ValueError, FileExistsError, OSError) as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"{summary['cards']} cards ({summary['notes']} notes x {summary['models']} models), "
        f"{len(summary['raters'])} raters, {summary['template_rows']} template rows, seed {summary['seed']}"
    )
    typer.echo(f"cards: {summary['paths']['cards']}")
    typer.echo(f"key (never give it to raters): {summary['paths']['key']}")
    typer.echo(f"template: {summary['paths']['template']}")
    typer.echo(f"rater workbooks: {Path(out_dir) / RATERS_DIR}")
    typer.echo(f"Label Studio: {summary['paths']['label_studio_config']}, {summary['paths']['label_studio_tasks']}")
