"""Manifests written beside every prepared dataset: what went in, what came out, what was dropped.

Manifests hold counts and hashes, never note text: they are safe to share with a paper.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import medfactory
from medfactory.atomic import sha256_file, write_json_atomic

# LLaMA-2 and Mistral SentencePiece tokenizers give roughly 4 characters per token on
# Portuguese clinical prose; the exact count needs the model's tokenizer.
CHARS_PER_TOKEN_ESTIMATE = 4.0


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


def build_manifest(
    corpus: str,
    source_dir: Path,
    outputs: list[Path],
    stats: PreparationStats,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest for one prepared corpus: counts, hashes of outputs, drops by reason."""
    return {
        "corpus": corpus,
        "medfactory_version": medfactory.__version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "source": str(Path(source_dir).resolve()),
        "options": options or {},
        "files_read": stats.files_read,
        "documents": stats.documents,
        "characters": stats.characters,
        "estimated_tokens": estimate_tokens(stats.characters),
        "tokens_estimate_rule": f"characters / {CHARS_PER_TOKEN_ESTIMATE:g}",
        "documents_by_source": dict(sorted(stats.sources.items())),
        "encodings": dict(sorted(stats.encodings.items())),
        "dropped": dict(sorted(stats.dropped.items())),
        "outputs": {path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size} for path in outputs},
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(path, manifest)
