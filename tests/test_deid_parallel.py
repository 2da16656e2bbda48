"""De-identification over worker processes writes what one process writes: prepare --workers, deid apply --workers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medfactory.cli import app
from medfactory.corpus.deid.deidentifier import Deidentifier
from medfactory.corpus.deid.parallel import BatchedDeidentifier

NAMES = ["Joaquim Barbosa Tavares", "Maria Fontes Meireles", "Ana Luiza Prado", "Carlos Eduardo Souza"]


def pt_note(rng: random.Random, number: int) -> str:
    name = rng.choice(NAMES)
    day = rng.randint(1, 28)
    return (f"Paciente {name}, {rng.randint(20, 95)} anos, prontuário {rng.randint(10**6, 10**7 - 1)}, internado em {day:02d}/03/2021. "
            f"Nota {number}: refere dispneia; Dr. Paulo Mendes (CRM {rng.randint(10000, 99999)}/SP) mantém furosemida.")  # fmt: skip


def write_export(path: Path, notes: int) -> Path:
    rng = random.Random(7)
    rows = ["id,patient_id,text"] + [f'n{index},p{index % 9},"{pt_note(rng, index)}"' for index in range(notes)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def prepared_files(root: Path) -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted((root / "data" / "hc").glob("*.jsonl"))}


def test_prepare_with_two_workers_writes_what_one_process_writes(tmp_path: Path) -> None:
    source = write_export(tmp_path / "notes.csv", 150)  # more notes than one batch (64): several batches in flight
    outputs, manifests = [], []
    for workers in (1, 2):
        root = tmp_path / f"repo{workers}"
        args = ["prepare", "notes", "--source", str(source), "--name", "hc", "--output-root", str(root), "--deid-seed", "k", "--workers", str(workers)]
        result = CliRunner().invoke(app, [*args, "--likert-notes", "2", "--test-fraction", "0.2", "--validation-fraction", "0.1"])
        assert result.exit_code == 0, result.output
        outputs.append(prepared_files(root))
        manifests.append(json.loads((root / "data" / "hc" / "manifest.json").read_text(encoding="utf-8")))
    assert outputs[0] == outputs[1] and sum(text.count("\n") for text in outputs[0].values()) == 150
    assert manifests[0]["deid"]["findings_by_category"] == manifests[1]["deid"]["findings_by_category"]
    assert [manifest["deid"]["workers"] for manifest in manifests] == [1, 2]
    assert all(name not in text for text in outputs[1].values() for name in NAMES)


def test_prepare_refuses_zero_workers_naming_the_option(tmp_path: Path) -> None:
    args = ["prepare", "notes", "--source", str(write_export(tmp_path / "notes.csv", 3)), "--name", "hc", "--output-root", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, "--workers", "0"])
    assert result.exit_code == 1 and "--workers 0" in result.output
    assert not (tmp_path / "r" / "data").exists()


def test_deid_apply_with_two_workers_writes_what_one_process_writes(tmp_path: Path) -> None:
    rng = random.Random(11)
    notes = tmp_path / "notes"
    notes.mkdir()
    for index in range(70):
        (notes / f"patient{index % 5}_{index}.txt").write_text(pt_note(rng, index), encoding="utf-8")
    records = [json.dumps({"id": f"r{index}", "patient_id": f"p{index % 3}", "text": pt_note(rng, index)}) for index in range(80)]
    (notes / "batch.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    written = []
    for workers in (1, 2):
        output = tmp_path / f"out{workers}"
        args = ["deid", "apply", "--language", "pt", "--input", str(notes), "--output", str(output), "--seed", "k", "--workers", str(workers)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        written.append({path.name: path.read_text(encoding="utf-8") for path in sorted(output.iterdir())})
    assert written[0] == written[1] and len(written[0]) == 72  # 70 notes, batch.jsonl, spans.jsonl
    spans = [json.loads(line) for line in written[1]["spans.jsonl"].splitlines()]
    assert {span["document"] for span in spans} == {path.name for path in notes.iterdir()}
    zero = CliRunner().invoke(app, ["deid", "apply", "--language", "pt", "--input", str(notes), "--output", str(tmp_path / "z"), "--workers", "0"])
    assert zero.exit_code == 1 and "--workers 0" in zero.output


@pytest.mark.parametrize(("language", "workers"), [("pt", 1), ("pt", 2), ("es", 2)])
def test_batched_deidentifier_returns_every_note_once_in_order(language: str, workers: int) -> None:
    rng = random.Random(2)
    texts = [pt_note(rng, index) for index in range(50)]
    deidentifier = Deidentifier(language)
    assert ("crf" in deidentifier.layers) == (language == "es")  # the workers rebuild the CRF from the embedded model
    expected = [deidentifier.apply(text, patient_key=str(index % 4), mode="placeholder", seed="k") for index, text in enumerate(texts)]
    finished = []
    with BatchedDeidentifier(deidentifier, "placeholder", "k", workers=workers, batch_notes=3) as runner:
        for index, text in enumerate(texts):
            finished += runner.submit(text, str(index % 4), index)
        finished += runner.finish()
    assert [done.payload for done in finished] == list(range(50))
    assert [(done.text, done.spans) for done in finished] == expected
