"""The Spanish continued-pretraining, SFT-mix and MedGemma recipes: checked, registered for their writers, and MedGemma's run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfactory.base.registry import OWNER_KEY, load_registry
from medfactory.recipes.check import inspect_recipe
from medfactory.recipes.recipe_file import load_recipe
from medfactory.run.demo import DEMO_DATA_FILE, DEMO_EVAL_FILE, DEMO_EVAL_NOTES, DEMO_EVAL_SEED, demo_overrides, write_demo_corpus
from testing_utils.tiny_models import build_tiny_gemma3_text

NEW_RECIPES = ("spanish_medical_pt", "clinical_br_medgemma", "spanish_medical_sft_mix")
# Who writes each dataset the new recipes name: the owner tag its command publishes with (medfactory.base.publish).
WRITERS = {
    "documents_es": "documents",
    "documents_es_validation": "documents",
    "spanish_general_replay_text": "replay",
    "qa_es": "generate_qa",
    "head_qa_en_translated_es": "translate",  # medfactory/generate/translate.py OWNER
    "head_qa_es_sft": "head_qa",
}


@pytest.mark.parametrize("name", NEW_RECIPES)
def test_the_new_recipe_passes_recipes_check(repo_root: Path, name: str) -> None:
    report = inspect_recipe(repo_root / "recipes" / f"{name}.yaml")
    assert report.problems == []


def test_every_dataset_the_new_recipes_name_is_registered_for_the_command_that_writes_it(repo_root: Path) -> None:
    registry = load_registry(repo_root / "dataset_info.json")
    named = set()
    for name in NEW_RECIPES:
        values = load_recipe(repo_root / "recipes" / f"{name}.yaml")
        named |= {dataset for key in ("dataset", "eval_dataset") for dataset in str(values.get(key) or "").split(",") if dataset}
    named -= {"semclinbr", "brateca", "lopes2019", "semclinbr_validation", "brateca_validation"}  # the Clinical-BR plugins' own
    assert named == set(WRITERS)
    assert {dataset: registry[dataset].get(OWNER_KEY) for dataset in named} == WRITERS


def test_clinical_br_medgemma_trains_a_tiny_gemma3_text_model_with_eos_between_notes(repo_copy: Path, llamafactory_train) -> None:
    notes = write_demo_corpus(repo_copy / DEMO_DATA_FILE, count=60)
    write_demo_corpus(repo_copy / DEMO_EVAL_FILE, count=DEMO_EVAL_NOTES // 4, seed=DEMO_EVAL_SEED)
    model = build_tiny_gemma3_text(notes)
    output_dir = repo_copy / "saves" / "medgemma"
    overrides = demo_overrides(model, output_dir, max_steps=2)  # tiny model, demo notes, fp32 on CPU, short blocks
    output_dir = llamafactory_train(repo_copy, "recipes/clinical_br_medgemma.yaml", **overrides)

    log = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    assert log[-1]["current_steps"] == 2
    adapter = json.loads((output_dir / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "v_proj"} and adapter["r"] == 8
    # `template: empty` keeps the tokenizer's EOS between packed notes; `gemma` would put <end_of_turn> there.
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    blocks = [token for row in load_from_disk(str(overrides["tokenized_path"]))["train"]["input_ids"] for token in row]
    assert blocks.count(tokenizer.eos_token_id) >= 10
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") not in blocks
