"""Tiny models only the tests use: a constant-answer Mistral, Gemma 3 text and image-text, BERT and XLM-R.

They stand in for the real checkpoints (MedGemma, BERTimbau, xlm-roberta-large) that no machine here
can download; each is cached like the demo's model (``medfactory.run.tiny_model.cache_root``).
"""

from __future__ import annotations

import json
from pathlib import Path

from medfactory.base.atomic import atomic_directory
from medfactory.run.tiny_model import (
    GEMMA_SPECIAL_TOKENS,
    cache_root,
    model_fingerprint,
    padded_vocab_size,
    train_gemma_tokenizer,
    train_tokenizer,
)


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

    from medfactory.corpus.synthetic_notes import generate_notes

    tokenizer = train_tokenizer(generate_notes(100, seed=4), vocab_size=600)
    tokenizer.add_tokens([answer])
    if eos_token:
        tokenizer.add_special_tokens({"eos_token": eos_token})
    answer_id, eos_id = tokenizer.convert_tokens_to_ids(answer), tokenizer.eos_token_id
    config = MistralConfig(
        vocab_size=padded_vocab_size(len(tokenizer)), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
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


def _gemma_text_config(tokenizer):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=padded_vocab_size(len(tokenizer)), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=8192, sliding_window=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip


def build_tiny_gemma3_text(texts: list[str], vocab_size: int = 1500, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """A tiny text-only Gemma 3 (the architecture of medgemma-27b-text-it), cached like the others."""
    from transformers import Gemma3ForCausalLM

    target = (cache_dir or cache_root() / "tiny") / f"gemma3-text-{model_fingerprint('mistral', texts, vocab_size, seed + 1000)}"
    if (target / "config.json").is_file():
        return target
    import torch

    tokenizer = train_gemma_tokenizer(texts, vocab_size)
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

    target = (cache_dir or cache_root() / "tiny") / f"gemma3-vlm-{model_fingerprint('mistral', texts, vocab_size, seed + 2000)}"
    if (target / "config.json").is_file():
        return target
    import torch

    tokenizer = train_gemma_tokenizer(texts, vocab_size)
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
    target = (cache_dir or cache_root() / "tiny") / f"bert-{model_fingerprint('llama', texts, 600, seed + 3000)}"
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
    target = (cache_dir or cache_root() / "tiny") / f"xlmr-{model_fingerprint('llama', texts, 400, seed + 4000)}"
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
