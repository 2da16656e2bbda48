"""Nothing half-written: atomic files and folders, and the registry kept intact on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfactory.base.atomic import atomic_directory, atomic_write
from medfactory.base.registry import load_registry, register_datasets


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    target.write_text("prepared before\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half of a new file")
        raise RuntimeError("killed midway")
    assert target.read_text() == "prepared before\n"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_atomic_directory_replaces_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "corpus"
    final.mkdir()
    (final / "train.jsonl").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final) as staging:
        (staging / "train.jsonl").write_text("new, incomplete")
        raise RuntimeError("failed")
    assert (final / "train.jsonl").read_text() == "old"
    with atomic_directory(final) as staging:
        (staging / "train.jsonl").write_text("new")
    assert (final / "train.jsonl").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_register_datasets_keeps_other_entries_and_skips_needless_writes(tmp_path: Path) -> None:
    registry = tmp_path / "dataset_info.json"
    registry.write_text(json.dumps({"semclinbr": {"file_name": "data/semclinbr/train.jsonl"}}))
    entry = {"lopes2019": {"file_name": "data/lopes2019/train.jsonl", "columns": {"prompt": "text"}}}
    assert register_datasets(registry, entry, owner="lopes2019") is True
    assert set(load_registry(registry)) == {"semclinbr", "lopes2019"}
    before = registry.stat().st_mtime_ns
    assert register_datasets(registry, entry, owner="lopes2019") is False
    assert registry.stat().st_mtime_ns == before


def test_broken_registry_error_names_the_file_and_line(tmp_path: Path) -> None:
    registry = tmp_path / "dataset_info.json"
    registry.write_text('{\n  "a": {"file_name": "x"},\n  "b": \n}\n')
    with pytest.raises(ValueError, match=r"dataset_info.json: line 4"):
        load_registry(registry)


def test_atomic_outputs_get_ordinary_permissions(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "manifest.json") as handle:
            handle.write("{}")
        with atomic_directory(tmp_path / "corpus") as staging:
            (staging / "train.jsonl").write_text("")
    finally:
        os.umask(mask)
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "corpus").stat().st_mode & 0o777 == 0o755


def test_write_manifest_refuses_a_manifest_outside_the_one_schema(tmp_path: Path) -> None:
    from medfactory.base.manifest import REQUIRED_KEYS, manifest_header, write_manifest

    manifest = {**manifest_header("x", tmp_path), "datasets": {}, "outputs": {}}
    with pytest.raises(ValueError, match="lacks dropped"):
        write_manifest(tmp_path / "manifest.json", manifest)
    assert not (tmp_path / "manifest.json").exists()
    write_manifest(tmp_path / "manifest.json", {**manifest, "dropped": {}})
    assert set(REQUIRED_KEYS) <= set(json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8")))


def test_dataset_records_counts_jsonl_lines_and_json_items(tmp_path: Path) -> None:
    from medfactory.base.manifest import dataset_records

    (tmp_path / "train.jsonl").write_text('{"text": "a"}\n\n{"text": "b"}\n', encoding="utf-8")
    (tmp_path / "sft.json").write_text('[{"a": 1}, {"a": 2}, {"a": 3}]', encoding="utf-8")
    entries = {"x": {"file_name": "data/x/train.jsonl"}, "x_sft": {"file_name": "data/x/sft.json"}, "gone": {"file_name": "data/x/no.jsonl"}}
    assert dataset_records(tmp_path, entries, Path("data/x")) == {
        "x": {"file": "data/x/train.jsonl", "records": 2},
        "x_sft": {"file": "data/x/sft.json", "records": 3},
    }
