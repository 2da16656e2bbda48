"""Label Studio: the annotation loop for notes without a public PHI corpus (Portuguese), as BRAT gold for ``deid train``.

1. :func:`export_notes` samples documents from a folder of notes (each ``.txt`` file is one, each
   ``.jsonl`` line another), runs the de-identifier on them and writes Label Studio import tasks
   whose ``predictions`` are its spans, so annotators correct rather than start from scratch, and the
   labelling config (:data:`LABEL_STUDIO_CONFIG`) beside them.
2. Annotators correct the spans in Label Studio; the project is exported as JSON.
3. :func:`import_label_studio` reads that export (the latest non-cancelled annotation of each task;
   tasks nobody annotated are skipped and counted), validates every region as a gold ``.ann`` is
   validated, and writes ``NAME.txt`` + ``NAME.ann`` into a new folder in one step.
4. ``medfactory deid train --gold FOLDER`` trains on it.

The tasks file holds the notes' text (annotators must read it): it is patient data, never a
de-identified product. Errors name the file, the task (Label Studio's task id, or its 1-based
position in the file when it has none) and the region (1-based, in the annotation's ``result``),
never a value.

Label Studio has counted offsets in UTF-16 units, or after folding CRLF, in some versions: every
region's own ``text`` is compared with the task text at its offsets, so offsets counted another way
are refused instead of training the tagger on shifted spans.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfactory.base.atomic import atomic_directory, atomic_write
from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import text_record
from medfactory.base.names import safe_component
from medfactory.corpus.deid.brat import KNOWN_CATEGORIES, BratDocument, one_line, write_brat
from medfactory.corpus.deid.spans import CATEGORIES, PhiSpan

LABEL_STUDIO_FROM = "label"  # the <Labels name="label" toName="text"> of the labelling config
LABEL_STUDIO_TO = "text"
LABEL_STUDIO_CONFIG = (
    '<View>\n  <Labels name="label" toName="text">\n'
    + "".join(f'    <Label value="{category}"/>\n' for category in CATEGORIES)
    + '  </Labels>\n  <Text name="text" value="$text"/>\n</View>\n'
)  # the labelling config the tasks expect: paste it in the project's settings (Labeling Interface > Code)
NOTE_SUFFIXES = (".txt", ".jsonl")  # what `deid apply` reads
CONFIG_SUFFIX = ".label_config.xml"  # tasks.json -> tasks.label_config.xml


# --- export: notes -> sampled, pre-annotated tasks --------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class NoteRef:
    """One document of a notes folder: a whole ``.txt`` file (``line`` None) or one line of a ``.jsonl`` file."""

    path: Path
    line: int | None = None

    @property
    def name(self) -> str:
        """The document's name in the tasks and, after import, its BRAT file stem."""
        return self.path.stem if self.line is None else f"{self.path.stem}_line{self.line}"


def list_notes(folder: Path) -> list[NoteRef]:
    """Every document of ``folder`` (files directly in it), in file then line order; JSONL lines are counted, not parsed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"--input {folder}: no such folder. Fix: pass the folder that holds the notes (.txt or .jsonl files).")
    refs: list[NoteRef] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in NOTE_SUFFIXES):
        if path.suffix.lower() == ".txt":
            refs.append(NoteRef(path))
            continue
        with open(path, "rb") as handle:  # bytes: counting lines needs no decoding, and a big JSONL stays cheap
            refs.extend(NoteRef(path, number) for number, line in enumerate(handle, 1) if line.strip())
    if not refs:
        raise CorpusError(f"--input {folder}: no .txt or .jsonl note directly in it. Fix: pass the folder that holds the notes.")
    return refs


def sample_notes(refs: list[NoteRef], sample: int | None, seed: int) -> list[NoteRef]:
    """A simple random sample (not stratified) of ``sample`` documents, reproducible from ``seed``, in folder order; all when None."""
    if sample is None or sample >= len(refs):
        return list(refs)
    if sample < 1:
        raise CorpusError(f"--sample {sample}: must be at least 1. Fix: pass the number of documents to annotate, e.g. --sample 200.")
    chosen = random.Random(seed).sample(range(len(refs)), sample)
    return [refs[index] for index in sorted(chosen)]


def _read_txt(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as handle:  # newline="": offsets index the file's own line breaks
            return handle.read()
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: not UTF-8 (byte {error.start}). Fix: convert the file to UTF-8 (e.g. iconv -f cp1252 -t utf-8).") from error


def _jsonl_texts(path: Path, lines: set[int], text_field: str) -> dict[int, str]:
    """The ``text_field`` of the wanted lines of one JSONL file (one pass over it)."""
    texts: dict[int, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if number not in lines:
                continue
            texts[number] = text_record(path, number, line, text_field)[text_field]
    return texts


def read_notes(refs: Iterable[NoteRef], text_field: str = "text") -> Iterator[tuple[NoteRef, str]]:
    """(ref, text) for each ref, in the order given; each JSONL file is read once for all its wanted lines."""
    refs = list(refs)
    wanted: dict[Path, set[int]] = {}
    for ref in refs:
        if ref.line is not None:
            wanted.setdefault(ref.path, set()).add(ref.line)
    texts = {path: _jsonl_texts(path, lines, text_field) for path, lines in wanted.items()}
    for ref in refs:
        yield ref, (_read_txt(ref.path) if ref.line is None else texts[ref.path][ref.line])


def _task(name: str, text: str, spans: Iterable[PhiSpan], model_version: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One import task: the text (and its name) as data, the spans as one prediction to correct."""
    result = [
        {
            "id": f"s{index}", "from_name": LABEL_STUDIO_FROM, "to_name": LABEL_STUDIO_TO, "type": "labels",
            "value": {"start": span.start, "end": span.end, "text": text[span.start : span.end], "labels": [span.category]},
        }
        for index, span in enumerate(spans)
    ]  # fmt: skip
    return {"data": {"text": text, "document": name, **(extra or {})}, "predictions": [{"model_version": model_version, "result": result}]}


def label_studio_tasks(documents: Iterable[BratDocument], model_version: str = "medfactory-deid") -> list[dict[str, Any]]:
    """Label Studio import tasks: each document's text with its spans as a prediction to correct."""
    return [_task(document.name, document.text, document.spans, model_version) for document in documents]


def export_label_studio(documents: Iterable[BratDocument], path: Path, model_version: str = "medfactory-deid") -> int:
    """Write Label Studio import tasks (JSON, atomically) for ``documents``; returns the number of tasks."""
    tasks = label_studio_tasks(documents, model_version)
    with atomic_write(Path(path)) as handle:
        json.dump(tasks, handle, ensure_ascii=False, indent=1)
    return len(tasks)


def config_path(tasks_path: Path) -> Path:
    """Where the labelling config goes beside a tasks file: ``tasks.json`` -> ``tasks.label_config.xml``."""
    tasks_path = Path(tasks_path)
    return tasks_path.with_name(tasks_path.stem + CONFIG_SUFFIX)


@dataclass
class ExportSummary:
    """What an export wrote: counts and categories only (the tasks themselves hold the text)."""

    tasks_path: Path
    config_path: Path
    documents_in_folder: int
    tasks: int
    layers: tuple[str, ...]
    predicted: Counter[str] = field(default_factory=Counter)
    offset_risk: int = 0  # tasks with CR line ends or characters past U+FFFF, where Label Studio may count offsets its own way


def _check_output(folder: Path, output: Path) -> None:
    source, target = Path(folder).resolve(), Path(output).resolve()
    if source == target or source in target.parents:
        raise CorpusError(f"--output {output} is inside --input {folder}: an export of the notes does not go among them (whatever runs over "
                          "or copies the folder would take it along). Fix: write the tasks outside it, e.g. --output label_studio/tasks.json.")  # fmt: skip


def export_notes(
    folder: Path, output: Path, language: str, *, sample: int | None = None, seed: int = 0, model: Path | None = None, text_field: str = "text"
) -> ExportSummary:
    """Sample documents of ``folder``, pre-annotate them with the de-identifier, write ``output`` (tasks) and its config.

    Nothing is written when a note cannot be read or named; both files are written atomically.
    """
    from medfactory.corpus.deid.deidentifier import Deidentifier  # the tagger loads only when an export runs

    _check_output(folder, output)
    refs = list_notes(folder)
    chosen = sample_notes(refs, sample, seed)
    names: dict[str, NoteRef] = {}
    for ref in chosen:
        name = safe_component(ref.name, "note file name", str(ref.path), "Fix: rename the file (letters, digits, - and _).", show_value=False)
        if name in names:
            raise CorpusError(f"{ref.path}: its document name is also that of {names[name].path}. Fix: rename one of the two files.")
        names[name] = ref
    deidentifier = Deidentifier(language, model=model)
    version = f"medfactory-deid-{language}-{'+'.join(deidentifier.layers)}"
    summary = ExportSummary(Path(output), config_path(output), len(refs), len(chosen), deidentifier.layers)
    tasks = []
    for ref, text in read_notes(chosen, text_field):
        spans = deidentifier.find(text)
        summary.predicted.update(span.category for span in spans)
        summary.offset_risk += "\r" in text or any(ord(char) > 0xFFFF for char in text)
        extra = {"source": ref.path.name} if ref.line is None else {"source": ref.path.name, "line": ref.line}
        tasks.append(_task(ref.name, text, spans, version, extra))
    with atomic_write(summary.tasks_path) as handle:
        json.dump(tasks, handle, ensure_ascii=False, indent=1)
    with atomic_write(summary.config_path) as handle:
        handle.write(LABEL_STUDIO_CONFIG)
    return summary


# --- import: a Label Studio JSON export -> validated BRAT gold ------------------------------------------------


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's latest non-cancelled annotation (by ``updated_at``, else ``created_at``, else list order), or None."""
    annotations = task.get("annotations") or []
    kept = [(index, item) for index, item in enumerate(annotations) if isinstance(item, dict) and not item.get("was_cancelled")]
    if not kept:
        return None
    # Label Studio's timestamps are ISO 8601 in one format, so they order as strings; ties keep the later in the list.
    return max(kept, key=lambda pair: (str(pair[1].get("updated_at") or pair[1].get("created_at") or ""), pair[0]))[1]


def _offset(value: dict[str, Any], key: str, where: str) -> int:
    offset = value.get(key)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise CorpusError(f"{where}: its {key} is missing or not a whole number. Fix: redraw the region (a text region has integer start and end).")
    return offset


def _region_span(region: dict[str, Any], text: str, where: str) -> PhiSpan:
    """One labelled region as a gold span, its offsets checked against the task text."""
    value = region.get("value") if isinstance(region.get("value"), dict) else {}
    labels = value.get("labels") or []
    if not isinstance(labels, list) or len(labels) != 1:
        raise CorpusError(f"{where}: expected exactly one label (it has {len(labels) if isinstance(labels, list) else 'none'}). Fix: give it one label.")
    start, end, category = _offset(value, "start", where), _offset(value, "end", where), str(labels[0])
    if category not in KNOWN_CATEGORIES:
        raise CorpusError(f"{where}: unknown label {category!r}. Fix: use the labelling config `medfactory deid label-studio config` prints (its labels only).")
    if start >= end:
        raise CorpusError(f"{where}: empty or reversed region (start {start} >= end {end}). Fix: redraw the region.")
    if start < 0 or end > len(text):
        raise CorpusError(f"{where}: region {start}-{end} is outside the text ({len(text)} characters). Fix: redraw the region.")
    if "text" in value and str(value["text"]) not in (text[start:end], one_line(text[start:end])):
        raise CorpusError(
            f"{where}: the region's text differs from the task text at {start}-{end} (offsets off). Fix: export texts with LF line ends and no emoji "
            "(Label Studio counted the offsets differently), or redraw the region."
        )
    return PhiSpan(start, end, category, "gold")


def spans_from_label_studio(task: dict[str, Any], *, where: str = "task") -> BratDocument:
    """The document of a completed Label Studio task (its latest non-cancelled annotation) as gold spans.

    ``where`` names the task in errors (e.g. ``export.json task 12``). Spans are validated as a
    gold ``.ann`` is: known category, inside the text, the region's own text matching, no overlaps.
    """
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    text = data.get("text")
    if not isinstance(text, str):
        raise CorpusError(f"{where}: no data.text. Fix: export the project as JSON (not JSON-MIN or CSV).")
    name = str(data.get("document") or (f"task_{task['id']}" if task.get("id") is not None else "document"))
    annotation = latest_annotation(task)
    if annotation is None:
        raise CorpusError(f"{where}: no completed annotation. Fix: finish the task in Label Studio, or leave it out of the export.")
    entries = [
        (_region_span(region, text, f"{where} region {index}"), index)
        for index, region in enumerate(annotation.get("result") or [], start=1)
        if isinstance(region, dict) and region.get("type", "labels") == "labels"  # relations, choices, text areas carry no span
    ]
    entries.sort()
    for (previous, first), (span, second) in zip(entries, entries[1:]):
        if span.overlaps(previous):
            raise CorpusError(
                f"{where}: spans {previous.start}-{previous.end} (region {first}) and {span.start}-{span.end} (region {second}) overlap. "
                "Fix: keep one of them (one character, one category)."
            )
    return BratDocument(name, text, [span for span, _ in entries], 0)


@dataclass
class LabelStudioExport:
    """A validated export: the annotated documents (safe file names) and what was skipped, as counts."""

    documents: list[BratDocument]
    tasks: int
    unannotated: int = 0  # tasks nobody annotated
    cancelled: int = 0  # tasks whose every annotation was cancelled (skipped)
    several: int = 0  # tasks with more than one completed annotation: the latest was used

    def categories(self) -> Counter[str]:
        return Counter(span.category for document in self.documents for span in document.spans)


def _task_place(path: Path, task: Any, position: int) -> str:
    task_id = task.get("id") if isinstance(task, dict) else None
    return f"{path} task {task_id if task_id is not None else position}"


def read_label_studio_export(path: Path) -> LabelStudioExport:
    """Read and validate a Label Studio JSON export (every task) before anything is written."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CorpusError(f"{path}: no such file. Fix: pass the JSON file Label Studio's Export (JSON) wrote.") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorpusError(f"{path}: not a readable Label Studio JSON export ({type(error).__name__}). Fix: export the project as JSON.") from error
    if not isinstance(tasks, list):
        raise CorpusError(f"{path}: expected a list of tasks. Fix: export the project as JSON (not JSON-MIN).")
    result = LabelStudioExport([], len(tasks))
    seen: dict[str, str] = {}
    for position, task in enumerate(tasks, start=1):
        where = _task_place(path, task, position)
        if not isinstance(task, dict):
            raise CorpusError(f"{where}: not a task object. Fix: export the project as JSON.")
        if latest_annotation(task) is None:
            cancelled = any(isinstance(item, dict) and item.get("was_cancelled") for item in task.get("annotations") or [])
            result.cancelled += cancelled
            result.unannotated += not cancelled
            continue
        result.several += sum(isinstance(item, dict) and not item.get("was_cancelled") for item in task["annotations"]) > 1
        document = spans_from_label_studio(task, where=where)
        name = safe_component(document.name, "data.document", where, "Fix: give the task a data.document of letters, digits, - and _.", show_value=False)
        if name in seen:
            raise CorpusError(f"{where}: its data.document is also that of {seen[name]}. Fix: give each task its own data.document, or drop one.")
        seen[name] = where
        result.documents.append(BratDocument(name, document.text, document.spans, 0))
    if not result.documents:
        raise CorpusError(f"{path}: none of its {len(tasks)} task(s) has a completed annotation. Fix: submit annotations in Label Studio, then export again.")
    return result


def write_gold_folder(documents: Iterable[BratDocument], folder: Path, *, replace: bool = False, keep: Path | None = None) -> None:
    """Write ``folder/NAME.txt`` + ``.ann`` for each document: staged beside ``folder``, renamed into place in one step.

    An existing non-empty ``folder`` is replaced only with ``replace``; never one that holds ``keep`` (the export being imported).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CorpusError(f"--output {folder}: a file, not a folder. Fix: pass a new folder for the gold annotations.")
    if folder.is_dir() and any(folder.iterdir()):
        if not replace:
            raise CorpusError(f"--output {folder}: the folder exists and is not empty. Fix: pass a new folder, or --replace to replace it.")
        if keep is not None and folder.resolve() in Path(keep).resolve().parents:
            raise CorpusError(f"--output {folder} holds {keep}: --replace would delete the export. Fix: pass another output folder.")
    documents = list(documents)
    with atomic_directory(folder) as staging:
        for document in documents:
            write_brat(staging / document.name, document.text, document.spans)


def import_label_studio(path: Path, folder: Path, *, replace: bool = False) -> int:
    """Write each completed task of a Label Studio JSON export as ``folder/NAME.txt`` + ``.ann``; returns the count.

    Tasks nobody annotated (or whose annotations were all cancelled) are skipped: see
    :func:`read_label_studio_export` for their counts. Nothing is written unless every annotated task is valid.
    """
    export = read_label_studio_export(path)
    write_gold_folder(export.documents, folder, replace=replace, keep=Path(path))
    return len(export.documents)
