"""Publishing a prepared dataset: its folder and its registry entries move together, and only if they are the plugin's own.

Every plugin writes ``data/<name>/`` into a staging folder inside :func:`publish_datasets`. On success
the registry update is written to a temporary file first (the step that needs disk space), then the
folder and the registry are renamed into place; if the second rename fails the first is undone. A
full disk, a broken registry or a kill at any point therefore leaves the old folder and the old
registry as they were. Before anything is read, the names are checked: a folder another plugin (or
a person) wrote, and registry keys another plugin registered, are refused unless ``replace``.

A staging folder is locked by the run that fills it; one left by a run that was killed (SIGKILL, a
preempted VM) is removed by the next run of the same name, which counts it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfactory.base.atomic import default_mode, make_staging_dir, release_staging_dir, remove_stale_staging
from medfactory.base.errors import CorpusError
from medfactory.base.manifest import MANIFEST_FILE, write_manifest
from medfactory.base.names import confined_path
from medfactory.base.registry import REGISTRY_NAME, load_registry_before_writing, same_owner, updated_registry

# Manifest keys that name the plugin that wrote a folder: "plugin" (every manifest from this version on), else the
# older manifests' "corpus" (the plugin name for all but the notes pipeline, which always wrote "plugin").
OWNER_FIELDS = ("plugin", "corpus")


@dataclass
class Publication:
    """The staging folder a plugin fills, and how many stale staging folders of killed runs were removed first."""

    staging: Path
    stale_removed: int
    owner: str

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the folder's manifest with its owner (``plugin``) first, so the next run can tell whose folder it is."""
        manifest.pop("plugin", None)
        owned = {"plugin": self.owner, **manifest}
        manifest.clear()
        manifest.update(owned)
        write_manifest(self.staging / MANIFEST_FILE, manifest)


def folder_owner(folder: Path) -> str | None:
    """The plugin whose manifest is in ``folder``; None when there is no readable manifest."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    return next((manifest[key] for key in OWNER_FIELDS if isinstance(manifest.get(key), str)), None)


def _check_folder(folder: Path, owner: str, replace: bool) -> None:
    if replace or not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return
    found = folder_owner(folder) if folder.is_dir() else None
    if same_owner(found, owner):
        return
    made_by = f"'prepare {found}'" if found else "something other than medfactory (no manifest)"
    raise CorpusError(
        f"{folder}: already holds a dataset written by {made_by}; 'prepare {owner}' would replace it. "
        "Nothing was written. Fix: pass --replace if you mean to replace it, or (with a plugin that takes --name) choose another name."
    )


def _check_manifest(staging: Path, owner: str) -> None:
    if folder_owner(staging) != owner:  # a bug in the plugin, not bad input
        raise RuntimeError(f"{staging}: a plugin published a folder without Publication.write_manifest")


def _staged_registry(registry_path: Path, entries: dict[str, dict[str, Any]], owner: str, replace: bool) -> Path | None:
    """The new registry written to a temporary sibling (fsynced), or None when it would not change."""
    updated, changed = updated_registry(registry_path, entries, owner, replace)
    if not changed:
        return None
    fd, name = tempfile.mkstemp(prefix=f".{registry_path.name}.", suffix=".tmp", dir=registry_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(updated, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    default_mode(Path(name), is_dir=False)
    return Path(name)


def _swap_in(staging: Path, folder: Path, registry_tmp: Path | None, registry_path: Path) -> None:
    """Rename the folder, then the registry, into place; undo the folder if the registry rename fails."""
    backup = None
    if folder.exists():
        backup = folder.with_name(f".{folder.name}.old.{os.getpid()}.{os.urandom(3).hex()}")
        os.replace(folder, backup)
    os.replace(staging, folder)
    try:
        if registry_tmp is not None:
            os.replace(registry_tmp, registry_path)
    except BaseException:
        os.replace(folder, staging)
        if backup is not None:
            os.replace(backup, folder)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _disk_error(error: OSError, folder: Path) -> CorpusError:
    what = "no space left on the device" if error.errno == errno.ENOSPC else (error.strerror or str(error))
    return CorpusError(
        f"{folder}: could not write ({what}). Nothing was replaced: the previous dataset and {REGISTRY_NAME} are as they were. "
        "Fix: free space (or pass --output-root on a larger disk) and run again."
    )


@contextlib.contextmanager
def publish_datasets(
    output_root: Path, dataset_dir: Path | str, entries: dict[str, dict[str, Any]], owner: str, replace: bool = False
) -> Iterator[Publication]:
    """Yield a staging folder for ``output_root/dataset_dir``; on success it and ``entries`` are published together.

    ``dataset_dir`` is relative to ``output_root`` (``data/<name>``); each of its parts must be a
    plain name. Refused before anything is read or written: a broken registry, another owner's
    folder or registry keys (unless ``replace``).
    """
    output_root = Path(output_root)
    registry_path = output_root / REGISTRY_NAME
    folder = confined_path(output_root, *Path(dataset_dir).parts, what="dataset folder name", fix="Fix: pass --name with letters, digits and _.")
    if load_registry_before_writing(registry_path):
        updated_registry(registry_path, entries, owner, replace)  # raises on another owner's keys, before any work
    _check_folder(folder, owner, replace)
    folder.parent.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_staging(folder)
    staging = make_staging_dir(folder)
    try:
        yield Publication(staging=staging, stale_removed=stale, owner=owner)
        _check_manifest(staging, owner)
        default_mode(staging, is_dir=True)
        registry_tmp = _staged_registry(registry_path, entries, owner, replace)
        try:
            _swap_in(staging, folder, registry_tmp, registry_path)
        finally:
            if registry_tmp is not None:
                registry_tmp.unlink(missing_ok=True)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
            raise _disk_error(error, folder) from error
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        release_staging_dir(staging)
