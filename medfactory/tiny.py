"""Tiny stand-ins for the 7B models: same architecture family, random weights, local tokenizer.

No machine here reaches a model hub, so tests and the demo build these offline. Each is
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

from medfactory.atomic import atomic_directory

logger = logging.getLogger(__name__)

# Bump when the way tiny models are built changes, so stale caches are not reused.
TINY_BUILDER_VERSION = 1

# Shapes are tiny; everything that makes a model "Mistral-7B-v0.2-like" is kept:
# grouped-query attention, no sliding window, rope_theta 1e6, untied embeddings.
TINY_ARCHITECTURES: dict[str, dict] = {
    "mistral": {
        "model_type": "mistral",
        "hidden_size": 64,
        "intermediate_size": 176,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
    },
    "llama": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 176,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    },
}

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def cache_root() -> Path:
    """Where tiny models are cached (``$MEDFACTORY_CACHE`` or ``~/.cache/medfactory``)."""
    return Path(os.environ.get("MEDFACTORY_CACHE", Path.home() / ".cache" / "medfactory"))


def _fingerprint(architecture: str, texts: list[str], vocab_size: int, seed: int) -> str:
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
    target = (cache_dir or cache_root() / "tiny") / f"{architecture}-{_fingerprint(architecture, texts, vocab_size, seed)}"
    if (target / "config.json").is_file():
        logger.info("reusing cached tiny %s model at %s", architecture, target)
        return target

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    settings = dict(TINY_ARCHITECTURES[architecture])
    config = AutoConfig.for_model(
        settings.pop("model_type"),
        vocab_size=len(tokenizer),
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


def build_constant_answer_model(directory: Path, answer: str) -> Path:
    """A tiny Mistral whose weights are set so that, greedily, it answers ``answer`` and stops.

    Attention and MLP outputs are zero, so each next token depends only on the current one: every
    ordinary token leads to the answer (one added token), and the answer leads to end of sequence.
    A random tiny model only ever produces unparseable text; this one exercises the parse path.
    """
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from medfactory.demo_corpus import generate_notes

    tokenizer = train_tokenizer(generate_notes(100, seed=4), vocab_size=600)
    tokenizer.add_tokens([answer])
    answer_id, eos_id = tokenizer.convert_tokens_to_ids(answer), tokenizer.eos_token_id
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_id, tie_word_embeddings=False,
    )  # fmt: skip
    model = MistralForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        embeddings.zero_()
        embeddings[:, 0] = 1.0  # every ordinary token: direction 0
        embeddings[answer_id, 0], embeddings[answer_id, 1] = 0.0, 1.0  # the answer: direction 1
        head = model.lm_head.weight
        head.zero_()
        head[answer_id, 0] = 50.0
        head[eos_id, 1] = 50.0
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
