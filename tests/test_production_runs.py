"""Production behaviour of the real recipes on CPU: resume after a SIGKILL, and two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medfactory.run.demo import DEMO_DATA_FILE, DEMO_EVAL_FILE, DEMO_EVAL_NOTES, DEMO_EVAL_SEED, DEMO_RECIPE, demo_overrides, write_demo_corpus
from medfactory.run.tiny_model import build_tiny_model


def train_command(model: Path, output_dir: Path, max_steps: int, **extra: object) -> list[str]:
    overrides = {**demo_overrides(model, output_dir, max_steps), **extra}
    return [str(Path(sys.executable).parent / "llamafactory-cli"), "train", str(DEMO_RECIPE), *(f"{k}={v}" for k, v in overrides.items())]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra}


@pytest.fixture
def demo_run(repo_copy: Path) -> tuple[Path, Path]:
    notes = write_demo_corpus(repo_copy / DEMO_DATA_FILE, count=600)
    write_demo_corpus(repo_copy / DEMO_EVAL_FILE, count=DEMO_EVAL_NOTES, seed=DEMO_EVAL_SEED)  # the recipe's eval_dataset
    return repo_copy, build_tiny_model("mistral", notes)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_and_finishes(demo_run: tuple[Path, Path]) -> None:
    root, model = demo_run
    output_dir = root / "saves" / "run"
    command = train_command(model, output_dir, max_steps=60, save_steps=10, logging_steps=1, eval_steps=1000)
    first = subprocess.Popen(command, cwd=root, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (output_dir / "checkpoint-10" / "trainer_state.json").is_file():
        assert first.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # what a preempted VM does
    first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not (output_dir / "adapter_model.safetensors").exists()  # killed before the end
    checkpoints = sorted(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*"))
    assert checkpoints and max(checkpoints) < 60

    # The same command again: LLaMA-Factory resumes from the last checkpoint (no overwrite_output_dir).
    second = subprocess.run(command, cwd=root, env=environment(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    output = second.stdout + second.stderr
    assert f"Resuming training from {output_dir / f'checkpoint-{max(checkpoints)}'}" in output
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 60 and state["max_steps"] == 60
    assert (output_dir / "adapter_model.safetensors").is_file()
    logged_steps = [record["step"] for record in state["log_history"] if "loss" in record]
    assert logged_steps[-1] == 60 and max(checkpoints) in logged_steps  # history carried over from the checkpoint


@pytest.mark.slow
def test_the_recipe_runs_as_two_processes_on_cpu(demo_run: tuple[Path, Path]) -> None:
    root, model = demo_run
    output_dir = root / "saves" / "ddp"
    result = subprocess.run(
        train_command(model, output_dir, max_steps=4, save_steps=1000, eval_steps=1000),
        cwd=root, env=environment(FORCE_TORCHRUN="1", NPROC_PER_NODE="2", MASTER_PORT="29731"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "world size: 2" in output and "Process rank: 1" in output
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (output_dir / "adapter_model.safetensors").is_file()
