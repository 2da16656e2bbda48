"""Contamination between two prepared datasets: notes of A that are exact or near copies of notes of B.

Typical use: ``medfactory contamination data/corpus/test.jsonl data/corpus/train.jsonl`` before
training, to check that copy-forward notes did not leak across the split. Each side is a
``.jsonl`` file or a prepared dataset folder (its ``*.jsonl`` files, sorted). Both are streamed
one record at a time; side B is indexed (:func:`~medfactory.corpus.dedup.duplicate_key`, the key
``prepare`` de-duplicates by, for exact copies; a :class:`~medfactory.corpus.dedup.NearDuplicateIndex`
for near copies), then A is scanned against it. For a recipe (its evaluation sets against all its
training datasets) see :mod:`medfactory.corpus.recipe_overlap`.

Clinical text is sensitive: the report, the summary and every error message carry counts, file
names, line numbers, note ids and hashes, never note text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from medfactory.base.errors import CorpusError

if TYPE_CHECKING:
    from medfactory.corpus.dedup import NearDuplicateIndex

DEFAULT_THRESHOLD = 0.85
DEFAULT_NUM_PERM = 128
DEFAULT_MAX_EXAMPLES = 20
REPORT_FORMAT = "medfactory-contamination/1"
_INPUT_FIX = "pass a .jsonl file or a prepared dataset folder (such as data/<corpus>/) holding .jsonl files"
_LINE_FIX = (
    'each line must be one JSON object with a "text" string, e.g. {"id": "n1", "text": "..."}; '
    "re-run the corpus's `medfactory prepare`, or fix or delete that line"
)


@dataclass(frozen=True)
class Record:
    """One JSONL record: where it is, how reports name it, and its text (never reported)."""

    file: str
    line: int
    label: str
    text: str


@dataclass
class _File:
    path: Path
    name: str
    sha256: str = ""
    records: int = 0


def jsonl_files(path: Path) -> list[Path]:
    """The JSONL files of one side: the file itself, or a folder's ``*.jsonl`` (sorted, not hidden)."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder. Fix: {_INPUT_FIX}.")
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise CorpusError(
                f"{path}: folder holds no .jsonl files. Fix: {_INPUT_FIX}; prepare the corpus first "
                "(`medfactory prepare <corpus>`) or point at the folder it wrote."
            )
        return files
    if path.suffix != ".jsonl":
        raise CorpusError(f"{path}: not a .jsonl file. Fix: {_INPUT_FIX}.")
    return [path]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _record_label(name: str, line: int, record: dict[str, Any]) -> str:
    note_id = record.get("id")
    if isinstance(note_id, bool) or not isinstance(note_id, (str, int)) or str(note_id).strip() == "":
        return f"{name}:{line}"
    return f"{name}:{note_id}"


def _stream_file(entry: _File) -> Iterator[Record]:
    """Records of one file, one line at a time; computes the file's sha256 on the way."""
    digest = hashlib.sha256()
    with open(entry.path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            digest.update(raw)
            where = f"{entry.path}, line {line_number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(
                    f"{where}: not UTF-8 (bad byte at column {error.start + 1}). Fix: re-export the file as UTF-8 JSON Lines."
                ) from None
            if line_number == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                # error.msg names the problem only; the line itself (note text) is never echoed.
                raise CorpusError(f"{where}: not valid JSON ({error.msg} at column {error.colno}). Fix: {_LINE_FIX}.") from None
            if not isinstance(record, dict):
                raise CorpusError(f"{where}: a JSON {_json_type(record)}, not an object. Fix: {_LINE_FIX}.")
            if "text" not in record:
                raise CorpusError(f'{where}: no "text" field. Fix: {_LINE_FIX}.')
            text = record["text"]
            if not isinstance(text, str):
                raise CorpusError(f'{where}: the "text" field is a JSON {_json_type(text)}, not a string. Fix: {_LINE_FIX}.')
            entry.records += 1
            yield Record(entry.name, line_number, _record_label(entry.name, line_number, record), text)
    entry.sha256 = digest.hexdigest()


class _Side:
    """One input (a file or a folder), streamed file after file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [_File(p, p.name) for p in jsonl_files(self.path)]

    def records(self) -> Iterator[Record]:
        for entry in self.files:
            yield from _stream_file(entry)

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "records": sum(entry.records for entry in self.files),
            "files": [{"file": e.name, "sha256": e.sha256, "records": e.records} for e in self.files],
        }


def _progress(records: Iterator[Record], desc: str, enabled: bool) -> Iterator[Record]:
    # Unknown totals (streamed): tqdm shows the count and the rate in records/s.
    return tqdm(records, desc=desc, unit=" records", disable=not enabled, mininterval=0.5)


def _fraction(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


@dataclass
class _BIndex:
    """Side B, indexed: exact keys, labels by ordinal, and the MinHash index keyed by those ordinals."""

    index: NearDuplicateIndex
    exact_keys: dict[int, int] = field(default_factory=dict)  # duplicate key -> ordinal of its first B record
    labels: list[str] = field(default_factory=list)  # ordinal -> label


@dataclass
class _Scan:
    """What scanning A against B found."""

    by_file: dict[str, dict[str, int]]
    exact: int = 0
    near: int = 0
    matched_b: set[int] = field(default_factory=set)
    examples: list[dict[str, Any]] = field(default_factory=list)


def _index_side_b(side_b: _Side, index: NearDuplicateIndex, progress: bool) -> _BIndex:
    """Every distinct (normalised) text of B, in the exact and the near-duplicate index."""
    from medfactory.corpus.dedup import key_of_normalised, normalise_for_dedup

    indexed = _BIndex(index)
    for record in _progress(side_b.records(), f"index B ({side_b.path.name})", progress):
        normalised = normalise_for_dedup(record.text)
        key = key_of_normalised(normalised)
        if key in indexed.exact_keys:
            continue  # an exact repeat inside B adds nothing to either index
        ordinal = len(indexed.labels)
        indexed.exact_keys[key] = ordinal
        indexed.labels.append(record.label)
        index.add(str(ordinal), normalised)
    return indexed


def _scan_side_a(side_a: _Side, b: _BIndex, max_examples: int, progress: bool) -> _Scan:
    """Count A's exact and near copies of B; keep the first ``max_examples`` pairs (labels only)."""
    from medfactory.corpus.dedup import key_of_normalised, normalise_for_dedup

    scan = _Scan(by_file={entry.name: {"exact": 0, "near": 0} for entry in side_a.files})
    for record in _progress(side_a.records(), f"scan A ({side_a.path.name})", progress):
        normalised = normalise_for_dedup(record.text)
        ordinal = b.exact_keys.get(key_of_normalised(normalised))
        if ordinal is not None:
            kind, jaccard = "exact", 1.0
            scan.exact += 1
        else:
            matches = b.index.query_minhash(b.index.minhash(normalised))
            if not matches:
                continue
            best, jaccard = matches[0]
            kind, ordinal = "near", int(best)
            scan.near += 1
        scan.by_file[record.file][kind] += 1
        scan.matched_b.add(ordinal)
        if len(scan.examples) < max_examples:
            scan.examples.append({"a": record.label, "b": b.labels[ordinal], "kind": kind, "jaccard": round(jaccard, 4)})
    return scan


def _report(side_a: _Side, side_b: _Side, b: _BIndex, scan: _Scan, max_examples: int) -> dict[str, Any]:
    """The JSON report (format ``REPORT_FORMAT``): sides, counts, example ids and settings."""
    from medfactory.corpus.dedup import DUPLICATE_KEY

    a_info, b_info = side_a.describe(), side_b.describe()
    for entry in a_info["files"]:
        entry.update(scan.by_file[entry["file"]])
    b_info["distinct_texts"] = len(b.labels)
    contaminated = scan.exact + scan.near
    return {
        "format": REPORT_FORMAT,
        "a": a_info,
        "b": b_info,
        "counts": {
            "a_records": a_info["records"],
            "b_records": b_info["records"],
            "a_exact_in_b": scan.exact,
            "a_near_in_b": scan.near,
            "a_contaminated": contaminated,
            "a_contaminated_fraction": _fraction(contaminated, a_info["records"]),
            "b_records_matched": len(scan.matched_b),
        },
        "examples": scan.examples,
        "examples_left_out": contaminated - len(scan.examples),
        "settings": {
            **b.index.settings(),
            "exact_key": DUPLICATE_KEY,
            "max_examples": max_examples,
        },
    }


def contamination_report(
    a: Path,
    b: Path,
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    shingle_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """How many records of ``a`` are exact or near (estimated Jaccard >= ``threshold``) copies of
    records of ``b``; up to ``max_examples`` example pairs (ids only, first found in A's order).

    "Exact" means an equal :func:`~medfactory.corpus.dedup.duplicate_key` (equal after
    :func:`~medfactory.corpus.dedup.normalise_for_dedup`: case, whitespace, Unicode form, invisible
    characters), the same test ``prepare`` drops duplicates by; "near" means not exact but a near duplicate by MinHash over word shingles.
    Raises CorpusError (file, line and fix) on a missing input, a folder without .jsonl files or
    a bad line; ValueError on bad settings.
    """
    from medfactory.corpus.dedup import DEFAULT_SHINGLE_SIZE, NearDuplicateIndex

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    # Resolve both sides before the (long) indexing, so a typo in A fails at once.
    side_a, side_b = _Side(a), _Side(b)
    index = NearDuplicateIndex(threshold=threshold, num_perm=num_perm, shingle_size=shingle_size or DEFAULT_SHINGLE_SIZE)
    indexed = _index_side_b(side_b, index, progress)
    scan = _scan_side_a(side_a, indexed, max_examples, progress)
    return _report(side_a, side_b, indexed, scan, max_examples)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "n/a"


def format_summary(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines: counts, percentages and example ids (no text)."""
    counts, settings = report["counts"], report["settings"]
    total = counts["a_records"]

    def side(name: str) -> str:
        info = report[name]
        files = len(info["files"])
        records = info["records"]
        return (
            f"{name.upper()}: {info['path']} ({files} file{'s' if files != 1 else ''}, "
            f"{records:,} record{'s' if records != 1 else ''})"
        )

    def count(key: str) -> str:
        return f"{counts[key]:,} ({_percent(counts[key], total)})"

    contaminated = counts["a_contaminated"]
    lines = [
        side("a"),
        side("b") + f", {report['b']['distinct_texts']:,} distinct after normalisation",
        f"exact copies of B in A:        {count('a_exact_in_b')}",
        f"near duplicates (J >= {settings['threshold']:g}):  {count('a_near_in_b')}",
        f"contaminated A records:        {contaminated:,} of {total:,} ({_percent(contaminated, total)}); "
        + f"{counts['b_records_matched']:,} B records matched",
    ]
    if report["examples"]:
        lines.append("examples (ids only, A -> B):")
        lines += [f"  {e['kind']:<5}  {e['a']} -> {e['b']}  (J={e['jaccard']:.2f})" for e in report["examples"]]
        if report["examples_left_out"]:
            lines.append(f"  ... and {report['examples_left_out']:,} more (see the JSON report)")
    return lines


# --- Per-record queries: one text at a time against reference records indexed once -----------------


@dataclass(frozen=True)
class ReferenceMatch:
    """One reference record a queried text copies: its label, ``"exact"`` or ``"near"``, and the (estimated) Jaccard."""

    label: str
    kind: str
    jaccard: float


class ReferenceIndex:
    """Reference texts (an evaluation set's items), indexed once, that answer "which of them does this text copy?".

    The same two tests as :func:`contamination_report`: an equal
    :func:`~medfactory.corpus.dedup.duplicate_key` (exact) or a MinHash near duplicate (estimated
    Jaccard >= ``threshold``) in a :class:`~medfactory.corpus.dedup.NearDuplicateIndex`. Several
    texts may carry one label (an item indexed by its question and by its question with its
    answer) and one text several labels (an item repeated in two sets): :meth:`matches` names
    every label once. Labels are the caller's ids; texts are never stored.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, num_perm: int = DEFAULT_NUM_PERM, shingle_size: int | None = None) -> None:
        from medfactory.corpus.dedup import DEFAULT_SHINGLE_SIZE, NearDuplicateIndex

        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.index = NearDuplicateIndex(threshold=threshold, num_perm=num_perm, shingle_size=shingle_size or DEFAULT_SHINGLE_SIZE)
        self._exact: dict[int, int] = {}  # duplicate key -> ordinal of the distinct text
        self._labels: list[list[str]] = []  # ordinal -> labels of that text
        self.texts = 0

    def __len__(self) -> int:
        """Distinct (normalised) texts indexed."""
        return len(self._labels)

    def add(self, label: str, text: str) -> None:
        """Index ``text`` under ``label``; an exact repeat only adds the label to the text already indexed."""
        from medfactory.corpus.dedup import key_of_normalised, normalise_for_dedup

        self.texts += 1
        normalised = normalise_for_dedup(text)
        key = key_of_normalised(normalised)
        ordinal = self._exact.get(key)
        if ordinal is not None:
            if label not in self._labels[ordinal]:
                self._labels[ordinal].append(label)
            return
        self._exact[key] = len(self._labels)
        self._labels.append([label])
        self.index.add(str(self._exact[key]), normalised)

    def matches(self, text: str) -> list[ReferenceMatch]:
        """Every label whose texts ``text`` copies: exact matches first, then near ones best first (each label once)."""
        from medfactory.corpus.dedup import key_of_normalised, normalise_for_dedup

        normalised = normalise_for_dedup(text)
        found: list[ReferenceMatch] = []
        exact = self._exact.get(key_of_normalised(normalised))
        hits = [(exact, "exact", 1.0)] if exact is not None else []
        hits += [(int(key), "near", jaccard) for key, jaccard in self.index.query_minhash(self.index.minhash(normalised)) if int(key) != exact]
        seen: set[str] = set()
        for ordinal, kind, jaccard in hits:
            for label in self._labels[ordinal]:
                if label not in seen:
                    seen.add(label)
                    found.append(ReferenceMatch(label, kind, round(jaccard, 4)))
        return found

    def settings(self) -> dict[str, object]:
        """What decides the answers (for manifests)."""
        from medfactory.corpus.dedup import DUPLICATE_KEY

        return {**self.index.settings(), "exact_key": DUPLICATE_KEY}
