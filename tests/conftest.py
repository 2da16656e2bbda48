"""Shared fixtures: the repository root, the shared real data, an isolated tiny-model cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


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


@pytest.fixture()
def repo_copy(tmp_path: Path) -> Path:
    """A scratch copy of what a run reads from the repository root (recipes and registry)."""
    shutil.copytree(REPO_ROOT / "recipes", tmp_path / "recipes")
    shutil.copy2(REPO_ROOT / "dataset_info.json", tmp_path / "dataset_info.json")
    return tmp_path
