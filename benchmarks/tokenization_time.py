"""Benchmark: how long LLaMA-Factory tokenizes a Clinical-BR-scale corpus before training step 1.

It writes a synthetic corpus of ``--notes`` notes of ~145 tokens (the first four lines of
``medfactory.corpus.synthetic_notes.generate_notes``; the paper has 309 M tokens in 2.17 M notes, 142 per
note), registers it, and runs LLaMA-Factory's own data pipeline (``llamafactory.data.get_dataset``: read,
tokenize, pack into blocks) with the recipe's arguments as written (``cutoff_len``, ``packing``,
``preprocessing_num_workers``, ``preprocessing_batch_size``) and the real Mistral-7B v0.x tokenizer (read out of
the mistral-common wheel, see ``medfactory tokens``). No model is loaded: the time is the wait before step 1
less the model load. It prints notes, tokens, seconds and tokens/s per recipe; a run below the paper's 2.17 M
notes also prints the linear projection to 2.17 M, labelled as such.

    python benchmarks/tokenization_time.py --notes 217000 --wheel .cache/wheels/mistral_common-1.9.1-py3-none-any.whl
    python benchmarks/tokenization_time.py --notes 2170000 --recipe recipes/clinical_br_mistral.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from medfactory.base.registry import register_datasets
from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.recipes.tokens import mistral_v1_sentencepiece, tokenizer_from_sentencepiece

REPOSITORY = Path(__file__).resolve().parents[1]
PAPER_NOTES = 2_170_000
DATASET = "synthetic142"


def write_corpus(root: Path, notes: int) -> None:
    path = root / "data" / DATASET / "train.jsonl"
    path.parent.mkdir(parents=True)
    with open(path, "w", encoding="utf-8") as handle:
        for note in generate_notes(notes):
            handle.write(json.dumps({"text": "\n".join(note.split("\n")[:4])}, ensure_ascii=False) + "\n")
    register_datasets(root / "dataset_info.json", {DATASET: {"file_name": path.relative_to(root).as_posix(), "columns": {"prompt": "text"}}}, owner="bench")


def tokenizer_folder(root: Path, wheel: Path | None) -> Path:
    """The real Mistral v0.x tokenizer saved beside Mistral-7B-v0.2's config (LLaMA-Factory reads both from one folder)."""
    folder = root / "mistral_tokenizer"
    tokenizer_from_sentencepiece(mistral_v1_sentencepiece(wheel)).save_pretrained(folder)
    shutil.copy(REPOSITORY / "medfactory/model_configs/mistral_7b_v02.json", folder / "config.json")
    return folder


def time_recipe(root: Path, recipe: Path, tokenizer: Path) -> dict[str, float]:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    values = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    values.update({"model_name_or_path": str(tokenizer), "dataset": DATASET, "eval_dataset": None, "dataset_dir": str(root), "val_size": 0.0,
                   "output_dir": str(root / "out"), "overwrite_output_dir": True, "bf16": False, "fp16": False, "report_to": "none",
                   "overwrite_cache": True, "deepspeed": None, "quantization_bit": None, "eval_strategy": "no", "do_eval": False,
                   "load_best_model_at_end": False, "per_device_eval_batch_size": 1, "tokenized_path": None})  # fmt: skip
    model_args, data_args, training_args, _, _ = get_train_args(values)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    started = time.perf_counter()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # LLaMA-Factory prints a decoded training example
        module = get_dataset(template, model_args, data_args, training_args, stage="pt", **tokenizer_module)
    seconds = time.perf_counter() - started
    blocks = len(module["train_dataset"])
    return {"seconds": seconds, "blocks": blocks, "tokens": blocks * data_args.cutoff_len, "workers": data_args.preprocessing_num_workers or 1,
            "batch": data_args.preprocessing_batch_size}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=217_000, help="synthetic notes (2170000 = the paper's count)")
    parser.add_argument("--recipe", type=Path, action="append", help="stage-pt recipes (default: clinical_br_mistral and clinical_br_llama2)")
    parser.add_argument("--wheel", type=Path, default=os.environ.get("MEDFACTORY_MISTRAL_COMMON_WHEEL"), help="the mistral-common 1.9.1 wheel")
    parser.add_argument("--workdir", type=Path, default=None, help="where the corpus goes (default: a temporary folder)")
    args = parser.parse_args()
    recipes = args.recipe or [REPOSITORY / "recipes/clinical_br_mistral.yaml", REPOSITORY / "recipes/clinical_br_llama2.yaml"]
    with tempfile.TemporaryDirectory(prefix="tokenization-time-", dir=args.workdir) as folder:
        root = Path(folder)
        write_corpus(root, args.notes)
        tokenizer = tokenizer_folder(root, args.wheel)
        print(f"{args.notes:,} synthetic notes, Mistral v0.x tokenizer, LLaMA-Factory get_dataset (read, tokenize, pack)")
        print(f"{'recipe':<22} {'workers':>7} {'batch':>7} {'blocks':>8} {'tokens':>12} {'seconds':>8} {'tokens/s':>10} {'at 2.17 M notes':>16}")
        for recipe in recipes:
            row = time_recipe(root, Path(recipe), tokenizer)
            projected = "" if args.notes >= PAPER_NOTES else f"{row['seconds'] * PAPER_NOTES / args.notes / 60:.1f} min (proj.)"
            print(f"{Path(recipe).stem:<22} {row['workers']:>7} {row['batch']:>7} {row['blocks']:>8,} {row['tokens']:>12,} {row['seconds']:>8.1f} "
                  f"{row['tokens'] / row['seconds']:>10,.0f} {projected:>16}")  # fmt: skip


if __name__ == "__main__":
    main()
