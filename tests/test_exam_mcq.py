"""exam_mcq: fixtures in each published layout (CareQA, MedExpQA, HealthQA-BR as HELM reads it, generic CSV/Parquet)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.corpus.mcq import read_items
from medfactory.plugins.exam_mcq import PLUGIN, answer_index, expand_columns, prepare_exam_mcq, split_healthqa_question


def careqa_record(number: int, cop: int = 2, year: int = 2023, category: str = "medicine") -> dict:
    return {
        "exam_id": number,
        "question": f"Pregunta {number}:",
        "op1": "uno",
        "op2": "dos",
        "op3": "tres",
        "op4": "cuatro",
        "cop": cop,
        "year": year,
        "category": category,
        "unique_id": f"u-{year}-{category}-{number}",
    }


def write_json_array(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def test_careqa_folder_as_published(tmp_path: Path) -> None:
    source = tmp_path / "CareQA"
    source.mkdir()
    write_json_array(source / "CareQA_es.json", [careqa_record(1, cop=1), careqa_record(2, cop=4, category="nursing")])
    write_json_array(source / "CareQA_en.json", [careqa_record(9)])
    manifest = prepare_exam_mcq(source, "careqa", "careqa_es", "es", output_root=tmp_path)
    items = read_items(tmp_path / "data" / "careqa_es" / "test.jsonl")
    assert [item.id for item in items] == ["u-2023-medicine-1", "u-2023-nursing-2"]
    assert [item.answer for item in items] == [0, 3]  # cop is 1-based
    assert {item.n_options for item in items} == {4} and {item.language for item in items} == {"es"}
    assert items[1].exam == "FSE_2023_nursing" and items[1].year == 2023 and items[1].category == "nursing"
    assert manifest["format"] == "careqa" and manifest["scoring_protocol"]["metric"] == "accuracy"
    assert manifest["scoring_protocol"]["recommended"]["eval_mcqa_protocol"] == "letter"
    assert list(manifest["splits"]["test"]["source_files"]) == [str(source / "CareQA_es.json")]  # not CareQA_en.json
    assert manifest["datasets"] == {"careqa_es_test": {"file": "data/careqa_es/test.jsonl", "records": 2}}


def test_careqa_cop_zero_is_an_answer_base_mismatch_named_by_record(tmp_path: Path) -> None:
    source = write_json_array(tmp_path / "CareQA_es.json", [careqa_record(1), careqa_record(2, cop=0)])
    with pytest.raises(CorpusError, match=r"CareQA_es\.json, record 2: answer 0 is outside 1\.\.4 .*pass --answer-base 0") as caught:
        prepare_exam_mcq(source, "careqa", "careqa_es", "es", output_root=tmp_path)
    assert "Pregunta" not in str(caught.value)  # never the question text
    assert not (tmp_path / "data" / "careqa_es").exists()


def medexpqa_record(number: int, answer: int, options: dict | None = None, year: int = 2021) -> dict:
    return {
        "id": f"mir{year}-{number}",
        "year": year,
        "question_id_specific": number,
        "full_question": f"Caso clínico {number}. ¿Cuál es el diagnóstico?",
        "full_answer": "explicación",
        "type": "CARDIOLOGÍA",
        "options": options or {"1": "a", "2": "b", "3": "c", "4": "d", "5": None},
        "correct_option": answer,
        "explanations": {"1": {"exist": False, "char_ranges": [], "word_ranges": [], "text": ""}},
        "lang": "es",
        "rag": {"brave": [], "pubmed": []},
    }


def test_medexpqa_splits_and_a_bad_line(tmp_path: Path) -> None:
    folder = tmp_path / "MedExpQA" / "data" / "es"
    folder.mkdir(parents=True)
    five = {"1": "a", "2": "b", "3": "c", "4": "d", "5": "e"}
    write_jsonl(folder / "test.es.casimedicos.rag.jsonl", [medexpqa_record(1, 3), medexpqa_record(2, 5, five)])
    write_jsonl(folder / "dev.es.casimedicos.rag.jsonl", [medexpqa_record(7, 1)])
    root = tmp_path / "MedExpQA"
    prepare_exam_mcq(root, "medexpqa", "medexpqa_es", "es", split="test", output_root=tmp_path)
    manifest = prepare_exam_mcq(root, "medexpqa", "medexpqa_es", "es", split="validation", output_root=tmp_path)
    test = read_items(tmp_path / "data" / "medexpqa_es" / "test.jsonl")
    assert [(item.id, item.answer, item.n_options) for item in test] == [("mir2021-1", 2, 4), ("mir2021-2", 4, 5)]
    assert test[0].exam == "MIR_2021" and test[0].category == "CARDIOLOGÍA"
    assert sorted(manifest["splits"]) == ["test", "validation"]  # the earlier split is kept
    assert [item.id for item in read_items(tmp_path / "data" / "medexpqa_es" / "validation.jsonl")] == ["mir2021-7"]
    # the fifth option is null: answer 5 is out of range, named by file and line
    write_jsonl(folder / "test.es.casimedicos.rag.jsonl", [medexpqa_record(1, 3), medexpqa_record(2, 5)])
    with pytest.raises(CorpusError, match=r"test\.es\.casimedicos\.rag\.jsonl, line 2: answer 5 is outside 1\.\.4"):
        prepare_exam_mcq(root, "medexpqa", "medexpqa_es", "es", output_root=tmp_path)
    manifest = prepare_exam_mcq(root, "medexpqa", "medexpqa_es", "es", on_error="skip", output_root=tmp_path)
    assert manifest["splits"]["test"]["items"] == 1 and manifest["dropped"] == {"malformed": 1}
    assert manifest["splits"]["test"]["dropped_records"][0]["where"].endswith("line 2")


HEALTHQA_TEXT = "Homem de 22 anos procura a UBS. Qual a conduta?\n'A': 'Dieta', 'B': 'Insulina d'água', 'C': 'Metformina', 'D': 'Nada', 'E': 'Cirurgia'"


def test_healthqa_br_as_helm_reads_it(tmp_path: Path) -> None:
    stem, options = split_healthqa_question(HEALTHQA_TEXT)
    assert stem == "Homem de 22 anos procura a UBS. Qual a conduta?"
    assert options == ["Dieta", "Insulina d'água", "Metformina", "Nada", "Cirurgia"]  # the apostrophe is kept
    frame = pd.DataFrame({"question": [HEALTHQA_TEXT, HEALTHQA_TEXT.replace("UBS", "UPA")], "answer": ["c", "E"]})
    source = tmp_path / "train.parquet"
    frame.to_parquet(source)
    manifest = prepare_exam_mcq(source, "healthqa_br", "healthqa_br", "pt", output_root=tmp_path)
    items = read_items(tmp_path / "data" / "healthqa_br" / "test.jsonl")
    assert [(item.id, item.answer, item.n_options, item.language) for item in items] == [("healthqa_br-1", 2, 5, "pt"), ("healthqa_br-2", 4, 5, "pt")]
    protocol = manifest["scoring_protocol"]
    assert protocol["prompt"]["input_noun"] == "Pergunta" and "exact match" in protocol["metric"]
    assert "86.6" in protocol["reference"]


def test_generic_csv_with_option_columns_duplicates_and_images(tmp_path: Path) -> None:
    source = tmp_path / "exam.csv"
    rows = [
        ["q1", "Qual?", "um", "dois", "três", "quatro", "", "B", "2022", "sim"],
        ["q2", "Outra?", "um", "dois", "três", "quatro", "cinco", "e", "2022", "não"],
        ["q3", "Qual?", "um", "dois", "três", "quatro", "", "A", "", ""],
    ]
    with open(source, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["qid", "enunciado", "A", "B", "C", "D", "E", "gabarito", "ano", "figura"])
        writer.writerows(rows)
    mapping = "question=enunciado,options=A..E,answer=gabarito,id=qid,year=ano,has_image=figura"
    manifest = prepare_exam_mcq(source, "generic", "revalida", "pt", column_map=mapping, answer_base="letter", output_root=tmp_path)
    items = read_items(tmp_path / "data" / "revalida" / "test.jsonl")
    assert [(item.id, item.answer, item.n_options, item.has_image, item.year) for item in items] == [
        ("q1", 1, 4, True, 2022),
        ("q2", 4, 5, False, 2022),
        ("q3", 0, 4, False, None),
    ]
    facts = manifest["splits"]["test"]
    assert facts["duplicate_questions"] == {"count": 1, "ids": ["q3"]} and facts["image_questions"] == 1
    assert facts["option_counts"] == {"4": 2, "5": 1}


def test_generic_list_column_and_repeated_id(tmp_path: Path) -> None:
    records = [{"k": "a", "q": "Uno?", "opts": ["x", "y"], "ans": 0}, {"k": "a", "q": "Dos?", "opts": ["x", "y", "z"], "ans": 2}]
    source = write_jsonl(tmp_path / "set.jsonl", records)
    mapping = "question=q,options=opts,answer=ans,id=k"
    with pytest.raises(CorpusError, match=r"set\.jsonl, line 2: id 'a' already used at .*set\.jsonl, line 1"):
        prepare_exam_mcq(source, "generic", "gen", "en", column_map=mapping, answer_base="0", output_root=tmp_path)
    with pytest.raises(CorpusError, match="needs --column-map with options, answer"):
        prepare_exam_mcq(source, "generic", "gen", "en", column_map="question=q", output_root=tmp_path)
    with pytest.raises(CorpusError, match=r"line 1: no 'question' field"):
        prepare_exam_mcq(source, "generic", "gen", "en", column_map="question=question,options=opts,answer=ans", output_root=tmp_path)


@pytest.mark.parametrize(
    ("value", "base", "n", "expected"),
    [(1, "1", 4, 0), ("4", "1", 4, 3), (0, "0", 4, 0), (3.0, "0", 4, 3), ("b", "letter", 4, 1), (" D ", "letter", 4, 3)],
)
def test_answer_index(value: object, base: str, n: int, expected: int) -> None:
    assert answer_index(value, base, n) == expected


@pytest.mark.parametrize(
    ("value", "base", "message"),
    [
        (4, "0", "pass --answer-base 1"),
        (0, "1", "pass --answer-base 0"),
        ("C", "1", "pass --answer-base letter"),
        (2, "letter", "pass --answer-base 0 or 1"),
        ("E", "letter", "beyond the 4"),
    ],
)
def test_answer_base_mismatches_say_which_flag(value: object, base: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        answer_index(value, base, 4)


def test_expand_columns() -> None:
    assert expand_columns("op1..op4") == ["op1", "op2", "op3", "op4"]
    assert expand_columns("A..E") == ["A", "B", "C", "D", "E"]
    assert expand_columns("x|y") == ["x", "y"] and expand_columns("options") == ["options"]


def test_whole_set_answer_base_warning(tmp_path: Path) -> None:
    source = write_json_array(tmp_path / "CareQA_es.json", [careqa_record(number, cop=2 + number % 3) for number in range(25)])
    manifest = prepare_exam_mcq(source, "careqa", "careqa_es", "es", output_root=tmp_path)
    assert "no item has its answer at the first option" in manifest["splits"]["test"]["answer_base_warning"]


def test_command_through_typer(tmp_path: Path) -> None:
    source = write_json_array(tmp_path / "CareQA_es.json", [careqa_record(1), careqa_record(2, cop=0)])
    app = typer.Typer()
    app.command()(PLUGIN.command)
    args = ["--source", str(source), "--format", "careqa", "--name", "careqa_es", "--language", "es", "--output-root", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "record 2" in result.output
    result = CliRunner().invoke(app, [*args, "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "test: 1 of 2 records" in result.output and "dropped 1" in result.output
    assert (tmp_path / "data" / "careqa_es" / "manifest.json").is_file()


def test_eval_mcqa_smoke_on_a_prepared_set(tmp_path: Path) -> None:
    """A prepared CareQA fixture goes through `eval mcqa` on a tiny model: one per_item row per item, accuracy by hand."""
    mcqa = pytest.importorskip("medfactory.eval.mcqa")
    from medfactory.run.tiny_model import build_tiny_model

    source = write_json_array(tmp_path / "CareQA_es.json", [careqa_record(number, cop=1 + number % 4) for number in range(1, 7)])
    prepare_exam_mcq(source, "careqa", "careqa_es", "es", output_root=tmp_path)
    items_path = tmp_path / "data" / "careqa_es" / "test.jsonl"
    items = read_items(items_path)
    model = build_tiny_model("mistral", [mcqa.letter_prompt(item) + f" {item.answer_letter}" for item in items] * 3, vocab_size=400)
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Local app: `mcqa` as in `medfactory eval mcqa`."""

    app.command("mcqa")(mcqa.mcqa_command)
    out = tmp_path / "out"
    args = ["mcqa", "--items", str(items_path), "--model", str(model), "--out-dir", str(out), "--protocol", "letter", "--dtype", "fp32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    per_item = pd.read_csv(out / "per_item.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(per_item["id"]) == sorted(item.id for item in items)
    assert set(per_item["language"]) == {"es"} and set(per_item["n_options"]) == {4}
    assert metrics["accuracy"] == pytest.approx((per_item["answer"] == per_item["prediction"]).mean())
