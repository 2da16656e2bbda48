"""The embedded default: the real Clinical-BR Mistral recipe, end to end, offline, on CPU.

It generates synthetic pt-BR clinical notes, builds (once, cached) a tiny random-weight model
of the Mistral architecture with a tokenizer trained on those notes, and runs
``llamafactory-cli train recipes/clinical_br_mistral.yaml`` with only the overrides a tiny
CPU run needs (listed in ``demo_overrides`` with the reason for each). Every other value (LoRA
rank, alpha, dropout, targets, learning rate, AdamW betas, schedule, packing) is the recipe's.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from medfactory.base.jsonl import write_jsonl
from medfactory.base.overrides import to_cli_arguments
from medfactory.base.registry import REGISTRY_NAME, register_datasets
from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.run.card import write_launch_args
from medfactory.run.launch import environment_with_venv_path, llamafactory_cli, read_trainer_log, run_with_progress
from medfactory.run.tiny_model import build_tiny_model

DEMO_RECIPE = Path("recipes/clinical_br_mistral.yaml")
DEMO_DATASET = "clinical_br_demo"
DEMO_DATA_FILE = Path("data/demo/clinical_notes.jsonl")
# The recipe's eval loss is on held-out validation sets (eval_dataset), so the demo brings one too.
DEMO_EVAL_DATASET = "clinical_br_demo_validation"
DEMO_EVAL_FILE = Path("data/demo/validation.jsonl")
DEMO_SAVES = Path("saves/demo")
DEMO_NOTES = 2000
DEMO_EVAL_NOTES = 40
DEMO_EVAL_SEED = 101  # other notes than the training ones (seed 13)
# Canaries (medfactory.corpus.canaries) in the training notes, so that `medfactory audit memorization` runs on the demo.
DEMO_CANARIES = 5
DEMO_CANARY_FILE = Path("canaries/clinical_br_demo.json")
DEMO_CANARY_SEED = 7  # a demo's secrets need not be secret; a real run's come from the OS's randomness


@dataclass(frozen=True)
class DemoResult:
    """Where the demo run left its outputs, and its loss from first to last logged step."""

    output_dir: Path
    adapter: Path
    loss_plot: Path
    trainer_log: Path
    console_log: Path
    losses: list[tuple[int, float]]
    eval_losses: list[tuple[int, float]]


def demo_overrides(model_dir: Path, output_dir: Path, max_steps: int) -> dict[str, object]:
    """The only values the demo changes in the recipe, each because a tiny CPU run needs it."""
    every = max(1, max_steps // 4)
    return {
        # model path: no hub here; a tiny random Mistral stands in for Mistral-7B-v0.2.
        "model_name_or_path": str(model_dir),
        # datasets: synthetic notes instead of the credentialed corpora (training and validation); own tokenized cache.
        "dataset": DEMO_DATASET,
        "eval_dataset": DEMO_EVAL_DATASET,
        "tokenized_path": str(output_dir.parent / "tokenized"),
        "output_dir": str(output_dir),
        # steps: a few hundred optimizer steps instead of two epochs of 309 M tokens.
        "max_steps": max_steps,
        "logging_steps": max(1, max_steps // 20),
        "eval_steps": every,
        "save_steps": every,
        # precision: CPUs have no bf16 training path in transformers; fp32 instead.
        "bf16": False,
        # context: 32k-token attention does not fit a laptop, and a small corpus fills few 32k blocks.
        "cutoff_len": 256,
        # workers: sized for a 16-vCPU VM; on a laptop they only add start-up time.
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
    }


def write_demo_corpus(path: Path, count: int = DEMO_NOTES, seed: int = 13) -> list[str]:
    """Write the synthetic notes as LLaMA-Factory pt-stage JSONL (atomically) and return them."""
    notes = list(generate_notes(count, seed=seed))
    write_jsonl(path, ({"text": note} for note in notes))
    return notes


def write_demo_canaries(root: Path) -> int:
    """Insert the demo's canaries into its training notes and write their file; return the copies inserted."""
    from medfactory.corpus.canaries import canary_document, insert_into, make_canaries, write_canary_file

    canaries = make_canaries(DEMO_CANARIES, "pt", seed=DEMO_CANARY_SEED)
    copies = insert_into(root / DEMO_DATA_FILE, canaries, seed=DEMO_CANARY_SEED)
    write_canary_file(root / DEMO_CANARY_FILE, canary_document(canaries, DEMO_DATASET, "pt"))
    return copies


def run_demo(workdir: Path = Path("."), max_steps: int = 800) -> DemoResult:
    """Run the demo from the repository root ``workdir``; raise with the log's tail on failure."""
    root = Path(workdir).resolve()
    recipe = root / DEMO_RECIPE
    if not recipe.is_file():
        raise SystemExit(f"{recipe}: not found. Run `medfactory demo` from the repository root (the folder with recipes/).")

    print(f"[1/4] Writing {DEMO_NOTES} synthetic pt-BR clinical notes to {DEMO_DATA_FILE} (+{DEMO_EVAL_NOTES} for validation)")
    notes = write_demo_corpus(root / DEMO_DATA_FILE)
    write_demo_corpus(root / DEMO_EVAL_FILE, DEMO_EVAL_NOTES, seed=DEMO_EVAL_SEED)
    copies = write_demo_canaries(root)
    print(f"      + {copies} copies of {DEMO_CANARIES} canary notes for `medfactory audit memorization` (secrets: {DEMO_CANARY_FILE})")
    register_datasets(
        root / REGISTRY_NAME,
        {name: {"file_name": str(file), "columns": {"prompt": "text"}} for name, file in ((DEMO_DATASET, DEMO_DATA_FILE), (DEMO_EVAL_DATASET, DEMO_EVAL_FILE))},
        owner="demo",
    )

    print("[2/4] Building (or reusing) a tiny Mistral-architecture model and a tokenizer trained on the notes")
    model_dir = build_tiny_model("mistral", notes)
    print(f"      {model_dir}")

    output_dir = root / DEMO_SAVES / DEMO_RECIPE.stem
    shutil.rmtree(root / DEMO_SAVES, ignore_errors=True)  # a demo starts fresh (no resume, no stale cache)
    output_dir.mkdir(parents=True)
    overrides = demo_overrides(model_dir, output_dir, max_steps)
    write_launch_args(output_dir, DEMO_RECIPE, overrides)  # the card then shows what this run changed
    command = [llamafactory_cli(), "train", str(DEMO_RECIPE), *to_cli_arguments(overrides)]
    env = {
        **environment_with_venv_path(),
        "HF_HUB_OFFLINE": "1",  # nothing leaves the machine
        "CUDA_VISIBLE_DEVICES": "",  # the demo is the CPU path, even on a GPU machine
        "TOKENIZERS_PARALLELISM": "false",
    }
    console_log = root / DEMO_SAVES / "llamafactory.log"
    trainer_log = output_dir / "trainer_log.jsonl"
    print(f"[3/4] llamafactory-cli train {DEMO_RECIPE} with overrides: " + ", ".join(f"{k}={v}" for k, v in overrides.items() if k != "model_name_or_path"))
    with contextlib.chdir(root):  # the recipe's relative paths (recipes/, dataset_dir: .) are the workdir's
        returncode = run_with_progress(command, env, console_log, trainer_log, max_steps)
    if returncode != 0:
        tail = "\n".join(console_log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
        raise SystemExit(f"llamafactory-cli train failed (exit {returncode}); last lines of {console_log}:\n{tail}")

    losses, eval_losses = read_trainer_log(trainer_log)
    result = DemoResult(
        output_dir=output_dir,
        adapter=output_dir / "adapter_model.safetensors",
        loss_plot=output_dir / "training_loss.png",
        trainer_log=trainer_log,
        console_log=console_log,
        losses=losses,
        eval_losses=eval_losses,
    )
    _print_summary(root, result)
    return result


def _print_summary(root: Path, result: DemoResult) -> None:
    def show(path: Path) -> str:
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    print("[4/4] Done.")
    print(f"      LoRA adapter:  {show(result.adapter)}")
    print(f"      loss curve:    {show(result.loss_plot)}")
    print(f"      logs:          {show(result.trainer_log)} (per step), {show(result.console_log)} (full output)")
    if result.losses:
        (first_step, first), (last_step, last) = result.losses[0], result.losses[-1]
        print(f"      train loss:    {first:.4f} (step {first_step}) -> {last:.4f} (step {last_step}), change {last - first:+.4f}")
    if len(result.eval_losses) >= 2:
        (first_step, first), (last_step, last) = result.eval_losses[0], result.eval_losses[-1]
        print(f"      eval loss:     {first:.4f} (step {first_step}) -> {last:.4f} (step {last_step}), change {last - first:+.4f}")
    print("      The recipe's learning rate (2e-5) moves a random tiny model slowly: the fall is small but steady.")
