"""`medfactory bench` of the recipes that continue an adapter (DPO) or read images (MedGemma): the two
longest bench runs, in their own file so that `make test` runs them beside tests/test_bench.py (pytest-xdist
schedules whole files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfactory.bench.perf_model import load_config, model_shape, training_flops_per_token
from testing_utils.bench_runs import run_bench

pytestmark = pytest.mark.slow


def test_dpo_recipe_continues_an_adapter_like_its_sft_recipe(repo_root: Path, tmp_path: Path) -> None:
    results, _ = run_bench(repo_root, tmp_path, "spanish_medical_dpo", "--steps", "1", "--warmup", "1")
    (result,) = results
    assert result["ok"]
    assert result["tokens"] == 1 * 2 * 8 * 2 * 256  # chosen and rejected of 2 x 8 pairs
    adapter = json.loads((tmp_path / "scratch" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 64 and adapter["lora_alpha"] == 16  # spanish_medical_qlora_sft's LoRA, which the DPO continues
    args = json.loads((tmp_path / "scratch" / "as_written" / "args.json").read_text())
    assert args["ref_model_adapters"] == args["adapter_name_or_path"] == str(tmp_path / "scratch" / "adapter")
    config = load_config(args["model_name_or_path"])
    policy_only = training_flops_per_token(model_shape(config), 256, "lora", result["trainable_params"]).total
    assert result["flops_per_token"] > policy_only  # the reference model's forward pass is counted


def test_medgemma_multimodal_recipe_counts_images_and_flags_a_changed_batch(repo_root: Path, tmp_path: Path) -> None:
    results, out = run_bench(repo_root, tmp_path, "medgemma_cxr_ptbr_lora", "--steps", "1", "--warmup", "1", "--set", "gradient_accumulation_steps=2")
    (result,) = results
    assert result["ok"]
    assert result["tokens"] == 1 * 1 * 2 * 256
    assert result["flops_per_image"] > 0 and result["images_per_second"] == pytest.approx(2 / result["step_seconds"][0])
    assert result["same_training"] == ["effective batch: 16 -> 2 sequences per step"]
    assert "NOT the recipe's training" in out
