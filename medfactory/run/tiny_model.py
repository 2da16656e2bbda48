"""The tiny stand-in for a 7B model that the demo trains, and the tokenizers ``bench`` builds.

Same architecture family, random weights, a tokenizer trained locally. No machine here reaches a
model hub, so the demo builds it offline. Each is
cached under ``$MEDFACTORY_CACHE`` (default ``~/.cache/medfactory``) by a hash of what
defines it, so a second run reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from medfactory.base.atomic import atomic_directory

logger = logging.getLogger(__name__)

# Bump when the way tiny models are built changes, so stale caches are not reused.
TINY_BUILDER_VERSION = 3

# Shapes are tiny; everything that makes a model "Mistral-7B-v0.2-like" is kept:
# grouped-query attention, no sliding window, rope_theta 1e6, untied embeddings. Every linear
# layer's width is a multiple of 64 (vocabulary padded too), so real bitsandbytes 4-bit (QLoRA)
# runs on them on CPU: its kernels work in blocks of 64.
TINY_ARCHITECTURES: dict[str, dict] = {
    "mistral": {
        "model_type": "mistral",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
    },
    "llama": {
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    },
}

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def padded_vocab_size(vocab_size: int, multiple: int = 64) -> int:
    """Vocabulary rounded up, as real checkpoints do: bitsandbytes' CPU 4-bit kernels need every
    quantized layer's width to be a multiple of its block size (64), the output layer included."""
    return -(-vocab_size // multiple) * multiple


def cache_root() -> Path:
    """Where tiny models are cached (``$MEDFACTORY_CACHE`` or ``~/.cache/medfactory``)."""
    return Path(os.environ.get("MEDFACTORY_CACHE", Path.home() / ".cache" / "medfactory"))


def model_fingerprint(architecture: str, texts: list[str], vocab_size: int, seed: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([TINY_BUILDER_VERSION, TINY_ARCHITECTURES[architecture], vocab_size, seed]).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return digest.hexdigest()[:16]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for transformers.

    Byte-level, like the byte fallback of the LLaMA / Mistral tokenizers: any input encodes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=32768, **SPECIAL_TOKENS)


def build_tiny_model(
    architecture: str,
    texts: list[str],
    vocab_size: int = 2000,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Path:
    """Build (or reuse from cache) a tiny random-weight model with a tokenizer trained on ``texts``.

    Returns the directory, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer`` and by
    ``llamafactory-cli`` as ``model_name_or_path``.
    """
    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {architecture!r}; choose one of {sorted(TINY_ARCHITECTURES)}")
    target = (cache_dir or cache_root() / "tiny") / f"{architecture}-{model_fingerprint(architecture, texts, vocab_size, seed)}"
    if (target / "config.json").is_file():
        logger.info("reusing cached tiny %s model at %s", architecture, target)
        return target

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    settings = dict(TINY_ARCHITECTURES[architecture])
    config = AutoConfig.for_model(
        settings.pop("model_type"),
        vocab_size=padded_vocab_size(len(tokenizer)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **settings,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with atomic_directory(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    logger.info("built tiny %s model (%d parameters) at %s", architecture, model.num_parameters(), target)
    return target


GEMMA_SPECIAL_TOKENS = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def train_gemma_tokenizer(texts: list[str], vocab_size: int):
    """A tokenizer with Gemma 3's chat and image tokens, as MedGemma's processor expects them."""
    from transformers import PreTrainedTokenizerFast

    base = train_tokenizer(texts, vocab_size=vocab_size)
    base.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": GEMMA_SPECIAL_TOKENS})
    return PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer,
        model_max_length=8192,
        pad_token="<pad>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
        **SPECIAL_TOKENS,
    )
