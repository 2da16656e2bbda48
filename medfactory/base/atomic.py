"""Crash-safe file output: everything is written to a temporary sibling, then renamed.

A run that fails or is killed therefore never leaves a half-written dataset, manifest or
registry behind, and whatever was prepared before stays as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(path: Path, is_dir: bool) -> None:
    """Give ``path`` the permissions a plain open() / mkdir() would (the umask's)."""
    # mkstemp / mkdtemp create private (0600 / 0700) entries; give the final ones the permissions
    # a plain open() / mkdir() would, so colleagues on a shared VM can read prepared data.
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_current_umask())


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", encoding: str | None = "utf-8", private: bool = False) -> Iterator[TextIO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    ``private``: the file stays readable by its owner only (mkstemp's 0600), e.g. a file of secrets.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if not private:
            default_mode(tmp, is_dir=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented UTF-8 JSON, atomically."""
    with atomic_write(path) as handle:
        json.dump(payload, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


# A run holds an flock on each staging folder it fills; the kernel drops it when the process dies in
# any way (SIGKILL included), so a folder whose lock can be taken is a killed run's leftover. pids
# would not do: a container restarts its numbering, so a dead run's pid is often alive again.
_HELD_LOCKS: dict[str, int] = {}


def _is_held_by_a_live_run(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_stale_staging(folder: Path) -> int:
    """Remove ``.<name>.staging.*`` / ``.<name>.old.*`` beside ``folder`` left by runs that were killed; return how many."""
    folder = Path(folder)
    removed = 0
    for kind in ("staging", "old"):
        for path in folder.parent.glob(f".{folder.name}.{kind}.*"):
            if str(path) in _HELD_LOCKS or (path.is_dir() and _is_held_by_a_live_run(path)):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.warning("%s: removed %d staging folder(s) left by runs that were killed", folder, removed)
    return removed


def make_staging_dir(final_dir: Path) -> Path:
    """An empty, locked ``.<name>.staging.<pid>.<random>`` beside ``final_dir`` (release it with :func:`release_staging_dir`)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.staging.{os.getpid()}.", dir=final_dir.parent))
    fd = os.open(staging, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD_LOCKS[str(staging)] = fd
    return staging


def release_staging_dir(staging: Path) -> None:
    """Drop the lock of a staging folder (after it was renamed into place or removed)."""
    fd = _HELD_LOCKS.pop(str(staging), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(final_dir: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``final_dir`` in one step.

    The old directory is moved aside and only deleted after the new one is in place, so a
    failure at any point leaves the previous contents of ``final_dir`` untouched. Staging left
    beside it by a killed run is removed first.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final_dir)
    staging = make_staging_dir(final_dir)
    try:
        yield staging
        default_mode(staging, is_dir=True)
        backup = None
        if final_dir.exists():
            backup = final_dir.with_name(f".{final_dir.name}.old.{os.getpid()}.{os.urandom(3).hex()}")
            os.replace(final_dir, backup)
        os.replace(staging, final_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        release_staging_dir(staging)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (corpora can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
