"""Importer of users' own preference pairs: validation with line numbers, the ranking dataset, and
its registry entry read by LLaMA-Factory's own loader."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.plugins import preferences
from medfactory.plugins.preferences import PLUGIN, prepare_preferences


def write_jsonl(path: Path, records: list) -> Path:
    lines = [record if isinstance(record, str) else json.dumps(record, ensure_ascii=False) for record in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


GOOD = [
    {"prompt": "¿Qué es la HTA?", "chosen": "Hipertensión arterial.", "rejected": "Hipotensión."},
    {"prompt": "O que é DPOC?", "chosen": "Doença pulmonar obstrutiva crônica.", "rejected": "Uma vacina.", "system": "Você é um médico.", "id": "pt-7"},
    {"prompt": "Dose?", "chosen": " 1 g ", "rejected": "10 g", "id": 12, "score": 0.9},
]

BAD = [
    {"prompt": "P", "chosen": "C"},  # line 4
    {"prompt": "P", "chosen": "  ", "rejected": "R"},  # line 5
    {"prompt": "P", "chosen": "same ", "rejected": " same"},  # line 6
    "{not json",  # line 7
    ["a", "list"],  # line 8
    {"prompt": 3, "chosen": "C", "rejected": "R"},  # line 9
    {"prompt": "P", "chosen": "C", "rejected": "R", "id": "pt-7"},  # line 10
]


@pytest.fixture()
def output_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "data/other/x.json"}}))
    return root


def test_valid_pairs_become_a_registered_ranking_dataset(tmp_path: Path, output_root: Path) -> None:
    source = write_jsonl(tmp_path / "my_prefs.jsonl", GOOD)
    manifest = prepare_preferences(source, "my_prefs", output_root)
    rows = read_json(output_root / "data/my_prefs/dpo.json")
    assert rows == [
        {"instruction": "¿Qué es la HTA?", "input": "", "chosen": "Hipertensión arterial.", "rejected": "Hipotensión.", "system": "", "id": "my_prefs-1"},
        {
            "instruction": "O que é DPOC?", "input": "", "chosen": "Doença pulmonar obstrutiva crônica.", "rejected": "Uma vacina.",
            "system": "Você é um médico.", "id": "pt-7",
        },
        {"instruction": "Dose?", "input": "", "chosen": " 1 g ", "rejected": "10 g", "system": "", "id": "12"},
    ]
    assert (manifest["lines"], manifest["pairs"], manifest["with_system"], manifest["skipped"]) == (3, 3, 1, {})
    assert manifest["ignored_fields"] == {"score": 1}
    registry = read_json(output_root / "dataset_info.json")
    assert registry["other"] == {"file_name": "data/other/x.json"}
    assert registry["my_prefs"] == {
        "medfactory_plugin": "preferences",
        "file_name": "data/my_prefs/dpo.json",
        "ranking": True,
        "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected", "system": "system"},
    }


def test_every_invalid_line_is_listed_with_its_number(tmp_path: Path, output_root: Path) -> None:
    source = write_jsonl(tmp_path / "prefs.jsonl", GOOD + BAD)
    with pytest.raises(CorpusError) as caught:
        prepare_preferences(source, "my_prefs", output_root)
    message = str(caught.value)
    assert "7 invalid line(s) of 10" in message and "--on-error skip" in message
    for expected in (
        "line 4: missing field 'rejected'",
        "line 5: field 'chosen' is empty",
        "line 6: chosen equals rejected",
        "line 7: invalid JSON",
        "line 8: not a JSON object (list)",
        "line 9: field 'prompt' is not a string",
        "line 10: id 'pt-7' already used on line 2",
    ):
        assert expected in message
    assert not (output_root / "data/my_prefs").exists()
    assert "my_prefs" not in read_json(output_root / "dataset_info.json")


def test_skip_counts_the_invalid_lines_by_reason(tmp_path: Path, output_root: Path) -> None:
    source = write_jsonl(tmp_path / "prefs.jsonl", GOOD + BAD)
    manifest = prepare_preferences(source, "my_prefs", output_root, on_error="skip")
    assert manifest["pairs"] == 3 and manifest["lines"] == 10
    assert manifest["skipped"] == {
        "chosen equals rejected": 1,
        "field 'chosen' is empty": 1,
        "field 'prompt' is not a string": 1,
        "invalid JSON": 1,
        "missing field 'rejected'": 1,
        "not a JSON object": 1,
        "repeated id": 1,
    }
    assert [problem["line"] for problem in manifest["skipped_lines"]] == [4, 5, 6, 7, 8, 9, 10]
    assert len(read_json(output_root / "data/my_prefs/dpo.json")) == 3


def test_blank_lines_a_bom_and_bad_bytes(tmp_path: Path, output_root: Path) -> None:
    source = tmp_path / "prefs.jsonl"
    good = json.dumps(GOOD[0], ensure_ascii=False).encode("utf-8")
    source.write_bytes(b"\xef\xbb\xbf" + good + b"\n\n   \n" + good.replace(b"HTA", b"IAM") + b"\n")
    assert prepare_preferences(source, "bom", output_root)["pairs"] == 2
    source.write_bytes(good + b"\n" + "{\"prompt\": \"café\"}".encode("latin-1") + b"\n")
    with pytest.raises(CorpusError, match="line 2: not UTF-8"):
        prepare_preferences(source, "latin", output_root)


def test_nothing_valid_is_an_error_even_when_skipping(tmp_path: Path, output_root: Path) -> None:
    source = write_jsonl(tmp_path / "prefs.jsonl", BAD[:3])
    with pytest.raises(CorpusError, match=r"no valid preference pair in 3 line\(s\) \(3 invalid\)"):
        prepare_preferences(source, "my_prefs", output_root, on_error="skip")


def test_names_and_collisions(tmp_path: Path, output_root: Path) -> None:
    source = write_jsonl(tmp_path / "prefs.jsonl", GOOD)
    for name in ("", "../up", "a/b", "-x", "with space"):
        with pytest.raises(CorpusError, match="--name"):
            prepare_preferences(source, name, output_root)
    with pytest.raises(CorpusError, match=r"would replace 'other' \(registered for 'data/other/x.json' by hand.*--replace"):
        prepare_preferences(source, "other", output_root)
    (output_root / "data/head_qa_es").mkdir(parents=True)
    (output_root / "data/head_qa_es/manifest.json").write_text(json.dumps({"corpus": "head_qa"}))
    with pytest.raises(CorpusError, match=r"already holds a dataset written by 'prepare head_qa'.*--replace"):
        prepare_preferences(source, "head_qa_es", output_root)
    assert (output_root / "data/head_qa_es/manifest.json").exists()
    prepare_preferences(source, "mine", output_root)
    assert prepare_preferences(source, "mine", output_root)["pairs"] == 3  # a re-run replaces its own set
    with pytest.raises(CorpusError, match="not found"):
        prepare_preferences(tmp_path / "nowhere.jsonl", "mine", output_root)
    with pytest.raises(CorpusError, match="on_error='maybe'"):
        prepare_preferences(source, "mine", output_root, on_error="maybe")


def test_llamafactory_loads_the_pairs_for_dpo(tmp_path: Path, output_root: Path) -> None:
    loader = pytest.importorskip("llamafactory.data.loader")
    from llamafactory.hparams import DataArguments

    prepare_preferences(write_jsonl(tmp_path / "prefs.jsonl", GOOD), "my_prefs", output_root)
    model_args = SimpleNamespace(cache_dir=str(tmp_path / "cache"), hf_hub_token=None)
    training_args = SimpleNamespace(local_process_index=0, dataloader_num_workers=0, seed=42)
    data_args = DataArguments(dataset_dir=str(output_root))
    dataset = loader._get_merged_dataset(["my_prefs"], model_args, data_args, training_args, stage="rm", return_dict=True)["my_prefs"]
    assert len(dataset) == 3
    second = dataset[1]
    assert second["_prompt"] == [{"role": "user", "content": "O que é DPOC?"}]
    assert [turn["content"] for turn in second["_response"]] == ["Doença pulmonar obstrutiva crônica.", "Uma vacina."]
    assert second["_system"] == "Você é um médico." and dataset[0]["_system"] == ""


def command_app(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    return app


def test_command_prints_counts_and_turns_errors_into_exit_1(tmp_path: Path, output_root: Path) -> None:
    source = write_jsonl(tmp_path / "prefs.jsonl", GOOD + BAD)
    args = ["--source", str(source), "--name", "my_prefs", "--output-root", str(output_root)]
    result = CliRunner().invoke(command_app(PLUGIN.command), args)
    assert result.exit_code == 1 and "line 6: chosen equals rejected" in result.stderr and "Traceback" not in result.output
    result = CliRunner().invoke(command_app(PLUGIN.command), [*args, "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "3 pairs of 10 lines (1 with a system prompt)" in result.stdout and "repeated id 1" in result.stdout
    assert "HTA" not in result.stdout


def test_plugin_is_named_for_the_cli() -> None:
    assert PLUGIN.name == "preferences" and PLUGIN.command is preferences.prepare_command
