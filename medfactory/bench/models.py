"""Random-weight models with the exact configuration of each recipe's base model, for ``medfactory bench``.

The configuration files in ``medfactory/model_configs/`` are the published ``config.json`` of each
base model (shapes, attention layout, vocabulary); nothing is downloaded. Which model has which
file is the base-model table, ``medfactory/recipes/base_models.yaml``: fine-tunes of a base
(BioMistral of Mistral-7B-Instruct-v0.1, the clibrain Spanish models of LLaMA-2-7B and
Mistral-7B-v0.1) share its shapes, so they map to its file. With ``tiny=True`` the same architecture
is shrunk to a CPU-sized model: the same code path, in seconds.

Built models are cached under ``$MEDFACTORY_CACHE/bench`` by a hash of the configuration and dtype.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from medfactory.base.atomic import atomic_directory
from medfactory.recipes.base_models import BASE_MODELS as TABLE
from medfactory.recipes.base_models import config_file
from medfactory.run.tiny_model import (
    GEMMA_SPECIAL_TOKENS,
    cache_root,
    padded_vocab_size,
    train_gemma_tokenizer,
    train_tokenizer,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

BENCH_BUILDER_VERSION = 1

# Base model id (as recipes name it) -> shipped configuration file, with where its values come from:
# the models of medfactory/recipes/base_models.yaml that have a configuration.
BASE_MODELS: dict[str, tuple[str, str]] = {
    model_id: (model.config, model.config_note) for model_id, model in TABLE.items() if model.config is not None
}

# The tiny variant: every width a multiple of 64 (bitsandbytes' CPU 4-bit kernels need it).
TINY_TEXT = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8}
TINY_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2, "patch_size": 56}
TINY_IMAGE_TOKENS = 16  # 16 x 16 patches of 56 px pooled to 4 x 4


def base_config_path(model_name_or_path: str) -> Path:
    """The shipped configuration for a recipe's base model; a clear error for any other model."""
    if model_name_or_path not in BASE_MODELS:
        known = ", ".join(sorted(BASE_MODELS))
        raise SystemExit(
            f"no shipped configuration for base model {model_name_or_path!r}. Known: {known}. "
            "Pass --model-config PATH/config.json for another model."
        )
    return config_file(BASE_MODELS[model_name_or_path][0])


def shrink(values: dict) -> dict:
    """The same architecture at CPU size: fewer and narrower layers, same attention layout and heads ratio."""
    values = json.loads(json.dumps(values))
    text = values.get("text_config", values)
    ratio = max(1, text["num_attention_heads"] // text.get("num_key_value_heads", text["num_attention_heads"]))
    text.update(TINY_TEXT, num_key_value_heads=max(1, TINY_TEXT["num_attention_heads"] // ratio))
    if "head_dim" in text:
        text["head_dim"] = TINY_TEXT["hidden_size"] // TINY_TEXT["num_attention_heads"] * 2
    if "sliding_window_pattern" in text:
        text["num_hidden_layers"] = text["sliding_window_pattern"]  # one local/global cycle
        text["sliding_window"] = 64
    if "vision_config" in values:
        values["vision_config"].update(TINY_VISION)
        values["mm_tokens_per_image"] = TINY_IMAGE_TOKENS
    return values


def bench_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU, as the recipes train. On CPU the benchmark trains in float32 (``bf16: false``,
    measure.py), but LLaMA-Factory loads a checkpoint in its own dtype (``torch_dtype="auto"``): bf16
    weights would keep the frozen embeddings, output layer and norms in bf16, and PyTorch multiplies
    bf16 matrices with a scalar loop on CPUs without AVX-512 BF16 (a tiny MedGemma step: 170 s instead of 4 s)."""
    import torch

    return torch.float32 if device == "cpu" else torch.bfloat16


def _fingerprint(values: dict, dtype: torch.dtype) -> str:
    # The dtype is part of the key: a tiny model built on a GPU (bf16) is not the CPU's (float32).
    return hashlib.sha256(json.dumps([BENCH_BUILDER_VERSION, values, str(dtype)], sort_keys=True).encode()).hexdigest()[:16]


def build_bench_model(config_values: dict, texts: list[str], device: str = "cpu", cache_dir: Path | None = None) -> Path:
    """Build (or reuse) a random-weight model of ``config_values`` with a tokenizer trained on ``texts``.

    The vocabulary keeps the configuration's size (the output layer is a large share of the FLOPs
    and memory); the tokenizer only uses its first few thousand ids. Special-token ids (begin,
    end, image) are set to the tokenizer's; no shape changes. Weights are initialised on
    ``device`` (a GPU initialises 7B parameters in seconds), in ``bench_dtype(device)``.
    """
    import torch

    from medfactory.bench.perf_model import load_config, model_class

    is_vision = "vision_config" in config_values
    tokenizer = train_gemma_tokenizer(texts, 2000) if is_vision else train_tokenizer(texts, vocab_size=2000)
    values = json.loads(json.dumps(config_values))
    text = values.get("text_config", values)
    text["vocab_size"] = max(text["vocab_size"], padded_vocab_size(len(tokenizer)))
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if is_vision:
        ids = {token: tokenizer.convert_tokens_to_ids(token) for token in GEMMA_SPECIAL_TOKENS}
        values.update(
            boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        special["pad_token_id"] = tokenizer.pad_token_id
    text.update(special)
    dtype = bench_dtype(device)
    target = (cache_dir or cache_root() / "bench") / f"{values['model_type']}-{_fingerprint(values, dtype)}"
    if (target / "config.json").is_file():
        logger.info("reusing cached bench model at %s", target)
        return target

    config = load_config(values)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class(config)._from_config(config, dtype=dtype)
    with atomic_directory(target) as staging:
        model.save_pretrained(staging)
        if is_vision:
            _gemma_processor(tokenizer, values["mm_tokens_per_image"], values["vision_config"]["image_size"]).save_pretrained(staging)
        else:
            tokenizer.save_pretrained(staging)
    logger.info("built bench model (%d parameters) at %s", model.num_parameters(), target)
    del model
    return target


def _gemma_processor(tokenizer, image_tokens: int, image_size: int):
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    return Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        image_seq_length=image_tokens,
        chat_template="{% for message in messages %}{{ message['content'] }}{% endfor %}",
    )


def build_adapter(model_dir: Path, lora: dict, directory: Path) -> Path:
    """A random LoRA adapter on ``model_dir`` with the settings of the recipe that produces it (DPO
    continues an SFT adapter; the benchmark has none, so it builds one of the same rank and targets)."""
    from peft import LoraConfig, get_peft_model

    from medfactory.bench.perf_model import load_config, model_class

    if (directory / "adapter_config.json").is_file():
        return directory
    config = load_config(model_dir)
    model = model_class(config).from_pretrained(model_dir, dtype="auto")  # the model's own dtype (bench_dtype)
    targets = lora.get("lora_target", "all")
    peft_config = LoraConfig(
        r=int(lora.get("lora_rank", 8)),
        lora_alpha=int(lora.get("lora_alpha", 16)),
        lora_dropout=float(lora.get("lora_dropout", 0.0)),
        target_modules="all-linear" if targets == "all" else [t.strip() for t in str(targets).split(",")],
        task_type="CAUSAL_LM",
    )
    with atomic_directory(directory) as staging:
        get_peft_model(model, peft_config).save_pretrained(staging)
    return directory
