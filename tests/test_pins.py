"""The pinned stack is one that works: versions with known crashes are refused, and what is installed is what is pinned."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

# Releases that install within llamafactory 0.9.5's pins but break a recipe, with the evidence.
KNOWN_BAD = {
    ("transformers", "5.6.0"): "every FlashAttention-2 forward of a sink-less model calls s_aux.to on None "
    "(huggingface/transformers#45588; LLaMA-Factory main excludes it, hiyouga/LlamaFactory#10610)",
}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            requirement = Requirement(line)
            pins[requirement.name.lower().replace("_", "-")] = str(requirement.specifier).removeprefix("==")
    return pins


def _project_pins(pyproject: Path) -> dict[str, str]:
    text = pyproject.read_text(encoding="utf-8")
    block = text[text.index("dependencies = [") : text.index("]", text.index("dependencies = ["))]
    return {Requirement(item).name.lower(): str(Requirement(item).specifier).removeprefix("==") for item in re.findall(r'"([^"]+)"', block)}


def test_no_pin_is_a_known_bad_release(repo_root: Path) -> None:
    for source, pins in (("constraints.txt", _pins(repo_root / "constraints.txt")), ("pyproject.toml", _project_pins(repo_root / "pyproject.toml"))):
        bad = [f"{source}: {name}=={pin}: {why}" for (name, pin), why in KNOWN_BAD.items() if pins.get(name) == pin]
        assert not bad, bad


def test_transformers_pin_is_inside_llamafactory_and_installed(repo_root: Path) -> None:
    pinned = _project_pins(repo_root / "pyproject.toml")["transformers"]
    assert _pins(repo_root / "constraints.txt")["transformers"] == pinned
    # llamafactory 0.9.5 checks this range at run time (extras/misc.py check_dependencies)
    assert pinned in SpecifierSet(">=4.55.0,<=5.6.0")
    assert version("transformers") == pinned
