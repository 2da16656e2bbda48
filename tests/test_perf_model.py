"""The FLOP count, GPU peaks and memory estimate behind `medfactory bench`.

The FLOP formulas are checked against torch's own FLOP counter on a real forward and backward
pass (eager attention, which computes the dense T x T products: the non-causal count)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.utils.flop_counter import FlopCounterMode

from medfactory.bench.models import BASE_MODELS, base_config_path, shrink
from medfactory.bench.perf_model import (
    estimate_memory,
    load_config,
    mean_attended_keys,
    mfu,
    model_class,
    model_shape,
    peak_bf16_tflops,
    training_flops_per_token,
)

CONFIGS = Path(__file__).resolve().parents[1] / "medfactory" / "model_configs"


def _tiny(name: str, vocab: int = 512):
    values = shrink(json.loads((CONFIGS / f"{name}.json").read_text()))
    values.get("text_config", values)["vocab_size"] = vocab
    config = load_config(values)
    for part in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
        if part is not None:
            part._attn_implementation = "eager"
    return config


def _counted_training_flops(model, tokens: int, vocab: int) -> int:
    ids = torch.randint(0, vocab, (1, tokens))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["mistral_7b_v02", "llama2_7b"])
def test_lora_training_flops_match_torch_flop_counter(name: str) -> None:
    """LoRA: 4N + 6 N_trainable + 3A per token; frozen weights get no weight gradient."""
    config = _tiny(name)
    torch.manual_seed(0)
    model = get_peft_model(model_class(config)(config), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.enable_input_require_grads()  # as LLaMA-Factory does with gradient checkpointing on
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counted = _counted_training_flops(model, 64, 512)
    predicted = training_flops_per_token(model_shape(config), 64, "lora", trainable, causal=False).total * 64
    # The only product not counted: rotary's inv_freq x positions (head_dim/2 x T), a few thousand FLOPs.
    assert predicted == pytest.approx(counted, rel=1e-4)
    # and the honest count is far from the 6N of full training
    assert predicted < 0.8 * training_flops_per_token(model_shape(config), 64, "full", 0, causal=False).total * 64


def test_full_training_flops_match_torch_flop_counter() -> None:
    config = _tiny("mistral_7b_v02")
    model = model_class(config)(config)
    counted = _counted_training_flops(model, 48, 512)
    assert training_flops_per_token(model_shape(config), 48, "full", 0, causal=False).total * 48 == pytest.approx(counted, rel=1e-4)


def test_vision_tower_flops_per_image_match_torch_flop_counter() -> None:
    config = _tiny("medgemma_4b")
    model = model_class(config)(config)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.model.get_image_features(torch.randn(1, 3, 896, 896))
    assert model_shape(config).vision_forward_flops_per_image == counter.get_total_flops()


def test_shipped_configs_have_the_published_parameter_counts() -> None:
    totals = {name: model_shape(load_config(CONFIGS / f"{name}.json")).total_params for name in ("llama2_7b", "mistral_7b_v02", "medgemma_4b")}
    assert totals["llama2_7b"] == 6_738_415_616  # LLaMA-2-7B
    assert totals["mistral_7b_v02"] == 7_241_732_096  # Mistral-7B
    assert round(totals["medgemma_4b"] / 1e9, 1) == 4.3  # Gemma 3 4B with its SigLIP tower


def test_every_base_model_of_a_training_recipe_has_a_config(repo_root: Path) -> None:
    from medfactory.recipes.recipe_file import load_recipe

    for recipe in sorted((repo_root / "recipes").glob("*.yaml")):
        values = load_recipe(recipe)
        if values.get("do_train"):
            assert values["model_name_or_path"] in BASE_MODELS, recipe.name
            assert base_config_path(values["model_name_or_path"]).is_file()


def test_bench_models_are_the_base_model_tables_models_with_a_config() -> None:
    from medfactory.recipes.base_models import BASE_MODELS as TABLE

    assert {model_id: (model.config, model.config_note) for model_id, model in TABLE.items() if model.config} == BASE_MODELS
    assert BASE_MODELS["mistral-community/Mistral-7B-v0.2"][0] == "mistral_7b_v02"  # the Clinical-BR Mistral base
    assert "mistralai/Mistral-7B-v0.2" not in BASE_MODELS  # no such model on the Hub
    for model in TABLE.values():  # a fine-tune keeps its parent's shapes: the same shipped configuration
        parent = TABLE.get(model.derived_from or "")
        if parent is not None and model.config and parent.config:
            assert model.config == parent.config, model.model_id


def test_unknown_base_model_error_names_the_known_ones_and_the_option() -> None:
    with pytest.raises(SystemExit, match=r"no shipped configuration for base model 'org/other'.*--model-config"):
        base_config_path("org/other")


def test_causal_and_sliding_window_attention_counts() -> None:
    assert mean_attended_keys(4, None) == 2.5  # (1 + 2 + 3 + 4) / 4
    assert mean_attended_keys(4, 2) == 1.75  # (1 + 2 + 2 + 2) / 4
    assert mean_attended_keys(4, 8) == 2.5  # a window longer than the sequence changes nothing
    assert mean_attended_keys(4, 2, causal=False) == 4.0
    gemma = model_shape(load_config(CONFIGS / "medgemma_4b.json"))
    assert gemma.attention_windows.count(None) == 5 and gemma.attention_windows.count(1024) == 29  # 5 local : 1 global
    mistral = model_shape(load_config(CONFIGS / "mistral_7b_v02.json"))
    assert set(mistral.attention_windows) == {None}
    assert set(model_shape(load_config(CONFIGS / "biomistral_7b.json")).attention_windows) == {4096}


def test_dpo_adds_one_reference_forward() -> None:
    shape = model_shape(_tiny("mistral_7b_v02"))
    policy = training_flops_per_token(shape, 64, "lora", 1000)
    dpo = training_flops_per_token(shape, 64, "lora", 1000, with_reference_model=True, reference_adapter_params=1000)
    assert dpo.total - policy.total == pytest.approx(2 * shape.language_linear_params + 2 * 1000 + policy.attention / 3)


def test_mfu_is_achieved_flops_over_peak() -> None:
    shape = model_shape(load_config(CONFIGS / "mistral_7b_v02.json"))
    flops = training_flops_per_token(shape, 32768, "lora", 3_407_872)
    assert mfu(10_000, 0, flops, 989.4) == pytest.approx(10_000 * flops.total / 989.4e12)


@pytest.mark.parametrize(
    ("name", "peak"),
    [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA H200", 989.4), ("Tesla T4", None)],
)
def test_peak_table(name: str, peak: float | None) -> None:
    assert peak_bf16_tflops(name) == peak


def test_memory_estimate_components() -> None:
    shape = model_shape(load_config(CONFIGS / "mistral_7b_v02.json"))
    estimate = estimate_memory(shape, 1, 32768, 3_407_872, None, 14336)
    gib = 1024**3
    assert estimate.weights == pytest.approx(shape.total_params * 2 / gib)
    assert estimate.checkpointed_activations == pytest.approx(32 * 32768 * 4096 * 2 / gib)
    assert estimate.logits == pytest.approx(32768 * 32000 * 12 / gib)
    assert 40 < estimate.total < 80  # the recipe's comment: one 32k block per micro-batch needs the 80 GB A100
    quantized = estimate_memory(shape, 1, 32768, 3_407_872, 4, 14336)
    assert quantized.weights < estimate.weights / 3
    no_checkpointing = estimate_memory(shape, 1, 32768, 3_407_872, None, 14336, gradient_checkpointing=False)
    assert no_checkpointing.total > 2 * estimate.total
