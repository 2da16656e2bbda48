"""The one manifest schema, written beside every prepared dataset: what went in, what came out, what was dropped.

Every plugin's ``manifest.json`` has the keys of :data:`REQUIRED_KEYS` (``datasets`` gives the record
count of each registered dataset, which ``medfactory card`` reports); a plugin adds its own facts
beside them. Manifests hold counts and hashes, never note text: they are safe to share with a paper.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import medfactory
from medfactory.base.atomic import sha256_file, write_json_atomic

# LLaMA-2 and Mistral SentencePiece tokenizers give roughly 4 characters per token on
# Portuguese clinical prose; the exact count needs the model's tokenizer.
CHARS_PER_TOKEN_ESTIMATE = 4.0

MANIFEST_FILE = "manifest.json"
REQUIRED_KEYS = ("corpus", "medfactory_version", "created_utc", "source", "options", "datasets", "outputs", "dropped")


def estimate_tokens(characters: int) -> int:
    """Rough token count for ``characters`` of Portuguese text (see CHARS_PER_TOKEN_ESTIMATE)."""
    return math.ceil(characters / CHARS_PER_TOKEN_ESTIMATE)


@dataclass
class PreparationStats:
    """Counters a plugin fills while it streams a corpus."""

    files_read: int = 0
    documents: int = 0
    characters: int = 0
    dropped: Counter = field(default_factory=Counter)
    encodings: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)

    def keep(self, text: str, source: str) -> None:
        self.documents += 1
        self.characters += len(text)
        self.sources[source] += 1

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


def manifest_header(corpus: str, source: Path | str | list[Path], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keys every manifest starts with: what was prepared, by which version, when, from where, how.

    ``source`` is the resolved path, or the list of them for a corpus read from several.
    """
    return {
        "corpus": corpus,
        "medfactory_version": medfactory.__version__,
        "created_utc": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "source": [str(Path(path).resolve()) for path in source] if isinstance(source, list) else str(Path(source).resolve()),
        "options": options or {},
    }


def output_facts(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """``{file name: {sha256, bytes}}`` of the files a plugin wrote."""
    return {path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size} for path in paths}


def count_records(path: Path) -> int:
    """Records in a prepared file: non-blank lines of JSON Lines, items of a JSON array."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    payload = json.loads(path.read_text(encoding="utf-8"))
    return len(payload) if isinstance(payload, list) else 1


def dataset_records(folder: Path, entries: Mapping[str, Mapping[str, Any]], registered_folder: Path) -> dict[str, dict[str, Any]]:
    """``{dataset: {file, records}}`` for the registry ``entries`` whose files lie in ``folder``.

    ``registered_folder`` is the folder as the registry names it (``data/<name>``); ``folder`` is
    where the files are now (the staging copy, before it replaces ``data/<name>``).
    """
    records = {}
    for name, entry in entries.items():
        file_name = Path(str(entry["file_name"]))
        relative = file_name.relative_to(registered_folder) if file_name.is_relative_to(registered_folder) else Path(file_name.name)
        path = Path(folder) / relative
        if path.is_file():
            records[name] = {"file": file_name.as_posix(), "records": count_records(path)}
    return dict(sorted(records.items()))


def build_manifest(
    corpus: str,
    source_dir: Path,
    outputs: list[Path],
    stats: PreparationStats,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a streamed corpus: counts, hashes of outputs, drops by reason (``datasets`` to fill)."""
    return {
        **manifest_header(corpus, source_dir, options),
        "datasets": {},
        "files_read": stats.files_read,
        "documents": stats.documents,
        "characters": stats.characters,
        "estimated_tokens": estimate_tokens(stats.characters),
        "tokens_estimate_rule": f"characters / {CHARS_PER_TOKEN_ESTIMATE:g}",
        "documents_by_source": dict(sorted(stats.sources.items())),
        "encodings": dict(sorted(stats.encodings.items())),
        "dropped": dict(sorted(stats.dropped.items())),
        "outputs": output_facts(outputs),
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write a manifest atomically; a manifest without the schema's keys is a bug in its plugin."""
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"{path}: manifest lacks {', '.join(missing)} (see medfactory.base.manifest.REQUIRED_KEYS)")
    write_json_atomic(path, manifest)
