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


def _padded(vocab_size: int, multiple: int = 64) -> int:
    """Vocabulary rounded up, as real checkpoints do: bitsandbytes' CPU 4-bit kernels need every
    quantized layer's width to be a multiple of its block size (64), the output layer included."""
    return -(-vocab_size // multiple) * multiple


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
        vocab_size=_padded(len(tokenizer)),
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


def build_constant_answer_model(directory: Path, answer: str, eos_token: str | None = None) -> Path:
    """A tiny Mistral whose weights are set so that, greedily, it answers ``answer`` and stops.

    Attention and MLP outputs are zero, so each next token depends only on the current one: every
    ordinary token leads to the answer (one added token), and the answer leads to end of sequence.
    A random tiny model only ever produces unparseable text; this one exercises the parse path.
    ``eos_token`` makes another token the end of sequence (``<end_of_turn>`` for the gemma templates,
    which stop on it instead of ``</s>``).
    """
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from medfactory.demo_corpus import generate_notes

    tokenizer = train_tokenizer(generate_notes(100, seed=4), vocab_size=600)
    tokenizer.add_tokens([answer])
    if eos_token:
        tokenizer.add_special_tokens({"eos_token": eos_token})
    answer_id, eos_id = tokenizer.convert_tokens_to_ids(answer), tokenizer.eos_token_id
    config = MistralConfig(
        vocab_size=_padded(len(tokenizer)), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_id, tie_word_embeddings=False,
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


GEMMA_SPECIAL_TOKENS = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def _gemma_tokenizer(texts: list[str], vocab_size: int):
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


def _gemma_text_config(tokenizer):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=_padded(len(tokenizer)), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=8192, sliding_window=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip


def build_tiny_gemma3_text(texts: list[str], vocab_size: int = 1500, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """A tiny text-only Gemma 3 (the architecture of medgemma-27b-text-it), cached like the others."""
    from transformers import Gemma3ForCausalLM

    target = (cache_dir or cache_root() / "tiny") / f"gemma3-text-{_fingerprint('mistral', texts, vocab_size, seed + 1000)}"
    if (target / "config.json").is_file():
        return target
    import torch

    tokenizer = _gemma_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(_gemma_text_config(tokenizer))
    with atomic_directory(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target


def build_tiny_gemma3_vlm(texts: list[str], vocab_size: int = 1500, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """A tiny Gemma 3 image-text model (the architecture of medgemma-4b-it) with its processor.

    Real 896x896 input through a SigLIP tower with 56-pixel patches (16x16 patches), pooled to 16
    image tokens: the same pipeline as MedGemma's 256 tokens per image, at a CPU-friendly size.
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor, SiglipVisionConfig

    target = (cache_dir or cache_root() / "tiny") / f"gemma3-vlm-{_fingerprint('mistral', texts, vocab_size, seed + 2000)}"
    if (target / "config.json").is_file():
        return target
    import torch

    tokenizer = _gemma_tokenizer(texts, vocab_size)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in GEMMA_SPECIAL_TOKENS}
    # Widths of 64 and more: bitsandbytes quantizes in blocks of 64 inputs (4-bit tests run for real).
    vision = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, image_size=896, patch_size=56)
    config = Gemma3Config(
        text_config=_gemma_text_config(tokenizer), vision_config=vision, mm_tokens_per_image=16,
        boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 896, "width": 896}),
        tokenizer=tokenizer,
        image_seq_length=16,
        chat_template="{% for message in messages %}{{ message['content'] }}{% endfor %}",
    )
    with atomic_directory(target) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    return target


def build_tiny_bert(texts: list[str], seed: int = 0, cache_dir: Path | None = None) -> Path:
    """A tiny cased BERT encoder (the BERTimbau stand-in for BERTScore): 3 layers, WordPiece trained on
    ``texts``, 512 positions and, like BERTimbau's tokenizer, no real ``model_max_length``."""
    target = (cache_dir or cache_root() / "tiny") / f"bert-{_fingerprint('llama', texts, 600, seed + 3000)}"
    if (target / "config.json").is_file():
        return target
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizer

    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    )
    tokenizer = BertTokenizer(vocab=wordpiece.get_vocab(), do_lower_case=False)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    with atomic_directory(target) as staging:
        tokenizer.save_pretrained(staging)
        BertModel(config).save_pretrained(staging)
    return target


def build_tiny_xlmr(texts: list[str], seed: int = 1, cache_dir: Path | None = None) -> Path:
    """A tiny XLM-RoBERTa encoder (the xlm-roberta-large stand-in): 3 layers, Unigram trained on ``texts``."""
    target = (cache_dir or cache_root() / "tiny") / f"xlmr-{_fingerprint('llama', texts, 400, seed + 4000)}"
    if (target / "config.json").is_file():
        return target
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

    unigram = Tokenizer(models.Unigram())
    unigram.normalizer = normalizers.NFKC()
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(
        texts, trainers.UnigramTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>")
    )
    pieces = [tuple(piece) for piece in json.loads(unigram.to_str())["model"]["vocab"]] + [("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=pieces, model_max_length=512)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
    )  # fmt: skip
    with atomic_directory(target) as staging:
        tokenizer.save_pretrained(staging)
        XLMRobertaModel(config).save_pretrained(staging)
    return target
