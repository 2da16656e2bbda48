"""LLaMA-Factory's dataset registry (``dataset_info.json`` at the repository root).

Recipes use ``dataset_dir: .`` and are run from the repository root, so every
``file_name`` in the registry is a path under ``data/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medfactory.base.atomic import write_json_atomic
from medfactory.base.errors import CorpusError

REGISTRY_NAME = "dataset_info.json"


def load_registry(path: Path) -> dict[str, Any]:
    """Read ``dataset_info.json``; a clear error names the file and the JSON problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: dataset registry not found. Run medfactory from the repository root "
            f"(the folder that holds {REGISTRY_NAME})."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}).") from error


def load_registry_before_writing(path: Path) -> dict[str, Any]:
    """The registry a plugin is about to update ({} when there is none yet), read BEFORE any data is written.

    Checked first so that a broken registry can never leave a replaced dataset unregistered.
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        return load_registry(path)
    except ValueError as error:
        raise CorpusError(f"{error} Fix or delete {path}, then run again.") from error


def register_datasets(path: Path, entries: dict[str, dict[str, Any]]) -> bool:
    """Add or update ``entries`` in the registry, atomically; other entries are kept as they are.

    Returns True when the file changed. Nothing is written when the entries are already there,
    so a tracked registry stays clean in git after a re-run.
    """
    registry = load_registry(path) if Path(path).exists() else {}
    updated = dict(registry)
    updated.update(entries)
    if updated == registry:
        return False
    write_json_atomic(Path(path), updated)
    return True
