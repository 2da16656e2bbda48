"""Launching ``llamafactory-cli`` from this environment, with its console in a log and a step progress bar."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from medfactory.base.jsonl import read_jsonl


def llamafactory_cli() -> str:
    """The CLI of this very environment, so a run never picks another install from PATH."""
    candidate = Path(sys.executable).parent / "llamafactory-cli"
    return str(candidate) if candidate.exists() else shutil.which("llamafactory-cli") or "llamafactory-cli"


def environment_with_venv_path() -> dict[str, str]:
    """``os.environ`` with this environment's ``bin/`` first on PATH (``torchrun`` must be found there)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def read_trainer_log(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, loss) and (step, eval_loss) pairs from LLaMA-Factory's ``trainer_log.jsonl``."""
    losses, eval_losses = [], []
    if path.is_file():
        for record in read_jsonl(path):
            if "loss" in record:
                losses.append((record["current_steps"], record["loss"]))
            if "eval_loss" in record:
                eval_losses.append((record["current_steps"], record["eval_loss"]))
    return losses, eval_losses


def run_with_progress(command: list[str], env: dict[str, str], console_log: Path, trainer_log: Path, total: int, desc: str = "train") -> int:
    """Run LLaMA-Factory with its output in ``console_log`` and a step progress bar on screen."""
    with open(console_log, "w", encoding="utf-8") as log, tqdm(total=total, unit="step", desc=desc) as bar:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            time.sleep(0.5)
            losses, _ = read_trainer_log(trainer_log)
            if losses:
                bar.update(losses[-1][0] - bar.n)
                bar.set_postfix(loss=f"{losses[-1][1]:.4f}")
        losses, _ = read_trainer_log(trainer_log)
        if losses:
            bar.update(losses[-1][0] - bar.n)
    return process.returncode
