"""JSON Lines: the one reader and writer every stage uses, with errors that name the file and the line.

Errors never quote a line: prepared files hold note text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medfactory.base.atomic import atomic_write


class JsonlLineError(ValueError):
    """A line that is not a JSON object; ``path``, ``line`` and ``reason`` let callers word it their way."""

    def __init__(self, path: Path, line: int, reason: str, decode_error: json.JSONDecodeError | None = None) -> None:
        super().__init__(f"{path}, line {line}: {reason}")
        self.path, self.line, self.reason, self.decode_error = path, line, reason, decode_error


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; :class:`JsonlLineError` naming file and line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise JsonlLineError(path, number, f"not valid JSON ({error.msg})", error) from error
            if not isinstance(record, dict):
                raise JsonlLineError(path, number, f"expected a JSON object, got {type(record).__name__}")
            yield number, record


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every object of a JSON Lines file, in order (see :func:`iter_jsonl` for the errors)."""
    return [record for _, record in iter_jsonl(path)]


def text_record(path: Path, number: int, line: str, text_field: str) -> dict[str, Any]:
    """Line ``number`` of a notes file as a JSON object with a string ``text_field``; a CorpusError naming file and line otherwise."""
    from medfactory.base.errors import CorpusError

    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise CorpusError(f"{path}, line {number}: not JSON ({error.msg}). Fix: one JSON object per line.") from error
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise CorpusError(f"{path}, line {number}: no text field {text_field!r} (a string). Fix: pass --text-field with the field that holds the note.")
    return record


def jsonl_line(record: Any) -> str:
    """One JSON Lines line: UTF-8 kept as it is (accents stay readable), newline-terminated."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_jsonl(path: Path, records: Iterable[Any]) -> int:
    """Write ``records`` as JSON Lines, atomically (all or nothing); returns how many were written."""
    count = 0
    with atomic_write(Path(path)) as handle:
        for record in records:
            handle.write(jsonl_line(record))
            count += 1
    return count
