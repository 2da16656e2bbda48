"""Likert ratings: filled XLSX, long CSV and Label Studio exports read back and validated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from openpyxl import load_workbook
from typer.testing import CliRunner

from medfactory.base.jsonl import read_jsonl, write_jsonl
from medfactory.eval.likert import CRITERIA, CRITERION_KEYS, LONG_COLUMNS
from medfactory.eval.likert.cards import CARDS_SHEET, OBSERVATION_HEADER, write_study
from medfactory.eval.likert.ratings import (
    RatingsError,
    parse_score,
    ratings_command,
    read_ratings,
    write_ratings,
)

MODELS = ("ClinicalBR-LlaMA-2-7B", "Llama-2-7B-base", "Mistral-7B-Instruct-v0.2")
EXCERPTS = (
    "Paciente feminina, 67 anos, HAS e DM2, refere dispneia aos moderados esforços.",
    "EVOLUÇÃO UTI\nPaciente em VM, sedado, RASS -4. Noradrenalina 0,2 mcg/kg/min.",
    "Ambulatório de cardiologia. Retorno pós-IAM. Em uso de AAS e clopidogrel.",
    "PS adulto. Masculino, 34 anos, dor abdominal em FID há 24 h.",
)


def synthetic_completions() -> list[dict]:
    return [
        {
            "note_id": f"nota-{n:04d}",
            "model": model,
            "excerpt": excerpt,
            "completion": f"Conduta {n}.{m}: solicito hemograma e PCR; reavaliar em 48 h.",
            "reference": "Continuação real.",
        }
        for n, excerpt in enumerate(EXCERPTS)
        for m, model in enumerate(MODELS)
    ]


def expected_score(card_index: int, rater: str, criterion: str) -> int:
    return 1 + (card_index * 7 + sum(map(ord, rater)) + CRITERION_KEYS.index(criterion) * 3) % 5


class Study:
    def __init__(self, root: Path) -> None:
        self.root = root
        completions = root / "completions.jsonl"
        write_jsonl(completions, synthetic_completions())
        self.dir = root / "study"
        write_study(completions, self.dir, ["ana", "bruno"], seed=7)
        self.cards_path = self.dir / "cards.jsonl"
        self.key_path = self.dir / "key.csv"
        self.card_ids = [card["card_id"] for card in read_jsonl(self.cards_path)]
        self.returned = root / "returned"
        self.returned.mkdir()

    def observation(self, index: int, rater: str) -> str:
        return f"Obs. {rater} sobre o cartão {index}: abreviação 'BEG' correta." if index % 4 == 0 else ""

    def fill_xlsx(self, rater: str, name: str, blanks: set[int] = frozenset()) -> Path:
        """Fill the rater's workbook as a rater would (cells by header), save it under another name."""
        workbook = load_workbook(self.dir / "raters" / f"{rater}.xlsx")
        sheet = workbook[CARDS_SHEET]
        header = {cell.value: cell.column for cell in sheet[1]}
        for row in range(2, sheet.max_row + 1):
            index = self.card_ids.index(sheet.cell(row=row, column=1).value)
            for criterion in CRITERIA:
                if index not in blanks:
                    sheet.cell(row=row, column=header[criterion.name]).value = expected_score(index, rater, criterion.key)
            if self.observation(index, rater):
                sheet.cell(row=row, column=header[OBSERVATION_HEADER]).value = self.observation(index, rater)
        path = self.returned / name
        workbook.save(path)
        return path

    def long_csv(self, rater: str, name: str, delimiter: str = ",") -> Path:
        path = self.returned / name
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(LONG_COLUMNS)
            for index, card_id in enumerate(self.card_ids):
                for key in CRITERION_KEYS:
                    writer.writerow([card_id, rater, key, expected_score(index, rater, key), self.observation(index, rater)])
        return path

    def label_studio_export(self, user: int | dict, name: str) -> Path:
        """The Label Studio JSON export (tasks with annotations[].result[]) for one annotator."""
        tasks_in = json.loads((self.dir / "label_studio" / "tasks.json").read_text(encoding="utf-8"))
        rater = f"ls:{user['id'] if isinstance(user, dict) else user}"
        tasks = []
        for number, task in enumerate(tasks_in, start=1):
            index = self.card_ids.index(task["data"]["card_id"])
            result = [
                {
                    "value": {"choices": [str(expected_score(index, rater, key))]},
                    "id": f"r{number}{key[:3]}",
                    "from_name": key,
                    "to_name": "completion",
                    "type": "choices",
                    "origin": "manual",
                }
                for key in CRITERION_KEYS
            ]
            if self.observation(index, rater):
                result.append(
                    {
                        "value": {"text": [self.observation(index, rater)]},
                        "id": f"r{number}obs",
                        "from_name": "observation",
                        "to_name": "completion",
                        "type": "textarea",
                        "origin": "manual",
                    }
                )
            annotations = [
                {
                    "id": 1000 + number,
                    "completed_by": user,
                    "result": result,
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": "2024-05-02T13:01:22.101010Z",
                    "updated_at": "2024-05-02T13:01:22.101010Z",
                    "lead_time": 41.5,
                    "task": 500 + number,
                    "project": 3,
                }
            ]
            if number == 1:  # a skipped (cancelled) annotation by someone else is ignored
                annotations.append({"id": 9999, "completed_by": 99, "result": [], "was_cancelled": True, "task": 501})
            tasks.append(
                {
                    "id": 500 + number,
                    "data": task["data"],
                    "annotations": annotations,
                    "predictions": [],
                    "drafts": [],
                    "meta": {},
                    "created_at": "2024-05-01T10:00:00.000000Z",
                    "project": 3,
                }
            )
        path = self.returned / name
        path.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    def expected(self, raters: list[str]) -> pd.DataFrame:
        rows = [
            (card_id, rater, key, expected_score(index, rater, key), self.observation(index, rater))
            for rater in sorted(raters)
            for index, card_id in enumerate(self.card_ids)
            for key in CRITERION_KEYS
        ]
        frame = pd.DataFrame(rows, columns=list(LONG_COLUMNS))
        frame["score"] = frame["score"].astype("Int64")
        return frame

    def read(self, paths: list[Path], **kwargs: object) -> pd.DataFrame:
        return read_ratings(paths, self.cards_path, self.key_path, **kwargs)


@pytest.fixture()
def study(tmp_path: Path) -> Study:
    return Study(tmp_path)


def test_parse_score() -> None:
    for good, value in ((4, 4), (1.0, 1), (" 5 ", 5), ("3.0", 3), ("2,0", 2)):
        assert parse_score(good) == (value, None)
    for empty in (None, "", "  ", float("nan")):
        assert parse_score(empty) == (None, None)
    for bad in (0, 6, 3.5, "quatro", "3.5", True, "4 estrelas"):
        score, reason = parse_score(bad)
        assert score is None and reason, bad


def test_round_trip_xlsx_csv_label_studio(study: Study) -> None:
    paths = [
        study.fill_xlsx("ana", "ana (devolvido).xlsx"),  # renamed file: the rater cell keeps the name
        study.long_csv("bruno", "bruno.csv"),
        study.label_studio_export(7, "export_ls.json"),
        study.label_studio_export({"id": 12, "email": "carla@hospital.example", "first_name": "Carla"}, "ls2.json"),
    ]
    frame = study.read(paths)
    assert tuple(frame.columns) == LONG_COLUMNS
    assert str(frame["score"].dtype) == "Int64"
    assert frame.attrs["missing"] == 0
    expected = study.expected(["ana", "bruno", "ls:7", "ls:12"])
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected)
    # Any input order gives the same table.
    pd.testing.assert_frame_equal(study.read(paths[::-1]), frame)

    # The canonical long CSV reads back to the same table.
    out = study.root / "ratings.csv"
    write_ratings(frame, out)
    assert out.read_text(encoding="utf-8").splitlines()[0] == ",".join(LONG_COLUMNS)
    pd.testing.assert_frame_equal(study.read([out]), frame)


def test_semicolon_csv_and_full_criterion_names(study: Study) -> None:
    path = study.long_csv("bruno", "bruno_excel.csv", delimiter=";")
    text = path.read_text(encoding="utf-8")
    for criterion in CRITERIA:
        text = text.replace(f";{criterion.key};", f";{criterion.name};")
    path.write_text("\ufeff" + text, encoding="utf-8")  # Excel's BOM
    pd.testing.assert_frame_equal(study.read([path]), study.expected(["bruno"]))


def test_allow_missing_keeps_na(study: Study) -> None:
    ana = study.fill_xlsx("ana", "ana.xlsx", blanks={0, 5})
    with pytest.raises(RatingsError) as caught:
        study.read([ana])
    assert len(caught.value.problems) == 6
    assert all("missing score" in p for p in caught.value.problems)
    assert all(f"{ana}, sheet Cards, cell " in p for p in caught.value.problems)

    frame = study.read([ana], allow_missing=True)
    assert frame.attrs["missing"] == 6 and int(frame["score"].isna().sum()) == 6
    assert set(frame.loc[frame["score"].isna(), "card_id"]) == {study.card_ids[0], study.card_ids[5]}
    # A rater partway through a CSV: absent rows are NA rows when missing scores are allowed.
    partial = study.returned / "bruno_partial.csv"
    lines = study.long_csv("bruno", "bruno_full.csv").read_text(encoding="utf-8").splitlines()
    partial.write_text("\n".join(lines[: 1 + 3 * 10]) + "\n", encoding="utf-8")
    frame = study.read([partial], allow_missing=True)
    assert len(frame) == 36 and frame.attrs["missing"] == 6
    with pytest.raises(RatingsError, match=r"missing score: no rating of card"):
        study.read([partial])


def break_xlsx(study: Study) -> tuple[Path, list]:
    """ana's workbook with out of range, fraction, word and empty scores, an unknown card, a repeated row.

    Returns the path and the values row 7 held before its card id was overwritten.
    """
    ana = study.fill_xlsx("ana", "ana.xlsx")
    workbook = load_workbook(ana)
    sheet = workbook[CARDS_SHEET]
    sheet["D2"] = 0
    sheet["E3"] = 6
    sheet["F4"] = 3.5
    sheet["D5"] = "quatro"
    sheet["E6"] = None
    bogus_row = [cell.value for cell in sheet[7]]
    sheet["A7"] = "Cdeadbeef"
    sheet.append([cell.value for cell in sheet[8]])  # row 14 repeats row 8
    workbook.save(ana)
    return ana, bogus_row


def break_long_csv(study: Study) -> Path:
    """bruno's long CSV with an unknown criterion, a bad score, a duplicated line and an unknown card."""
    bruno = study.long_csv("bruno", "bruno.csv")
    lines = bruno.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace(",format,", ",clarity,")  # line 2
    fields = lines[2].split(",")
    fields[3] = "7"
    lines[2] = ",".join(fields)  # line 3
    lines.append(lines[5])  # line 38 duplicates line 6
    lines.append("C00000000,bruno,format,3,")  # line 39
    bruno.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bruno


def break_label_studio(study: Study) -> Path:
    """A Label Studio export with a score of 6, an unknown control, an unknown card and a missing choice."""
    export = study.label_studio_export(7, "export.json")
    tasks = json.loads(export.read_text(encoding="utf-8"))
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["6"]
    tasks[1]["annotations"][0]["result"][1]["from_name"] = "clarity"
    tasks[2]["data"]["card_id"] = "Cfeedface"
    del tasks[3]["annotations"][0]["result"][2]
    export.write_text(json.dumps(tasks), encoding="utf-8")
    return export


def break_key(study: Study) -> str:
    """key.csv without one card of cards.jsonl and with a card cards.jsonl lacks; returns the dropped card id."""
    key_lines = study.key_path.read_text(encoding="utf-8").splitlines()
    dropped = key_lines.pop(4).split(",")[0]
    key_lines.append("Cabad1dea,nota-9999,Modelo-Desconhecido,1")
    study.key_path.write_text("\n".join(key_lines) + "\n", encoding="utf-8")
    return dropped


def expected_problems(study: Study, ana: Path, bruno: Path, export: Path, dropped: str) -> list[str]:
    """The start of every problem the broken inputs must be reported with, in no particular order."""
    c = study.card_ids
    return [
        # ana.xlsx
        f"{ana}, sheet Cards, cell D2 (card {c[0]}, format): score 0 is out of range",
        f"{ana}, sheet Cards, cell E3 (card {c[1]}, spelling): score 6 is out of range",
        f"{ana}, sheet Cards, cell F4 (card {c[2]}, coherence): score 3.5 is not a whole number",
        f"{ana}, sheet Cards, cell D5 (card {c[3]}, format): score 'quatro' is not a whole number",
        f"{ana}, sheet Cards, cell E6 (card {c[4]}, spelling): missing score",
        f"{ana}, sheet Cards, row 7: unknown card id 'Cdeadbeef'",
        (
            f"{ana}, sheet Cards, row 14: duplicated rating of card {c[6]} by rater 'ana' "
            f"(format, spelling, coherence); also at {ana}, sheet Cards, row 8"
        ),
        f"rater 'ana' ({ana}): missing score: no rating of card {c[5]} (format, spelling, coherence)",
        # bruno.csv
        f"{bruno}, line 2: unknown criterion 'clarity'",
        f"{bruno}, line 3: score '7' is out of range",
        f"{bruno}, line 38: duplicated rating of card {c[1]} by rater 'bruno' (spelling); also at {bruno}, line 6",
        f"{bruno}, line 39: unknown card id 'C00000000'",
        f"rater 'bruno' ({bruno}): missing score: no rating of card {c[0]} (format)",
        # Label Studio
        f"{export}, task 1 (id 501), annotation 1 (ls:7), format: score '6' is out of range",
        f"{export}, task 2 (id 502), annotation 1 (ls:7), result 2: unknown criterion 'clarity'",
        f"{export}, task 2 (id 502), annotation 1 (ls:7), spelling: missing score",
        f"{export}, task 3 (id 503), annotation 1 (ls:7): unknown card id 'Cfeedface'",
        f"{export}, task 4 (id 504), annotation 1 (ls:7), coherence: missing score",
        f"rater 'ls:7' ({export}): missing score: no rating of card {c[2]} (format, spelling, coherence)",
        # key.csv
        f"{study.key_path}: key mismatch: 1 card id(s) not in cards.jsonl: Cabad1dea",
        f"{study.key_path}: key mismatch: 1 card id(s) of cards.jsonl missing from the key: {dropped}",
    ]


def test_every_problem_reported_at_once(study: Study) -> None:
    ana, bogus_row = break_xlsx(study)
    bruno = break_long_csv(study)
    export = break_label_studio(study)
    dropped = break_key(study)

    runner = CliRunner()
    app = typer.Typer()
    app.command()(ratings_command)
    out = study.root / "ratings.csv"
    result = runner.invoke(app, [str(ana), str(bruno), str(export), "--study-dir", str(study.dir), "--out", str(out)])
    assert result.exit_code == 1
    assert not out.exists()
    assert not (study.dir / "ratings.csv").exists()

    with pytest.raises(RatingsError) as caught:
        study.read([ana, bruno, export])
    message = str(caught.value)
    problems = caught.value.problems
    expected = expected_problems(study, ana, bruno, export, dropped)
    for line in expected:
        assert any(problem.startswith(line) for problem in problems), f"not reported: {line}\n\n{message}"
    assert len(problems) == len(expected), message
    assert message.startswith(f"{len(expected)} problem(s) in the ratings:")
    assert bogus_row[0] == study.card_ids[5]  # the card whose id was overwritten is the one reported missing
    assert "Modelo-Desconhecido" not in message  # an unknown model in the key is no problem


def test_unreadable_and_unsupported_inputs(study: Study) -> None:
    broken = study.returned / "broken.xlsx"
    broken.write_bytes(b"not a zip")
    notes = study.returned / "notes.txt"
    notes.write_text("x", encoding="utf-8")
    bad_json = study.returned / "export.json"
    bad_json.write_text('{"tasks": []}', encoding="utf-8")
    no_header = study.returned / "wrong.csv"
    no_header.write_text("card,who,what\n", encoding="utf-8")
    with pytest.raises(RatingsError) as caught:
        study.read([broken, notes, bad_json, no_header, study.returned / "absent.csv"])
    problems = caught.value.problems
    assert len(problems) == 5, problems
    assert problems[0].startswith(f"{broken}: cannot read the workbook")
    assert problems[1].startswith(f"{notes}: unsupported file type")
    assert problems[2].startswith(f"{bad_json}: expected a Label Studio JSON export")
    assert problems[3].startswith(f"{no_header}, line 1: header lacks column(s) card_id, rater, criterion, score")
    assert problems[4].startswith(f"{study.returned / 'absent.csv'}: no such file")


def test_error_message_is_capped(study: Study) -> None:
    template = study.dir / "ratings_template.csv"  # 72 empty scores
    lines = template.read_text(encoding="utf-8").splitlines()
    many = study.returned / "many.csv"
    many.write_text("\n".join(lines + [line.replace(",ana,", ",carla,") for line in lines[1:]] * 3) + "\n", encoding="utf-8")
    with pytest.raises(RatingsError) as caught:
        study.read([many])
    assert len(caught.value.problems) > 200
    message_lines = str(caught.value).splitlines()
    assert len(message_lines) == 1 + 200 + 1
    assert message_lines[-1] == f"... and {len(caught.value.problems) - 200} more"


def test_write_ratings_needs_the_long_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks column"):
        write_ratings(pd.DataFrame({"card_id": ["C1"]}), tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()
