"""Ownership of dataset names, data and registry moving together, full disks, stale staging, SIGTERM.

Every plugin publishes through :func:`medfactory.base.publish.publish_datasets`; these tests run the
real prepare functions (notes, semclinbr, brateca, preferences) against folders and registry keys
that each other plugin writes, and the real ``medfactory`` script for the signal.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medfactory.base import publish
from medfactory.base.errors import CorpusError
from medfactory.base.publish import publish_datasets
from medfactory.base.registry import OWNER_KEY, REGISTRY_NAME
from medfactory.corpus.pipeline import PrepareOptions, prepare_corpus, registry_entries
from medfactory.plugins.brateca import BRATECA_MAPPING
from medfactory.plugins.notes import GENERIC_MAPPING
from medfactory.plugins.preferences import prepare_preferences
from medfactory.plugins.semclinbr import SEMCLINBR_MAPPING

REPOSITORY = Path(__file__).resolve().parents[1]
NOTE = "Paciente refere dor torácica há dois dias, sem febre. Ao exame, murmúrio vesicular presente bilateralmente."
# Every plugin that writes under data/ (and the two other writers of the registry), with a dataset name each owns.
OWNERS = {
    "notes": "hc_notes", "semclinbr": "semclinbr", "brateca": "brateca", "lopes2019": "lopes2019", "head_qa": "head_qa_es",
    "mimic_cxr": "mimic_cxr", "mimic-cxr-ptbr": "mimic_cxr_ptbr", "pt_exam_mcq": "pt_exam_mcq", "preferences": "prefs",
    "demo": "demo", "likert": "likert",
}  # fmt: skip
MAPPINGS = {"notes": GENERIC_MAPPING, "semclinbr": SEMCLINBR_MAPPING, "brateca": BRATECA_MAPPING}


def write_notes_csv(path: Path, notes: int = 6) -> Path:
    rows = ["text,patient_id,note_id,id_paciente,id_nota,subject_id"]
    rows += [f'"{NOTE} Nota {index}.",p{index},n{index},p{index},n{index},p{index}' for index in range(notes)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def write_prefs(path: Path) -> Path:
    path.write_text(json.dumps({"prompt": "Dose?", "chosen": "1 g", "rejected": "10 g"}) + "\n", encoding="utf-8")
    return path


def run_writer(writer: str, name: str, root: Path, tmp_path: Path, replace: bool = False) -> dict:
    """The real prepare of ``writer`` with ``--name name``."""
    if writer == "preferences":
        return prepare_preferences(write_prefs(tmp_path / "prefs.jsonl"), name, root, replace=replace)
    options = PrepareOptions(name=name, mapping=MAPPINGS[writer], plugin=writer, likert_notes=0, replace=replace)
    return prepare_corpus([write_notes_csv(tmp_path / "notes.csv")], options, root)


def someone_elses_dataset(root: Path, owner: str, name: str) -> dict[str, bytes]:
    """``data/<name>/`` with ``owner``'s manifest, and registry key ``name`` tagged with ``owner``; returns the bytes to compare."""
    folder = root / "data" / name
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps({"plugin": owner, "corpus": owner}), encoding="utf-8")
    registry = {name: {"file_name": f"data/{name}/train.jsonl", OWNER_KEY: owner}, "unrelated": {"file_name": "data/u/u.jsonl"}}
    (root / REGISTRY_NAME).write_text(json.dumps(registry), encoding="utf-8")
    return snapshot(root)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too), by relative path."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


WRITERS = ("notes", "semclinbr", "brateca", "preferences")
PAIRS = [(writer, owner) for writer in WRITERS for owner in OWNERS if owner != writer]


@pytest.mark.parametrize(("writer", "owner"), PAIRS, ids=[f"{w}-over-{o}" for w, o in PAIRS])
def test_a_prepare_never_replaces_another_plugins_dataset(writer: str, owner: str, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    name = OWNERS[owner].replace("-", "_")
    before = someone_elses_dataset(root, owner, name)
    with pytest.raises(CorpusError, match=rf"'prepare {owner}'.*--replace"):
        run_writer(writer, name, root, tmp_path)
    assert snapshot(root) == before  # nothing replaced, nothing left behind
    run_writer(writer, name, root, tmp_path, replace=True)
    registry = json.loads((root / REGISTRY_NAME).read_text(encoding="utf-8"))
    assert registry[name][OWNER_KEY] == writer
    assert registry["unrelated"] == {"file_name": "data/u/u.jsonl"}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_registry_key_of_another_plugin_is_refused_even_without_its_folder(writer: str, tmp_path: Path) -> None:
    """``--name head_qa_es_sft`` once hijacked a tracked entry of the repository's own registry."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / REGISTRY_NAME).write_bytes((REPOSITORY / REGISTRY_NAME).read_bytes())
    before = snapshot(root)
    with pytest.raises(CorpusError, match=r"'head_qa_es_sft'.*'prepare head_qa'"):
        run_writer(writer, "head_qa_es_sft", root, tmp_path)
    assert snapshot(root) == before


def test_a_rerun_replaces_its_own_dataset_and_a_pre_tagging_registry_is_adopted(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first = run_writer("notes", "hc_notes", root, tmp_path)
    assert first["plugin"] == "notes"
    assert json.loads((root / "data/hc_notes/manifest.json").read_text(encoding="utf-8"))["plugin"] == "notes"
    registry_path = root / REGISTRY_NAME
    untagged = {name: {k: v for k, v in entry.items() if k != OWNER_KEY} for name, entry in json.loads(registry_path.read_text()).items()}
    registry_path.write_text(json.dumps(untagged), encoding="utf-8")  # as an older medfactory wrote it
    run_writer("notes", "hc_notes", root, tmp_path)
    assert all(entry[OWNER_KEY] == "notes" for entry in json.loads(registry_path.read_text()).values())


def test_a_folder_without_a_manifest_is_someone_elses(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "data/hc_notes").mkdir(parents=True)
    (root / "data/hc_notes/annotations.tsv").write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"something other than medfactory \(no manifest\).*--replace"):
        run_writer("notes", "hc_notes", root, tmp_path)
    assert (root / "data/hc_notes/annotations.tsv").is_file()


@pytest.mark.parametrize("payload", ["[1, 2]", '"text"', "3", '{"a": 1}'])
def test_a_registry_that_is_json_but_not_an_object_is_refused_before_any_data_changes(payload: str, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    run_writer("notes", "hc_notes", root, tmp_path)
    (root / REGISTRY_NAME).write_text(payload, encoding="utf-8")
    before = snapshot(root)
    with pytest.raises(CorpusError, match=rf"{REGISTRY_NAME}: .*not an object.*Fix or delete"):
        run_writer("notes", "hc_notes", root, tmp_path)
    assert snapshot(root) == before


def _fail_fsync_of(monkeypatch: pytest.MonkeyPatch, fragment: str) -> None:
    """ENOSPC from fsync of any file whose path contains ``fragment`` (what a full disk does to a buffered write)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell which file is synced")
@pytest.mark.parametrize("fragment", [REGISTRY_NAME, "manifest.json"])
def test_a_full_disk_leaves_the_previous_dataset_and_registry_and_says_so(fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "repo"
    run_writer("notes", "hc_notes", root, tmp_path)
    (root / REGISTRY_NAME).write_text(json.dumps({"other": {"file_name": "data/o/o.jsonl"}}), encoding="utf-8")  # the update needs a write
    before = snapshot(root)
    _fail_fsync_of(monkeypatch, fragment)
    with pytest.raises(CorpusError, match=r"no space left on the device\)\. Nothing was replaced.*Fix: free space"):
        run_writer("notes", "hc_notes", root, tmp_path)
    monkeypatch.undo()
    assert snapshot(root) == before


def test_a_failed_registry_rename_puts_the_previous_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "repo"
    run_writer("notes", "hc_notes", root, tmp_path)
    (root / REGISTRY_NAME).write_text(json.dumps({"other": {"file_name": "data/o/o.jsonl"}}), encoding="utf-8")
    before = snapshot(root)
    real_replace = os.replace

    def replace(source, target) -> None:
        if Path(target).name == REGISTRY_NAME:
            raise OSError(errno.EIO, "Input/output error")
        real_replace(source, target)

    monkeypatch.setattr(publish.os, "replace", replace)
    with pytest.raises(OSError, match="Input/output"):
        run_writer("notes", "hc_notes", root, tmp_path)
    monkeypatch.undo()
    assert snapshot(root) == before


def test_staging_left_by_a_killed_run_is_removed_and_counted_but_a_live_runs_is_not(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    stale = root / "data" / ".hc_notes.staging.999999.abc"
    stale.mkdir()
    (stale / "train.jsonl").write_text('{"text": "a killed run\'s copy"}\n', encoding="utf-8")
    live_code = (
        "import sys, time; from pathlib import Path; from medfactory.base.atomic import make_staging_dir; "
        "print(make_staging_dir(Path(sys.argv[1])), flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", live_code, str(root / "data" / "hc_notes")], stdout=subprocess.PIPE, text=True)
    try:
        live = Path(holder.stdout.readline().strip())
        manifest = run_writer("notes", "hc_notes", root, tmp_path)
        assert manifest["stale_staging_removed"] == 1
        assert not stale.exists()
        assert live.is_dir()  # its run holds the lock: not ours to remove
    finally:
        holder.kill()
        holder.wait()
    assert run_writer("notes", "hc_notes", root, tmp_path)["stale_staging_removed"] == 1  # the lock went with the process


def _big_export(path: Path, notes: int) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("text,patient_id\n")
        for index in range(notes):
            handle.write(f'"{NOTE} Evolução número {index} do paciente.",p{index % 5000}\n')
    return path


def _as_from_a_terminal() -> None:
    """In the child before exec: SIGINT and SIGTERM delivered and handled by default, whatever the test worker inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_staging_copy(sent: signal.Signals, tmp_path: Path) -> None:
    """docker stop / preemption: the previous dataset stays, and no copy of clinical text is left in data/."""
    root = tmp_path / "repo"
    run_writer("notes", "hc_notes", root, tmp_path)
    before = snapshot(root)
    export = _big_export(tmp_path / "big.csv", 300_000)
    medfactory = Path(sys.executable).with_name("medfactory")
    command = [str(medfactory), "prepare", "notes", "--source", str(export), "--name", "hc_notes", "--output-root", str(root), "--identifier-mode", "report"]
    # As from a terminal: a suite started in the background by a script (`make test &`, some CI runners) inherits
    # SIGINT ignored, so would this child, and Python then installs no KeyboardInterrupt handler (measured: exit 0).
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal)
    deadline = time.monotonic() + 120
    while not list((root / "data").glob(".hc_notes.staging.*")):
        assert process.poll() is None, "the run ended before it could be signalled; make the export bigger"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # well inside the pass
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "Traceback" not in stderr or sent == signal.SIGINT
    assert not list((root / "data").glob(".hc_notes.*"))
    assert snapshot(root) == before


def test_dataset_folder_names_cannot_leave_data(tmp_path: Path) -> None:
    for dataset_dir in ("data/../../escape", "/tmp/abs", "data/a/../../b", "data/\uff0e\uff0e"):
        with pytest.raises(CorpusError, match="cannot name a file or folder"), publish_datasets(tmp_path, dataset_dir, {}, "notes"):
            pass
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_registry_entries_of_a_notes_dataset_are_owned_by_its_plugin(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    run_writer("semclinbr", "semclinbr", root, tmp_path)
    registry = json.loads((root / REGISTRY_NAME).read_text(encoding="utf-8"))
    assert {name: entry[OWNER_KEY] for name, entry in registry.items()} == dict.fromkeys(registry_entries("semclinbr"), "semclinbr")


def test_the_medfactory_script_turns_a_full_disk_into_one_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import medfactory.cli as cli

    def full_disk() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "data/hc_notes/train.jsonl")

    monkeypatch.setattr(cli, "app", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert "No space left on device writing data/hc_notes/train.jsonl" in message
    assert "what existed before is unchanged" in message and "Traceback" not in message
    assert signal.getsignal(signal.SIGTERM) is cli.exit_on_sigterm
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_fixed_name_plugin_refuses_a_folder_a_notes_run_wrote_under_its_name(tmp_path: Path) -> None:
    """Before ownership, ``prepare notes --name lopes2019`` wrote data/lopes2019; the real lopes2019 run must not silently replace it."""
    from medfactory.plugins.lopes2019 import RAW_FOLDERS, TAGGED_FOLDER, prepare_lopes2019

    source = tmp_path / "lopes"
    for folder in RAW_FOLDERS:
        (source / folder).mkdir(parents=True)
        (source / folder / "caso1.txt").write_text(f"{NOTE} ({folder})", encoding="utf-8")
    (source / TAGGED_FOLDER).mkdir()
    tagged = "".join(f"{word}\tN\t{word.lower()}\n" for word in NOTE.split())  # token<TAB>POS<TAB>lemma
    (source / TAGGED_FOLDER / "caso2.txt").write_text(tagged, encoding="utf-8")
    root = tmp_path / "repo"
    run_writer("notes", "lopes2019", root, tmp_path)
    before = snapshot(root)
    with pytest.raises(CorpusError, match=r"would replace 'lopes2019' \(registered for 'data/lopes2019/train.jsonl' by 'prepare notes'\).*--replace"):
        prepare_lopes2019(source, output_root=root)
    assert snapshot(root) == before
    manifest = prepare_lopes2019(source, output_root=root, replace=True)
    assert manifest["plugin"] == "lopes2019"
    assert json.loads((root / REGISTRY_NAME).read_text(encoding="utf-8"))["lopes2019"][OWNER_KEY] == "lopes2019"
