"""``recipes lock`` and the lock file: the values hash of every released recipe version.

A released version never changes: any changed value needs a version bump and a CHANGELOG entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from medfactory.base.atomic import write_json_atomic
from medfactory.recipes.recipe_file import VERSION_RE, load_recipe, read_header, values_hash

LOCK_NAME = "versions.lock.json"
CHANGELOG_NAME = "CHANGELOG.md"


def lock_path(path: Path) -> Path:
    return Path(path).parent / LOCK_NAME


def load_lock(lock_path: Path) -> dict[str, dict[str, str]]:
    return json.loads(lock_path.read_text(encoding="utf-8")) if lock_path.is_file() else {}


def lock_recipes(paths: Iterable[Path]) -> list[str]:
    """Record the values hash of each recipe's current version; refuse to re-lock a version with new values."""
    messages = []
    for path in map(Path, paths):
        header = read_header(path)
        version = header.get("version")
        if not version or not VERSION_RE.match(version):
            raise ValueError(f"{path}: the header has no `# version: x.y.z` line; add one before locking.")
        path_of_lock = lock_path(path)
        lock = load_lock(path_of_lock)
        digest = values_hash(load_recipe(path))
        locked = lock.setdefault(path.stem, {})
        if version in locked and locked[version] != digest:
            raise ValueError(
                f"{path}: version {version} is already locked with other values. Bump `# version:` and add a "
                f"{CHANGELOG_NAME} entry; a released version never changes."
            )
        if locked.get(version) == digest:
            messages.append(f"{path}: {version} already locked")
            continue
        locked[version] = digest
        write_json_atomic(path_of_lock, lock)
        messages.append(f"{path}: locked {version} ({digest[:12]})")
    return messages
