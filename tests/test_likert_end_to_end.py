"""The Likert study through the CLI on tiny models, CPU and offline: completions of two models,
blind cards, ratings filled in as raters would, a judge against a live local server, the report."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from medfactory.base.jsonl import read_jsonl, write_jsonl
from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.eval.likert import CRITERIA
from medfactory.run.tiny_model import build_tiny_model
from testing_utils.tiny_models import build_constant_answer_model


def medfactory(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "medfactory.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def fill_workbook(path: Path, rng: random.Random) -> int:
    """Score every card as a rater would, in the sheet's score columns; returns the cells filled."""
    from openpyxl import load_workbook

    workbook = load_workbook(path)
    sheet = workbook["Cards"]
    header = [cell.value for cell in sheet[1]]
    columns = [header.index(criterion.name) + 1 for criterion in CRITERIA]
    filled = 0
    for row in range(2, sheet.max_row + 1):
        if sheet.cell(row=row, column=1).value:
            for column in columns:
                sheet.cell(row=row, column=column).value = rng.randint(1, 5)
                filled += 1
    workbook.save(path)
    return filled


@pytest.mark.slow
def test_likert_study_end_to_end(repo_copy: Path, llamafactory_api) -> None:
    notes = list(generate_notes(300, seed=21))
    heldout = repo_copy / "heldout.jsonl"
    write_jsonl(heldout, ({"text": note, "id": f"note{i}"} for i, note in enumerate(notes[:5])))
    models = {
        "tiny-mistral": build_tiny_model("mistral", notes),
        "tiny-llama": build_tiny_model("llama", notes),
    }
    (repo_copy / "models.yaml").write_text(
        "models:\n" + "".join(f"  - {{name: {name}, model_name_or_path: {path}}}\n" for name, path in models.items())
    )
    cpu = ["--override", "bf16=false", "--override", "max_new_tokens=16", "--override", "preprocessing_num_workers=1"]
    medfactory(repo_copy, "likert", "run", "--heldout", "heldout.jsonl", "--models", "models.yaml", "--study", "s1", "--raters", "ana,bruno", *cpu)
    study = repo_copy / "reports" / "likert" / "s1"

    completions = read_jsonl(study / "completions.jsonl")
    assert len(completions) == 10 and {c["model"] for c in completions} == set(models)
    assert all(c["completion"] for c in completions)
    order = json.loads((repo_copy / "data" / "likert" / "prompts_ids.json").read_text())
    assert order == [f"note{i}" for i in range(5)]
    for completion in completions:  # each completion joined back to the note its excerpt came from
        assert notes[int(completion["note_id"][4:])].startswith(completion["excerpt"])

    rng = random.Random(3)
    for rater in ("ana", "bruno"):
        assert fill_workbook(study / "raters" / f"{rater}.xlsx", rng) == 10 * len(CRITERIA)
        assert "tiny-" not in (study / "raters" / f"{rater}.xlsx").read_bytes().decode("latin-1")

    endpoint = llamafactory_api(build_constant_answer_model(repo_copy / "judge-model", '{"format": 4, "spelling": 5, "coherence": 3}'))
    medfactory(repo_copy, "likert", "judge", "--study", "s1", "--endpoint", endpoint, "--model", "tiny-judge", "--retries", "1")
    judge_csv = study / "ratings" / "judge_tiny-judge.csv"
    assert judge_csv.read_text().count(",judge:tiny-judge,") == 10 * len(CRITERIA)

    medfactory(
        repo_copy, "likert", "report", "--study", "s1",
        "--ratings", str(study / "raters" / "ana.xlsx"), "--ratings", str(study / "raters" / "bruno.xlsx"), "--ratings", str(judge_csv),
    )  # fmt: skip
    report = (study / "report" / "report.md").read_text()
    for expected in ("tiny-mistral", "tiny-llama", "judge:tiny-judge", "Friedman", "Holm", "alpha", *(c.name for c in CRITERIA)):
        assert expected in report, expected
    assert (study / "report" / "figures" / "stacked_bars.png").stat().st_size > 1000
    for table in ("table1_summary.csv", "table2_frequencies.csv", "agreement.csv"):
        assert (study / "report" / table).is_file(), table
    for completion in completions:  # the report holds numbers and model names, no note text
        assert completion["excerpt"][:30] not in report
