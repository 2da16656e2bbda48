"""Tiny stand-in models: the right architecture, a working tokenizer, cached between runs."""

from __future__ import annotations

import os

from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.run.tiny_model import build_tiny_model


def test_tiny_mistral_is_built_once_and_loads_with_transformers() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    notes = list(generate_notes(200, seed=1))
    model_dir = build_tiny_model("mistral", notes)
    mtime = os.path.getmtime(model_dir / "config.json")
    assert build_tiny_model("mistral", notes) == model_dir  # cached: same folder, not rebuilt
    assert os.path.getmtime(model_dir / "config.json") == mtime

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.model_type == "mistral"
    assert model.config.sliding_window is None  # Mistral-7B-v0.2 traits
    assert model.config.rope_parameters["rope_theta"] == 1e6
    text = "Paciente com dispneia, admitida em [DATA]; PA 120x80 mmHg, Tax 38,3 °C."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.eos_token == "</s>" and tokenizer.bos_token == "<s>"


def test_different_corpus_gives_a_different_tiny_model() -> None:
    first = build_tiny_model("llama", list(generate_notes(50, seed=1)))
    second = build_tiny_model("llama", list(generate_notes(50, seed=2)))
    assert first != second
