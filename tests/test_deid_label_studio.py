"""The Label Studio annotation loop through the CLI: export pre-annotated tasks, an annotator's corrections, import as BRAT, train.

`deid label-studio export` on synthetic pt-BR notes with planted PHI (no real text), an "annotator"
simulated by editing the JSON as Label Studio's export would hold it, `deid label-studio import`,
then `deid train` on the imported folder. Bad exports are refused with the task id and region,
never a value, and leave no folder behind.
"""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

import pytest
from faker import Faker
from typer.testing import CliRunner

from medfactory.cli import app
from medfactory.corpus.deid.brat import read_brat_folder
from medfactory.corpus.deid.label_studio import LABEL_STUDIO_CONFIG, config_path
from medfactory.corpus.deid.planted import PlantedDocument, plant_synthetic_note
from medfactory.corpus.deid.spans import CATEGORIES
from medfactory.corpus.synthetic_notes import generate_notes

TASK_IDS = 101  # Label Studio numbers tasks itself; ids that differ from positions show which one an error names


def run(*args: str):  # the typer Result
    return CliRunner().invoke(app, ["deid", "label-studio", *args])


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PlantedDocument]]:
    """Five pt-BR notes with planted PHI: four .txt files and one .jsonl holding two records (six documents)."""
    folder = tmp_path_factory.mktemp("ls") / "notes"
    folder.mkdir()
    rng, fake = random.Random(7), Faker("pt_BR")
    fake.seed_instance(7)
    documents = [plant_synthetic_note(f"nota{number}", note, rng, fake) for number, note in enumerate(generate_notes(6, seed=7))]
    for document in documents[:4]:
        (folder / f"{document.name}.txt").write_text(document.text, encoding="utf-8")
    (folder / "lote.jsonl").write_text("".join(json.dumps({"text": d.text}, ensure_ascii=False) + "\n" for d in documents[4:]), encoding="utf-8")
    return folder, documents


@pytest.fixture(scope="module")
def exported(notes: tuple[Path, list[PlantedDocument]]) -> list[dict]:
    """The tasks of an export of every document, as Label Studio's own export would list them (with task ids)."""
    folder, _ = notes
    tasks_path = folder.parent / "ls" / "tasks.json"
    result = run("export", "--input", str(folder), "--output", str(tasks_path), "--language", "pt")
    assert result.exit_code == 0, result.output
    tasks = json.loads(tasks_path.read_text(encoding="utf-8"))
    return [{"id": TASK_IDS + position, **task} for position, task in enumerate(tasks)]


def annotate(task: dict, result: list[dict], **extra: object) -> dict:
    return {**copy.deepcopy(task), "annotations": [{"id": task["id"] * 10, "was_cancelled": False, "result": copy.deepcopy(result), **extra}]}


def region(text: str, start: int, end: int, label: str) -> dict:
    value = {"start": start, "end": end, "text": text[start:end], "labels": [label]}
    return {"id": f"a{start}", "from_name": "label", "to_name": "text", "type": "labels", "value": value}


def write_export(path: Path, tasks: list[dict]) -> Path:
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    return path


def spans_of(result: list[dict]) -> list[tuple[int, int, str]]:
    return sorted((r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in result)


def test_export_writes_pre_annotated_tasks_and_config_and_never_prints_text(notes: tuple[Path, list[PlantedDocument]], tmp_path: Path) -> None:
    folder, documents = notes
    out = tmp_path / "tasks.json"
    result = run("export", "--input", str(folder), "--output", str(out), "--language", "pt", "--sample", "3", "--seed", "4")
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert len(tasks) == 3 and "exported 3 of 6 documents" in result.output
    texts = {d.text for d in documents}
    for task in tasks:
        assert task["data"]["text"] in texts and task["predictions"][0]["model_version"].startswith("medfactory-deid-pt-")
        for item in task["predictions"][0]["result"]:  # predictions are the de-identifier's spans, with Label Studio's own copy of the text
            value = item["value"]
            assert value["text"] == task["data"]["text"][value["start"] : value["end"]] and value["labels"][0] in CATEGORIES
    assert sum(len(task["predictions"][0]["result"]) for task in tasks) > 0
    assert config_path(out).read_text(encoding="utf-8") == LABEL_STUDIO_CONFIG == run("config").output
    assert "PATIENT TEXT" in result.output and str(out) in result.output
    printed = result.output
    # Values of more than 3 characters: state codes ("PE", "SP") are parts of category names.
    assert not any(len(value) > 3 and value in printed for d in documents for value in d.planted), "a planted value was printed"
    assert not any(line and line in printed for d in documents for line in d.text.splitlines() if len(line) > 12), "note text was printed"
    # The same --sample and --seed give the same documents; another seed another sample.
    again = tmp_path / "again.json"
    assert run("export", "--input", str(folder), "--output", str(again), "--sample", "3", "--seed", "4").exit_code == 0
    assert [t["data"]["document"] for t in json.loads(again.read_text(encoding="utf-8"))] == [t["data"]["document"] for t in tasks]
    samples = set()
    for seed in range(5):
        assert run("export", "--input", str(folder), "--output", str(tmp_path / f"s{seed}.json"), "--sample", "3", "--seed", str(seed)).exit_code == 0
        samples.add(tuple(t["data"]["document"] for t in json.loads((tmp_path / f"s{seed}.json").read_text(encoding="utf-8"))))
    assert len(samples) > 1


def test_export_refuses_an_output_inside_the_notes_folder(notes: tuple[Path, list[PlantedDocument]]) -> None:
    folder, _ = notes
    result = run("export", "--input", str(folder), "--output", str(folder / "sub" / "tasks.json"))
    assert result.exit_code == 1 and "inside --input" in result.output and "Fix:" in result.output
    assert not (folder / "sub").exists()


def test_round_trip_annotator_corrections_to_brat_then_train(exported: list[dict], tmp_path: Path) -> None:
    tasks = [task for task in exported if len(task["predictions"][0]["result"]) >= 3]
    assert len(tasks) >= 4, "the synthetic notes should each get several predictions"
    first, second, third, fourth = tasks[:4]
    rest = [task for task in exported if task["id"] not in {t["id"] for t in tasks[:4]}]
    assert len(rest) == 2
    expected: dict[str, list[tuple[int, int, str]]] = {}
    # Task 1: the annotator accepts the predictions as they are.
    done = [annotate(first, first["predictions"][0]["result"])]
    # Task 2: fixes one region (a wrong category), deletes another, adds a missed one on a word nothing covers.
    result = copy.deepcopy(second["predictions"][0]["result"])
    result[0]["value"]["labels"] = ["OTROS_SUJETO_ASISTENCIA" if result[0]["value"]["labels"][0] != "OTROS_SUJETO_ASISTENCIA" else "PROFESION"]
    del result[1]
    text = second["data"]["text"]
    covered = {i for r in second["predictions"][0]["result"] for i in range(r["value"]["start"], r["value"]["end"])}
    word = next(m for m in re.finditer(r"\b[A-Za-zÀ-ú]{6,}\b", text) if not covered & set(range(m.start(), m.end())))
    result.append(region(text, word.start(), word.end(), "PROFESION"))
    done.append(annotate(second, result))
    # Task 3: two annotators; the later one (by updated_at) removed every span but the first: that one is used.
    older = annotate(third, third["predictions"][0]["result"], updated_at="2024-05-01T10:00:00.000000Z")["annotations"][0]
    newer = annotate(third, third["predictions"][0]["result"][:1], updated_at="2024-05-02T09:00:00.000000Z")["annotations"][0]
    done.append({**copy.deepcopy(third), "annotations": [newer, older]})
    # Task 4: annotated "no PHI at all": an empty .ann, still gold.
    done.append(annotate(fourth, []))
    for task, kept in zip(done, (first["predictions"][0]["result"], result, third["predictions"][0]["result"][:1], [])):
        expected[task["data"]["document"]] = spans_of(kept)
    # Not annotated, and annotated then cancelled: both skipped and counted.
    skipped = [{**copy.deepcopy(task), "annotations": []} for task in rest[:1]]
    skipped += [{**copy.deepcopy(task), "annotations": [{"was_cancelled": True, "result": task["predictions"][0]["result"]}]} for task in rest[1:2]]
    export = write_export(tmp_path / "export.json", done + skipped)
    gold = tmp_path / "gold"
    imported = run("import", "--tasks", str(export), "--output", str(gold))
    assert imported.exit_code == 0, imported.output
    assert "imported 4 of 6 tasks" in imported.output
    assert "skipped 1 without annotation and 1 cancelled" in imported.output
    assert "1 task(s) had several completed annotations" in imported.output
    back = {document.name: [(s.start, s.end, s.category) for s in document.spans] for document in read_brat_folder(gold, progress=False)}
    assert back == expected
    texts = {task["data"]["document"]: task["data"]["text"] for task in done}
    assert all((gold / f"{name}.txt").read_bytes() == texts[name].encode("utf-8") for name in back)
    assert not any(r["value"]["text"] in imported.output for task in done for r in task["annotations"][0]["result"] if len(r["value"]["text"]) > 3)
    # The imported folder is what `deid train` reads.
    model = tmp_path / "pt.crfsuite"
    trained = CliRunner().invoke(app, ["deid", "train", "--gold", str(gold), "--language", "pt", "--output", str(model), "--max-iterations", "5"])
    assert trained.exit_code == 0, trained.output
    assert model.is_file() and model.stat().st_size > 0 and "trained on 4 documents" in trained.output
    # A second import into the same, non-empty folder needs --replace.
    again = run("import", "--tasks", str(export), "--output", str(gold))
    assert again.exit_code == 1 and "--replace" in again.output
    assert run("import", "--tasks", str(export), "--output", str(gold), "--replace").exit_code == 0
    assert sorted(p.name for p in gold.iterdir()) == sorted(f"{name}{ext}" for name in expected for ext in (".ann", ".txt"))


def _first_labels(task: dict) -> list[dict]:
    return [r for r in task["annotations"][0]["result"] if r.get("type") == "labels"]


def _past_text(task: dict) -> None:
    value = _first_labels(task)[0]["value"]
    value["start"], value["end"] = len(task["data"]["text"]) - 2, len(task["data"]["text"]) + 5
    del value["text"]


def _reversed(task: dict) -> None:
    value = _first_labels(task)[0]["value"]
    value["start"], value["end"] = value["end"], value["start"]


def _unknown_label(task: dict) -> None:
    _first_labels(task)[0]["value"]["labels"] = ["NOME_DO_PACIENTE"]


def _overlap(task: dict) -> None:
    first = _first_labels(task)[0]["value"]
    text = task["data"]["text"]
    task["annotations"][0]["result"].append(region(text, first["start"], first["end"] + 1, "OTROS_SUJETO_ASISTENCIA"))


def _text_differs(task: dict) -> None:
    value = _first_labels(task)[0]["value"]
    value["start"], value["end"] = value["start"] + 1, value["end"] + 1  # offsets shifted by one (UTF-16, CRLF), the region's text unchanged


@pytest.mark.parametrize(
    ("break_it", "message"),
    [(_past_text, "outside the text"), (_reversed, "empty or reversed"), (_unknown_label, "unknown label"), (_overlap, "overlap"), (_text_differs, "differs")],
    ids=["past-text", "start>=end", "unknown-label", "overlap", "text-differs"],
)
def test_bad_exports_are_refused_with_task_and_region_and_leave_no_folder(exported: list[dict], tmp_path: Path, break_it, message: str) -> None:
    tasks = [annotate(task, task["predictions"][0]["result"]) for task in exported if task["predictions"][0]["result"]]
    bad = tasks[2]
    break_it(bad)
    values = [r["value"].get("text", "") for r in _first_labels(bad)]
    export = write_export(tmp_path / "export.json", tasks)
    result = run("import", "--tasks", str(export), "--output", str(tmp_path / "gold"))
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())  # rich may wrap a long message
    assert message in output and f"export.json task {bad['id']}" in output and "region " in output and "Fix:" in output
    assert not any(len(value) > 3 and value in output for value in values), "a region's text was printed"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export.json"], "an output or staging folder was left behind"
