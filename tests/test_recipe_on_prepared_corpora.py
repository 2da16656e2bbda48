"""The real Clinical-BR recipe, with its own dataset list, trains on what the three plugins prepared."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.run.demo import demo_overrides
from medfactory.run.tiny_model import build_tiny_model


def write_export(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.mark.slow
def test_clinical_br_recipe_trains_on_semclinbr_brateca_and_lopes2019(repo_copy: Path) -> None:
    notes = list(generate_notes(900, seed=5))
    exports = repo_copy / "exports"
    exports.mkdir()
    write_export(exports / "semclinbr.csv", ["id", "id_paciente", "texto"], [[f"s{i}", f"p{i // 3}", n] for i, n in enumerate(notes[:500])])
    write_export(exports / "brateca.csv", ["id_atendimento", "texto"], [[f"a{i // 2}", n] for i, n in enumerate(notes[500:800])])
    lopes = exports / "lopes"
    for folder in ("Texts SPN 1 Raw", "Texts SPN 2 Raw", "Texts Word Embeddings Training"):
        (lopes / folder).mkdir(parents=True)
    for i, note in enumerate(notes[800:]):
        (lopes / "Texts SPN 1 Raw" / f"CC{i}.txt").write_bytes(note.encode("cp1252").replace(b"\n", b"\r\n"))

    def cli(*args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "medfactory.cli", *args], cwd=repo_copy, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

    cli("prepare", "semclinbr", "--source", "exports/semclinbr.csv", "--likert-notes", "5")
    cli("prepare", "brateca", "--source", "exports/brateca.csv", "--likert-notes", "0")
    cli("prepare", "lopes2019", "--source", "exports/lopes")
    cli("recipes", "check", "recipes/clinical_br_mistral.yaml")

    model = build_tiny_model("mistral", notes)
    overrides = demo_overrides(model, repo_copy / "saves" / "run", max_steps=4)
    del overrides["dataset"], overrides["eval_dataset"]  # the recipe's own lists and their _validation splits
    overrides["tokenized_path"] = str(repo_copy / "saves" / "tokenized")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["llamafactory-cli", "train", "recipes/clinical_br_mistral.yaml", *(f"{k}={v}" for k, v in overrides.items())],
        cwd=repo_copy, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = [json.loads(line) for line in (repo_copy / "saves" / "run" / "trainer_log.jsonl").read_text().splitlines()]
    assert log[-1]["current_steps"] == 4
    assert (repo_copy / "saves" / "run" / "adapter_model.safetensors").is_file()
