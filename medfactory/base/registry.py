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
# Which plugin wrote an entry; LLaMA-Factory ignores keys it does not know (data/parser.py DatasetAttr.join).
OWNER_KEY = "medfactory_plugin"


def load_registry(path: Path) -> dict[str, Any]:
    """Read ``dataset_info.json``; a clear error names the file and the JSON problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: dataset registry not found. Run medfactory from the repository root "
            f"(the folder that holds {REGISTRY_NAME})."
        )
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}).") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}).") from error
    if not isinstance(registry, dict):
        raise ValueError(f"{path}: the registry is a JSON {type(registry).__name__}, not an object of dataset entries.")
    bad = [name for name, entry in registry.items() if not isinstance(entry, dict)]
    if bad:
        raise ValueError(f"{path}: entry {bad[0]!r} is not an object (LLaMA-Factory needs {{\"file_name\": ...}}).")
    return registry


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


def owner_of(entry: dict[str, Any]) -> str | None:
    """The plugin that registered ``entry`` (None for an entry written by hand or by an older medfactory)."""
    return entry.get(OWNER_KEY)


def same_owner(first: str | None, second: str | None) -> bool:
    """Plugin names compare with '-' and '_' alike (``prepare mimic-cxr-ptbr`` wrote ``mimic_cxr_ptbr`` manifests)."""
    return first is not None and second is not None and first.replace("-", "_") == second.replace("-", "_")


def ownership_conflicts(registry: dict[str, Any], entries: dict[str, dict[str, Any]], owner: str) -> list[str]:
    """Why writing ``entries`` as ``owner`` would replace someone else's registration (empty when it would not).

    An entry is ``owner``'s when it carries ``owner``'s tag, or carries no tag and already points
    at the same file (a registry written before entries were tagged).
    """
    conflicts = []
    for name, entry in entries.items():
        existing = registry.get(name)
        if existing is None:
            continue
        existing_owner = owner_of(existing)
        if same_owner(existing_owner, owner) or (existing_owner is None and existing.get("file_name") == entry.get("file_name")):
            continue
        made_by = f"'prepare {existing_owner}'" if existing_owner else "hand or an older medfactory (untagged)"
        conflicts.append(f"{name!r} (registered for {existing.get('file_name')!r} by {made_by})")
    return conflicts


def tagged(entries: dict[str, dict[str, Any]], owner: str) -> dict[str, dict[str, Any]]:
    """``entries`` with the owner tag LLaMA-Factory ignores (its DatasetAttr reads only the keys it knows)."""
    return {name: {**entry, OWNER_KEY: owner} for name, entry in entries.items()}


def updated_registry(path: Path, entries: dict[str, dict[str, Any]], owner: str, replace: bool = False) -> tuple[dict[str, Any], bool]:
    """(the registry with ``entries`` added as ``owner``'s, whether it changed); refuses another owner's keys."""
    registry = load_registry(path) if Path(path).exists() else {}
    conflicts = ownership_conflicts(registry, entries, owner)
    if conflicts and not replace:
        raise CorpusError(
            f"{path}: 'prepare {owner}' would replace {'; '.join(conflicts)}. Nothing was written. "
            "Fix: pass --replace if you mean to replace them, or (with a plugin that takes --name) choose another name."
        )
    updated = dict(registry)
    updated.update(tagged(entries, owner))
    return updated, updated != registry


def register_datasets(path: Path, entries: dict[str, dict[str, Any]], owner: str, replace: bool = False) -> bool:
    """Add or update ``entries`` in the registry as ``owner``'s, atomically; other entries are kept as they are.

    Returns True when the file changed. Nothing is written when the entries are already there,
    so a tracked registry stays clean in git after a re-run. Another owner's keys are refused
    unless ``replace``.
    """
    updated, changed = updated_registry(path, entries, owner, replace)
    if changed:
        write_json_atomic(Path(path), updated)
    return changed
