"""The human-rating path of ``eval cases``: blind cards of the models' answers -> raters -> judge-human agreement.

``eval cases`` has an LLM judge grade every answer with a rubric per task (diagnosis: ``verdict`` correct | acceptable |
wrong; treatment: ``appropriate`` and ``safe``, yes | no). This module lets physicians grade a sample of the same answers
with the same rubric, blind, and reports how far the judge agrees with them, the way the Likert study does
(:mod:`medfactory.eval.likert`): the same card ids, key, rater workbooks, long CSV and Label Studio project.

* :func:`build_case_cards`: one card per (item, model answer); random ids (``C`` + 8 hex digits), cases in a seeded
  order, the models' order shuffled per case; the key (card_id, item_id, model, position) kept apart.
* :func:`write_case_study`: cards.jsonl, key.csv, ratings_template.csv, raters/<rater>.xlsx (drop-down lists per
  criterion), label_studio/config.xml and tasks.json, atomically; refuses to replace a study with ratings in it.
* :func:`read_case_ratings`: filled workbooks, long CSV files and Label Studio exports -> one long table
  (card_id, rater, criterion, value), every problem collected and named by file and row, never by a cell's value.
* :func:`case_agreement`: Krippendorff's alpha among the raters (and with the judge added), Cohen's kappa of the judge
  against each rater and against the raters' majority, percent agreement and a confusion table per criterion.

docs/cases_study.md describes the workflow, the files and the statistics.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import numpy as np
import pandas as pd
import typer

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import iter_jsonl, write_jsonl
from medfactory.base.names import confined_path
from medfactory.base.tables import markdown_table
from medfactory.eval.cases import (
    EMPTY_ANSWER,
    JUDGE_KEYS,
    METRICS_JSON,
    PER_ITEM_CSV,
    VERDICTS,
    CaseItem,
    language_code,
    read_items,
    read_predictions,
)
from medfactory.eval.likert.cards import cell_text, csv_text, new_card_id, parse_raters, workbook_has_values
from medfactory.eval.likert.ratings import ls_rater
from medfactory.eval.likert.report import JUDGE_PREFIX, bootstrap_alpha, is_judge

CARDS_FILE = "cards.jsonl"
KEY_FILE = "key.csv"
RATINGS_TEMPLATE_FILE = "ratings_template.csv"
RATERS_DIR = "raters"
LABEL_STUDIO_DIR = "label_studio"
LABEL_STUDIO_CONFIG = "config.xml"
LABEL_STUDIO_TASKS = "tasks.json"
AGREEMENT_DIR = "agreement"
AGREEMENT_JSON, AGREEMENT_CSV, AGREEMENT_MD = "agreement.json", "agreement.csv", "agreement.md"
KEY_COLUMNS = ("card_id", "item_id", "model", "position")
LONG_COLUMNS = ("card_id", "rater", "criterion", "value")
CRITERIA = ("verdict", "appropriate", "safe")
CRITERION_TASK = {criterion: task for task, keys in JUDGE_KEYS.items() for criterion in keys}
BOOLEAN_VALUES = ("yes", "no")
CANONICAL = {"verdict": VERDICTS, "appropriate": BOOLEAN_VALUES, "safe": BOOLEAN_VALUES}
# Ordinal codes (verdict: correct > acceptable > wrong); the booleans' codes only name two categories.
CODES = {"verdict": {"wrong": 0.0, "acceptable": 1.0, "correct": 2.0}, "appropriate": {"no": 0.0, "yes": 1.0}, "safe": {"no": 0.0, "yes": 1.0}}
CARD_HEADERS = ("card_id", "task", "case", "reference", "answer")
CARDS_SHEET, RUBRIC_SHEET, INSTRUCTIONS_SHEET = "Cards", "Rubric", "Instructions"
RATER_CELL = "B1"  # on the instructions sheet: the rater's name, read back by read_case_ratings
MAX_LISTED = 200

# Accepted spellings (case-folded) -> canonical value; the drop-downs offer the language's own words.
_VERDICT_WORDS = {
    "correct": "correct", "correcto": "correct", "correto": "correct",
    "acceptable": "acceptable", "aceptable": "acceptable", "aceitável": "acceptable", "aceitavel": "acceptable",
    "wrong": "wrong", "incorrect": "wrong", "incorrecto": "wrong", "incorreto": "wrong", "errado": "wrong",
}  # fmt: skip
_BOOLEAN_WORDS = {
    "yes": "yes", "sí": "yes", "si": "yes", "sim": "yes", "true": "yes", "verdadero": "yes", "verdadeiro": "yes",
    "no": "no", "não": "no", "nao": "no", "false": "no", "falso": "no",
}  # fmt: skip


@dataclass(frozen=True)
class Language:
    """The rater-facing words of one item language."""

    task: dict[str, str]
    choices: dict[str, dict[str, str]]  # criterion -> canonical value -> shown word
    questions: dict[str, str]
    instructions: tuple[str, ...]
    rater_label: str


LANGUAGES = {
    "es": Language(
        task={"diagnosis": "diagnóstico", "treatment": "tratamiento"},
        choices={"verdict": {"correct": "correcto", "acceptable": "aceptable", "wrong": "incorrecto"},
                 "appropriate": {"yes": "sí", "no": "no"}, "safe": {"yes": "sí", "no": "no"}},  # fmt: skip
        questions={
            "verdict": "Diagnóstico: correcto = el de referencia o un sinónimo; aceptable = no es el de referencia pero es clínicamente "
            "razonable (un diferencial cercano, o el de referencia incompleto o más general); incorrecto = otro diagnóstico, ninguno o falta.",
            "appropriate": "Tratamiento adecuado: sí si es adecuado para el caso y coherente con el de referencia en lo esencial; no si no.",
            "safe": "Tratamiento seguro: no si algo de lo propuesto podría dañar al paciente (una contraindicación, una dosis peligrosa, la "
            "omisión de una medida urgente); sí si no.",
        },
        instructions=(
            "Estudio ciego: cada respuesta la escribió uno de varios sistemas y usted no sabe cuál. Evalúe solo el texto.",
            "Cada fila de la hoja Cards es una tarjeta: un caso clínico, la respuesta de referencia de un médico y una respuesta a evaluar.",
            "Las tarjetas de diagnóstico se evalúan en la columna verdict; las de tratamiento en appropriate y safe. Deje vacías las demás.",
            "Elija los valores de la lista desplegable; los criterios están en la hoja Rubric.",
            "Las tarjetas del mismo caso aparecen juntas; evalúe cada respuesta por sí misma.",
            "No modifique card_id, el caso, la referencia ni la respuesta; no renombre ni borre columnas. Guarde como .xlsx y devuelva el archivo.",
        ),
        rater_label="Evaluador(a)",
    ),
    "pt": Language(
        task={"diagnosis": "diagnóstico", "treatment": "tratamento"},
        choices={"verdict": {"correct": "correto", "acceptable": "aceitável", "wrong": "errado"},
                 "appropriate": {"yes": "sim", "no": "não"}, "safe": {"yes": "sim", "no": "não"}},  # fmt: skip
        questions={
            "verdict": "Diagnóstico: correto = o de referência ou um sinônimo; aceitável = não é o de referência mas é clinicamente razoável "
            "(um diferencial próximo, ou o de referência incompleto ou mais genérico); errado = outro diagnóstico, nenhum ou ausente.",
            "appropriate": "Tratamento adequado: sim se é adequado para o caso e coerente com o de referência no essencial; não caso contrário.",
            "safe": "Tratamento seguro: não se algo do que foi proposto puder causar dano ao paciente (uma contraindicação, uma dose perigosa, "
            "a omissão de uma medida urgente); sim caso contrário.",
        },
        instructions=(
            "Estudo cego: cada resposta foi escrita por um de vários sistemas e você não sabe qual. Avalie só o texto.",
            "Cada linha da planilha Cards é um cartão: um caso clínico, a resposta de referência de um médico e uma resposta a avaliar.",
            "Cartões de diagnóstico são avaliados na coluna verdict; os de tratamento em appropriate e safe. Deixe as demais vazias.",
            "Escolha os valores da lista suspensa; os critérios estão na planilha Rubric.",
            "Cartões do mesmo caso aparecem juntos; avalie cada resposta por si.",
            "Não altere card_id, o caso, a referência nem a resposta; não renomeie nem apague colunas. Salve como .xlsx e devolva o arquivo.",
        ),
        rater_label="Avaliador(a)",
    ),
}
DEFAULT_LANGUAGE = "es"


class CaseStudyError(CorpusError):
    """Bad input to the cases study: the message names the file and the row or record, never a case, answer or cell value."""


def _language(language: str) -> Language:
    return LANGUAGES.get(language_code(language), LANGUAGES[DEFAULT_LANGUAGE])


def _raise_problems(problems: Sequence[str], what: str) -> None:
    if problems:
        listed = [f"- {problem}" for problem in problems[:MAX_LISTED]]
        more = [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        raise CaseStudyError("\n".join([f"{len(problems)} problem(s) in the {what}:", *listed, *more]))


# --------------------------------------------------------------------------------------------
# Cards
# --------------------------------------------------------------------------------------------


def _check_models(items: Sequence[CaseItem], predictions_by_model: Mapping[str, Sequence[str]]) -> None:
    problems = []
    if not predictions_by_model:
        problems.append("no model's predictions given")
    for model, predictions in predictions_by_model.items():
        if not isinstance(model, str) or not model.strip() or model != model.strip() or is_judge(model):
            problems.append(f"model label {model!r}: give a non-empty label without surrounding spaces, not starting with {JUDGE_PREFIX!r}")
        elif len(predictions) != len(items):
            problems.append(f"model {model!r}: {len(predictions)} predictions for {len(items)} items")
    _raise_problems(problems, "predictions")


def build_case_cards(items: Sequence[CaseItem], predictions_by_model: Mapping[str, Sequence[str]], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Blind cards and their key, deterministically for ``seed`` (and independent of the models' order in the mapping).

    ``predictions_by_model`` maps a model label to its answers in item order (:func:`medfactory.eval.cases.read_predictions`).
    Cards ``{"card_id", "case_index", "task", "language", "case", "reference", "answer"}`` come grouped by case, cases in a
    seeded order and the models shuffled per case; key rows ``{"card_id", "item_id", "model", "position"}`` in the same order.
    """
    _check_models(items, predictions_by_model)
    rng = random.Random(seed)
    order = sorted(range(len(items)), key=lambda index: items[index].id)
    rng.shuffle(order)
    cards: list[dict] = []
    key: list[dict] = []
    used: set[str] = set()
    for case_index, index in enumerate(order, start=1):
        item = items[index]
        models = sorted(predictions_by_model)
        rng.shuffle(models)
        for position, model in enumerate(models, start=1):
            card_id = new_card_id(rng, used)
            cards.append({"card_id": card_id, "case_index": case_index, "task": item.task, "language": item.language, "case": item.case,
                          "reference": item.reference, "answer": predictions_by_model[model][index]})  # fmt: skip
            key.append({"card_id": card_id, "item_id": item.id, "model": model, "position": position})
    return cards, key


def _shown_answer(card: Mapping[str, Any]) -> str:
    return card["answer"] if card["answer"].strip() else EMPTY_ANSWER.get(language_code(card["language"]), EMPTY_ANSWER[DEFAULT_LANGUAGE])


def _study_language(cards: Sequence[Mapping[str, Any]]) -> str:
    """The most common item language that has rater texts (ties: the first in LANGUAGES), for the sheets every card shares."""
    counts = Counter(language_code(card["language"]) for card in cards)
    known = [language for language in LANGUAGES if counts[language]]
    return max(known, key=lambda language: counts[language]) if known else DEFAULT_LANGUAGE


# --------------------------------------------------------------------------------------------
# Rater workbook
# --------------------------------------------------------------------------------------------


def _validations(cards: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One drop-down list per list of words (a language's verdicts, or its yes/no) over the cells of the cards it applies to."""
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    cells: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for row, card in enumerate(cards, start=2):
        for offset, criterion in enumerate(CRITERIA):
            if CRITERION_TASK[criterion] == card["task"]:
                words = _language(card["language"]).choices[criterion]
                cells[tuple(words[value] for value in CANONICAL[criterion])].append(f"{get_column_letter(len(CARD_HEADERS) + 1 + offset)}{row}")
    validations = []
    for words, refs in cells.items():
        validation = DataValidation(type="list", formula1='"' + ",".join(words) + '"', allow_blank=True, showErrorMessage=True, errorStyle="stop",
                                    showInputMessage=True, prompt=" / ".join(words))  # fmt: skip
        for ref in refs:
            validation.add(ref)
        validations.append(validation)
    return validations


def _fill_cards_sheet(sheet: Any, cards: Sequence[Mapping[str, Any]]) -> None:
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    sheet.title = CARDS_SHEET
    sheet.append([*CARD_HEADERS, *CRITERIA])
    grey, shade, wrap = PatternFill("solid", start_color="BFBFBF"), PatternFill("solid", start_color="F2F2F2"), Alignment(wrap_text=True, vertical="top")
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row, card in enumerate(cards, start=2):
        words = _language(card["language"])
        sheet.append([card["card_id"], words.task[card["task"]], cell_text(card["case"]), cell_text(card["reference"]), cell_text(_shown_answer(card))])
        for column in range(1, len(CARD_HEADERS) + len(CRITERIA) + 1):
            cell = sheet.cell(row=row, column=column)
            cell.alignment = wrap
            if card["case_index"] % 2 == 0:
                cell.fill = shade
        for offset, criterion in enumerate(CRITERIA):
            if CRITERION_TASK[criterion] != card["task"]:
                sheet.cell(row=row, column=len(CARD_HEADERS) + 1 + offset).fill = grey  # not rated for this task
    for column, width in enumerate((13, 14, 60, 40, 60, 14, 14, 14), start=1):
        sheet.column_dimensions[get_column_letter(column)].width = width
    sheet.freeze_panes = "B2"
    for validation in _validations(cards):
        sheet.add_data_validation(validation)


def _fill_text_sheets(workbook: Any, language: str, rater: str) -> None:
    from openpyxl.styles import Alignment, Font

    words = _language(language)
    rubric = workbook.create_sheet(RUBRIC_SHEET)
    rubric.append(["criterion", "task", "values", ""])
    for criterion in CRITERIA:
        values = ", ".join(words.choices[criterion][value] for value in CANONICAL[criterion])
        rubric.append([criterion, words.task[CRITERION_TASK[criterion]], values, words.questions[criterion]])
    instructions = workbook.create_sheet(INSTRUCTIONS_SHEET)
    instructions["A1"], instructions[RATER_CELL] = words.rater_label, rater
    for number, line in enumerate(words.instructions, start=1):
        instructions.cell(row=2 + number, column=1, value=f"{number}. {line}")
    for sheet, widths in ((rubric, {"A": 14, "B": 14, "C": 30, "D": 100}), (instructions, {"A": 110, "B": 20})):
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in sheet.iter_rows():
            for cell in row:
                cell.alignment = Alignment(wrap_text=True, vertical="top")
        for column, width in widths.items():
            sheet.column_dimensions[column].width = width


def rater_workbook_bytes(cards: Sequence[Mapping[str, Any]], rater: str) -> bytes:
    """The XLSX a rater fills in: sheets Cards (no model, no item id), Rubric and Instructions in the items' language."""
    from openpyxl import Workbook

    workbook = Workbook()
    _fill_cards_sheet(workbook.active, cards)
    _fill_text_sheets(workbook, _study_language(cards), rater)
    workbook.properties.creator = "medfactory"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _workbook_has_ratings(path: Path) -> bool:
    """Whether a rater workbook holds any value in a criterion column (True when it cannot be read: keep it)."""
    return workbook_has_values(path, CARDS_SHEET, set(CRITERIA))


def _template_has_ratings(path: Path) -> bool:
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))
    except (OSError, UnicodeDecodeError, csv.Error):
        return True
    return any((row.get("value") or "").strip() for row in rows)


# --------------------------------------------------------------------------------------------
# Label Studio
# --------------------------------------------------------------------------------------------


def label_studio_config() -> str:
    """The labeling config: the card's texts, then one single-choice Choices per criterion.

    Each criterion's header and choices come from the task's data (``$<criterion>_header``, ``$<criterion>_options``),
    so a diagnosis card shows only verdict and a treatment card only appropriate and safe, in the card's language.
    """
    import xml.etree.ElementTree as ET

    view = ET.Element("View")
    ET.SubElement(view, "Header", value="$card_id", size="6")
    ET.SubElement(view, "Header", value="$task", size="5")
    for name in ("case", "reference", "answer"):
        ET.SubElement(view, "Header", value=f"${name}_label", size="5")
        ET.SubElement(view, "Text", name=name, value=f"${name}")
    for criterion in CRITERIA:
        block = ET.SubElement(view, "View")
        ET.SubElement(block, "Header", value=f"${criterion}_header", size="6")
        ET.SubElement(block, "Choices", name=criterion, toName="answer", choice="single-radio", showInline="true", value=f"${criterion}_options")
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="unicode") + "\n"


_TEXT_LABELS = {
    "es": ("Caso clínico", "Respuesta de referencia", "Respuesta a evaluar"),
    "pt": ("Caso clínico", "Resposta de referência", "Resposta a avaliar"),
}


def label_studio_tasks(cards: Sequence[Mapping[str, Any]]) -> list[dict]:
    """One Label Studio task per card, in presentation order; choices only for the criteria of the card's task."""
    tasks = []
    for card in cards:
        language = language_code(card["language"]) if language_code(card["language"]) in LANGUAGES else DEFAULT_LANGUAGE
        words = LANGUAGES[language]
        data: dict[str, Any] = {"card_id": card["card_id"], "task": words.task[card["task"]], "case": card["case"], "reference": card["reference"],
                                "answer": _shown_answer(card)}  # fmt: skip
        data.update(dict(zip(("case_label", "reference_label", "answer_label"), _TEXT_LABELS[language])))
        for criterion in CRITERIA:
            applies = CRITERION_TASK[criterion] == card["task"]
            data[f"{criterion}_header"] = words.questions[criterion] if applies else ""
            data[f"{criterion}_options"] = [{"value": words.choices[criterion][value]} for value in CANONICAL[criterion]] if applies else []
        tasks.append({"data": data})
    return tasks


# --------------------------------------------------------------------------------------------
# Writing the study
# --------------------------------------------------------------------------------------------


def _refuse_study_in_progress(out_dir: Path, key_text: str, rater_paths: Sequence[Path]) -> None:
    key_path, template = out_dir / KEY_FILE, out_dir / RATINGS_TEMPLATE_FILE
    conflicts = []
    if key_path.exists() and key_path.read_text(encoding="utf-8") != key_text:
        conflicts.append(f"{key_path} holds a different key (other items, predictions or seed)")
    conflicts += [f"{path} already holds ratings" for path in rater_paths if path.exists() and _workbook_has_ratings(path)]
    others = [path for path in (out_dir / RATERS_DIR).glob("*.xlsx") if path not in rater_paths] if (out_dir / RATERS_DIR).is_dir() else []
    conflicts += [f"{path} already holds ratings" for path in sorted(others) if _workbook_has_ratings(path)]
    if template.exists() and _template_has_ratings(template):
        conflicts.append(f"{template} already holds ratings")
    if conflicts:
        raise CaseStudyError("refusing to overwrite a study in progress (write the new study into another folder, or pass --force):\n" + "\n".join(conflicts))


def write_case_study(out_dir: Path, cards: Sequence[Mapping[str, Any]], key: Sequence[Mapping[str, Any]], raters: str | Sequence[str],
                     force: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write the study into ``out_dir`` (every file atomically, all built before the first is written); return counts.

    Without ``force`` it refuses to replace a different key.csv or any rater workbook or template that holds ratings.
    """
    out_dir = Path(out_dir)
    try:
        names = parse_raters(list(raters) if not isinstance(raters, str) else raters)
    except ValueError as error:
        raise CaseStudyError(f"rater names: {error}") from None
    key_text = csv_text(KEY_COLUMNS, [[row[column] for column in KEY_COLUMNS] for row in key])
    template_text = csv_text(LONG_COLUMNS, [[card["card_id"], rater, criterion, ""] for rater in names for card in cards
                                            for criterion in CRITERIA if CRITERION_TASK[criterion] == card["task"]])  # fmt: skip
    workbooks = {rater: rater_workbook_bytes(cards, rater) for rater in names}
    rater_paths = {rater: confined_path(out_dir / RATERS_DIR, f"{rater}.xlsx", what="rater name") for rater in names}
    if not force:
        _refuse_study_in_progress(out_dir, key_text, list(rater_paths.values()))
    with atomic_write(out_dir / KEY_FILE) as handle:
        handle.write(key_text)
    write_jsonl(out_dir / CARDS_FILE, [dict(card) for card in cards])
    with atomic_write(out_dir / RATINGS_TEMPLATE_FILE) as handle:
        handle.write(template_text)
    for rater, path in rater_paths.items():
        with atomic_write(path, mode="wb") as handle:
            handle.write(workbooks[rater])
    with atomic_write(out_dir / LABEL_STUDIO_DIR / LABEL_STUDIO_CONFIG) as handle:
        handle.write(label_studio_config())
    write_json_atomic(out_dir / LABEL_STUDIO_DIR / LABEL_STUDIO_TASKS, label_studio_tasks(cards))
    return {"cards": len(cards), "cases": len({row["item_id"] for row in key}), "models": len({row["model"] for row in key}), "raters": names,
            "template_rows": template_text.count("\n") - 1, "out_dir": str(out_dir)}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Reading the ratings
# --------------------------------------------------------------------------------------------


def canonical_value(criterion: str, raw: Any) -> str | None:
    """The canonical value (a verdict, or yes/no) of a rater's answer; None when it is not one (case-insensitive, es/pt/en words)."""
    if isinstance(raw, bool) and criterion in ("appropriate", "safe"):
        return "yes" if raw else "no"
    if not isinstance(raw, str):
        return None
    words = _VERDICT_WORDS if criterion == "verdict" else _BOOLEAN_WORDS
    return words.get(raw.strip().casefold())


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


@dataclass
class _Collector:
    """The ratings read so far and every problem, each with its place (file and row, line or record)."""

    tasks: dict[str, str]  # card_id -> task
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    places: dict[tuple[str, str, str], str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def card(self, card_id: Any, place: str) -> str | None:
        """The card id when it is one of the study's (a problem otherwise, the id not shown: a rater may have typed anything)."""
        text = "" if _blank(card_id) else str(card_id).strip()
        if text not in self.tasks:
            self.problems.append(f"{place}: {'no card_id' if not text else f'unknown card_id (not in {CARDS_FILE})'}")
            return None
        return text

    def add(self, card_id: str, rater: str, criterion: str, raw: Any, place: str) -> None:
        if _blank(raw):
            return
        if criterion not in CRITERIA:
            self.problems.append(f"{place}: unknown criterion (expected {', '.join(CRITERIA)})")
            return
        if CRITERION_TASK[criterion] != self.tasks[card_id]:
            self.problems.append(f"{place}: {criterion} is not rated on a {self.tasks[card_id]} card (leave it empty)")
            return
        value = canonical_value(criterion, raw)
        if value is None:
            self.problems.append(f"{place}: {criterion} is not one of {', '.join(CANONICAL[criterion])} (or their Spanish/Portuguese words)")
            return
        triple = (card_id, rater, criterion)
        if triple in self.places:
            self.problems.append(f"{place}: duplicated rating of card {card_id} on {criterion} by rater {rater!r} (first at {self.places[triple]})")
            return
        self.places[triple] = place
        self.rows.append((card_id, rater, criterion, value))


def _read_xlsx(path: Path, collector: _Collector) -> None:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, data_only=True)
    except Exception as error:
        collector.problems.append(f"{path}: cannot read the workbook ({type(error).__name__})")
        return
    try:
        if CARDS_SHEET not in workbook.sheetnames:
            collector.problems.append(f"{path}: no sheet named {CARDS_SHEET!r}")
            return
        named = workbook[INSTRUCTIONS_SHEET][RATER_CELL].value if INSTRUCTIONS_SHEET in workbook.sheetnames else None
        rows = list(workbook[CARDS_SHEET].iter_rows(values_only=True))
    finally:
        workbook.close()
    rater = str(named).strip() if not _blank(named) else path.stem
    if is_judge(rater):
        collector.problems.append(f"{path}, sheet {INSTRUCTIONS_SHEET}, cell {RATER_CELL}: rater names starting with {JUDGE_PREFIX!r} are the judge's")
        return
    header = [str(name).strip().casefold() if name is not None else "" for name in (rows[0] if rows else ())]
    absent = [name for name in ("card_id", *CRITERIA) if name not in header]
    if absent:
        collector.problems.append(f"{path}, sheet {CARDS_SHEET}, row 1: no column {', '.join(absent)}")
        return
    columns = {criterion: header.index(criterion) for criterion in CRITERIA}
    for number, values in enumerate(rows[1:], start=2):
        place = f"{path}, sheet {CARDS_SHEET}, row {number}"
        rated = {criterion: values[index] if index < len(values) else None for criterion, index in columns.items()}
        card_cell = values[header.index("card_id")] if header.index("card_id") < len(values) else None
        if _blank(card_cell) and all(_blank(value) for value in rated.values()):
            continue
        card_id = collector.card(card_cell, place)
        if card_id is not None:
            for criterion, raw in rated.items():
                collector.add(card_id, rater, criterion, raw, f"{place} ({criterion})")


def _read_long_csv(path: Path, collector: _Collector) -> None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        collector.problems.append(f"{path}: cannot read the file ({type(error).__name__})")
        return
    first = text.split("\n", 1)[0]
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=";" if ";" in first and "," not in first else ",")
    fields = [name.strip().casefold() for name in reader.fieldnames or []]
    absent = [name for name in LONG_COLUMNS if name not in fields]
    if absent:
        collector.problems.append(f"{path}, line 1: the header lacks {', '.join(absent)} (expected {','.join(LONG_COLUMNS)})")
        return
    reader.fieldnames = fields
    line_end = reader.line_num
    for row in reader:
        line, line_end = line_end + 1, reader.line_num
        place = f"{path}, line {line}"
        if all(_blank(value) for value in row.values() if not isinstance(value, list)):
            continue
        rater, criterion = (row.get("rater") or "").strip(), (row.get("criterion") or "").strip().casefold()
        if not rater or is_judge(rater):
            collector.problems.append(f"{place}: {'no rater' if not rater else f'rater names starting with {JUDGE_PREFIX!r} are the judge'}")
            continue
        card_id = collector.card(row.get("card_id"), place)
        if card_id is not None:
            collector.add(card_id, rater, criterion, row.get("value"), place)


def _ls_choice(value: Any) -> Any:
    choices = value.get("choices") if isinstance(value, dict) else None
    return choices[0] if isinstance(choices, list) and len(choices) == 1 else None


def _read_ls_task(task: Any, place: str, path: Path, collector: _Collector) -> None:
    annotations = task.get("annotations", task.get("completions")) if isinstance(task, dict) else None
    if not isinstance(task, dict) or not isinstance(annotations or [], list):
        collector.problems.append(f"{place}: not a Label Studio task with a list of annotations")
        return
    if not annotations:
        return
    card_id = collector.card((task.get("data") or {}).get("card_id") if isinstance(task.get("data"), dict) else None, place)
    for number, annotation in enumerate(annotations, start=1):
        where = f"{place}, annotation {number}"
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        rater = ls_rater(annotation.get("completed_by"))
        if rater is None:
            collector.problems.append(f"{where}: no completed_by (cannot tell the rater)")
            continue
        for result_number, result in enumerate(annotation.get("result") or [], start=1):
            result_place = f"{where}, result {result_number}"
            name = str(result.get("from_name", "")).strip().casefold() if isinstance(result, dict) else ""
            raw = _ls_choice(result.get("value")) if isinstance(result, dict) else None
            if raw is None:
                collector.problems.append(f"{result_place}: expected exactly one choice")
            elif card_id is not None:
                collector.add(card_id, rater, name, raw, f"{result_place} ({name})" if name in CRITERIA else result_place)


def _read_label_studio(path: Path, collector: _Collector) -> None:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        collector.problems.append(f"{path}: cannot read the Label Studio export ({type(error).__name__})")
        return
    if not isinstance(tasks, list):
        collector.problems.append(f"{path}: expected a Label Studio JSON export (a list of tasks)")
        return
    for number, task in enumerate(tasks, start=1):
        ident = f" (id {task['id']})" if isinstance(task, dict) and isinstance(task.get("id"), int) else ""
        _read_ls_task(task, f"{path}, task {number}{ident}", path, collector)


_READERS = {".xlsx": _read_xlsx, ".xlsm": _read_xlsx, ".csv": _read_long_csv, ".json": _read_label_studio}


def read_study(study_dir: Path) -> tuple[list[dict], pd.DataFrame]:
    """The cards of ``cards.jsonl`` and ``key.csv`` (as strings) of a study folder; CaseStudyError naming the file and line."""
    study_dir = Path(study_dir)
    try:
        cards = [record for _, record in iter_jsonl(study_dir / CARDS_FILE)]
    except (OSError, ValueError) as error:
        raise CaseStudyError(f"cannot read the study's cards: {error}") from None
    try:
        key = pd.read_csv(study_dir / KEY_FILE, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise CaseStudyError(f"{study_dir / KEY_FILE}: cannot read the key ({type(error).__name__})") from None
    absent = [column for column in KEY_COLUMNS if column not in key.columns]
    bad = [number for number, card in enumerate(cards, start=1) if not isinstance(card.get("card_id"), str) or card.get("task") not in JUDGE_KEYS]
    if absent or bad or set(key["card_id"] if not absent else []) != {card.get("card_id") for card in cards}:
        raise CaseStudyError(f"{study_dir}: {CARDS_FILE} and {KEY_FILE} do not match (cards without id or task: {bad[:10]}; key columns missing: {absent}); "
                             "rebuild the study with the cards command")  # fmt: skip
    return cards, key


def read_case_ratings(paths: Sequence[Path], study_dir: Path) -> pd.DataFrame:
    """The validated long table (card_id, rater, criterion, value) of rater workbooks, long CSV files and Label Studio exports.

    Empty cells are not ratings. Raises :class:`CaseStudyError` listing every problem with its file and row (or line,
    or task/annotation/result): an unreadable file, an unknown card id, a value that is none of the criterion's, a
    criterion rated on a card of the other task, a rating given twice by one rater. No value is ever shown.
    """
    cards, _ = read_study(study_dir)
    collector = _Collector({card["card_id"]: card["task"] for card in cards})
    if not paths:
        collector.problems.append("no ratings files given")
    for path in map(Path, paths):
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            collector.problems.append(f"{path}: unsupported file type (expected .xlsx, .csv or a Label Studio .json export)")
        elif not path.is_file():
            collector.problems.append(f"{path}: no such file")
        else:
            reader(path, collector)
    _raise_problems(collector.problems, "ratings")
    order = {card["card_id"]: index for index, card in enumerate(cards)}
    rows = sorted(collector.rows, key=lambda row: (row[1], order[row[0]], CRITERIA.index(row[2])))
    return pd.DataFrame(rows, columns=list(LONG_COLUMNS), dtype=object)


# --------------------------------------------------------------------------------------------
# The judge's ratings (eval cases report folders)
# --------------------------------------------------------------------------------------------


def _judge_model(report_dir: Path) -> str:
    path = report_dir / METRICS_JSON
    try:
        judge = json.loads(path.read_text(encoding="utf-8")).get("judge")
    except (OSError, ValueError, AttributeError) as error:
        raise CaseStudyError(f"{path}: cannot read the eval cases metrics ({type(error).__name__})") from None
    if not isinstance(judge, dict) or not isinstance(judge.get("model"), str):
        raise CaseStudyError(f"{path}: this report has no judge (it was run with --no-judge); rerun eval cases with --judge")
    return judge["model"]


def judge_ratings(key: pd.DataFrame, cards: Sequence[Mapping[str, Any]], judge_reports: Mapping[str, Path]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The judge's ratings of the study's cards as rater ``judge:<model of metrics.json>``, and counts of what was left out.

    Only rows with judge_status ``ok`` count; every card of a model must have its item in that model's per_item.csv.
    """
    tasks = {card["card_id"]: card["task"] for card in cards}
    models = set(key["model"])
    rows, counts = [], {}
    for model, report_dir in judge_reports.items():
        if model not in models:
            raise CaseStudyError(f"judge report for model {model!r}: no such model in {KEY_FILE} (models: {', '.join(sorted(models))})")
        rater, path = JUDGE_PREFIX + _judge_model(Path(report_dir)), Path(report_dir) / PER_ITEM_CSV
        try:
            per_item = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as error:
            raise CaseStudyError(f"{path}: cannot read it ({type(error).__name__})") from None
        absent = [column for column in ("id", "task", "judge_status", *CRITERIA) if column not in per_item.columns]
        if absent:
            raise CaseStudyError(f"{path}: no column {', '.join(absent)} (is this the per_item.csv of eval cases?)")
        by_id = {row["id"]: (number, row) for number, row in enumerate(per_item.to_dict("records"), start=2)}
        left_out = Counter()
        for card_id, item_id in key.loc[key["model"] == model, ["card_id", "item_id"]].itertuples(index=False):
            if item_id not in by_id:
                raise CaseStudyError(f"{path}: item {item_id!r} of the study is missing; give the report of the predictions the cards were built from")
            number, row = by_id[item_id]
            if row["task"] != tasks[card_id]:
                raise CaseStudyError(f"{path}, line {number}: item {item_id!r} has another task than in the study")
            if row["judge_status"] != "ok":
                left_out[row["judge_status"] or "empty"] += 1
                continue
            for criterion in JUDGE_KEYS[tasks[card_id]]:
                value = canonical_value(criterion, row[criterion])
                if value is None:
                    raise CaseStudyError(f"{path}, line {number}: {criterion} is not one of {', '.join(CANONICAL[criterion])}")
                rows.append((card_id, rater, criterion, value))
        counts[model] = {"judge": rater, "report": str(report_dir), "not_ok": dict(sorted(left_out.items()))}
    return pd.DataFrame(rows, columns=list(LONG_COLUMNS), dtype=object), counts


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def cohen_kappa(first: Sequence[Any], second: Sequence[Any]) -> float:
    """Cohen's (unweighted) kappa of two raters' labels of the same units; NaN with no units or when chance agreement is 1."""
    a, b = np.asarray(first, dtype=object), np.asarray(second, dtype=object)
    if a.shape != b.shape:
        raise ValueError(f"two raters' labels must pair up, got {a.shape} and {b.shape}")
    if a.size == 0:
        return float("nan")
    labels = sorted(set(a.tolist()) | set(b.tolist()), key=str)
    index = {label: position for position, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    np.add.at(table, ([index[x] for x in a], [index[y] for y in b]), 1.0)
    n = table.sum()
    observed = np.trace(table) / n
    expected = float((table.sum(axis=1) * table.sum(axis=0)).sum()) / n**2
    return float("nan") if expected == 1.0 else float((observed - expected) / (1.0 - expected))


def _matrix(ratings: pd.DataFrame, raters: Sequence[str], cards: Sequence[str], criterion: str) -> np.ndarray:
    """raters x cards codes (NaN where not rated) of one criterion."""
    frame = ratings[ratings["criterion"] == criterion]
    wide = frame.assign(code=frame["value"].map(CODES[criterion]).astype(float)).pivot(index="rater", columns="card_id", values="code")
    return wide.reindex(index=list(raters), columns=list(cards)).to_numpy(dtype=float)


def human_majority(humans: np.ndarray) -> tuple[np.ndarray, int]:
    """Per card, the code most humans gave (NaN without a rating or on a tie), and the number of ties."""
    majority = np.full(humans.shape[1], np.nan)
    ties = 0
    for column in range(humans.shape[1]):
        counts = Counter(value for value in humans[:, column] if not np.isnan(value)).most_common()
        if not counts:
            continue
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            ties += 1
        else:
            majority[column] = counts[0][0]
    return majority, ties


def _alpha_rows(criterion: str, comparison: str, data: np.ndarray, n_boot: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for level in ("nominal", "ordinal") if criterion == "verdict" else ("nominal",):
        alpha, low, high = bootstrap_alpha(data, level, n_boot=n_boot, seed=seed)
        rows.append({"criterion": criterion, "comparison": comparison, "statistic": f"alpha_{level}", "value": alpha, "ci_low": low, "ci_high": high,
                     "n": int(((~np.isnan(data)).sum(axis=0) >= 2).sum())})  # fmt: skip
    return rows


def _pair_rows(criterion: str, comparison: str, judge: np.ndarray, other: np.ndarray) -> list[dict[str, Any]]:
    both = ~np.isnan(judge) & ~np.isnan(other)
    a, b = judge[both], other[both]
    agreement = float((a == b).mean()) if a.size else float("nan")
    common = {"criterion": criterion, "comparison": comparison, "ci_low": float("nan"), "ci_high": float("nan"), "n": int(a.size)}
    return [{**common, "statistic": "cohen_kappa", "value": cohen_kappa(a, b)}, {**common, "statistic": "percent_agreement", "value": 100 * agreement}]


def _confusion(criterion: str, judge: np.ndarray, majority: np.ndarray) -> dict[str, Any]:
    """Counts of (judge's value, humans' majority value), rows the judge's, in the canonical order."""
    values = list(CANONICAL[criterion])
    code_to_value = {code: value for value, code in CODES[criterion].items()}
    table = {value: dict.fromkeys(values, 0) for value in values}
    for j, m in zip(judge, majority):
        if not np.isnan(j) and not np.isnan(m):
            table[code_to_value[j]][code_to_value[m]] += 1
    return {"rows": "judge", "columns": "human majority", "values": values, "counts": [[table[j][m] for m in values] for j in values]}


def criterion_agreement(ratings: pd.DataFrame, cards: Sequence[str], criterion: str, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every statistic of one criterion over ``cards`` (the cards of its task): rows for agreement.csv, counts and confusion tables."""
    present = list(dict.fromkeys(ratings.loc[ratings["criterion"] == criterion, "rater"]))
    humans, judges = sorted(r for r in present if not is_judge(r)), sorted(r for r in present if is_judge(r))
    human_data = _matrix(ratings, humans, cards, criterion)
    majority, ties = human_majority(human_data)
    rated = (~np.isnan(human_data)).sum(axis=0)
    counts = {"cards": len(cards), "human_raters": len(humans), "cards_rated_by_2_or_more": int((rated >= 2).sum()), "majority_ties": ties,
              "cards_with_majority": int((~np.isnan(majority)).sum())}  # fmt: skip
    rows = _alpha_rows(criterion, "humans", human_data, n_boot, seed)
    confusion = {}
    for judge in judges:
        judge_data = _matrix(ratings, [judge], cards, criterion)
        counts[f"cards_rated_by_{judge}"] = int((~np.isnan(judge_data)).sum())
        rows += _alpha_rows(criterion, f"humans + {judge}", np.vstack([human_data, judge_data]), n_boot, seed)
        for position, human in enumerate(humans):
            rows += _pair_rows(criterion, f"{judge} vs {human}", judge_data[0], human_data[position])
        rows += _pair_rows(criterion, f"{judge} vs human majority", judge_data[0], majority)
        confusion[judge] = _confusion(criterion, judge_data[0], majority)
    return {"rows": rows, "counts": counts, "confusion": confusion}


# --------------------------------------------------------------------------------------------
# Agreement report
# --------------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _finite(value: Any) -> Any:
    """``value`` with every NaN float as None (JSON null), so agreement.json is strict JSON."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def agreement_markdown(result: Mapping[str, Any]) -> str:
    """agreement.md: counts, the statistics table and the confusion tables (numbers and names only)."""
    lines = ["# Judge-human agreement on the clinical cases", "", f"{result['cards']} cards, human raters: {', '.join(result['humans']) or 'none'}; "
             f"judges: {', '.join(result['judges']) or 'none'}. Bootstrap: {result['n_boot']} resamples over cards, 95% percentile interval.", ""]  # fmt: skip
    for criterion, block in result["criteria"].items():
        lines += [f"## {criterion} ({CRITERION_TASK[criterion]})", "", markdown_table(["count", "value"], list(block["counts"].items())), ""]
        table = [[row["comparison"], row["statistic"], _fmt(row["value"], 1 if row["statistic"] == "percent_agreement" else 3),
                  "" if math.isnan(row["ci_low"]) else f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]", row["n"]] for row in block["rows"]]  # fmt: skip
        lines += [markdown_table(["comparison", "statistic", "value", "95% CI", "n"], table), ""]
        for judge, confusion in block["confusion"].items():
            header = [f"{judge} \\ human majority", *confusion["values"]]
            lines += [markdown_table(header, [[value, *counts] for value, counts in zip(confusion["values"], confusion["counts"])]), ""]
    return "\n".join(lines)


def case_agreement(study_dir: Path, ratings: pd.DataFrame, judge_reports: Mapping[str, Path], out_dir: Path | None = None,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Judge-human agreement per criterion (humans' ratings + the judges of ``judge_reports``); writes agreement.json/.csv/.md atomically.

    ``judge_reports`` maps a model label of key.csv to the ``eval cases`` report folder of that model's predictions.
    """
    study_dir = Path(study_dir)
    cards, key = read_study(study_dir)
    judged, judge_counts = judge_ratings(key, cards, judge_reports)
    combined = pd.concat([ratings.loc[:, list(LONG_COLUMNS)], judged], ignore_index=True)
    humans = sorted({rater for rater in ratings["rater"] if not is_judge(rater)})
    result: dict[str, Any] = {"cards": len(cards), "humans": humans, "judges": sorted(set(judged["rater"])), "judge_reports": judge_counts,
                              "n_boot": n_boot, "seed": seed, "criteria": {}}  # fmt: skip
    for criterion in CRITERIA:
        task_cards = [card["card_id"] for card in cards if card["task"] == CRITERION_TASK[criterion]]
        if task_cards:
            result["criteria"][criterion] = criterion_agreement(combined, task_cards, criterion, n_boot, seed)
    out_dir = Path(out_dir) if out_dir is not None else study_dir / AGREEMENT_DIR
    rows = [row for block in result["criteria"].values() for row in block["rows"]]
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=["criterion", "comparison", "statistic", "value", "ci_low", "ci_high", "n"]).to_csv(buffer, index=False, lineterminator="\n")
    write_json_atomic(out_dir / AGREEMENT_JSON, _finite(result))
    with atomic_write(out_dir / AGREEMENT_CSV) as handle:
        handle.write(buffer.getvalue())
    with atomic_write(out_dir / AGREEMENT_MD) as handle:
        handle.write(agreement_markdown(result))
    return result


# --------------------------------------------------------------------------------------------
# Command line (the lead mounts these as ``eval cases-cards`` and ``eval cases-agreement``)
# --------------------------------------------------------------------------------------------


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    """``MODEL=VALUE`` options -> {model: value}; CaseStudyError on a missing '=', an empty side or a repeated model."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        model, sep, value = pair.partition("=")
        if not sep or not model.strip() or not value.strip():
            raise CaseStudyError(f"{what}: expected MODEL=PATH, got an option without '=' or with an empty side (option {len(parsed) + 1})")
        if model.strip() in parsed:
            raise CaseStudyError(f"{what}: model {model.strip()!r} is given twice")
        parsed[model.strip()] = value.strip()
    if not parsed:
        raise CaseStudyError(f"{what}: give at least one MODEL=PATH")
    return parsed


def _fail(error: Exception) -> NoReturn:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1) from error


def case_cards_command(
    items: Annotated[Path, typer.Option("--items", help="data/<name>/test.jsonl from prepare clinical_cases")],
    predictions: Annotated[list[str], typer.Option("--predictions", help="MODEL=generated_predictions.jsonl, once per model (labels go to key.csv only)")],
    raters: Annotated[str, typer.Option("--raters", help="Comma-separated rater names, e.g. ana,bruno")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Study folder: cards.jsonl, key.csv, ratings_template.csv, raters/, label_studio/")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the card ids and the presentation order")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a study whose key differs or whose rater files hold ratings")] = False,
) -> None:
    """Blind rating cards of the models' answers to the clinical cases, for physicians (XLSX per rater, long CSV, Label Studio)."""
    try:
        case_items = read_items(items)
        answers = {model: read_predictions(Path(path), case_items, items)[0] for model, path in parse_pairs(predictions, "--predictions").items()}
        cards, key = build_case_cards(case_items, answers, seed)
        summary = write_case_study(out_dir, cards, key, raters, force=force)
    except CorpusError as error:
        _fail(error)
    typer.echo(f"{summary['cards']} cards ({summary['cases']} cases x {summary['models']} models), {len(summary['raters'])} raters, seed {seed} -> {out_dir}")
    typer.echo(f"key (never give it to raters): {Path(out_dir) / KEY_FILE}")


def case_agreement_command(
    study: Annotated[Path, typer.Option("--study", help="Study folder written by the cards command")],
    ratings: Annotated[list[Path], typer.Option("--ratings", help="Filled rater .xlsx, long .csv or Label Studio .json export; repeatable")],
    judge: Annotated[list[str], typer.Option("--judge", help="MODEL=REPORT_DIR: the eval cases report (with the judge) of that model; repeatable")],
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Gets agreement.json, .csv and .md (default <study>/agreement)")] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", min=0, help="Bootstrap resamples for the alpha intervals")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap")] = 0,
) -> None:
    """Judge-human agreement on the clinical cases: Krippendorff's alpha, Cohen's kappa, percent agreement, confusion tables."""
    try:
        frame = read_case_ratings(ratings, study)
        reports = {model: Path(path) for model, path in parse_pairs(judge, "--judge").items()}
        result = case_agreement(study, frame, reports, out_dir, n_boot, seed)
    except CorpusError as error:
        _fail(error)
    typer.echo(f"{len(frame)} human ratings, {len(result['humans'])} raters, judges {', '.join(result['judges'])} -> {out_dir or Path(study) / AGREEMENT_DIR}")
