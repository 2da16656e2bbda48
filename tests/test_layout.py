"""The installed distribution: one `medfactory` namespace, no bare `eval` or `plugins` packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path


def test_wheel_installs_only_the_medfactory_package(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(repo_root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("medfactory-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"medfactory"}
    assert "medfactory/plugins/__init__.py" in names and "medfactory/eval/__init__.py" in names
    assert "medfactory/cli.py" in names
    # the base-model configurations `medfactory bench` builds from travel with the package
    assert {f"medfactory/model_configs/{n}.json" for n in ("llama2_7b", "mistral_7b_v02", "biomistral_7b", "medgemma_4b")} <= set(names)
    entry_points = next(zipfile.ZipFile(wheel).read(n) for n in names if n.endswith("entry_points.txt")).decode()
    assert "medfactory = medfactory.cli:app" in entry_points
    assert "[medfactory.plugins]" in entry_points
    for plugin in ("lopes2019", "semclinbr", "brateca", "notes"):
        assert f"{plugin} = medfactory.plugins.{plugin}:PLUGIN" in entry_points


def test_bare_plugins_and_eval_are_not_importable_outside_the_repository(tmp_path: Path) -> None:
    code = (
        "import importlib.util, medfactory.plugins, medfactory.eval;"
        "print(importlib.util.find_spec('plugins'), importlib.util.find_spec('eval'));"
        "print(medfactory.plugins.__file__)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    first, second = result.stdout.splitlines()
    assert first == "None None"
    assert second.endswith("plugins/__init__.py")


def test_console_command_lists_the_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "medfactory.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("recipes", "prepare", "demo", "contamination", "bench"):
        assert command in result.stdout
