"""Running `medfactory bench` as a user does, for tests/test_bench*.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_bench(repo_root: Path, tmp_path: Path, recipe: str, *extra: str, expect_ok: bool = True) -> tuple[list[dict], str]:
    output = tmp_path / "result.json"
    command = [sys.executable, "-m", "medfactory.cli", "bench", f"recipes/{recipe}.yaml"]
    command += ["--workdir", str(tmp_path / "scratch"), "--output", str(output), *extra]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, also on a GPU machine
    done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900, env=env, check=False)
    assert (done.returncode == 0) == expect_ok, done.stdout[-3000:] + done.stderr[-3000:]
    return (json.loads(output.read_text()) if output.is_file() else []), done.stdout + done.stderr
