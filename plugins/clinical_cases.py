"""Open-ended clinical cases (LenguajeNaturalAI ClinDiagnosES / ClinTreatES, or any CSV/JSONL/Parquet of case + answer):
an evaluation set and a LLaMA-Factory prediction set.

Writes ``data/<name>/test.jsonl`` (one ``{"id", "case", "reference", "task", "language", "specialty"}`` per case, the
file ``medfactory eval cases`` scores against), ``data/<name>/predict.json`` (alpaca rows: ``instruction`` is the
versioned Spanish task prompt of :data:`PROMPTS`, ``input`` the case, ``output`` the reference) registered as
``<name>_predict`` for ``llamafactory-cli train`` with ``do_predict`` / ``predict_with_generate``, and a manifest of
counts and hashes (no case text). The published layouts, the prediction recipe and the scoring are in
docs/clinical_cases.md.

Errors name the file and the line (JSON Lines, CSV) or record (JSON array, Parquet), never the case text.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.atomic import sha256_file, write_json_atomic
from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.jsonl import write_jsonl
from medfactory.base.manifest import dataset_records, manifest_header, output_facts
from medfactory.base.publish import publish_datasets
from medfactory.plugins import CorpusPlugin, ReplaceOption
from medfactory.plugins.exam_mcq import READABLE, iter_records

CORPUS_NAME = "clinical_cases"
TASKS = ("diagnosis", "treatment")
LANGUAGES = ("es", "pt", "en")
NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
TEST_FILE = "test.jsonl"
PREDICT_FILE = "predict.json"
PROMPT_VERSION = "clinical-cases-v1"

# The published columns (dataset cards of LenguajeNaturalAI/ClinDiagnosES and /ClinTreatES: caso_clinico, Diagnostico
# or Tratamiento, Especialidad; one "train" split of 62 cases, data/train-00000-of-00001.parquet; no id column).
DEFAULT_CASE_COLUMN = "caso_clinico"
DEFAULT_ANSWER_COLUMN = {"diagnosis": "Diagnostico", "treatment": "Tratamiento"}
DEFAULT_SPECIALTY_COLUMN = "Especialidad"
DEFAULT_NAME = {"diagnosis": "casos_clinicos_diagnostico", "treatment": "casos_clinicos_tratamiento"}


@dataclass(frozen=True)
class TaskPrompt:
    """The instruction of one task (our wording, following the dataset cards' templates in substance)."""

    task: str
    instruction: str
    case_label: str = "Caso clínico"
    diagnosis_label: str = "Diagnóstico"

    def record(self) -> dict[str, str]:
        return {"version": PROMPT_VERSION, "task": self.task, "instruction": self.instruction, "input": f"{self.case_label}: <case>"}


PROMPTS = {
    "diagnosis": TaskPrompt(
        "diagnosis",
        "Eres un médico experto. Lee el caso clínico y escribe el diagnóstico del paciente. Responde solo con el diagnóstico, de forma breve y concisa.",
    ),
    "treatment": TaskPrompt(
        "treatment",
        "Eres un médico experto. Lee el caso clínico (y su diagnóstico, si se indica) y propón el tratamiento del paciente. "
        "Responde solo con el tratamiento, de forma breve y concisa.",
    ),
}


@dataclass(frozen=True)
class Columns:
    """Which source column holds each field; ``id`` / ``specialty`` / ``diagnosis`` may be absent (None)."""

    case: str
    answer: str
    id: str | None = None
    specialty: str | None = DEFAULT_SPECIALTY_COLUMN
    diagnosis: str | None = None


def dataset_dir(name: str) -> Path:
    return Path("data") / name


def registry_entries(name: str) -> dict[str, dict[str, Any]]:
    return {
        f"{name}_predict": {
            "file_name": f"{dataset_dir(name).as_posix()}/{PREDICT_FILE}",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        }
    }


def resolve_files(source: Path) -> list[Path]:
    """``source`` itself, or every readable file under a folder (a Hugging Face snapshot: ``data/train-*.parquet``), sorted."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise CorpusError(f"{source}: not found. Pass --source the downloaded file, or the dataset folder (holding data/train-*.parquet).")
    files = sorted(
        path
        for path in source.rglob("*")
        if path.is_file() and path.suffix.lower() in READABLE and not any(p.startswith(".") for p in path.relative_to(source).parts)
    )
    if not files:
        raise CorpusError(f"{source}: holds no {', '.join(READABLE)} file. Pass --source the downloaded file or the dataset folder.")
    return files


def _text(record: dict[str, Any], column: str | None, where: str, required: bool, flag: str) -> str | None:
    if column is None:
        return None
    if column not in record:
        if not required:
            return None
        raise CorpusError(f"{where}: no column {column!r} (columns: {', '.join(map(str, record)) or 'none'}). Fix: pass {flag} with the right column.")
    value = record[column]
    if value is None or (isinstance(value, float) and value != value):
        value = ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise CorpusError(f"{where}: column {column!r} is a {type(value).__name__}, not text.")
    text = unicodedata.normalize("NFC", str(value)).strip()
    if required and not text:
        raise CorpusError(f"{where}: column {column!r} is empty. Fix the record or remove it.")
    return text or None


def load_cases(files: list[Path], columns: Columns, task: str, language: str, name: str) -> list[dict[str, Any]]:
    """The cases of every file, in file order; ids from ``columns.id`` or ``<name>-<position>`` (1-based); ids must be unique."""
    cases: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for path in files:
        for where, record in iter_records(path):
            if not isinstance(record, dict):
                raise CorpusError(f"{where}: expected an object with named columns, got a {type(record).__name__}.")
            case = _text(record, columns.case, where, True, "--case-column")
            reference = _text(record, columns.answer, where, True, "--answer-column")
            item_id = _text(record, columns.id, where, True, "--id-column") or f"{name}-{len(cases) + 1}"
            if item_id in seen:
                raise CorpusError(f"{where}: id {item_id!r} repeats {seen[item_id]}. Ids must be unique (or drop --id-column to number the cases).")
            seen[item_id] = where
            diagnosis = _text(record, columns.diagnosis, where, True, "--diagnosis-column")
            row = {"id": item_id, "case": case, "reference": reference, "task": task, "language": language,
                   "specialty": _text(record, columns.specialty, where, False, "--specialty-column")}  # fmt: skip
            if diagnosis:
                row["diagnosis"] = diagnosis
            cases.append(row)
    if not cases:
        raise CorpusError(f"{', '.join(map(str, files))}: no cases.")
    return cases


def predict_row(case: dict[str, Any]) -> dict[str, str]:
    """The alpaca row of one case: the task prompt, the case (and its diagnosis, for treatment), the reference."""
    prompt = PROMPTS[case["task"]]
    query = f"{prompt.case_label}: {case['case']}"
    if case.get("diagnosis"):
        query += f"\n{prompt.diagnosis_label}: {case['diagnosis']}"
    return {"instruction": prompt.instruction, "input": query, "output": case["reference"], "id": case["id"]}


def _check(task: str, language: str, name: str) -> None:
    if task not in TASKS:
        raise CorpusError(f"--task {task!r}: use one of {', '.join(TASKS)}.")
    if language not in LANGUAGES:
        raise CorpusError(f"--language {language!r}: use one of {', '.join(LANGUAGES)}.")
    if not NAME.match(name):
        raise CorpusError(f"--name {name!r}: use lower-case letters, digits and _ (it names data/<name>/ and the dataset <name>_predict).")


def prepare_clinical_cases(
    source: Path, task: str, output_root: Path = Path("."), name: str | None = None, language: str = "es",
    columns: Columns | None = None, replace: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Prepare one clinical-case set into ``output_root/data/<name>/`` and register ``<name>_predict``; return the manifest."""
    name = name or DEFAULT_NAME.get(task, "")
    _check(task, language, name)
    columns = columns or Columns(DEFAULT_CASE_COLUMN, DEFAULT_ANSWER_COLUMN[task])
    files = resolve_files(source)
    cases = load_cases(files, columns, task, language, name)
    entries = registry_entries(name)
    with publish_datasets(Path(output_root), dataset_dir(name), entries, CORPUS_NAME, replace) as publication:
        staging = publication.staging
        write_jsonl(staging / TEST_FILE, cases)
        write_json_atomic(staging / PREDICT_FILE, [predict_row(case) for case in cases])
        manifest = {
            **manifest_header(
                CORPUS_NAME, files if len(files) > 1 else files[0], {"task": task, "language": language, "name": name, "columns": asdict(columns)}
            ),  # fmt: skip
            "source_files": {path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size} for path in files},
            "items": len(cases),
            "task": task,
            "specialties": dict(sorted(Counter(case["specialty"] or "unknown" for case in cases).items())),
            "with_diagnosis": sum(1 for case in cases if case.get("diagnosis")),
            "prompt": PROMPTS[task].record(),
            "dropped": {},
            "datasets": dataset_records(staging, entries, dataset_dir(name)),
            "outputs": output_facts([staging / TEST_FILE, staging / PREDICT_FILE]),
            "registered": sorted(entries),
        }
        publication.write_manifest(manifest)
    return manifest


# --- Command line (mounted as ``medfactory prepare clinical_cases``) ------------------------------------


def prepare_command(
    source: Annotated[Path, typer.Option(help="The downloaded file (.parquet/.jsonl/.json/.csv/.tsv) or the dataset folder")],
    task: Annotated[str, typer.Option(help="diagnosis (ClinDiagnosES) or treatment (ClinTreatES)")],
    name: Annotated[str | None, typer.Option(help="Dataset name: data/<name>/ and <name>_predict (default casos_clinicos_<task in Spanish>)")] = None,
    language: Annotated[str, typer.Option(help="Language of the cases: es, pt or en")] = "es",
    case_column: Annotated[str, typer.Option(help="Column of the case text")] = DEFAULT_CASE_COLUMN,
    answer_column: Annotated[str | None, typer.Option(help="Column of the reference answer (default: Diagnostico / Tratamiento by task)")] = None,
    id_column: Annotated[str | None, typer.Option(help="Column of a unique id (default: none; cases are numbered <name>-1, -2 ... in file order)")] = None,
    specialty_column: Annotated[str, typer.Option(help="Column of the specialty (optional in the data)")] = DEFAULT_SPECIALTY_COLUMN,
    diagnosis_column: Annotated[str | None, typer.Option(help="Column of a given diagnosis, added to the treatment prompt (default: none)")] = None,
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/<name>/ and dataset_info.json")] = Path("."),
    replace: ReplaceOption = False,
) -> None:
    """Prepare an open-ended clinical-case set: data/<name>/test.jsonl for eval cases and predict.json registered as <name>_predict."""
    with exit_on_corpus_error():
        columns = Columns(case_column, answer_column or DEFAULT_ANSWER_COLUMN.get(task, ""), id_column, specialty_column, diagnosis_column)
        manifest = prepare_clinical_cases(source, task, output_root, name, language, columns, replace)
    dataset = manifest["registered"][0]
    typer.echo(f"{manifest['items']} {task} cases -> data/{manifest['options']['name']}/{TEST_FILE}; registered {dataset} (prompt {PROMPT_VERSION})")


PLUGIN = CorpusPlugin(name=CORPUS_NAME, summary="Open-ended clinical cases (ClinDiagnosES / ClinTreatES): eval set + predict set", command=prepare_command)
