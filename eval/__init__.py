"""Evaluations that run after training, one module each (installed as ``medfactory.eval``).

They read what LLaMA-Factory wrote (``generated_predictions.jsonl``, adapters) and write
``reports/<run>/``: the blind Likert study, BERTScore, and multiple-choice accuracy / macro-F1.
"""
