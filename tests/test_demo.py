"""The embedded default: the real recipe through the real `llamafactory-cli train`, offline, on CPU."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medfactory.recipes.paper_values import PAPER_VALUES
from medfactory.recipes.recipe_file import load_recipe, read_header, values_hash
from medfactory.run.demo import DEMO_EVAL_DATASET, DEMO_RECIPE, demo_overrides


def test_demo_overrides_leave_the_training_values_of_the_recipe_alone(tmp_path: Path) -> None:
    overrides = demo_overrides(tmp_path / "model", tmp_path / "saves" / "run", max_steps=100)
    # Of the paper's values, the demo may only swap the model, the data and the context length.
    assert set(overrides) & set(PAPER_VALUES["clinical_br_mistral"]) == {"model_name_or_path", "dataset", "cutoff_len"}
    recipe = load_recipe(Path(__file__).resolve().parents[1] / DEMO_RECIPE)
    for key in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "learning_rate", "adam_beta1", "adam_beta2"):
        assert key not in overrides and key in recipe
    # Eval loss as the recipe computes it, on a held-out set of its own (the recipe's eval_dataset is
    # the corpora's patient-disjoint validation splits; LLaMA-Factory refuses val_size beside it).
    assert recipe["eval_dataset"] and "val_size" not in recipe
    assert overrides["eval_dataset"] == DEMO_EVAL_DATASET and "val_size" not in overrides


@pytest.mark.slow
def test_demo_trains_a_real_lora_adapter_and_the_loss_falls(repo_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"  # --workdir, not the current folder, is where the recipe's relative paths live
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "medfactory.cli", "demo", "--max-steps", "240", "--workdir", str(repo_copy)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output_dir = repo_copy / "saves" / "demo" / "clinical_br_mistral"
    assert "saves/demo/clinical_br_mistral/adapter_model.safetensors" in result.stdout
    assert (output_dir / "training_loss.png").stat().st_size > 0

    # A real PEFT LoRA adapter with the recipe's values.
    adapter_config = json.loads((output_dir / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA"
    assert (adapter_config["r"], adapter_config["lora_alpha"], adapter_config["lora_dropout"]) == (8, 16, 0.1)
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]
    from safetensors.torch import load_file

    weights = load_file(output_dir / "adapter_model.safetensors")
    assert weights and all("lora_" in name for name in weights)
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())

    # The loss falls: eval loss on the fixed validation blocks, first evaluation against last.
    records = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    eval_losses = [record["eval_loss"] for record in records if "eval_loss" in record]
    train_losses = [record["loss"] for record in records if "loss" in record]
    assert records[-1]["current_steps"] == 240
    assert len(eval_losses) >= 3 and eval_losses[-1] < eval_losses[0]
    assert sum(train_losses[-4:]) / 4 < sum(train_losses[:4]) / 4
    assert "eval loss:" in result.stdout and "train loss:" in result.stdout

    # The demo run's provenance and model card carry the recipe's version, values and hashes.
    card = subprocess.run(
        [sys.executable, "-m", "medfactory.cli", "card", "saves/demo/clinical_br_mistral", "--recipe", str(DEMO_RECIPE)],
        cwd=repo_copy, capture_output=True, text=True,
    )  # fmt: skip
    assert card.returncode == 0, card.stderr
    provenance = json.loads((output_dir / "provenance.json").read_text())
    recipe_file = repo_copy / DEMO_RECIPE
    version = read_header(recipe_file)["version"]
    assert provenance["recipe"]["version"] == version
    assert provenance["recipe"]["sha256"] == hashlib.sha256(recipe_file.read_bytes()).hexdigest()
    assert provenance["recipe"]["values_hash"] == values_hash(load_recipe(recipe_file))
    model_card = (output_dir / "README.md").read_text()
    assert "clinical_br_mistral" in model_card and version in model_card and "2e-05" in model_card
    # The card shows what ran: the demo's command-line overrides, read back from the run folder.
    overridden = provenance["overridden"]
    assert overridden["max_steps"]["ran"] == 240 and overridden["dataset"]["ran"] == "clinical_br_demo"
    assert overridden["model_name_or_path"]["recipe"] == load_recipe(recipe_file)["model_name_or_path"]
    assert "| max steps" in model_card and "| 240 " in model_card and "override" in model_card
    assert "clinical_br_demo" in provenance["datasets"]
    # The eval loss came from the demo's own validation notes, never trained on.
    assert (repo_copy / "data" / "demo" / "validation.jsonl").is_file()
    assert DEMO_EVAL_DATASET in json.loads((repo_copy / "dataset_info.json").read_text())


def test_demo_outside_the_repository_says_where_to_run_it(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "medfactory.cli", "demo"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "recipes/clinical_br_mistral.yaml: not found" in result.stderr
    assert "repository root" in result.stderr
