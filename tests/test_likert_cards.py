"""Blind Likert cards: build_cards, write_study (cards, key, template, rater XLSX, Label Studio), cards_command."""

from __future__ import annotations

import csv
import json
import random
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import typer
from openpyxl import load_workbook
from typer.testing import CliRunner

from medfactory.base.jsonl import read_jsonl, write_jsonl
from medfactory.eval.likert import CRITERIA, CRITERION_KEYS, LONG_COLUMNS
from medfactory.eval.likert.cards import (
    CARDS_SHEET,
    CRITERIA_SHEET,
    INSTRUCTIONS_SHEET,
    OBSERVATION_HEADER,
    build_cards,
    cards_command,
    parse_raters,
    write_study,
)

MODELS = ("ClinicalBR-LlaMA-2-7B", "Llama-2-7B-base", "Mistral-7B-Instruct-v0.2")
NOTES = {
    "nota-0017": "Paciente feminina, 67 anos, HAS e DM2, refere dispneia aos moderados esforços há 2 semanas.",
    "nota-0042": "EVOLUÇÃO UTI\nPaciente em VM, sedado, RASS -4. Noradrenalina 0,2 mcg/kg/min.",
    "nota-0108": "Ambulatório de cardiologia. Retorno pós-IAM. Em uso de AAS, clopidogrel e atorvastatina.",
    "nota-0311": "PS adulto. Masculino, 34 anos, dor abdominal em FID há 24 h, febre 38,2 °C.",
}
CONTINUATIONS = (
    "Ao exame: BEG, corado, hidratado. AC: RCR 2T BNF. AR: MV+ com crepitações em bases.",
    "Conduta: solicito hemograma, PCR e RX de tórax. Reavaliar em 48 h.",
    "HD: ICC descompensada? Iniciar furosemida 40 mg EV e restrição hídrica.",
)


def synthetic_completions() -> list[dict]:
    rows = []
    for n, (note_id, excerpt) in enumerate(NOTES.items()):
        for m, model in enumerate(MODELS):
            rows.append(
                {
                    "note_id": note_id,
                    "model": model,
                    "excerpt": excerpt,
                    "completion": f"{CONTINUATIONS[(n + m) % 3]} (variante {n}{m})",
                    "reference": "Referência real, nunca mostrada aos avaliadores.",
                }
            )
    return rows


def write_completions(path: Path, rows: list[dict]) -> Path:
    write_jsonl(path, rows)
    return path


@pytest.fixture()
def study(tmp_path: Path) -> tuple[Path, dict]:
    completions = write_completions(tmp_path / "completions.jsonl", synthetic_completions())
    out = tmp_path / "study"
    return out, write_study(completions, out, ["ana", "bruno"], seed=0)


def forbidden_strings() -> list[str]:
    return [*MODELS, *NOTES, "reference", "Referência real", "ClinicalBR", "Mistral", "Llama"]


def assert_blind(text: str, where: str) -> None:
    lowered = text.casefold()
    for word in forbidden_strings():
        assert word.casefold() not in lowered, f"{word!r} leaks into {where}"


# --------------------------------------------------------------------------------------------
# build_cards
# --------------------------------------------------------------------------------------------


def test_build_cards_shape_and_key_join() -> None:
    completions = synthetic_completions()
    cards, key = build_cards(completions, seed=0)
    assert len(cards) == len(key) == 12
    assert all(set(card) == {"card_id", "excerpt", "completion"} for card in cards)
    assert all(set(row) == {"card_id", "note_id", "model", "position"} for row in key)
    ids = [card["card_id"] for card in cards]
    assert len(set(ids)) == 12
    assert all(re.fullmatch(r"C[0-9a-f]{8}", card_id) for card_id in ids)
    # The key joins every card, once, and the joined card carries the right text.
    by_id = {row["card_id"]: row for row in key}
    assert set(by_id) == set(ids)
    source = {(r["note_id"], r["model"]): r for r in completions}
    for card in cards:
        row = by_id[card["card_id"]]
        assert card["completion"] == source[(row["note_id"], row["model"])]["completion"]
        assert card["excerpt"] == NOTES[row["note_id"]]
    assert {(r["note_id"], r["model"]) for r in key} == set(source)
    # Grouped by note: each note's cards are consecutive, positions 1..3.
    notes_in_order = [row["note_id"] for row in key]
    groups = [notes_in_order[i : i + 3] for i in range(0, 12, 3)]
    assert all(len(set(group)) == 1 for group in groups)
    assert len({group[0] for group in groups}) == 4
    assert [row["position"] for row in key] == [1, 2, 3] * 4


def pairs_in_order(key: list[dict]) -> list[tuple[str, str]]:
    return [(r["note_id"], r["model"]) for r in key]


def test_build_cards_is_deterministic_and_input_order_free() -> None:
    completions = synthetic_completions()
    first = build_cards(completions, seed=0)
    shuffled = completions[:]
    random.Random(99).shuffle(shuffled)
    assert build_cards(shuffled, seed=0) == first
    assert build_cards(completions, seed=0) == first
    other_cards, other_key = build_cards(completions, seed=1)
    assert [c["card_id"] for c in other_cards] != [c["card_id"] for c in first[0]]
    assert pairs_in_order(other_key) != pairs_in_order(first[1])
    # Card ids do not follow from (note, model): the same pair gets another id under another seed.
    ids0 = {(r["note_id"], r["model"]): r["card_id"] for r in first[1]}
    ids1 = {(r["note_id"], r["model"]): r["card_id"] for r in other_key}
    assert all(ids0[pair] != ids1[pair] for pair in ids0)


def test_model_order_varies_across_notes() -> None:
    for seed in range(5):
        _, key = build_cards(synthetic_completions(), seed=seed)
        orders = {tuple(r["model"] for r in key[i : i + 3]) for i in range(0, 12, 3)}
        assert len(orders) > 1, f"seed {seed}: every note shows the models in the same order"
        # Position does not reveal the model across the study either.
        first_models = {key[i]["model"] for i in range(0, 12, 3)}
        assert len(first_models) > 1


def test_card_ids_do_not_encode_model_or_note() -> None:
    _, key = build_cards(synthetic_completions(), seed=0)
    for row in key:
        assert row["note_id"].casefold() not in row["card_id"].casefold()
        assert row["model"].casefold() not in row["card_id"].casefold()
    # Sorting the ids does not sort by model or by note.
    ordered = sorted(key, key=lambda r: r["card_id"])
    assert [r["model"] for r in ordered] != sorted(r["model"] for r in ordered)


def test_build_cards_lists_every_problem() -> None:
    rows = synthetic_completions()
    rows = [r for r in rows if not (r["note_id"] == "nota-0042" and r["model"] == MODELS[1])]  # missing model
    rows.append(dict(rows[0]))  # duplicated (note, model)
    target = next(r for r in rows if r["note_id"] == "nota-0311" and r["model"] == MODELS[2])
    target["completion"] = "   "  # empty completion
    with pytest.raises(ValueError) as caught:
        build_cards(rows, seed=0)
    message = str(caught.value)
    assert f"note 'nota-0042': no completion for model(s) {MODELS[1]}" in message
    assert f"note '{rows[0]['note_id']}', model '{rows[0]['model']}'): duplicated" in message
    assert f"note 'nota-0311', model '{MODELS[2]}'): empty completion" in message


# --------------------------------------------------------------------------------------------
# write_study
# --------------------------------------------------------------------------------------------


def test_write_study_files_and_blindness(study: tuple[Path, dict]) -> None:
    out, summary = study
    assert summary["cards"] == 12 and summary["notes"] == 4 and summary["models"] == 3
    assert summary["template_rows"] == 12 * 2 * 3
    cards = read_jsonl(out / "cards.jsonl")
    assert [set(c) for c in cards] == [{"card_id", "note_index", "excerpt", "completion"}] * 12
    assert [c["note_index"] for c in cards] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]

    with open(out / "key.csv", encoding="utf-8", newline="") as handle:
        key = list(csv.DictReader(handle))
    assert list(key[0]) == ["card_id", "note_id", "model", "position"]
    assert [r["card_id"] for r in key] == [c["card_id"] for c in cards]

    with open(out / "ratings_template.csv", encoding="utf-8", newline="") as handle:
        template = list(csv.reader(handle))
    assert tuple(template[0]) == LONG_COLUMNS
    assert len(template) - 1 == 72
    assert {(r[0], r[1], r[2]) for r in template[1:]} == {
        (c["card_id"], rater, k) for c in cards for rater in ("ana", "bruno") for k in CRITERION_KEYS
    }
    assert all(r[3] == "" and r[4] == "" for r in template[1:])

    tasks = json.loads((out / "label_studio" / "tasks.json").read_text(encoding="utf-8"))
    assert [t["data"] for t in tasks] == [{k: c[k] for k in ("card_id", "excerpt", "completion")} for c in cards]

    # Nothing raters (or Label Studio) get names a model or a note.
    for name in ("cards.jsonl", "ratings_template.csv", "label_studio/tasks.json", "label_studio/config.xml"):
        assert_blind((out / name).read_text(encoding="utf-8"), name)
    for rater in ("ana", "bruno"):
        with zipfile.ZipFile(out / "raters" / f"{rater}.xlsx") as archive:
            for member in archive.namelist():
                assert_blind(archive.read(member).decode("utf-8", errors="replace"), f"{rater}.xlsx:{member}")
    # The key is the only place that names them.
    key_text = (out / "key.csv").read_text(encoding="utf-8")
    assert all(model in key_text for model in MODELS) and all(note in key_text for note in NOTES)


def test_rater_workbook(study: tuple[Path, dict]) -> None:
    out, _ = study
    cards = read_jsonl(out / "cards.jsonl")
    workbook = load_workbook(out / "raters" / "ana.xlsx")
    assert workbook.sheetnames == [CARDS_SHEET, CRITERIA_SHEET, INSTRUCTIONS_SHEET]
    sheet = workbook[CARDS_SHEET]
    header = [cell.value for cell in sheet[1]]
    assert header == ["card_id", "excerpt", "completion", *(c.name for c in CRITERIA), OBSERVATION_HEADER]
    assert [sheet.cell(row=i + 2, column=1).value for i in range(12)] == [c["card_id"] for c in cards]
    assert sheet.cell(row=2, column=3).value == cards[0]["completion"]
    assert sheet.freeze_panes == "B2"
    assert sheet.cell(row=2, column=3).alignment.wrap_text
    assert sheet.column_dimensions["C"].width >= 40

    validations = sheet.data_validations.dataValidation
    assert len(validations) == 1
    validation = validations[0]
    assert validation.type == "whole" and validation.operator == "between"
    assert (validation.formula1, validation.formula2) == ("1", "5")
    assert validation.showErrorMessage and validation.errorStyle == "stop"
    assert "inteiro de 1 a 5" in validation.error and "whole number from 1 to 5" in validation.error
    assert str(validation.sqref) == "D2:F13"
    assert validation.allow_blank

    definitions = workbook[CRITERIA_SHEET]
    cells = [str(cell.value) for row in definitions.iter_rows() for cell in row if cell.value is not None]
    for criterion in CRITERIA:
        assert criterion.name in cells and criterion.question in cells
    assert all(str(score) in cells for score in range(1, 6))

    instructions = workbook[INSTRUCTIONS_SHEET]
    assert instructions["B1"].value == "ana"
    text = " ".join(str(c.value) for row in instructions.iter_rows() for c in row if c.value)
    assert "cego" in text.casefold() and "blind" in text.casefold() and "1 a 5" in text and "opcional" in text


def test_label_studio_config(study: tuple[Path, dict]) -> None:
    out, _ = study
    root = ET.parse(out / "label_studio" / "config.xml").getroot()
    assert root.tag == "View"
    texts = {element.get("name"): element.get("value") for element in root.iter("Text")}
    assert texts == {"excerpt": "$excerpt", "completion": "$completion"}
    choices = list(root.iter("Choices"))
    assert [c.get("name") for c in choices] == list(CRITERION_KEYS)
    for control in choices:
        assert control.get("toName") == "completion"
        assert control.get("choice") == "single-radio" and control.get("required") == "true"
        assert [choice.get("value") for choice in control.iter("Choice")] == ["1", "2", "3", "4", "5"]
    areas = list(root.iter("TextArea"))
    assert [(a.get("name"), a.get("toName")) for a in areas] == [("observation", "completion")]
    headers = [h.get("value") for h in root.iter("Header")]
    assert all(c.name in headers and c.question in headers for c in CRITERIA)


def test_write_study_failure_writes_nothing(tmp_path: Path) -> None:
    rows = synthetic_completions()[:-1]  # the last note lacks a model
    completions = write_completions(tmp_path / "completions.jsonl", rows)
    with pytest.raises(ValueError, match="no completion for model"):
        write_study(completions, tmp_path / "study", ["ana"], seed=0)
    assert not (tmp_path / "study").exists()
    with pytest.raises(ValueError, match="rater name"):
        write_study(write_completions(tmp_path / "ok.jsonl", synthetic_completions()), tmp_path / "study", ["ana", "../x"])
    assert not (tmp_path / "study").exists()


def test_parse_raters() -> None:
    assert parse_raters(" ana, bruno ,carla ") == ["ana", "bruno", "carla"]
    assert parse_raters(["joão_silva", "Dra.Lima"]) == ["joão_silva", "Dra.Lima"]
    with pytest.raises(ValueError) as caught:
        parse_raters("ana,ANA,bad name,")
    assert "repeats 'ana'" in str(caught.value) and "'bad name'" in str(caught.value)


def test_write_study_protects_a_study_in_progress(tmp_path: Path) -> None:
    completions = write_completions(tmp_path / "completions.jsonl", synthetic_completions())
    out = tmp_path / "study"
    write_study(completions, out, ["ana"], seed=0)
    write_study(completions, out, ["ana"], seed=0)  # same study again: fine
    with pytest.raises(FileExistsError, match="different key"):
        write_study(completions, out, ["ana"], seed=1)
    workbook = load_workbook(out / "raters" / "ana.xlsx")
    workbook[CARDS_SHEET]["D2"] = 4
    workbook.save(out / "raters" / "ana.xlsx")
    with pytest.raises(FileExistsError, match="already holds scores"):
        write_study(completions, out, ["ana"], seed=0)
    write_study(completions, out, ["ana"], seed=1, force=True)
    assert load_workbook(out / "raters" / "ana.xlsx")[CARDS_SHEET]["D2"].value is None


def test_cards_command(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(cards_command)
    completions = write_completions(tmp_path / "completions.jsonl", synthetic_completions())
    runner = CliRunner()
    result = runner.invoke(app, [str(completions), "--out-dir", str(tmp_path / "s"), "--raters", "ana,bruno", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "12 cards (4 notes x 3 models), 2 raters, 72 template rows, seed 3" in result.output
    assert_blind(result.output, "command output")
    for line in NOTES.values():
        assert line[:20] not in result.output
    assert (tmp_path / "s" / "raters" / "bruno.xlsx").is_file()

    bad = write_completions(tmp_path / "bad.jsonl", synthetic_completions()[1:])
    result = runner.invoke(app, [str(bad), "--out-dir", str(tmp_path / "t"), "--raters", "ana"])
    assert result.exit_code == 1
    assert "no completion for model" in result.output
    assert not (tmp_path / "t").exists()


def test_control_characters_in_model_output_do_not_break_the_workbook(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    from medfactory.eval.likert.cards import write_study

    completions = tmp_path / "completions.jsonl"
    rows = [
        {"note_id": "n1", "model": model, "excerpt": "Paciente estável.", "completion": f"Evolui bem\x07\x0b {model}.", "reference": "x"}
        for model in ("m1", "m2")
    ]
    write_jsonl(completions, rows)
    write_study(completions, tmp_path / "study", ["ana"], seed=1)
    sheet = load_workbook(tmp_path / "study" / "raters" / "ana.xlsx")["Cards"]
    texts = sorted(sheet.cell(row=row, column=3).value for row in (2, 3))
    assert texts == ["Evolui bem\ufffd\ufffd m1.", "Evolui bem\ufffd\ufffd m2."]
