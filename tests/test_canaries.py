"""``prepare --canaries``: canary notes in the training split only, their secrets in a private file outside data/, counts in the manifest."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.cli import app
from medfactory.corpus import canaries
from medfactory.corpus.synthetic_notes import generate_notes


def write_export(path: Path, count: int = 240, broken_at: int | None = None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "patient_id", "text"])
        for index, note in enumerate(generate_notes(count, seed=5)):
            writer.writerow([f"n{index}", f"p{index % 50}", note])
    if broken_at is not None:  # a record with an unterminated quote: prepare fails under --on-error fail
        with open(path, "a", encoding="utf-8") as handle:
            handle.write('n_bad,p1,"never closed\n')
    return path


def prepare(tmp_path: Path, *extra: str, source: Path | None = None) -> tuple[int, str, Path]:
    root = tmp_path / "repo"
    source = source or write_export(tmp_path / "notes.csv")
    args = ["prepare", "notes", "--source", str(source), "--name", "hc", "--output-root", str(root), "--deid-seed", "k", *extra]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output, root


def test_canaries_go_to_train_only_as_often_as_their_repetitions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    code, output, root = prepare(tmp_path, "--canaries", "6", "--canary-repetitions", "1,4,16", "--test-fraction", "0.2", "--likert-notes", "3")
    assert code == 0, output
    canary_file = root / "canaries" / "hc.json"
    assert stat.S_IMODE(canary_file.stat().st_mode) == 0o600  # the study lead's secrets: owner only
    listed = canaries.read_canaries(canary_file)
    assert [canary.repetitions for canary in listed] == [1, 4, 16, 1, 4, 16]
    data = root / "data" / "hc"
    train = (data / "train.jsonl").read_text(encoding="utf-8")
    elsewhere = "".join(path.read_text(encoding="utf-8") for path in data.iterdir() if path.name != "train.jsonl")
    elsewhere += (root / "dataset_info.json").read_text(encoding="utf-8") + output + caplog.text
    for canary in listed:
        assert train.count(canary.secret) == canary.repetitions
        assert [json.loads(line)["text"] for line in train.splitlines()].count(canary.text) == canary.repetitions
        assert canary.secret not in elsewhere  # not in validation, test, Likert, the manifest, the registry, the output or the logs
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["canaries"]["count"] == 6 and manifest["canaries"]["copies_in_train"] == 42
    assert manifest["canaries"]["file_sha256"] == hashlib.sha256(canary_file.read_bytes()).hexdigest()
    # Spread through the corpus: the 16 copies of one canary are not one block of lines.
    lines = [json.loads(line)["text"] for line in train.splitlines()]
    positions = [index for index, text in enumerate(lines) if text == listed[2].text]
    assert positions[-1] - positions[0] > 2 * len(positions)


def test_no_canaries_by_default(tmp_path: Path) -> None:
    code, output, root = prepare(tmp_path)
    assert code == 0, output
    assert json.loads((root / "data" / "hc" / "manifest.json").read_text(encoding="utf-8"))["canaries"] == {"count": 0}
    assert not (root / "canaries").exists()


def test_canary_file_under_data_or_over_an_earlier_one_is_refused(tmp_path: Path) -> None:
    code, output, root = prepare(tmp_path, "--canaries", "3", "--canary-file", str(tmp_path / "repo" / "data" / "secrets.json"))
    assert code == 1 and "outside data/" in output and not (root / "data" / "hc").exists()
    code, output, root = prepare(tmp_path, "--canaries", "3")
    assert code == 0, output
    first = (root / "canaries" / "hc.json").read_bytes()
    code, output, _ = prepare(tmp_path, "--canaries", "3", "--replace")
    assert code == 0 and (root / "canaries" / "hc.json").read_bytes() != first  # --replace: new data, new secrets
    other = tmp_path / "elsewhere.json"
    other.write_text("{}", encoding="utf-8")
    code, output, _ = prepare(tmp_path, "--canaries", "3", "--replace", "--canary-file", str(other))
    assert code == 0 and canaries.read_canaries(other)


def test_a_failed_prepare_leaves_no_canary_file(tmp_path: Path) -> None:
    source = write_export(tmp_path / "notes.csv", count=30, broken_at=30)
    code, output, root = prepare(tmp_path, "--canaries", "3", source=source)
    assert code == 1, output
    assert not (root / "data" / "hc").exists()
    assert not (root / "canaries").exists() or not any((root / "canaries").iterdir())  # no file, no pending file


def test_bad_repetitions_are_refused_naming_the_option(tmp_path: Path) -> None:
    for value in ("1,x", "0,2"):
        code, output, _ = prepare(tmp_path, "--canaries", "2", "--canary-repetitions", value)
        assert code == 1 and "--canary-repetitions" in output


def test_read_canaries_refuses_a_tampered_file_naming_the_canary(tmp_path: Path) -> None:
    made = canaries.make_canaries(3, "es", seed=1)
    document = canaries.canary_document(made, "hc", "es")
    path = tmp_path / "c.json"
    canaries.write_canary_file(path, document)
    assert canaries.read_canaries(path) == made
    document["canaries"][1]["secret"] = "12ab"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(CorpusError, match="canary 1") as error:
        canaries.read_canaries(path)
    assert "12ab" not in str(error.value)
    path.write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(CorpusError, match="not a canary file"):
        canaries.read_canaries(path)


def test_secrets_fill_their_formats_and_prefixes_differ() -> None:
    made = canaries.make_canaries(12, "pt", seed=3)
    assert len({canary.prefix for canary in made}) == 12  # each canary has its own context
    for canary in made:
        assert len(canary.secret) == len(canary.secret_format)
        assert all(char.isdigit() if slot == "#" else char == slot for char, slot in zip(canary.secret, canary.secret_format, strict=True))
    assert canaries.make_canaries(3, "pt", seed=3) == made[:3] and canaries.make_canaries(3, "pt") != canaries.make_canaries(3, "pt")
