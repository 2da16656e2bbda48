"""Shared fixtures: the repository root, the shared real data, an isolated tiny-model cache,
a live `llamafactory-cli api` server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing_utils.served_models import start_api, wait_until_serving

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# One OpenMP (torch) thread per test process and the llamafactory-cli / bench processes it starts, set
# before anything imports torch. `make test` runs one xdist worker per core, and a tiny model's kernels
# gain nothing from a second thread: two per worker on a shared 2-core machine spend the step spinning
# in OpenMP barriers (a tiny QLoRA bench step: 25 s with 2 threads, 5 s with 1). An explicit value wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def offline_isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing reaches a hub; tiny models are cached per test session, not in the user's cache."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MEDFACTORY_CACHE"] = str(tmp_path_factory.mktemp("medfactory-cache"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository; tests that need it skip, with the reason, when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only CI and the developers' machines have ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data_or_none() -> Path | None:
    """../shared/data when present, else None (the test then builds synthetic stand-ins)."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture()
def repo_copy(tmp_path: Path) -> Path:
    """A scratch copy of what a run reads from the repository root (recipes and registry)."""
    shutil.copytree(REPO_ROOT / "recipes", tmp_path / "recipes")
    shutil.copy2(REPO_ROOT / "dataset_info.json", tmp_path / "dataset_info.json")
    return tmp_path


@pytest.fixture
def llamafactory_api(tmp_path: Path):
    """Start `llamafactory-cli api` on a free localhost port for a model dir; stop it afterwards."""
    processes = []

    def serve(model_dir: Path) -> str:
        log_path = tmp_path / f"api-{len(processes)}.log"
        process, endpoint = start_api(model_dir, log_path)
        processes.append(process)
        wait_until_serving(process, endpoint, log_path, time.time() + 120)
        return endpoint

    yield serve
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def llamafactory_train():
    """Run `llamafactory-cli train RECIPE key=value ...` offline on CPU; return the output_dir."""

    def run(cwd: Path, recipe: str, **overrides: object) -> Path:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        result = subprocess.run(
            ["llamafactory-cli", "train", recipe, *(f"{key}={value}" for key, value in overrides.items())],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return Path(str(overrides["output_dir"]))

    return run


@pytest.fixture(scope="session")
def medfactory_cli():
    """Run `medfactory ARGS...` in a folder; assert success and return its standard output."""

    def run(cwd: Path, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "medfactory.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    return run
