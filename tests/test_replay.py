"""`medfactory prepare replay`: alpaca / sharegpt, JSON / JSONL, validated, de-duplicated, sampled to an exact ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medfactory.base.errors import CorpusError
from medfactory.plugins.replay import prepare_replay, registry_entries

MEDICAL = 90  # with --ratio 0.1: 10 replay records, 10 / (10 + 90) = 0.1 exactly


def alpaca(index: int) -> dict[str, str]:
    return {"instruction": f"Pregunta general número {index}", "input": "", "output": f"Respuesta general {index}"}


def write_medical(root: Path) -> Path:
    path = root / "medical.jsonl"
    path.write_text("".join(json.dumps({"text": f"texto médico {i}"}) + "\n" for i in range(MEDICAL)), encoding="utf-8")
    return path


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medfactory.cli", "prepare", "replay", *args], cwd=root, capture_output=True, text=True, timeout=120)


def read(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def test_alpaca_json_array_is_sampled_to_the_exact_ratio_registered_and_identical_on_rerun(repo_copy: Path) -> None:
    records = [alpaca(i) for i in range(30)] + [alpaca(3)]  # one exact duplicate
    (repo_copy / "general.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    write_medical(repo_copy)
    registry = read(repo_copy / "dataset_info.json")
    del registry["spanish_general_replay"]["medfactory_plugin"]  # the registry as it was before the plugin: untagged
    (repo_copy / "dataset_info.json").write_text(json.dumps(registry, indent=2), encoding="utf-8")

    first = run_cli(repo_copy, "--source", "general.json", "--ratio", "0.1", "--relative-to", "medical.jsonl")
    assert first.returncode == 0, first.stderr  # the default name takes over the untagged entry without --replace
    folder = repo_copy / "data" / "spanish_general_replay"
    sft, texts = read(folder / "train.json"), (folder / "train_text.jsonl").read_text(encoding="utf-8").splitlines()
    manifest = read(folder / "manifest.json")
    assert len(sft) == len(texts) == 10 and manifest["ratio_achieved"] == 0.1 == manifest["ratio_asked"]
    assert manifest["duplicates_removed"] == 1 and manifest["source_format"] == "alpaca" and manifest["source_file_type"] == "json"
    assert all({key: row[key] for key in ("instruction", "input", "output")} in records for row in sft)
    assert len({row["instruction"] for row in sft}) == 10
    assert [json.loads(line)["text"] for line in texts] == [f"{row['instruction']}\n\n{row['output']}" for row in sft]
    assert "Pregunta" not in json.dumps(manifest)  # counts and hashes only
    registered = read(repo_copy / "dataset_info.json")
    assert {name: registered[name] for name in registry_entries("spanish_general_replay")} == {
        name: {**entry, "medfactory_plugin": "replay"} for name, entry in registry_entries("spanish_general_replay").items()
    }

    before = {path.name: path.read_bytes() for path in [folder / "train.json", folder / "train_text.jsonl", repo_copy / "dataset_info.json"]}
    second = run_cli(repo_copy, "--source", "general.json", "--ratio", "0.1", "--relative-to", "medical.jsonl")
    assert second.returncode == 0, second.stderr
    assert {path.name: path.read_bytes() for path in [folder / "train.json", folder / "train_text.jsonl", repo_copy / "dataset_info.json"]} == before


def test_bad_jsonl_lines_are_named_without_their_text_and_the_previous_data_is_kept(repo_copy: Path) -> None:
    medical = write_medical(repo_copy)
    good = repo_copy / "general.jsonl"
    good.write_text("".join(json.dumps(alpaca(i)) + "\n" for i in range(20)), encoding="utf-8")
    prepare_replay(good, str(medical), 0.1, output_root=repo_copy)
    folder = repo_copy / "data" / "spanish_general_replay"
    kept = (folder / "train.json").read_bytes()

    bad = repo_copy / "bad.jsonl"
    lines = [json.dumps(alpaca(i)) for i in range(20)] + ['{"instruction": "secreto', "[1]", json.dumps({"instruction": "secreto", "output": ""})]
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    failed = run_cli(repo_copy, "--source", "bad.jsonl", "--ratio", "0.1", "--relative-to", "medical.jsonl")
    assert failed.returncode == 1
    assert "line 21: invalid JSON" in failed.stderr and "line 22: not a JSON object" in failed.stderr and "line 23: field 'output' is empty" in failed.stderr
    assert "secreto" not in failed.stderr and "--on-error skip" in failed.stderr
    assert (folder / "train.json").read_bytes() == kept

    manifest = prepare_replay(bad, str(medical), 0.1, output_root=repo_copy, on_error="skip")
    assert manifest["skipped"] == {"field 'output' is empty": 1, "invalid JSON": 1, "not a JSON object": 1}
    assert [row["line"] for row in manifest["skipped_records"]] == [21, 22, 23] and manifest["replay_records"] == 10


def test_sharegpt_keeps_system_and_earlier_turns_against_a_registered_medical_dataset(repo_copy: Path) -> None:
    (repo_copy / "data" / "head_qa_es").mkdir(parents=True)
    (repo_copy / "data" / "head_qa_es" / "sft_train.json").write_text(json.dumps([alpaca(i) for i in range(45)]), encoding="utf-8")
    conversations = [
        {"conversations": [{"from": "system", "value": "Eres útil."}, {"from": "human", "value": f"Hola {i}"}, {"from": "gpt", "value": "Hola."},
                           {"from": "human", "value": f"¿Qué es {i}?"}, {"from": "gpt", "value": f"Es {i}."}]}
        for i in range(8)
    ]  # fmt: skip
    conversations.append({"conversations": [{"from": "tool", "value": "x"}, {"from": "gpt", "value": "y"}]})
    (repo_copy / "chats.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")

    result = run_cli(repo_copy, "--source", "chats.jsonl", "--ratio", "0.1", "--relative-to", "head_qa_es_sft", "--name", "chats", "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    folder = repo_copy / "data" / "chats"
    manifest = read(folder / "manifest.json")
    assert manifest["medical"]["dataset"] == "head_qa_es_sft" and manifest["medical"]["records"] == 45
    assert manifest["replay_records"] == 5 and manifest["ratio_achieved"] == 0.1 and manifest["multi_turn"] == 5
    assert [row["line"] for row in manifest["skipped_records"]] == [9] and manifest["source_format"] == "sharegpt"
    row = read(folder / "train.json")[0]
    index = row["history"][0][0].split()[-1]
    assert row == {"instruction": f"¿Qué es {index}?", "input": "", "output": f"Es {index}.", "system": "Eres útil.", "history": [[f"Hola {index}", "Hola."]]}
    text = json.loads((folder / "train_text.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    assert text == f"Eres útil.\n\nHola {index}\n\nHola.\n\n¿Qué es {index}?\n\nEs {index}."


def test_a_json_array_error_names_its_line_and_a_ratio_beyond_the_source_is_refused(tmp_path: Path) -> None:
    medical = write_medical(tmp_path)
    (tmp_path / "dataset_info.json").write_text("{}", encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text("[\n" + json.dumps(alpaca(0)) + ",\n" + '{"instruction": nope}' + "\n]\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 3, column \d+: invalid JSON .* in record 2"):
        prepare_replay(broken, str(medical), 0.1, output_root=tmp_path)
    small = tmp_path / "small.json"
    small.write_text(json.dumps([alpaca(i) for i in range(5)]), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"needs 10 replay records; .* has 5 usable"):
        prepare_replay(small, str(medical), 0.1, output_root=tmp_path)
    assert not (tmp_path / "data" / "spanish_general_replay").exists()
    with pytest.raises(CorpusError, match="neither a file nor a dataset registered"):
        prepare_replay(small, "no_such_set", 0.1, output_root=tmp_path)
