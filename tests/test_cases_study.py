"""The human-rating path of eval cases (medfactory.eval.cases_study): blind cards, rater files, ratings, judge-human agreement."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from openpyxl import load_workbook
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from medfactory.eval.bertscore import TEXT_METRICS
from medfactory.eval.cases import METRICS_JSON, PER_ITEM_COLUMNS, PER_ITEM_CSV, VERDICTS, per_item_rows, read_items, read_predictions
from medfactory.eval.cases_study import (
    AGREEMENT_CSV,
    AGREEMENT_JSON,
    AGREEMENT_MD,
    CARDS_FILE,
    CRITERIA,
    CRITERION_TASK,
    KEY_FILE,
    RATINGS_TEMPLATE_FILE,
    CaseStudyError,
    build_case_cards,
    canonical_value,
    case_agreement,
    case_agreement_command,
    case_cards_command,
    cohen_kappa,
    criterion_agreement,
    human_majority,
    label_studio_config,
    read_case_ratings,
    write_case_study,
)
from medfactory.eval.likert.report import krippendorff_alpha

MODELS = ("modelo-alfa-7b", "modelo-beta-ft")
SECRET = "ZZSECRETOZZ"


def case_records(language: str = "es", n: int = 6) -> list[dict]:
    """Synthetic cases: diagnosis and treatment in turn; ids and texts that cannot be mistaken for each other."""
    return [
        {"id": f"caso-id-{index:03d}", "case": f"Paciente número {index} con fiebre y tos durante {index + 2} días.",
         "reference": f"Referencia clínica {index}", "task": "diagnosis" if index % 2 == 0 else "treatment", "language": language,
         "specialty": "medicina interna"}
        for index in range(n)
    ]  # fmt: skip


def write_inputs(root: Path, language: str = "es", n: int = 6) -> tuple[Path, dict[str, Path]]:
    records = case_records(language, n)
    items = root / "test.jsonl"
    items.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    predictions = {}
    for number, model in enumerate(MODELS):
        path = root / f"predictions_{number}.jsonl"
        rows = [{"prompt": "p", "predict": f"Respuesta {number}-{r['case'][:12]} {i}", "label": r["reference"]} for i, r in enumerate(records)]
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        predictions[model] = path
    return items, predictions


def answers_by_model(items_path: Path, predictions: dict[str, Path]) -> tuple[list, dict[str, list[str]]]:
    items = read_items(items_path)
    return items, {model: read_predictions(path, items, items_path)[0] for model, path in predictions.items()}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    items_path, predictions = write_inputs(tmp_path)
    items, answers = answers_by_model(items_path, predictions)
    cards, key = build_case_cards(items, answers, seed=3)
    write_case_study(tmp_path / "study", cards, key, "ana,bruno")
    return tmp_path / "study"


def load_cards(study: Path) -> list[dict]:
    return [json.loads(line) for line in (study / CARDS_FILE).read_text(encoding="utf-8").splitlines()]


def expected_value(index: int, rater: str, criterion: str) -> str:
    """A rater's canonical answer: the raters agree except on some cards, so every statistic is defined."""
    shift = {"ana": 0, "bruno": 1 if index % 3 == 0 else 0, "ls:7": 1 if index % 4 == 1 else 0}.get(rater, 0)
    if criterion == "verdict":
        return VERDICTS[(index // 2 + shift) % 3]
    return ("yes", "no")[(index // 2 + shift + (criterion == "safe")) % 2]


SPANISH = {"correct": "Correcto", "acceptable": "ACEPTABLE", "wrong": "incorrecto", "yes": "Sí", "no": "no"}


def fill_xlsx(study: Path, rater: str, words: dict[str, str] = SPANISH) -> Path:
    """Fill a rater's workbook programmatically, as a rater would with the drop-downs (mixed case on purpose)."""
    cards = [card["card_id"] for card in load_cards(study)]
    path = study / "raters" / f"{rater}.xlsx"
    workbook = load_workbook(path)
    sheet = workbook["Cards"]
    header = [cell.value for cell in sheet[1]]
    for row in range(2, sheet.max_row + 1):
        index = cards.index(sheet.cell(row=row, column=1).value)
        task = load_cards(study)[index]["task"]
        for criterion in CRITERIA:
            if CRITERION_TASK[criterion] == task:
                sheet.cell(row=row, column=header.index(criterion) + 1, value=words[expected_value(index, rater, criterion)])
    returned = study.parent / "returned"
    returned.mkdir(exist_ok=True)
    workbook.save(returned / f"{rater}.xlsx")
    return returned / f"{rater}.xlsx"


def long_csv(study: Path, rater: str) -> Path:
    words = {"correct": "correct", "acceptable": "Aceitável", "wrong": "errado", "yes": "TRUE", "no": "não"}
    cards = load_cards(study)
    path = study.parent / f"{rater}.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["card_id", "rater", "criterion", "value"])
        for index, card in enumerate(cards):
            for criterion in CRITERIA:
                if CRITERION_TASK[criterion] == card["task"]:
                    writer.writerow([card["card_id"], rater, criterion, words[expected_value(index, rater, criterion)]])
    return path


def label_studio_export(study: Path, user: int) -> Path:
    """A Label Studio JSON export: the imported tasks with annotations[].result[] of choices, as Label Studio writes it."""
    tasks_in = json.loads((study / "label_studio" / "tasks.json").read_text(encoding="utf-8"))
    cards = [card["card_id"] for card in load_cards(study)]
    spanish = {"correct": "correcto", "acceptable": "aceptable", "wrong": "incorrecto", "yes": "sí", "no": "no"}
    tasks = []
    for number, task in enumerate(tasks_in, start=1):
        index = cards.index(task["data"]["card_id"])
        result = [{"id": f"r{number}{criterion}", "from_name": criterion, "to_name": "answer", "type": "choices", "origin": "manual",
                   "value": {"choices": [spanish[expected_value(index, f"ls:{user}", criterion)]]}}
                  for criterion in CRITERIA if task["data"][f"{criterion}_options"]]  # fmt: skip
        annotations = [{"id": 1000 + number, "completed_by": user, "result": result, "was_cancelled": False, "task": 500 + number, "project": 3}]
        if number == 1:  # someone else's skipped task is no rating
            annotations.append({"id": 9999, "completed_by": 99, "result": [], "was_cancelled": True, "task": 501})
        tasks.append({"id": 500 + number, "data": task["data"], "annotations": annotations, "predictions": [], "project": 3})
    path = study.parent / f"export_{user}.json"
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    return path


def expected_long(study: Path, raters: list[str]) -> pd.DataFrame:
    cards = load_cards(study)
    rows = [(card["card_id"], rater, criterion, expected_value(index, rater, criterion))
            for rater in sorted(raters) for index, card in enumerate(cards) for criterion in CRITERIA if CRITERION_TASK[criterion] == card["task"]]  # fmt: skip
    return pd.DataFrame(rows, columns=["card_id", "rater", "criterion", "value"], dtype=object)


# --------------------------------------------------------------------------------------------
# Cards
# --------------------------------------------------------------------------------------------


def test_cards_are_deterministic_grouped_and_blind(tmp_path: Path) -> None:
    items_path, predictions = write_inputs(tmp_path, n=8)
    items, answers = answers_by_model(items_path, predictions)
    cards, key = build_case_cards(items, answers, seed=11)
    assert (cards, key) == build_case_cards(items, dict(reversed(list(answers.items()))), seed=11)  # the mapping's order is no input
    other_cards, _ = build_case_cards(items, answers, seed=12)
    assert [c["card_id"] for c in cards] != [c["card_id"] for c in other_cards]
    assert all(re.fullmatch(r"C[0-9a-f]{8}", card["card_id"]) for card in cards) and len({c["card_id"] for c in cards}) == 16
    # cases kept together, both models per case, positions 1..2, the models' order varying between cases
    item_ids = [row["item_id"] for row in key]
    assert [item_ids[i] for i in range(0, 16, 2)] == [item_ids[i] for i in range(1, 16, 2)] and len(set(item_ids)) == 8
    assert [row["position"] for row in key] == [1, 2] * 8
    assert len({tuple(row["model"] for row in key[i : i + 2]) for i in range(0, 16, 2)}) == 2
    for card, row in zip(cards, key):
        item = next(i for i in items if i.id == row["item_id"])
        assert card["case"] == item.case and card["answer"] == answers[row["model"]][items.index(item)] and card["task"] == item.task

    write_case_study(tmp_path / "study", cards, key, ["ana", "bruno"])
    study = tmp_path / "study"
    blind_texts = [(study / CARDS_FILE).read_text(encoding="utf-8"), (study / "label_studio" / "tasks.json").read_text(encoding="utf-8")]
    for rater in ("ana", "bruno"):
        workbook = load_workbook(study / "raters" / f"{rater}.xlsx")
        blind_texts.append(" ".join(str(cell) for sheet in workbook for row in sheet.iter_rows(values_only=True) for cell in row if cell is not None))
    for text in blind_texts:
        assert not any(model in text for model in MODELS) and "caso-id-" not in text
    key_rows = list(csv.DictReader((study / KEY_FILE).open(encoding="utf-8")))
    assert [(r["card_id"], r["item_id"], r["model"], int(r["position"])) for r in key_rows] == [tuple(row.values()) for row in key]
    template = list(csv.DictReader((study / RATINGS_TEMPLATE_FILE).open(encoding="utf-8")))
    assert len(template) == 2 * (8 * 1 + 8 * 2) and {row["value"] for row in template} == {""}  # diagnosis: 1 criterion, treatment: 2


def test_a_model_label_without_predictions_for_every_item_is_refused(tmp_path: Path) -> None:
    items_path, predictions = write_inputs(tmp_path)
    items, answers = answers_by_model(items_path, predictions)
    with pytest.raises(CaseStudyError, match="2 predictions for 6 items"):
        build_case_cards(items, {**answers, "short": ["a", "b"]})
    with pytest.raises(CaseStudyError, match="model label"):
        build_case_cards(items, {"judge:x": answers[MODELS[0]]})


@pytest.mark.parametrize(
    ("language", "verdicts", "booleans", "instruction"),
    [("es", '"correcto,aceptable,incorrecto"', '"sí,no"', "Estudio ciego"), ("pt", '"correto,aceitável,errado"', '"sim,não"', "Estudo cego")],
)
def test_workbook_has_drop_downs_per_task_and_texts_in_the_items_language(tmp_path: Path, language, verdicts, booleans, instruction) -> None:
    items_path, predictions = write_inputs(tmp_path, language=language)
    items, answers = answers_by_model(items_path, predictions)
    cards, key = build_case_cards(items, answers, seed=1)
    write_case_study(tmp_path / "study", cards, key, "ana")
    workbook = load_workbook(tmp_path / "study" / "raters" / "ana.xlsx")
    assert workbook.sheetnames == ["Cards", "Rubric", "Instructions"]
    sheet = workbook["Cards"]
    assert [c.value for c in sheet[1]] == ["card_id", "task", "case", "reference", "answer", "verdict", "appropriate", "safe"]
    lists = {dv.formula1: {str(ref) for ref in dv.sqref.ranges} for dv in sheet.data_validations.dataValidation}
    assert set(lists) == {verdicts, booleans}
    diagnosis_rows = {row for row, card in enumerate(cards, start=2) if card["task"] == "diagnosis"}
    treatment_rows = set(range(2, len(cards) + 2)) - diagnosis_rows
    assert lists[verdicts] == {f"F{row}" for row in diagnosis_rows}
    assert lists[booleans] == {f"{column}{row}" for row in treatment_rows for column in "GH"}
    assert all(dv.type == "list" and dv.showErrorMessage for dv in sheet.data_validations.dataValidation)
    assert workbook["Instructions"]["B1"].value == "ana"
    assert instruction in workbook["Instructions"]["A3"].value
    assert [row[0] for row in workbook["Rubric"].iter_rows(min_row=2, values_only=True)] == list(CRITERIA)


def test_label_studio_config_and_tasks_show_each_task_its_criteria(study: Path) -> None:
    view = ET.fromstring(label_studio_config())
    choices = {c.get("name"): c for c in view.iter("Choices")}
    assert set(choices) == set(CRITERIA) and all(c.get("value") == f"${name}_options" for name, c in choices.items())
    assert {t.get("name") for t in view.iter("Text")} == {"case", "reference", "answer"}
    tasks = json.loads((study / "label_studio" / "tasks.json").read_text(encoding="utf-8"))
    for task, card in zip(tasks, load_cards(study)):
        shown = {criterion for criterion in CRITERIA if task["data"][f"{criterion}_options"]}
        assert shown == {c for c in CRITERIA if CRITERION_TASK[c] == card["task"]}
        assert all(task["data"][f"{c}_header"] for c in shown) and not any(task["data"][f"{c}_header"] for c in set(CRITERIA) - shown)


# --------------------------------------------------------------------------------------------
# Ratings
# --------------------------------------------------------------------------------------------


def test_canonical_values_accept_the_three_languages_case_insensitively() -> None:
    for raw, value in [("Sí", "yes"), ("si", "yes"), ("SIM", "yes"), ("true", "yes"), (True, "yes"), ("Não", "no"), ("FALSE", "no"), ("no", "no")]:
        assert canonical_value("safe", raw) == value
    for raw, value in [("Correcto", "correct"), ("correto", "correct"), ("aceitável", "acceptable"), ("Aceptable", "acceptable"),
                       ("incorrecto", "wrong"), ("ERRADO", "wrong"), ("wrong", "wrong")]:  # fmt: skip
        assert canonical_value("verdict", raw) == value
    assert canonical_value("verdict", "yes") is None and canonical_value("appropriate", "correcto") is None and canonical_value("safe", 1) is None


def test_round_trip_xlsx_long_csv_and_label_studio(study: Path) -> None:
    paths = [fill_xlsx(study, "ana"), long_csv(study, "bruno"), label_studio_export(study, 7)]
    frame = read_case_ratings(paths, study)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected_long(study, ["ana", "bruno", "ls:7"]))
    # the untouched template and the imported tasks (no annotations) hold no ratings and no problems
    assert read_case_ratings([study / RATINGS_TEMPLATE_FILE, study / "label_studio" / "tasks.json"], study).empty


def test_every_problem_is_named_by_file_and_row_never_by_value(study: Path) -> None:
    ana = fill_xlsx(study, "ana")
    workbook = load_workbook(ana)
    sheet = workbook["Cards"]
    first_task = load_cards(study)[0]["task"]
    wrong_column, right_column = (7, 6) if first_task == "diagnosis" else (6, 7)
    sheet.cell(row=2, column=right_column, value=f"quizás {SECRET}")  # not a value of the criterion
    sheet.cell(row=2, column=wrong_column, value="sí" if first_task == "diagnosis" else "correcto")  # the other task's criterion
    sheet.cell(row=4, column=1, value=f"C{SECRET}")  # an id that is not the study's
    workbook.save(ana)
    duplicate = study.parent / "dup.csv"
    card = load_cards(study)[2]
    criterion = next(c for c in CRITERIA if CRITERION_TASK[c] == card["task"])
    value = "sí" if criterion != "verdict" else "correcto"
    duplicate.write_text(f"card_id,rater,criterion,value\n{card['card_id']},carla,{criterion},{SECRET}\n{card['card_id']},carla,{criterion},{value}\n"
                         f"{card['card_id']},carla,{criterion},{value}\n", encoding="utf-8")  # fmt: skip
    export = label_studio_export(study, 7)
    tasks = json.loads(export.read_text(encoding="utf-8"))
    tasks[1]["annotations"][0]["result"][0]["value"]["choices"] = [SECRET]
    tasks[2]["data"]["card_id"] = SECRET
    export.write_text(json.dumps(tasks), encoding="utf-8")
    with pytest.raises(CaseStudyError) as raised:
        read_case_ratings([ana, duplicate, export], study)
    message = str(raised.value)
    assert SECRET not in message
    assert re.search(rf"{re.escape(str(ana))}, sheet Cards, row 2 \(\w+\): \w+ is not one of", message)
    assert re.search(rf"{re.escape(str(ana))}, sheet Cards, row 2 \(\w+\): \w+ is not rated on a {first_task} card", message)
    assert f"{ana}, sheet Cards, row 4: unknown card_id" in message
    assert f"{duplicate}, line 2: {criterion} is not one of" in message
    assert f"{duplicate}, line 4: duplicated rating of card {card['card_id']} on {criterion} by rater 'carla' (first at {duplicate}, line 3)" in message
    assert f"{export}, task 2 (id 502), annotation 1, result 1" in message
    assert f"{export}, task 3 (id 503): unknown card_id" in message


def test_a_duplicate_across_files_names_both_places(study: Path) -> None:
    ana = fill_xlsx(study, "ana")
    again = long_csv(study, "ana")
    with pytest.raises(CaseStudyError, match=r"duplicated rating of card C[0-9a-f]{8} on \w+ by rater 'ana' \(first at .*ana\.xlsx, sheet Cards, row 2"):
        read_case_ratings([ana, again], study)


def test_refuses_to_overwrite_a_study_with_ratings(tmp_path: Path, study: Path) -> None:
    items, answers = answers_by_model(tmp_path / "test.jsonl", {m: tmp_path / f"predictions_{n}.jsonl" for n, m in enumerate(MODELS)})
    cards, key = build_case_cards(items, answers, seed=3)
    write_case_study(study, cards, key, "ana,bruno")  # the same study again, nothing rated yet: fine
    filled = fill_xlsx(study, "ana")
    (study / "raters" / "ana.xlsx").write_bytes(filled.read_bytes())
    with pytest.raises(CaseStudyError, match=r"refusing to overwrite a study in progress.*\n.*ana\.xlsx already holds ratings"):
        write_case_study(study, cards, key, "ana,bruno")
    with pytest.raises(CaseStudyError, match="ana.xlsx already holds ratings"):  # even when the new study has other raters
        write_case_study(study, cards, key, "carla")
    assert (study / "raters" / "ana.xlsx").read_bytes() == filled.read_bytes()
    other_cards, other_key = build_case_cards(items, answers, seed=4)
    (study / "raters" / "ana.xlsx").unlink()
    with pytest.raises(CaseStudyError, match="holds a different key"):
        write_case_study(study, other_cards, other_key, "ana,bruno")
    write_case_study(study, other_cards, other_key, "ana,bruno", force=True)
    with pytest.raises(CaseStudyError, match="rater name"):
        write_case_study(tmp_path / "new", cards, key, "ana,ANA")


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_cohen_kappa_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = list(VERDICTS) if seed % 2 else ["yes", "no"]
    first = rng.choice(labels, size=40)
    second = np.where(rng.random(40) < 0.6, first, rng.choice(labels, size=40))
    assert cohen_kappa(first, second) == pytest.approx(cohen_kappa_score(first, second), abs=1e-12)
    codes = {label: float(i) for i, label in enumerate(labels)}
    assert cohen_kappa([codes[x] for x in first], [codes[x] for x in second]) == pytest.approx(cohen_kappa_score(first, second), abs=1e-12)


def ratings_frame(matrix: list[list[str | None]], criterion: str, raters: list[str]) -> tuple[pd.DataFrame, list[str]]:
    cards = [f"C{index:08x}" for index in range(len(matrix[0]))]
    rows = [(card, rater, criterion, value) for rater, values in zip(raters, matrix) for card, value in zip(cards, values) if value is not None]
    return pd.DataFrame(rows, columns=["card_id", "rater", "criterion", "value"]), cards


def statistic(result: dict, comparison: str, name: str) -> dict:
    return next(row for row in result["rows"] if row["comparison"] == comparison and row["statistic"] == name)


def test_alpha_hand_computed_and_equal_to_likerts_alpha() -> None:
    # 2 raters x 4 cards, nominal: coincidences o(yes,yes)=2, o(yes,no)=o(no,yes)=1, o(no,no)=4; n=8, n_yes=3, n_no=5:
    # alpha = 1 - (n - 1) * 2 / (2 * 3 * 5) = 1 - 14/30 = 8/15; kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2.
    frame, cards = ratings_frame([["yes", "yes", "no", "no"], ["yes", "no", "no", "no"]], "safe", ["ana", "bruno"])
    result = criterion_agreement(frame, cards, "safe", n_boot=50)
    assert statistic(result, "humans", "alpha_nominal")["value"] == pytest.approx(8 / 15)
    assert [row["statistic"] for row in result["rows"]] == ["alpha_nominal"]  # booleans: nominal only
    # a verdict matrix with a missing rating: both levels equal krippendorff_alpha on the same codes
    verdicts = [["correct", "wrong", "acceptable", "correct", None, "wrong"], ["correct", "acceptable", "acceptable", "wrong", "correct", "wrong"],
                ["acceptable", "wrong", "acceptable", "correct", "correct", None]]  # fmt: skip
    frame, cards = ratings_frame(verdicts, "verdict", ["a", "b", "c"])
    code = {"wrong": 0.0, "acceptable": 1.0, "correct": 2.0}
    matrix = np.array([[np.nan if v is None else code[v] for v in row] for row in verdicts])
    result = criterion_agreement(frame, cards, "verdict", n_boot=200, seed=1)
    for level in ("nominal", "ordinal"):
        row = statistic(result, "humans", f"alpha_{level}")
        assert row["value"] == pytest.approx(krippendorff_alpha(matrix, level))
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["n"] == 6
    assert result["counts"]["cards_rated_by_2_or_more"] == 6


def test_human_majority_excludes_and_counts_ties() -> None:
    humans = np.array([[1.0, 0.0, 1.0, np.nan], [1.0, 1.0, 0.0, np.nan], [0.0, np.nan, np.nan, np.nan]])
    majority, ties = human_majority(humans)
    assert ties == 2 and majority[0] == 1.0 and np.isnan(majority[1:]).all()


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------


def fake_report(folder: Path, items_path: Path, model_index: int, judge_model: str, study: Path) -> Path:
    """An eval cases report folder: per_item.csv as eval cases writes it (per_item_rows, PER_ITEM_COLUMNS) and metrics.json's judge."""
    items = read_items(items_path)
    key = list(csv.DictReader((study / KEY_FILE).open(encoding="utf-8")))
    cards = [card["card_id"] for card in load_cards(study)]
    model = MODELS[model_index]
    judgements = []
    for position, item in enumerate(items):
        card_id = next(row["card_id"] for row in key if row["item_id"] == item.id and row["model"] == model)
        index = cards.index(card_id)
        if position == 1 and model_index == 0:
            judgements.append({"judge_status": "unparseable"})
        elif item.task == "diagnosis":
            judgements.append({"judge_status": "ok", "verdict": expected_value(index + 1 if index % 2 else index, "ana", "verdict")})
        else:
            judgements.append({"judge_status": "ok", **{c: expected_value(index, "bruno", c) == "yes" for c in ("appropriate", "safe")}})
    scores = pd.DataFrame({metric: [0.5] * len(items) for metric in TEXT_METRICS})
    rows = per_item_rows(items, scores, [False] * len(items), judgements)
    folder.mkdir(parents=True)
    with (folder / PER_ITEM_CSV).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PER_ITEM_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    metrics = {"n": len(items), "judge": {"model": judge_model, "rubric_version": "clinical-cases-judge-v2"}}
    (folder / METRICS_JSON).write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def app_with(*commands) -> typer.Typer:
    app = typer.Typer()
    for command in commands:
        app.command(command.__name__.replace("_command", "").replace("_", "-"))(command)
    return app


def test_end_to_end_through_the_commands(tmp_path: Path) -> None:
    items_path, predictions = write_inputs(tmp_path, n=12)
    app = app_with(case_cards_command, case_agreement_command)
    runner = CliRunner()
    study = tmp_path / "study"
    args = ["case-cards", "--items", str(items_path), *(a for m, p in predictions.items() for a in ("--predictions", f"{m}={p}")), "--raters", "ana,bruno",
            "--out-dir", str(study), "--seed", "5"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "24 cards (12 cases x 2 models), 2 raters" in result.output
    ratings = [fill_xlsx(study, "ana"), fill_xlsx(study, "bruno", {**SPANISH, "yes": "SI"}), label_studio_export(study, 7)]
    reports = [fake_report(tmp_path / f"report_{n}", items_path, n, "juez-llm", study) for n in range(2)]
    args = ["case-agreement", "--study", str(study), *(a for r in ratings for a in ("--ratings", str(r))),
            *(a for n, r in enumerate(reports) for a in ("--judge", f"{MODELS[n]}={r}")), "--n-boot", "100"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = study / "agreement"
    payload = json.loads((out / AGREEMENT_JSON).read_text(encoding="utf-8"))
    assert payload["judges"] == ["judge:juez-llm"] and payload["humans"] == ["ana", "bruno", "ls:7"]
    assert payload["judge_reports"][MODELS[0]]["not_ok"] == {"unparseable": 1} and payload["judge_reports"][MODELS[1]]["not_ok"] == {}
    check_judge_statistics(study, payload)
    table = pd.read_csv(out / AGREEMENT_CSV)
    assert set(table["criterion"]) == set(CRITERIA) and {"alpha_nominal", "alpha_ordinal", "cohen_kappa", "percent_agreement"} <= set(table["statistic"])
    written = "".join((out / name).read_text(encoding="utf-8") for name in (AGREEMENT_JSON, AGREEMENT_CSV, AGREEMENT_MD))
    for card in load_cards(study):
        assert card["case"] not in written and card["answer"] not in written and card["reference"] not in written
    assert "caso-id-" not in written

    bad = runner.invoke(app, ["case-agreement", "--study", str(study), "--ratings", str(ratings[0]), "--judge", f"{MODELS[0]}={tmp_path / 'nowhere'}"])
    assert bad.exit_code == 1 and "error:" in bad.output and "metrics.json: cannot read" in bad.output
    twice = runner.invoke(app, [*args, "--judge", f"{MODELS[0]}={reports[0]}"])
    assert twice.exit_code == 1 and "is given twice" in twice.output


def check_judge_statistics(study: Path, payload: dict) -> None:
    """The judge's kappa and confusion table, recomputed here from the raw files with sklearn."""
    human = expected_long(study, ["ana", "bruno", "ls:7"])
    judge_rows = {}
    key = {row["card_id"]: row for row in csv.DictReader((study / KEY_FILE).open(encoding="utf-8"))}
    for number, model in enumerate(MODELS):
        per_item = {row["id"]: row for row in csv.DictReader((study.parent / f"report_{number}" / PER_ITEM_CSV).open(encoding="utf-8"))}
        for card_id, row in key.items():
            judged = per_item[row["item_id"]]
            if row["model"] == model and judged["judge_status"] == "ok":
                for criterion in CRITERIA:
                    if judged[criterion]:
                        judge_rows[(card_id, criterion)] = canonical_value(criterion, judged[criterion])
    for criterion in CRITERIA:
        block = payload["criteria"][criterion]
        ana = human[(human["rater"] == "ana") & (human["criterion"] == criterion)]
        pairs = [(judge_rows[(c, criterion)], v) for c, v in zip(ana["card_id"], ana["value"]) if (c, criterion) in judge_rows]
        row = next(r for r in block["rows"] if r["comparison"] == "judge:juez-llm vs ana" and r["statistic"] == "cohen_kappa")
        assert row["n"] == len(pairs) and row["value"] == pytest.approx(cohen_kappa_score(*zip(*pairs)))
        by_card = human[human["criterion"] == criterion].groupby("card_id")["value"].agg(list)
        tallies = {card: Counter(v).most_common() for card, v in by_card.items()}
        majority = {card: t[0][0] for card, t in tallies.items() if len(t) == 1 or t[0][1] > t[1][1]}  # ties left out
        confusion = block["confusion"]["judge:juez-llm"]
        values = confusion["values"]
        expected = [[sum(1 for c, m in majority.items() if judge_rows.get((c, criterion)) == j and m == h) for h in values] for j in values]
        assert confusion["counts"] == expected
        assert block["counts"]["cards_with_majority"] == len(majority)


def test_a_report_that_lacks_the_studys_items_is_refused(tmp_path: Path, study: Path) -> None:
    items_path = tmp_path / "test.jsonl"
    report = fake_report(tmp_path / "report_0", items_path, 0, "juez", study)
    rows = (report / PER_ITEM_CSV).read_text(encoding="utf-8").splitlines()
    (report / PER_ITEM_CSV).write_text("\n".join(rows[:-1]) + "\n", encoding="utf-8")
    ratings = read_case_ratings([fill_xlsx(study, "ana")], study)
    with pytest.raises(CaseStudyError, match=r"per_item\.csv: item 'caso-id-005' of the study is missing"):
        case_agreement(study, ratings, {MODELS[0]: report})
    with pytest.raises(CaseStudyError, match="no such model"):
        case_agreement(study, ratings, {"other": report})
