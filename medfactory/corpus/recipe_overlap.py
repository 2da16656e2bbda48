"""Leaks across a recipe's datasets: every evaluation set drawn for it against ALL its training datasets.

De-duplication in ``prepare`` runs per corpus, so a note present in two corpora (SemClinBr and
BRATECA come from overlapping hospitals) can sit in one corpus's test or Likert set and in the
other's training split. :func:`recipe_overlap` takes a recipe's values, the registry and the
dataset folder, and checks each evaluation set (``<dataset>_validation``, ``_test``, ``_likert``
of every training dataset, as registered, and the recipe's ``eval_dataset``) against the union
of its training datasets, with the one definition of a duplicate (:mod:`medfactory.corpus.dedup`):

- ``exact``: equal :func:`~medfactory.corpus.dedup.duplicate_key` of the record's text;
- ``near``: a :class:`~medfactory.corpus.dedup.NearDuplicateIndex` match (estimated Jaccard);
- ``same_prompt``: instruction or preference records whose prompt side (instruction and input, or
  the non-assistant turns) is an exact duplicate though the answers differ.

The evaluation sets (small) are indexed and the training datasets (large) streamed past them, so
memory is about 6 KB per evaluation record whatever the corpus size. The report holds counts,
dataset names, file hashes and record ids, never text. Background in docs/corpora.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from medfactory.base.errors import CorpusError
from medfactory.base.registry import REGISTRY_NAME, load_registry

if TYPE_CHECKING:
    from medfactory.corpus.dedup import NearDuplicateIndex

REPORT_FORMAT = "medfactory-recipe-overlap/1"
EVAL_SUFFIXES = ("validation", "test", "likert")
DEFAULT_THRESHOLD = 0.85
DEFAULT_NUM_PERM = 128
DEFAULT_MAX_EXAMPLES = 20
KINDS = ("exact", "near", "same_prompt")  # strongest first: a record is counted under its strongest match
READABLE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class DatasetFiles:
    """One registered dataset resolved to its local files, and how to read its text."""

    name: str
    role: str  # "train", "validation", "test", "likert" or "eval_dataset"
    of: str | None  # the training dataset an evaluation sibling belongs to
    files: tuple[Path, ...]
    entry: Mapping[str, Any]


@dataclass(frozen=True)
class TextRecord:
    """A record's text views (never reported) and how reports name it."""

    label: str
    text: str
    prompt: str  # the prompt side; equal to text for plain-text (pt) records
    has_answer: bool


def dataset_names(value: object) -> list[str]:
    """``dataset`` / ``eval_dataset`` as LLaMA-Factory splits them: comma-separated, stripped."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def evaluation_names(training: list[str], eval_dataset: list[str], registry: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """``(name, role, of)`` of every evaluation set drawn for ``training``: the registered
    ``<stem>_validation|test|likert[_*]`` siblings of each training dataset (stem: the name,
    and the name without ``_train``), then ``eval_dataset``; each once, training sets excluded."""
    found: dict[str, tuple[str, str, str | None]] = {}
    for train in training:
        stems = [train] + ([train.removesuffix("_train")] if train.endswith("_train") else [])
        for name in registry:
            for stem in stems:
                for suffix in EVAL_SUFFIXES:
                    sibling = f"{stem}_{suffix}"
                    if (name == sibling or name.startswith(sibling + "_")) and name not in training and name not in found:
                        found[name] = (name, suffix, train)
    for name in eval_dataset:
        found.setdefault(name, (name, "eval_dataset", None))
    return list(found.values())


def _files_of(name: str, registry: Mapping[str, Any], dataset_dir: Path) -> tuple[list[Path], str | None]:
    """The local files of a registered dataset, or ``([], why)`` with the fix."""
    entry = registry.get(name)
    if not isinstance(entry, Mapping):
        return [], f"not registered in {REGISTRY_NAME}. Fix: prepare it (`medfactory prepare <plugin>`) or correct the recipe"
    if "file_name" not in entry:
        return [], "not a local file (hub, script or cloud dataset): not checked. Fix: prepare a local copy to check it"
    path = Path(dataset_dir) / str(entry["file_name"])
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "manifest.json")
    else:
        files = [path] if path.is_file() else []
    if not files:
        return [], f"{path}: not prepared (no such file). Fix: run its `medfactory prepare <plugin>` from the repository root"
    unreadable = [p.name for p in files if p.suffix not in READABLE_SUFFIXES]
    if unreadable:
        return [], f"{path}: {', '.join(unreadable)} not checked (readable: {', '.join(READABLE_SUFFIXES)})"
    return files, None


# --- Reading records of LLaMA-Factory's formats -----------------------------------------------------


def _raw_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` of one file: JSON Lines, a JSON array (or JSON Lines named .json), Parquet, CSV."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                number += 1
                yield f"#{number}", record
        return
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            for number, record in enumerate(csv.DictReader(handle), start=1):
                yield f"#{number}", record
        return
    with open(path, encoding="utf-8-sig") as handle:
        first = handle.read(1)
        while first.isspace():
            first = handle.read(1)
        handle.seek(0)
        if path.suffix == ".json" and first == "[":
            records = _load_json(path, handle.read())
            if not isinstance(records, list):
                raise CorpusError(f"{path}: not a JSON array of records. Fix: re-run its `medfactory prepare`.")
            for number, record in enumerate(records, start=1):
                yield f"#{number}", record
            return
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield f"line {number}", _load_json(path, line, number)


def _load_json(path: Path, text: str, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"{path}, line {line}" if line else f"{path}, line {error.lineno}"
        # error.msg names the problem only; the text itself is never echoed.
        raise CorpusError(f"{where}: not valid JSON ({error.msg}). Fix: re-run the dataset's `medfactory prepare`.") from None


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, Mapping):  # a ranking "chosen" message
        return _strings(value.get("content", value.get("value")))
    return []


# LLaMA-Factory's DatasetAttr defaults; as in its DatasetAttr.join, a "columns" (or "tags") mapping
# replaces them all, a key it leaves out meaning "no such column".
_DEFAULT_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "messages": "conversations"}
_DEFAULT_TAGS = {"role_tag": "from", "content_tag": "value", "assistant_tag": "gpt", "function_tag": "function_call", "system_tag": "system"}


def _views(record: Mapping[str, Any], entry: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(prompt side, answer side) of one record, as LLaMA-Factory would read its columns."""
    columns = entry["columns"] if isinstance(entry.get("columns"), Mapping) else _DEFAULT_COLUMNS
    ranking = bool(entry.get("ranking"))

    def column(key: str) -> object:
        return record.get(columns[key]) if columns.get(key) else None

    if entry.get("formatting", "alpaca") == "alpaca":
        answer = _strings(column("chosen")) if ranking else _strings(column("response"))
        return _strings(column("prompt")) + _strings(column("query")), answer
    tags = entry["tags"] if isinstance(entry.get("tags"), Mapping) else _DEFAULT_TAGS
    assistant = {tags.get("assistant_tag"), tags.get("function_tag")} - {None}
    prompt: list[str] = []
    answer: list[str] = []
    messages = column("messages")
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, Mapping) or message.get(tags.get("role_tag")) == tags.get("system_tag"):
            continue  # system prompts are shared by many records: not what a leak is made of
        target = answer if message.get(tags.get("role_tag")) in assistant else prompt
        target += _strings(message.get(tags.get("content_tag")))
    if ranking:
        answer = _strings(column("chosen"))
    return prompt, answer


def _text_record(dataset: DatasetFiles, where: str, record: object) -> TextRecord | None:
    if not isinstance(record, Mapping):
        return None
    prompt, answer = _views(record, dataset.entry)
    note_id = record.get("id")
    named = isinstance(note_id, (str, int)) and not isinstance(note_id, bool) and str(note_id).strip()
    label = f"{dataset.name}:{note_id}" if named else f"{dataset.name}:{where}"
    return TextRecord(label, "\n".join(prompt + answer), "\n".join(prompt), bool(answer))


def dataset_records(dataset: DatasetFiles, hashes: dict[str, str]) -> Iterator[TextRecord]:
    """The text records of a dataset, file after file; fills ``hashes`` (file -> sha256) as it goes."""
    for path in dataset.files:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        hashes[str(path)] = digest.hexdigest()
        for where, record in _raw_records(path):
            text_record = _text_record(dataset, f"{path.name} {where}" if len(dataset.files) > 1 else where, record)
            if text_record is not None:
                yield text_record


# --- Index the evaluation sets, stream the training datasets -----------------------------------------


@dataclass
class _EvalIndex:
    """Every evaluation record: its label and set, its keys, in a near-duplicate index by ordinal."""

    index: NearDuplicateIndex
    labels: list[str] = field(default_factory=list)
    sets: list[int] = field(default_factory=list)  # ordinal -> position in the evaluation list
    exact: dict[int, list[int]] = field(default_factory=dict)  # duplicate key -> ordinals
    prompts: dict[int, list[int]] = field(default_factory=dict)  # prompt-side key -> ordinals (records with an answer)
    empty: Counter = field(default_factory=Counter)  # set position -> records with no text
    best: dict[int, tuple[int, float, str]] = field(default_factory=dict)  # ordinal -> (kind rank, jaccard, training label)


def _index_evaluation(evaluations: list[DatasetFiles], index: NearDuplicateIndex, hashes: dict[str, str], progress: bool) -> tuple[_EvalIndex, list[int]]:
    from medfactory.corpus.dedup import key_of_normalised, normalise_for_dedup

    indexed, records = _EvalIndex(index), []
    for position, dataset in enumerate(evaluations):
        count = 0
        for record in tqdm(dataset_records(dataset, hashes), desc=f"index {dataset.name}", unit=" records", disable=not progress):
            count += 1
            normalised = normalise_for_dedup(record.text)
            if not normalised:
                indexed.empty[position] += 1
                continue
            ordinal = len(indexed.labels)
            indexed.labels.append(record.label)
            indexed.sets.append(position)
            indexed.exact.setdefault(key_of_normalised(normalised), []).append(ordinal)
            if record.has_answer and normalise_for_dedup(record.prompt):
                indexed.prompts.setdefault(key_of_normalised(normalise_for_dedup(record.prompt)), []).append(ordinal)
            index.add(str(ordinal), normalised)
        records.append(count)
    return indexed, records


def _mark(indexed: _EvalIndex, ordinal: int, rank: int, jaccard: float, label: str) -> None:
    current = indexed.best.get(ordinal)
    if current is None or (rank, -jaccard) < (current[0], -current[1]):
        indexed.best[ordinal] = (rank, jaccard, label)


def _scan_training(trainings: list[DatasetFiles], indexed: _EvalIndex, hashes: dict[str, str], progress: bool) -> list[dict[str, Any]]:
    """Stream every training record past the evaluation index; per training set: records and matches."""
    from medfactory.corpus.dedup import key_of_normalised, normalise_for_dedup

    described = []
    for dataset in trainings:
        records = matched = 0
        for record in tqdm(dataset_records(dataset, hashes), desc=f"scan {dataset.name}", unit=" records", disable=not progress):
            records += 1
            normalised = normalise_for_dedup(record.text)
            if not normalised:
                continue
            hits = 0
            for ordinal in indexed.exact.get(key_of_normalised(normalised), ()):
                _mark(indexed, ordinal, 0, 1.0, record.label)
                hits += 1
            for key, jaccard in indexed.index.query_minhash(indexed.index.minhash(normalised)):
                _mark(indexed, int(key), 1, jaccard, record.label)
                hits += 1
            if record.has_answer and indexed.prompts:
                for ordinal in indexed.prompts.get(key_of_normalised(normalise_for_dedup(record.prompt)), ()):
                    _mark(indexed, ordinal, 2, 1.0, record.label)
                    hits += 1
            matched += bool(hits)
        described.append({"dataset": dataset.name, "files": [str(p) for p in dataset.files], "records": records, "records_matching_evaluation": matched})
    return described


# --- The report ----------------------------------------------------------------------------------------


def _resolve(
    recipe_values: Mapping[str, Any], registry: Mapping[str, Any], dataset_dir: Path
) -> tuple[list[DatasetFiles], list[DatasetFiles], list[dict[str, str]]]:
    training_names = dataset_names(recipe_values.get("dataset"))
    if not training_names:  # a predict-only recipe: its model was trained by another recipe
        return [], [], []
    wanted = [(name, "train", None) for name in training_names]
    wanted += evaluation_names(training_names, dataset_names(recipe_values.get("eval_dataset")), registry)
    trainings, evaluations, unavailable = [], [], []
    for name, role, of in wanted:
        files, why = _files_of(name, registry, dataset_dir)
        if why is not None:
            unavailable.append({"dataset": name, "role": role, "reason": why})
            continue
        resolved = DatasetFiles(name, role, of, tuple(files), registry[name])
        (trainings if role == "train" else evaluations).append(resolved)
    return trainings, evaluations, unavailable


def _split_caveats(trainings: list[DatasetFiles]) -> list[dict[str, Any]]:
    """Training corpora whose manifest says their splits are not patient-disjoint."""
    from medfactory.corpus.splits import split_disjointness

    found = []
    for dataset in trainings:
        manifest_path = dataset.files[0].parent / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict) or "notes_by_group_kind" not in manifest:
            continue
        facts = split_disjointness(manifest["notes_by_group_kind"])
        if not facts["patient_disjoint"]:
            found.append({"dataset": dataset.name, "manifest": str(manifest_path), "caveats": manifest.get("split_caveats", facts["split_caveats"])})
    return found


def _evaluation_entries(evaluations: list[DatasetFiles], indexed: _EvalIndex, records: list[int], hashes: dict[str, str]) -> list[dict[str, Any]]:
    counts = [Counter() for _ in evaluations]
    matched_by = [Counter() for _ in evaluations]
    for ordinal, (rank, _, label) in indexed.best.items():
        position = indexed.sets[ordinal]
        counts[position][KINDS[rank]] += 1
        matched_by[position][label.split(":", 1)[0]] += 1
    entries = []
    for position, dataset in enumerate(evaluations):
        entry = {"dataset": dataset.name, "role": dataset.role, "of": dataset.of, "records": records[position], "records_without_text": indexed.empty[position]}
        entry.update({kind: counts[position][kind] for kind in KINDS})
        entry["contaminated"] = sum(counts[position].values())
        entry["contaminated_by"] = dict(sorted(matched_by[position].items()))
        entry["files"] = [{"file": str(p), "sha256": hashes.get(str(p), "")} for p in dataset.files]
        entries.append(entry)
    return entries


def recipe_overlap(
    recipe_values: Mapping[str, Any],
    registry: Mapping[str, Any] | Path,
    dataset_dir: Path,
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    progress: bool = False,
) -> dict[str, Any]:
    """Every evaluation set of a recipe checked against ALL its training datasets (exact, near, same prompt).

    ``recipe_values`` is the recipe as loaded (``dataset``, ``eval_dataset``); ``registry`` the
    ``dataset_info.json`` contents or its path; ``dataset_dir`` the folder its ``file_name`` paths
    are relative to (the recipe's ``dataset_dir``, ``.`` in this repository). The report
    (``REPORT_FORMAT``) has ``overlap`` (True when any evaluation record is contaminated),
    per-set counts, up to ``max_examples`` id pairs, the datasets that could not be read
    (``unavailable``, with the fix) and the training corpora whose splits are not patient-disjoint.
    Counts and ids only, never text. Raises CorpusError on an unreadable file, ValueError on bad settings.
    """
    from medfactory.corpus.dedup import DUPLICATE_KEY, NearDuplicateIndex

    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    registry = load_registry(registry) if isinstance(registry, (str, Path)) else registry
    trainings, evaluations, unavailable = _resolve(recipe_values, registry, Path(dataset_dir))
    index = NearDuplicateIndex(threshold=threshold, num_perm=num_perm)
    hashes: dict[str, str] = {}
    indexed, records = _index_evaluation(evaluations, index, hashes, progress)
    training = (
        _scan_training(trainings, indexed, hashes, progress)
        if indexed.labels
        else [{"dataset": d.name, "files": [str(p) for p in d.files], "records": None, "records_matching_evaluation": 0} for d in trainings]
    )
    entries = _evaluation_entries(evaluations, indexed, records, hashes)
    ordered = sorted(indexed.best.items())
    examples = [
        {"evaluation": indexed.labels[ordinal], "training": label, "kind": KINDS[rank], "jaccard": round(jaccard, 4)}
        for ordinal, (rank, jaccard, label) in ordered[:max_examples]
    ]
    contaminated = len(indexed.best)
    return {
        "format": REPORT_FORMAT,
        "overlap": contaminated > 0,
        "training": training,
        "evaluation": entries,
        "unavailable": unavailable,
        "not_patient_disjoint": _split_caveats(trainings),
        "counts": {
            "evaluation_records": sum(records),
            "contaminated": contaminated,
            **{kind: sum(entry[kind] for entry in entries) for kind in KINDS},
        },
        "examples": examples,
        "examples_left_out": contaminated - len(examples),
        "settings": {**index.settings(), "exact_key": DUPLICATE_KEY, "max_examples": max_examples},
    }


def format_recipe_summary(report: Mapping[str, Any]) -> list[str]:
    """Human-readable lines: per evaluation set its counts, then example ids, caveats and gaps (no text)."""
    if not report["training"] and not report["unavailable"]:
        return ["no training dataset in this recipe (prediction only): nothing to check here; check the recipe that trained the model"]
    lines = [f"training: {', '.join(t['dataset'] for t in report['training']) or 'none available'}"]
    if not report["evaluation"]:
        lines.append("no evaluation set available for this recipe: nothing to check")
    for entry in report["evaluation"]:
        role = f"{entry['role']} of {entry['of']}" if entry["of"] else entry["role"]
        by = ", ".join(f"{name} {count:,}" for name, count in entry["contaminated_by"].items())
        lines.append(
            f"  {entry['dataset']} ({role}): {entry['contaminated']:,} of {entry['records']:,} records in training "
            f"(exact {entry['exact']:,}, near {entry['near']:,}, same prompt {entry['same_prompt']:,})" + (f"; from {by}" if by else "")
        )
    if report["examples"]:
        lines.append("examples (ids only, evaluation -> training):")
        lines += [f"  {e['kind']:<11} {e['evaluation']} -> {e['training']}  (J={e['jaccard']:.2f})" for e in report["examples"]]
        if report["examples_left_out"]:
            lines.append(f"  ... and {report['examples_left_out']:,} more (see the JSON report)")
    for item in report["not_patient_disjoint"]:
        lines += [f"warning: {item['dataset']}: {caveat}" for caveat in item["caveats"]]
    lines += [f"not checked: {item['dataset']} ({item['role']}): {item['reason']}" for item in report["unavailable"]]
    return lines
