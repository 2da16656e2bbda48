"""`medfactory recipes check` passes on the repository and fails, clearly, on broken recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medfactory.recipes.check import check_recipe
from medfactory.recipes.lock import lock_recipes
from medfactory.recipes.recipe_file import default_recipe_paths

MISTRAL = "recipes/clinical_br_mistral.yaml"


def run_check(cwd: Path, *paths: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medfactory.cli", "recipes", "check", *paths],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def edit(recipe: Path, old: str, new: str) -> None:
    text = recipe.read_text(encoding="utf-8")
    assert old in text, f"test set-up: {old!r} not in {recipe}"
    recipe.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_every_repository_recipe_passes_the_check(repo_root: Path) -> None:
    recipes = default_recipe_paths(repo_root / "recipes")
    assert {path.name for path in recipes} >= {"clinical_br_llama2.yaml", "clinical_br_mistral.yaml"}
    result = run_check(repo_root)
    assert result.returncode == 0, result.stderr
    for path in recipes:
        assert f"{path.name}: ok" in result.stdout


def test_typo_in_a_key_fails_with_a_suggestion(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "lora_dropout: 0.1", "lora_dropuot: 0.1")
    result = run_check(repo_copy, MISTRAL)
    assert result.returncode == 1
    assert "clinical_br_mistral.yaml: `lora_dropuot`: unknown key" in result.stderr
    assert "did you mean `lora_dropout`?" in result.stderr


def test_silently_ignored_quantization_method_fails(repo_copy: Path) -> None:
    with open(repo_copy / MISTRAL, "a", encoding="utf-8") as handle:
        handle.write("quantization_bit: 4\nquantization_method: bitsandbytes\n")
    result = run_check(repo_copy, MISTRAL)
    assert result.returncode == 1
    assert "`quantization_method`: `bitsandbytes` is accepted but silently ignored" in result.stderr
    assert "use `quantization_method: bnb`" in result.stderr


def test_invalid_enum_value_fails(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "stage: pt", "stage: pretrain")
    problems = [str(problem) for problem in check_recipe(repo_copy / MISTRAL)]
    assert any("`stage`: `pretrain` is not one of LLaMA-Factory's values" in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("learning_rate: 2.0e-5", "learning_rate: 1.0e-4", "learning_rate", "uses 2e-05"),
        ("lora_rank: 8 ", "lora_rank: 16 ", "lora_rank", "uses 8"),
        ("lora_target: q_proj,v_proj", "lora_target: all", "lora_target", "uses 'q_proj,v_proj'"),
        ("cutoff_len: 32768", "cutoff_len: 4096", "cutoff_len", "uses 32768"),
    ],
)
def test_changed_paper_value_fails(repo_copy: Path, old: str, new: str, key: str, expected: str) -> None:
    edit(repo_copy / MISTRAL, old, new)
    drift = [str(p) for p in check_recipe(repo_copy / MISTRAL) if p.key == key]
    assert len(drift) == 1, drift
    assert f"clinical_br_mistral.yaml: `{key}`: is" in drift[0]
    assert expected in drift[0] and "Clinical-BR" in drift[0]


def test_changed_paper_value_fails_the_cli(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "lora_alpha: 16", "lora_alpha: 32")
    result = run_check(repo_copy, MISTRAL)
    assert result.returncode == 1
    assert "clinical_br_mistral.yaml: `lora_alpha`: is 32 but Clinical-BR" in result.stderr
    assert "1 of 1 recipes have problems" in result.stderr


def test_sixteen_bit_training_is_required(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "bf16: true", "bf16: false")
    assert any("16-bit" in str(problem) for problem in check_recipe(repo_copy / MISTRAL))


def test_unregistered_dataset_fails(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "dataset: semclinbr,brateca,lopes2019", "dataset: semclinbr,brateca,lopes2019,notes_hc")
    problems = [str(problem) for problem in check_recipe(repo_copy / MISTRAL)]
    assert any("dataset `notes_hc` is not registered" in problem and "medfactory prepare notes_hc" in problem for problem in problems)


def test_remote_logging_and_overwrite_are_refused(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "report_to: none", "report_to: wandb")
    with open(repo_copy / MISTRAL, "a", encoding="utf-8") as handle:
        handle.write("overwrite_output_dir: true\n")
    problems = [str(problem) for problem in check_recipe(repo_copy / MISTRAL)]
    assert any("`report_to`: is 'wandb'" in problem for problem in problems)
    assert any("`overwrite_output_dir`" in problem for problem in problems)


def test_changed_value_without_version_bump_fails_and_bump_plus_lock_passes(repo_copy: Path) -> None:
    recipe = repo_copy / MISTRAL
    edit(recipe, "save_steps: 100 ", "save_steps: 50 ")
    problems = [str(problem) for problem in check_recipe(recipe)]
    assert any("values changed but the version is still 1.0.0" in problem for problem in problems), problems

    # A released version can never be re-locked with other values.
    with pytest.raises(ValueError, match="already locked with other values"):
        lock_recipes([recipe])

    edit(recipe, "# version: 1.0.0", "# version: 1.0.1")
    assert any("no entry for `clinical_br_mistral 1.0.1`" in str(p) for p in check_recipe(recipe))
    with open(repo_copy / "recipes" / "CHANGELOG.md", "a", encoding="utf-8") as handle:
        handle.write("\n## clinical_br_mistral 1.0.1\nCheckpoint every 50 steps.\n")
    lock_recipes([recipe])
    assert check_recipe(recipe) == []


def test_missing_header_and_yaml_error_are_reported(repo_copy: Path) -> None:
    recipe = repo_copy / MISTRAL
    recipe.write_text(recipe.read_text(encoding="utf-8").replace("# source:", "# origin:", 1), encoding="utf-8")
    assert any("`# source:`: missing from the header" in str(p) for p in check_recipe(recipe))
    broken = repo_copy / "recipes" / "broken.yaml"
    broken.write_text("# recipe: broken\nstage: [pt\n", encoding="utf-8")
    problems = [str(problem) for problem in check_recipe(broken)]
    assert any("not valid YAML" in problem and "line" in problem for problem in problems), problems
