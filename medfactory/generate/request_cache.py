"""The request cache: every finished request of a generation run, one JSON line each, so a rerun resumes.

The file is append-only JSON Lines, created 0600 (it holds model output, i.e. text derived from the
sources): one line ``{"key", "text", "finish_reason", "prompt_tokens", "completion_tokens"}`` per
successful request, written in one ``write`` and fsynced before the caller sees the answer, so a
kill -9 loses at most the requests still in flight. A torn last line (the kill landed inside a
write) is dropped and cut off when the file is opened; when a key repeats, the last line wins.
Only the byte offset of each key's line is kept in memory: the texts stay on disk.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from medfactory.base.names import confined_path

CACHE_FOLDER = Path(".medfactory_cache") / "generate"
FIELDS = ("text", "finish_reason", "prompt_tokens", "completion_tokens")


def request_cache_path(output_root: Path, name: str) -> Path:
    """The default cache of dataset ``name``: ``<output_root>/.medfactory_cache/generate/<name>.requests.jsonl``.

    Outside ``data/`` because ``data/<name>/`` is replaced as a whole when the dataset is published.
    """
    return confined_path(Path(output_root) / CACHE_FOLDER, f"{name}.requests.jsonl", what="the dataset name of the request cache (--name)")


class RequestCache:
    """An append-only JSONL cache of finished requests, safe to share between the threads of one run."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        if not existed:
            os.fchmod(self._fd, 0o600)  # whatever the umask: the answers are derived from the source text
        self._lock = threading.Lock()
        self._offsets: dict[str, tuple[int, int]] = {}
        self.dropped_torn_line = False
        self._load()

    def _load(self) -> None:
        """Index every complete line; cut a torn last line off the file."""
        with open(self.path, "rb") as handle:
            data = handle.read()
        end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        if end < len(data):
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
            self.dropped_torn_line = True
        offset = 0
        for number, line in enumerate(data[:end].splitlines(keepends=True), start=1):
            if line.strip():
                self._offsets[self._key_of(line, number)] = (offset, len(line))
            offset += len(line)

    def _key_of(self, line: bytes, number: int) -> str:
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("key"), str) or not all(field in record for field in FIELDS):
            from medfactory.generate.client import GenerationError  # the client imports this module

            raise GenerationError(
                f"{self.path}, line {number}: not a request cache line (a JSON object with key, {', '.join(FIELDS)}); nothing was sent. "
                "The file is written only by medfactory: move it aside to start over (finished requests are then sent again)."
            )
        return record["key"]

    def __len__(self) -> int:
        return len(self._offsets)

    def __contains__(self, key: object) -> bool:
        return key in self._offsets

    def get(self, key: str) -> dict[str, Any] | None:
        """The record cached for ``key`` (with ``key``), or None."""
        place = self._offsets.get(key)
        if place is None:
            return None
        offset, length = place
        return json.loads(os.pread(self._fd, length, offset))

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Append ``record`` under ``key`` (one write, then fsync: on disk before this returns)."""
        line = (json.dumps({"key": key, **{field: record[field] for field in FIELDS}}, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            offset = os.lseek(self._fd, 0, os.SEEK_END)
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
            self._offsets[key] = (offset, len(line))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            os.close(fd)
