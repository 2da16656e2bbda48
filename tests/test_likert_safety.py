"""The Likert commands under bad input (issue 14): a missing study, cards or ratings file gets a
message naming it and the command that makes it, never a traceback; a study name or a model name
from models.yaml never leads out of its folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medfactory.base.jsonl import write_jsonl
from medfactory.cli.likert import likert_app
from medfactory.eval.likert.completions import ModelSpec, generate_completions, load_models

# Traversal payloads: separators, parent folders, absolute paths, and names that NFKC turns into '..' or '/'.
TRAVERSALS = ["../x", "../../x", "/abs", "a/b", "a\\b", "..", ".", "\uff0e\uff0e", "\uff0e\uff0e/x", "a\uff0fb", "", "x\x00y", "C:x"]


def invoke(*args: str):
    result = CliRunner().invoke(likert_app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no study in it (the commands read reports/likert/ from it)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_judge_of_a_study_that_does_not_exist(repo: Path) -> None:
    result = invoke("judge", "--study", "nosuch", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m")
    assert result.exit_code == 1
    assert "error: no study 'nosuch'" in result.output and "reports/likert/nosuch" in result.output
    assert "medfactory likert run --study nosuch" in result.output


def test_report_of_a_study_that_does_not_exist(repo: Path) -> None:
    (repo / "ana.csv").write_text("card_id,rater,criterion,score,observation\n")
    result = invoke("report", "--study", "nosuch", "--ratings", "ana.csv")
    assert result.exit_code == 1 and "error: no study 'nosuch'" in result.output


def test_judge_of_a_study_without_cards(repo: Path) -> None:
    (repo / "reports" / "likert" / "s1").mkdir(parents=True)
    result = invoke("judge", "--study", "s1", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m")
    assert result.exit_code == 1 and "reports/likert/s1/cards.jsonl" in result.output and "does not exist" in result.output


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('{"excerpt": "Paciente sigiloso.", "completion": "Texto."}\n', "line 1: no card_id"),
        ('{"card_id": "C1", "excerpt": "Paciente sigiloso.", "completion": "Texto."}\n' * 2, "line 2: a card_id of an earlier line repeats"),
        ('{"card_id": "C1", "excerpt": "Paciente sigiloso."}\n', "line 1: excerpt or completion"),
        ('{"card_id": "C1", "excerpt": "Paciente sigiloso.", "completion": "Tex\n', "line 1: not valid JSON"),
        ("\n", "no cards"),
    ],
)
def test_judge_of_bad_cards_names_the_line_never_the_text(repo: Path, lines: str, expected: str) -> None:
    cards = repo / "reports" / "likert" / "s1" / "cards.jsonl"
    cards.parent.mkdir(parents=True)
    cards.write_text(lines)
    result = invoke("judge", "--study", "s1", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m")
    assert result.exit_code == 1 and expected in result.output, result.output
    assert "sigiloso" not in result.output


def test_report_with_a_missing_ratings_file(repo: Path) -> None:
    write_jsonl(repo / "reports" / "likert" / "s1" / "cards.jsonl", [{"card_id": "C1", "note_index": 1, "excerpt": "e", "completion": "c"}])
    (repo / "reports" / "likert" / "s1" / "key.csv").write_text("card_id,note_id,model,position\nC1,n1,m1,1\n")
    result = invoke("report", "--study", "s1", "--ratings", "nosuch.csv")
    assert result.exit_code == 1 and "nosuch.csv: no such file" in result.output


@pytest.mark.parametrize("study", [*TRAVERSALS, "__OUTSIDE__"])
def test_a_study_name_never_leads_out_of_reports_likert(repo: Path, study: str) -> None:
    outside = repo.parent / "x"
    write_jsonl(outside / "cards.jsonl", [{"card_id": "C1", "excerpt": "e", "completion": "c"}])
    study = str(outside) if study == "__OUTSIDE__" else study.replace("../x", "../../../x")
    for command in (
        ["judge", "--study", study, "--endpoint", "http://127.0.0.1:9/v1", "--model", "m"],
        ["report", "--study", study, "--ratings", "r.csv"],
        ["run", "--study", study, "--heldout", "h.jsonl", "--models", "models.yaml"],
    ):
        result = invoke(*command)
        assert result.exit_code == 1, (command, result.output)
        assert "--study" in result.output and "cannot name a file or folder" in result.output, (command, result.output)
    assert sorted(path.name for path in outside.iterdir()) == ["cards.jsonl"]
    assert not (repo / "reports").exists()


@pytest.mark.parametrize("name", TRAVERSALS)
def test_a_model_name_in_models_yaml_cannot_name_a_folder_outside(tmp_path: Path, name: str) -> None:
    import json

    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - {{name: {json.dumps(name)}, model_name_or_path: tiny}}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="model 1: model name .* cannot name a file or folder") as error:
        load_models(models)
    assert "runs/<name>/" in str(error.value)


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "\uff0e\uff0e"])
def test_generate_completions_refuses_a_model_name_before_running_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    import medfactory.eval.likert.completions as completions

    ran: list[Path] = []
    monkeypatch.setattr(completions, "run_model", lambda model, root, run_dir, overrides: ran.append(run_dir) or (_ for _ in ()).throw(RuntimeError("stop")))
    heldout = tmp_path / "heldout.jsonl"
    write_jsonl(heldout, [{"id": "n1", "text": "Paciente estável. Sem queixas. Segue em observação. " * 10}])
    with pytest.raises(ValueError, match="cannot name a file or folder"):
        generate_completions(heldout, [ModelSpec(name=name, model_name_or_path="tiny")], tmp_path / "study", root=tmp_path)
    assert ran == [] and not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [\n", "line 2: not valid YAML"),
        ("models: 5\n", "expected `models:` with a list"),
        ("models:\n  - just-a-name\n", "model 1: expected a mapping"),
        ("models:\n  - {name: 7, model_name_or_path: tiny}\n", "model 1: `name` must be text"),
        ("models:\n  - {name: m, model_name_or_path: tiny, overrides: 3}\n", "model 1: `overrides` must be a mapping"),
        ("models:\n  - {name: Model, model_name_or_path: a}\n  - {name: model, model_name_or_path: b}\n", "differ only in case"),
    ],
)
def test_bad_models_files_get_a_message(tmp_path: Path, text: str, expected: str) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(text)
    with pytest.raises(ValueError, match="models.yaml") as error:
        load_models(models)
    assert expected in str(error.value)


def test_run_with_a_bad_models_file_is_a_message_not_a_traceback(repo: Path) -> None:
    (repo / "models.yaml").write_text("models: [\n")
    result = invoke("run", "--study", "s1", "--heldout", "h.jsonl", "--models", "models.yaml")
    assert result.exit_code == 1 and "error: models.yaml, line 2: not valid YAML" in result.output


@pytest.mark.parametrize("model", ["../../x", "/abs/x", "..", "Qwen/Qwen2.5-7B-Instruct", "\uff0e\uff0e/\uff0e\uff0e"])
def test_the_judge_ratings_file_stays_in_ratings(tmp_path: Path, model: str) -> None:
    from medfactory.eval.likert.judge import judge_ratings_path

    path = judge_ratings_path(tmp_path / "s1", model)
    assert path.parent == tmp_path / "s1" / "ratings" and path.name.startswith("judge_") and path.suffix == ".csv"


@pytest.mark.parametrize("rater", ["../x", "/abs", "a/b", "..", "\uff0e\uff0e", "a\uff0fb"])
def test_a_rater_name_cannot_name_a_file_outside(rater: str) -> None:
    from medfactory.eval.likert.cards import parse_raters

    with pytest.raises(ValueError, match="rater name"):
        parse_raters(["ana", rater])
