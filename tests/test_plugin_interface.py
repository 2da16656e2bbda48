"""The plugin interface: corpus plugins, ours and third parties', found through entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medfactory.plugins import CorpusPlugin, discover_plugins


def test_the_shipped_plugins_are_discovered() -> None:
    plugins = discover_plugins()
    assert {"lopes2019", "semclinbr", "brateca", "notes"} <= set(plugins)
    assert all(isinstance(plugin, CorpusPlugin) for plugin in plugins.values())


def _install_fake_distribution(site: Path, module_source: str) -> None:
    """A third-party package as pip would leave it: a module plus a dist-info with entry points."""
    (site / "hospital_x_notes.py").write_text(module_source, encoding="utf-8")
    dist_info = site / "hospital_x_notes-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: hospital-x-notes\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[medfactory.plugins]\nhospital_x = hospital_x_notes:PLUGIN\n")


def test_a_third_party_plugin_is_mounted_without_editing_this_repository(tmp_path: Path) -> None:
    _install_fake_distribution(
        tmp_path,
        "import typer\n"
        "from medfactory.plugins import CorpusPlugin\n"
        "def prepare(source: str = typer.Option(...)) -> None:\n"
        "    print(f'hospital X prepared {source}')\n"
        "PLUGIN = CorpusPlugin(name='hospital_x', summary='Hospital X notes', command=prepare)\n",
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    listing = subprocess.run([sys.executable, "-m", "medfactory.cli", "prepare", "--help"], env=env, capture_output=True, text=True, check=True)
    assert "hospital_x" in listing.stdout and "Hospital X notes" in listing.stdout
    run = subprocess.run(
        [sys.executable, "-m", "medfactory.cli", "prepare", "hospital_x", "--source", "/exports/x"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "hospital X prepared /exports/x" in run.stdout


def test_a_broken_third_party_plugin_does_not_take_the_cli_down(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "raise ImportError('needs a package that is not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    listing = subprocess.run([sys.executable, "-m", "medfactory.cli", "prepare", "--help"], env=env, capture_output=True, text=True)
    assert listing.returncode == 0 and "semclinbr" in listing.stdout
    run = subprocess.run([sys.executable, "-m", "medfactory.cli", "prepare", "hospital_x"], env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert "plugin 'hospital_x' (hospital_x_notes:PLUGIN) failed to load: ImportError: needs a package" in run.stderr
