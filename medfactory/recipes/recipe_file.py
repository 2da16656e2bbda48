"""A recipe file as ``llamafactory-cli`` reads it: its values (OmegaConf), its header comment, its values hash."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

RECIPES_DIR = Path("recipes")
HEADER_KEYS = ("recipe", "version", "source")
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
HEADER_RE = re.compile(r"^#\s*(recipe|version|source):\s*(.*?)\s*$")


def default_recipe_paths(recipes_dir: Path = RECIPES_DIR) -> list[Path]:
    """Every LLaMA-Factory recipe: the top-level ``recipes/*.yaml`` files."""
    if not recipes_dir.is_dir():
        raise FileNotFoundError(f"{recipes_dir}: no recipes folder here. Run medfactory from the repository root.")
    return sorted(recipes_dir.glob("*.yaml"))


def read_header(path: Path) -> dict[str, str]:
    """The ``# recipe: / # version: / # source:`` lines of the leading comment block."""
    header: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = HEADER_RE.match(line)
        if match and match.group(1) not in header:
            header[match.group(1)] = match.group(2)
    return header


def load_recipe(path: Path) -> dict[str, Any]:
    """The recipe's values, loaded with OmegaConf as ``llamafactory-cli train`` loads them."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(OmegaConf.load(Path(path)))
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of LLaMA-Factory arguments, got {type(values).__name__}.")
    return values


def values_hash(values: dict[str, Any]) -> str:
    """Hash of a recipe's values (not its comments): what the version rule locks."""
    canonical = json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
