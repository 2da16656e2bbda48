"""The corpus pipeline every clinical-notes plugin runs: read, clean, scan, de-duplicate, split, write.

One pass, streaming: memory holds one note at a time plus an 8-byte key per kept note (exact
de-duplication) and, only when near-duplicate removal is asked for, a MinHash signature per note.

Per note, in this order: normalise (:func:`medfactory.text.normalise_note`); drop empty and
too-short notes; scan for personal identifiers and report, mask or refuse (before anything is
written); drop exact duplicates; optionally drop near duplicates (copy-forward notes); assign the
patient's split; write. Outputs go to a staging folder that replaces ``data/<name>/`` in one step
only when everything succeeded, and ``dataset_info.json`` is updated after that: a run that fails
or is killed leaves the previously prepared dataset and the registry as they were.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medfactory.atomic import atomic_directory, sha256_file, write_json_atomic
from medfactory.errors import CorpusError
from medfactory.manifest import CHARS_PER_TOKEN_ESTIMATE, estimate_tokens
from medfactory.readers import ColumnMapping, ReadOptions, SourceFile, list_source_files, read_notes
from medfactory.registry import REGISTRY_NAME, load_registry, register_datasets
from medfactory.splits import SPLITS, HeldOutSampler, SplitPlan, group_of
from medfactory.text import AUTO_ENCODING, normalise_note
from medfactory.versions import package_versions

log = logging.getLogger(__name__)

IDENTIFIER_MODES = ("report", "mask", "refuse")
ON_ERROR_CHOICES = ("fail", "skip")
LIKERT_FILE = "likert_heldout.jsonl"
MANIFEST_FILE = "manifest.json"
# Past this many input files the manifest lists a combined hash instead of one entry per file.
MAX_LISTED_SOURCES = 1000
TOKEN_BATCH = 512


@dataclass
class PrepareOptions:
    """Everything that decides what a prepared dataset contains (recorded in its manifest)."""

    name: str
    mapping: ColumnMapping
    plugin: str = "notes"
    encoding: str = AUTO_ENCODING
    delimiter: str | None = None
    identifier_locales: tuple[str, ...] = ("br",)
    identifier_mode: str = "mask"
    near_duplicate_threshold: float | None = None
    split: SplitPlan = field(default_factory=SplitPlan)
    likert_notes: int = 100
    likert_min_characters: int = 200  # an excerpt plus a continuation worth rating needs some length
    min_characters: int = 20
    on_error: str = "fail"
    tokenizer: str | None = None

    def validate(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise CorpusError(f"dataset name {self.name!r}: pass --name with letters, digits and underscores (e.g. hc_notes).")
        if self.identifier_mode not in IDENTIFIER_MODES:
            raise CorpusError(f"identifier mode {self.identifier_mode!r}: use one of {', '.join(IDENTIFIER_MODES)}.")
        if self.on_error not in ON_ERROR_CHOICES:
            raise CorpusError(f"on-error {self.on_error!r}: use one of {', '.join(ON_ERROR_CHOICES)}.")
        if self.near_duplicate_threshold is not None and not 0 < self.near_duplicate_threshold <= 1:
            raise CorpusError("the near-duplicate threshold is a Jaccard similarity in (0, 1], e.g. 0.85.")


@dataclass
class SplitStats:
    documents: int = 0
    characters: int = 0
    tokens: int | None = None


class SeenKeys:
    """Exact-duplicate memory at 8 bytes a note: a sorted int64 array plus a small set of recent keys.

    A plain set of ints costs about 70 bytes a note (150 MB at the paper's 2.1 M notes); this
    keeps memory nearly flat as the corpus grows (17 MB at 2.1 M notes).
    """

    def __init__(self, buffer_size: int = 65536) -> None:
        import numpy as np

        self._np = np
        self._sorted = np.empty(0, dtype=np.int64)
        self._recent: set[int] = set()
        self._buffer_size = buffer_size

    def add_if_new(self, key: int) -> bool:
        """Record ``key``; False if it was seen before."""
        if key in self._recent:
            return False
        position = self._sorted.searchsorted(key)  # keys are signed 64-bit: numpy's fast path
        if position < len(self._sorted) and int(self._sorted[position]) == key:
            return False
        self._recent.add(key)
        if len(self._recent) >= self._buffer_size:
            merged = self._np.concatenate((self._sorted, self._np.fromiter(self._recent, dtype=self._np.int64)))
            merged.sort()
            self._sorted, self._recent = merged, set()
        return True

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)


class _TokenCounter:
    """Exact token counts with the model's tokenizer, in batches (only with --tokenizer)."""

    def __init__(self, name: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name)
        self.pending: dict[str, list[str]] = {split: [] for split in (*SPLITS, "likert")}
        self.totals: Counter = Counter()

    def add(self, split: str, text: str) -> None:
        self.pending[split].append(text)
        if len(self.pending[split]) >= TOKEN_BATCH:
            self.flush(split)

    def flush(self, split: str) -> None:
        if self.pending[split]:
            encoded = self.tokenizer(self.pending[split], add_special_tokens=False)["input_ids"]
            self.totals[split] += sum(map(len, encoded))
            self.pending[split] = []


def _package_versions() -> dict[str, str | None]:
    return package_versions(("medfactory", "llamafactory", "transformers", "datasketch", "pyarrow"))


def _sources_summary(files: list[SourceFile]) -> dict[str, Any]:
    listed = [
        {"path": str(info.path), "bytes": info.bytes, "sha256": info.sha256, "records": info.records, "encodings": dict(info.encodings)}
        for info in files
    ]
    combined = hashlib.sha256("".join(sorted(info.sha256 for info in files)).encode()).hexdigest()
    encodings: Counter = Counter()
    for info in files:
        encodings.update(info.encodings)
    summary: dict[str, Any] = {
        "files": len(files),
        "bytes": sum(info.bytes for info in files),
        "records": sum(info.records for info in files),
        "combined_sha256": combined,
        "encodings": dict(encodings),
        "mixed_encoding_files": [str(info.path) for info in files if len(info.encodings) > 1][:MAX_LISTED_SOURCES],
    }
    if len(files) <= MAX_LISTED_SOURCES:
        summary["listed"] = listed
    return summary


def prepare_corpus(sources: list[Path], options: PrepareOptions, output_root: Path = Path(".")) -> dict[str, Any]:
    """Prepare ``sources`` into ``output_root/data/<name>/`` and register the splits; return the manifest."""
    from medfactory.identifiers import IdentifierScanner

    options.validate()
    output_root = Path(output_root)
    registry = output_root / REGISTRY_NAME
    if registry.exists():
        try:
            load_registry(registry)  # checked first: a broken registry must not leave data and registry out of step
        except ValueError as error:
            raise CorpusError(f"{error} Fix or delete {registry}, then run again.") from error
    files = [path for source in sources for path in list_source_files(Path(source))]
    total_bytes = sum(path.stat().st_size for path in files)
    scanner = IdentifierScanner(locales=options.identifier_locales)
    near_index = None
    if options.near_duplicate_threshold is not None:
        from medfactory.neardup import NearDuplicateIndex

        near_index = NearDuplicateIndex(threshold=options.near_duplicate_threshold)
    tokens = _TokenCounter(options.tokenizer) if options.tokenizer else None

    dropped: Counter = Counter()
    findings: Counter = Counter()
    notes_with_identifiers = 0
    group_kinds: Counter = Counter()
    split_stats = {split: SplitStats() for split in SPLITS}
    seen = SeenKeys()
    sampler = HeldOutSampler(options.likert_notes, options.split.seed, options.likert_min_characters)
    read_options = ReadOptions(
        mapping=options.mapping, encoding=options.encoding, delimiter=options.delimiter, on_error=options.on_error, drop=lambda reason: dropped.update((reason,))
    )
    infos: list[SourceFile] = []
    records_read = 0
    dataset_dir = output_root / "data" / options.name

    with atomic_directory(dataset_dir) as staging:
        handles = {split: open(staging / f"{split}.jsonl", "w", encoding="utf-8") for split in SPLITS}
        try:
            with tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{options.name}", smoothing=0.1) as bar:
                for path in files:
                    info = SourceFile(path=path)
                    infos.append(info)
                    reported = 0
                    for raw in read_notes(path, info, read_options):
                        records_read += 1
                        if info.bytes - reported > 1 << 20:
                            bar.update(info.bytes - reported)
                            reported = info.bytes
                            bar.set_postfix(notes=records_read, refresh=False)
                        text = normalise_note(raw.text or "")
                        if not text:
                            dropped["empty"] += 1
                            continue
                        if len(text) < options.min_characters:
                            dropped["too_short"] += 1
                            continue
                        found = scanner.find(text)
                        if found:
                            notes_with_identifiers += 1
                            findings.update(finding.kind for finding in found)
                            if options.identifier_mode == "refuse":
                                kinds = ", ".join(sorted({finding.kind for finding in found}))
                                raise CorpusError(
                                    f"{raw.where}: the note contains personal identifiers ({kinds}; values not shown) and "
                                    "--identifier-mode is refuse, so nothing was written. Fix: de-identify the source, or "
                                    "use --identifier-mode mask to replace them with placeholders."
                                )
                            if options.identifier_mode == "mask":
                                text = scanner.mask(text, found)
                        key_bytes = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
                        key = int.from_bytes(key_bytes, "big", signed=True)
                        if not seen.add_if_new(key):
                            dropped["duplicate"] += 1
                            continue
                        if near_index is not None and near_index.add_if_new(key_bytes.hex(), text) is not None:
                            dropped["near_duplicate"] += 1
                            continue
                        kind, group = group_of(raw.patient_id, raw.admission_id, raw.note_id or raw.where)
                        group_kinds[kind] += 1
                        split = options.split.split_of(group)
                        record = {"text": text, "id": raw.note_id or raw.where}
                        if raw.date:
                            record["date"] = raw.date
                        line = json.dumps(record, ensure_ascii=False) + "\n"
                        handles[split].write(line)
                        split_stats[split].documents += 1
                        split_stats[split].characters += len(text)
                        if tokens is not None and split != "test":  # test is counted once the Likert notes left it
                            tokens.add(split, text)
                        if split == "test":
                            sampler.offer(group, key_bytes.hex(), line, len(text))
                    bar.update(info.bytes - reported)
        finally:
            for handle in handles.values():
                handle.close()

        kept = sum(stats.documents for stats in split_stats.values())
        if kept == 0:
            raise CorpusError(
                f"{', '.join(map(str, sources))}: no notes kept from {records_read} records read "
                f"(dropped: {dict(dropped) or 'none'}). Fix: check the text column (--text-column) and the files."
            )
        likert = _carve_held_out(staging, sampler.records(), split_stats, tokens)
        if tokens is not None:
            for split in tokens.pending:
                tokens.flush(split)
            for split in SPLITS:
                split_stats[split].tokens = tokens.totals[split]
        outputs = sorted(staging.glob("*.jsonl"))
        manifest = {
            "dataset": options.name,
            "plugin": options.plugin,
            "created_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            "versions": _package_versions(),
            "options": _options_record(options),
            "sources": _sources_summary(infos),
            "records_read": records_read,
            "documents": kept,
            "characters": sum(stats.characters for stats in split_stats.values()),
            "estimated_tokens": estimate_tokens(sum(stats.characters for stats in split_stats.values())),
            "tokens_estimate_rule": f"characters / {CHARS_PER_TOKEN_ESTIMATE:g}",
            "tokenizer": options.tokenizer,
            "splits": {
                split: {**asdict(stats), "estimated_tokens": estimate_tokens(stats.characters)}
                for split, stats in {**split_stats, "likert": likert}.items()
            },
            "notes_by_group_kind": dict(group_kinds),
            "dropped": dict(sorted(dropped.items())),
            "identifiers": {
                "mode": options.identifier_mode,
                "locales": list(options.identifier_locales),
                "notes_with_findings": notes_with_identifiers,
                "findings_by_type": dict(sorted(findings.items())),
            },
            "outputs": {path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size} for path in outputs},
        }
        write_json_atomic(staging / MANIFEST_FILE, manifest)
    register_datasets(registry, registry_entries(options.name))
    log.info("%s: %d records read, %d notes kept, dropped %s", options.name, records_read, kept, dict(dropped))
    return manifest


def _carve_held_out(staging: Path, chosen_lines: list[str], split_stats: dict[str, SplitStats], tokens: _TokenCounter | None) -> SplitStats:
    """Move the Likert notes out of the test split into their own file (the test file is rewritten)."""
    chosen = set(chosen_lines)
    likert = SplitStats()
    test_path = staging / "test.jsonl"
    rewritten = staging / "test.jsonl.rewrite"
    with open(test_path, encoding="utf-8") as source, open(rewritten, "w", encoding="utf-8") as target:
        for line in source:
            if line not in chosen:
                target.write(line)
                if tokens is not None:
                    tokens.add("test", json.loads(line)["text"])
    os.replace(rewritten, test_path)
    with open(staging / LIKERT_FILE, "w", encoding="utf-8") as handle:
        for line in chosen_lines:
            handle.write(line)
            text = json.loads(line)["text"]
            likert.documents += 1
            likert.characters += len(text)
            split_stats["test"].documents -= 1
            split_stats["test"].characters -= len(text)
            if tokens is not None:
                tokens.add("likert", text)
    if tokens is not None:
        tokens.flush("likert")
        likert.tokens = tokens.totals["likert"]
    return likert


def _options_record(options: PrepareOptions) -> dict[str, Any]:
    record = asdict(options)
    record["mapping"] = {name: list(value) for name, value in asdict(options.mapping).items() if name != "required"}
    record["split"] = asdict(options.split)
    return record


def registry_entries(name: str) -> dict[str, dict[str, Any]]:
    """LLaMA-Factory entries: ``<name>`` is the training split; the others carry a suffix."""
    files = {name: "train", f"{name}_validation": "validation", f"{name}_test": "test", f"{name}_likert": "likert_heldout"}
    return {
        dataset: {"file_name": f"data/{name}/{stem}.jsonl", "columns": {"prompt": "text"}} for dataset, stem in files.items()
    }
