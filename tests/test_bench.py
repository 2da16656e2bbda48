"""`medfactory bench` on CPU: the real recipes, run by LLaMA-Factory on tiny configurations of their base models.

The numbers of a tiny CPU run say nothing about a GPU; what these tests check is the path and the
arithmetic: the tokens the trainer counted are exactly the recipe's batch at the benchmark context,
the trainable parameters are the recipe's LoRA, FLOPs and MFU follow from them, and a variant that
changes the training is reported as such.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer

from medfactory.bench.measure import SCRATCH_MARKER, training_differences
from medfactory.bench.perf_model import (
    load_config,
    lora_params,
    model_shape,
    training_flops_per_token,
)
from medfactory.cli.bench import parse_set_options
from testing_utils.bench_runs import run_bench

pytestmark = pytest.mark.slow


def _lora_params(config, rank: int, targets: set[str]) -> int:
    """r x (in + out) for every targeted linear layer, from the configuration alone."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    q, kv, d, ffn = text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim, text.hidden_size, text.intermediate_size
    shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d), "gate_proj": (d, ffn), "up_proj": (d, ffn), "down_proj": (ffn, d)}
    return text.num_hidden_layers * sum(rank * (i + o) for name, (i, o) in shapes.items() if name in targets)


def test_clinical_br_pt_recipe_tokens_flops_and_mfu(repo_root: Path, tmp_path: Path) -> None:
    results, out = run_bench(repo_root, tmp_path, "clinical_br_mistral", "--steps", "3", "--warmup", "1", "--peak-tflops", "1.0")
    (result,) = results
    assert result["ok"] and result["tiny"] and result["device"] == "cpu"
    # stage pt, packing: every optimizer step trains 1 x 2 full blocks; with `packing: true` LLaMA-Factory
    # 0.9.5 makes its blocks cutoff_len - 1 long, and the trainer's own count shows it
    assert result["context"] == 256 and result["sequence_length"] == 255 and result["measured_steps"] == 3
    assert result["tokens"] == 3 * 1 * 2 * 255
    assert result["tokens_per_second"] == pytest.approx(result["tokens"] / sum(result["step_seconds"]), rel=1e-6)
    model_dir = Path(json.loads((tmp_path / "scratch" / "as_written" / "args.json").read_text())["model_name_or_path"])
    config = load_config(model_dir)
    assert config.model_type == "mistral" and config.sliding_window is None  # the Mistral-7B-v0.2 layout, shrunk
    assert result["trainable_params"] == _lora_params(config, 8, {"q_proj", "v_proj"})  # the recipe's LoRA: r 8 on q, v
    assert result["trainable_params"] == lora_params(config, 8, "q_proj,v_proj")  # what --estimate uses at 7B
    expected = training_flops_per_token(model_shape(config), 255, "lora", result["trainable_params"])
    assert result["flops_per_token"] == pytest.approx(expected.total)
    assert result["mfu"] == pytest.approx(result["tokens_per_second"] * expected.total / 1e12)
    assert result["workload_hours"] == pytest.approx(618_302_242 / result["tokens_per_second"] / 3600)
    assert result["same_training"] == []
    assert "tokens/s per GPU" in out and "TINY CPU configuration" in out
    assert "| as written | yes | cpu | 256 |" in re.sub(r" +", " ", out)  # the table row, whatever its column padding
    assert (tmp_path / "scratch" / SCRATCH_MARKER).is_file()


def test_qlora_sft_recipe_runs_4bit_with_its_lora(repo_root: Path, tmp_path: Path) -> None:
    results, _ = run_bench(repo_root, tmp_path, "spanish_medical_qlora_sft", "--steps", "1", "--warmup", "1")
    (result,) = results
    assert result["ok"]
    assert result["tokens"] == 1 * 4 * 4 * 256  # micro-batch 4 x accumulation 4, every example filling the context
    config = load_config(json.loads((tmp_path / "scratch" / "as_written" / "args.json").read_text())["model_name_or_path"])
    all_linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert result["trainable_params"] == _lora_params(config, 64, all_linear) == lora_params(config, 64, "all")
    log = (tmp_path / "scratch" / "as_written" / "llamafactory.log").read_text()
    assert "Quantizing model to 4 bit with bitsandbytes" in log


def test_sweep_measures_the_speed_settings_and_keeps_the_training(repo_root: Path, tmp_path: Path) -> None:
    results, out = run_bench(repo_root, tmp_path, "clinical_br_mistral", "--steps", "1", "--warmup", "1", "--sweep")
    names = [r["variant"] for r in results]
    assert names[0] == "as written"
    assert {"attention: sdpa", "fused AdamW", "micro-batch 2 x accumulation 1", "no gradient checkpointing"} <= set(names)
    assert all(r["ok"] and r["same_training"] == [] for r in results)
    assert all(r["tokens"] == 2 * 255 for r in results)  # every variant trains the same tokens per step
    assert "skipped attention: fa2: needs a GPU" in out and "skipped torch.compile: needs a GPU" in out
    assert "Fastest with the same training:" in out


def test_training_differences() -> None:
    recipe = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 4, "learning_rate": 2e-5, "optim": "adamw_torch", "flash_attn": "auto"}
    assert training_differences(recipe, {**recipe, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}) == []
    assert training_differences(recipe, {**recipe, "flash_attn": "fa2", "optim": "adamw_torch_fused", "enable_liger_kernel": True}) == []
    assert training_differences(recipe, {**recipe, "learning_rate": 1e-4}) == ["learning_rate: 2e-05 -> 0.0001"]
    assert training_differences(recipe, {**recipe, "gradient_accumulation_steps": 2}) == ["effective batch: 4 -> 2 sequences per step"]
    assert training_differences(recipe, {**recipe, "optim": "paged_adamw_8bit"}) == ["optim: adamw_torch -> paged_adamw_8bit"]


def test_inference_recipe_is_refused(repo_root: Path, tmp_path: Path) -> None:
    _, out = run_bench(repo_root, tmp_path, "medgemma_cxr_ptbr_predict_lora", expect_ok=False)
    assert "not a training recipe" in out


def test_foreign_workdir_is_never_emptied(repo_root: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "prepared.jsonl").write_text("keep me\n")
    _, out = run_bench(repo_root, tmp_path, "clinical_br_mistral", expect_ok=False)
    assert "was not made by `medfactory bench`" in out
    assert (scratch / "prepared.jsonl").read_text() == "keep me\n"


def test_set_options_are_typed_like_llamafactory() -> None:
    values = parse_set_options(["flash_attn=fa2", "enable_liger_kernel=true", "learning_rate=2e-5", "gradient_accumulation_steps=2"])
    assert values == {"flash_attn": "fa2", "enable_liger_kernel": True, "learning_rate": 2e-5, "gradient_accumulation_steps": 2}
    with pytest.raises(typer.BadParameter, match=r"--set 'flash_attn': expected KEY=VALUE, e.g. --set flash_attn=fa2"):
        parse_set_options(["bf16=false", "flash_attn"])


def test_bad_set_option_is_explained(repo_root: Path, tmp_path: Path) -> None:
    _, out = run_bench(repo_root, tmp_path, "clinical_br_mistral", "--set", "flash_attn", expect_ok=False)
    assert "expected KEY=VALUE" in out


def test_estimate_needs_no_gpu_and_reports_the_real_size(medfactory_cli, repo_root: Path) -> None:
    out = medfactory_cli(repo_root, "bench", "recipes/clinical_br_mistral.yaml", "--estimate")
    assert "32767 tokens per sequence" in out and "3,407,872 trainable parameters" in out  # r 8 on q, v of Mistral-7B
    assert "A100 40 GB: does not fit, A100 80 GB: fits" in out
    assert "the paper's run        3,583 tokens/s on one A100" in out
    dpo = medfactory_cli(repo_root, "bench", "recipes/spanish_medical_dpo.yaml", "--estimate")
    assert "167,772,160 trainable parameters" in dpo  # the SFT recipe's r 64 on all linear layers, continued
    # --set applies to the estimate too (it was ignored): MedGemma 27B at 4k tokens does not fit 80 GB, at 2k it does
    medgemma = ["bench", "recipes/clinical_br_medgemma.yaml", "--estimate"]
    assert "4095 tokens per sequence" in medfactory_cli(repo_root, *medgemma, "--set", "cutoff_len=4096")
    shorter = medfactory_cli(repo_root, *medgemma, "--set", "cutoff_len=2048")
    assert "2047 tokens per sequence" in shorter and "A100 80 GB: fits" in shorter
