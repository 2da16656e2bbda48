"""Published Spanish / Portuguese medical exam sets (CareQA, MedExpQA, HealthQA-BR, any CSV/JSONL/Parquet) as MCQ sets.

Writes ``data/<name>/<split>.jsonl`` in the one MCQ format (:mod:`medfactory.corpus.mcq`) and its
manifest, evaluation only (nothing registered, as ``pt_exam_mcq``). The manifest records the set's
documented scoring protocol (``scoring_protocol``) so an ``eval mcqa`` run can cite it. Each
published layout, where it was confirmed and the reference numbers are in docs/exam_sets.md.

Errors name the file and the line (JSON Lines, CSV) or record (JSON array, Parquet), never the
question text; ``--on-error skip`` leaves bad records out and lists them (by place and reason) in
the manifest.
"""

from __future__ import annotations

import csv
import json
import re
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from medfactory.base.atomic import sha256_file
from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.manifest import MANIFEST_FILE, count_records, manifest_header, output_facts
from medfactory.base.publish import folder_owner, publish_datasets
from medfactory.corpus.mcq import LANGUAGES, LETTERS, McqItem, read_items, write_items
from medfactory.plugins import CorpusPlugin, ReplaceOption

CORPUS_NAME = "exam_mcq"
FORMATS = ("careqa", "medexpqa", "healthqa_br", "generic")
ANSWER_BASES = ("0", "1", "letter")
ON_ERROR_CHOICES = ("fail", "skip")
SPLITS = ("train", "validation", "test")
NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
READABLE = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
# How each published set numbers its right answer (docs/exam_sets.md cites the cards).
DEFAULT_BASE = {"careqa": "1", "medexpqa": "1", "healthqa_br": "letter"}
# MedExpQA names its splits train / dev / test: ``test.es.casimedicos.rag.jsonl``.
MEDEXPQA_SPLIT = {"train": "train", "validation": "dev", "test": "test"}
MAP_KEYS = ("question", "options", "answer", "id", "category", "year", "exam", "has_image")
TRUE_WORDS = {"1", "true", "yes", "y", "sim", "si", "sí", "t"}
FALSE_WORDS = {"0", "false", "no", "n", "não", "nao", "f", ""}

_HELM_INSTRUCTIONS = (
    "Escolha a alternativa correta para as questões de medicina (responda apenas com a letra). Exemplo de Pergunta com a "
    "resposta: Qual dos seguintes órgãos é responsável pela produção da insulina no corpo humano? A) Fígado B) Rins C) Pâncreas "
    "D) Baço E) Coração Resposta correta: C A partir disso, responda:"
)

# The scoring protocol each set's authors or HELM document; ``recommended`` is the closest `eval mcqa` run.
SCORING_PROTOCOLS: dict[str, dict[str, Any]] = {
    "careqa": {
        "metric": "accuracy",
        "documented": "dataset card (HPAI-BSC/CareQA): 'Models select the correct answer from four options. Evaluated via accuracy.'",
        "answer": "one of four options (cop, 1-based)",
        "prompt": "not fixed by the card",
        "shots": "not fixed by the card (test split only)",
        "reference": "Aloe paper (arXiv 2405.01886) and its successor (arXiv 2502.06666) report CareQA accuracy",
        "recommended": {"eval_mcqa_protocol": "letter", "shots": 0, "also": "loglik_norm (lm-eval-style option log-likelihood)"},
    },
    "medexpqa": {
        "metric": "accuracy",
        "documented": "MedExpQA (HiTZ, Alonso et al. 2024): accuracy of the chosen option, with or without gold explanations / RAG context",
        "answer": "correct_option, the 1-based key of options",
        "prompt": "the paper's prompts (question + options, optionally explanations or retrieved context); not reproduced here",
        "shots": "zero-shot and fine-tuned settings in the paper; train/dev/test splits are published",
        "reference": "see the MedExpQA paper's tables (arXiv 2404.05590)",
        "recommended": {"eval_mcqa_protocol": "letter", "shots": 0, "also": "loglik_norm"},
    },
    "healthqa_br": {
        "metric": "exact match of the answer letter (HELM get_exact_match_metric_specs)",
        "documented": "HELM run spec healthqa_br: ADAPT_MULTIPLE_CHOICE_JOINT (options lettered in the prompt, the model writes a letter)",
        "answer": "answer letter",
        "prompt": {"instructions": _HELM_INSTRUCTIONS, "input_noun": "Pergunta", "output_noun": "Resposta"},
        "shots": "0 in-context examples (HELM reads only a test split; the instructions hold one worked example)",
        "reference": "HealthQA-BR paper (arXiv 2506.21578): zero-shot, GPT-4.1 86.6% overall accuracy",
        "recommended": {"eval_mcqa_protocol": "letter", "shots": 0, "note": "log-prob of the letter, not generated text: close to, not the same as, HELM"},
    },
    "generic": {
        "metric": "accuracy",
        "documented": "none: a user-supplied exam file; cite its own source",
        "recommended": {"eval_mcqa_protocol": "letter", "shots": 0, "also": "loglik_norm"},
    },
}


class RecordError(ValueError):
    """One bad record: the message says what is wrong (field names and numbers, never the text)."""


@dataclass(frozen=True)
class Raw:
    """The fields of one record before validation."""

    id: str | None
    question: Any
    options: list[Any]
    answer: Any
    category: Any = None
    year: Any = None
    exam: Any = None
    has_image: Any = False


# --- Reading records -----------------------------------------------------------------------------


def _json_records(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    """A JSON array, else JSON Lines."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as error:
            raise CorpusError(f"{path}, line {error.lineno}: invalid JSON ({error.msg}, column {error.colno}).") from error
        for number, record in enumerate(payload, start=1):
            yield f"{path}, record {number}", record
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(f"{path}, line {number}: invalid JSON ({error.msg}, column {error.colno}).") from error
        yield f"{path}, line {number}", record


def _csv_records(path: Path, text: str, delimiter: str) -> Iterator[tuple[str, Any]]:
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    start = 2
    try:
        for record in reader:
            if None in record:
                raise CorpusError(f"{path}, line {start}: more fields than the header has (an unquoted delimiter?).")
            yield f"{path}, line {start}", record
            start = reader.line_num + 1
    except csv.Error as error:
        raise CorpusError(f"{path}, line {reader.line_num}: unreadable CSV ({error}).") from error


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise CorpusError(f"{path}: not a readable Parquet file ({type(error).__name__}). Download it again.") from error
    for number, record in enumerate(frame.to_dict(orient="records"), start=1):
        yield f"{path}, record {number}", {key: _plain(value) for key, value in record.items()}


def _plain(value: Any) -> Any:
    """numpy arrays / scalars from Parquet as Python lists / numbers; NaN as None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value


def iter_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for each record of a .jsonl / .json / .csv / .tsv / .parquet file."""
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise CorpusError(f"{path}: unknown file type {suffix or '(none)'}; pass a {', '.join(READABLE)} file.")
    if suffix == ".parquet":
        yield from _parquet_records(path)
        return
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: not UTF-8 (byte offset {error.start}). Re-save the file as UTF-8.") from error
    if suffix in (".csv", ".tsv"):
        yield from _csv_records(path, text, "\t" if suffix == ".tsv" else ",")
    else:
        yield from _json_records(path, text)


def resolve_files(fmt: str, source: Path, split: str, language: str) -> list[Path]:
    """The file(s) to read: ``source`` itself, or the set's file for this split and language inside a folder."""
    source = Path(source)
    if not source.exists():
        raise CorpusError(f"{source}: not found. Pass --source the downloaded file or its folder.")
    if source.is_file():
        return [source]
    if fmt == "careqa":
        wanted = [f"CareQA_{language}.json", f"CareQA_{language}.jsonl", f"CareQA_{language}.parquet"]
    elif fmt == "medexpqa":
        wanted = [f"{MEDEXPQA_SPLIT[split]}.{language}.casimedicos.rag.jsonl", f"{MEDEXPQA_SPLIT[split]}.{language}.casimedicos.jsonl"]
        wanted += [f"{language}/{name}" for name in wanted] + [f"data/{language}/{name}" for name in wanted]
    else:
        found = sorted(path for path in source.iterdir() if path.is_file() and path.suffix.lower() in READABLE)
        if not found:
            raise CorpusError(f"{source}: no {', '.join(READABLE)} file in the folder. Pass --source the exam file itself.")
        return found
    for name in wanted:
        if (source / name).is_file():
            return [source / name]
    listing = sorted(entry.name for entry in source.iterdir())[:20]
    raise CorpusError(
        f"{source}: none of {', '.join(wanted[:2])} found (--format {fmt}, --language {language}, --split {split}); found {', '.join(listing) or 'nothing'}."
    )


# --- The column map and each published layout ------------------------------------------------------


def expand_columns(spec: str) -> list[str]:
    """``op1|op2|op3`` as listed; ``op1..op4`` and ``A..E`` as ranges; one name as itself."""
    if "|" in spec:
        return [part.strip() for part in spec.split("|") if part.strip()]
    match = re.fullmatch(r"(.*?)(\d+)\.\.\1(\d+)", spec)
    if match:
        prefix, first, last = match.group(1), int(match.group(2)), int(match.group(3))
        return [f"{prefix}{number}" for number in range(first, last + 1)]
    match = re.fullmatch(r"([A-Za-z])\.\.([A-Za-z])", spec)
    if match:
        letters = string.ascii_uppercase if match.group(1).isupper() else string.ascii_lowercase
        return list(letters[letters.index(match.group(1)) : letters.index(match.group(2)) + 1])
    return [spec]


def parse_column_map(text: str | None) -> dict[str, str]:
    """``question=stem,options=op1..op4,answer=cop,id=qid`` as a dict; unknown keys are refused."""
    if not text:
        return {}
    mapping: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise CorpusError(f"--column-map: {part.strip()!r} is not key=column (e.g. question=pergunta,options=A..E,answer=gabarito).")
        if key not in MAP_KEYS:
            raise CorpusError(f"--column-map: unknown key {key!r}; use {', '.join(MAP_KEYS)}.")
        mapping[key] = value
    return mapping


def _field(record: dict[str, Any], column: str, required: bool = True) -> Any:
    if column not in record:
        if required:
            raise RecordError(f"no {column!r} field (fields: {', '.join(map(str, list(record)[:12]))})")
        return None
    return record[column]


def _options_value(value: Any) -> list[Any]:
    """One options column: a list, a {"1": ..} / {"A": ..} object, or either as a JSON string."""
    if isinstance(value, str) and value.strip()[:1] in "[{":
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise RecordError(f"options column is not valid JSON ({error.msg})") from error
    if isinstance(value, dict):
        keys = list(value)
        ordered = sorted(keys, key=lambda key: (0, int(key)) if str(key).isdigit() else (1, str(key).upper()))
        return [value[key] for key in ordered]
    if isinstance(value, list):
        return value
    raise RecordError(f"options must be a list or an object, not {type(value).__name__}")


def careqa_raw(record: dict[str, Any]) -> Raw:
    """CareQA: exam_id (question number in the exam), question, op1..op4, cop (1-based), year, category, unique_id."""
    year, category, number = record.get("year"), record.get("category"), record.get("exam_id")
    item_id = record.get("unique_id") or (f"{year}-{category}-{number}" if number is not None else None)
    exam = f"FSE_{year}_{category}" if year is not None and category else None
    return Raw(
        id=None if item_id is None else str(item_id),
        question=_field(record, "question"),
        options=[_field(record, f"op{index}") for index in range(1, 5)],
        answer=_field(record, "cop"),
        category=category,
        year=year,
        exam=exam,
        has_image=bool(record.get("image")),
    )


def medexpqa_raw(record: dict[str, Any]) -> Raw:
    """MedExpQA / CasiMedicos: id, year, question_id_specific, full_question, options {"1": ..}, correct_option."""
    year, number = record.get("year"), record.get("question_id_specific")
    item_id = record.get("id")
    if item_id is None and year is not None and number is not None:
        item_id = f"{year}-{number}"
    return Raw(
        id=None if item_id is None else str(item_id),
        question=_field(record, "full_question"),
        options=_options_value(_field(record, "options")),
        answer=_field(record, "correct_option"),
        category=record.get("type") if isinstance(record.get("type"), str) else None,
        year=year,
        exam=f"MIR_{year}" if year is not None else None,
        has_image=bool(record.get("image")),
    )


HEALTHQA_MARKER = re.compile(r"'([A-Z])'\s*:\s*'")
HEALTHQA_CHOICES = re.compile(r"\n\s*\{?\s*'[A-Z]'\s*:\s*'")


def split_healthqa_question(text: str) -> tuple[str, list[str]]:
    """HELM's HealthQA-BR layout: the stem, a line break, then ``'A': '...', 'B': '...'`` in the same field.

    Split at the first such line as HELM does; each option runs to the next ``'X': '`` (so an
    apostrophe inside an option is kept, where HELM's ``[^']+`` would cut it).
    """
    start = HEALTHQA_CHOICES.search(text)
    if start is None:
        raise RecordError("question holds no \"'A': '...'\" choices after a line break (the HELM HealthQA-BR layout)")
    stem, choices = text[: start.start()].strip(), text[start.start() :]
    markers = list(HEALTHQA_MARKER.finditer(choices))
    letters = "".join(marker.group(1) for marker in markers)
    if letters != "".join(LETTERS[: len(letters)]):
        raise RecordError(f"choice letters {letters} are not A, B, C ... in order")
    options = []
    for marker, following in zip(markers, [*markers[1:], None]):
        chunk = choices[marker.end() : following.start() if following else len(choices)]
        options.append(re.sub(r"'\s*[,}]?\s*$", "", chunk.strip()).strip())
    return stem, options


def healthqa_raw(record: dict[str, Any], mapping: dict[str, str]) -> Raw:
    """HealthQA-BR as HELM reads it (Larxel/healthqa-br): ``question`` holds stem and choices, ``answer`` the letter."""
    stem, options = split_healthqa_question(str(_field(record, mapping.get("question", "question")) or ""))
    return Raw(
        id=_optional_str(record, mapping, "id"),
        question=stem,
        options=options,
        answer=_field(record, mapping.get("answer", "answer")),
        category=_optional(record, mapping, "category"),
        year=_optional(record, mapping, "year"),
        exam=_optional(record, mapping, "exam"),
        has_image=_optional(record, mapping, "has_image") or False,
    )


def _optional(record: dict[str, Any], mapping: dict[str, str], key: str) -> Any:
    return _field(record, mapping[key]) if key in mapping else None


def _optional_str(record: dict[str, Any], mapping: dict[str, str], key: str) -> str | None:
    value = _optional(record, mapping, key)
    return None if value is None or str(value).strip() == "" else str(value).strip()


def generic_raw(record: dict[str, Any], mapping: dict[str, str]) -> Raw:
    """Any exam file: ``--column-map`` names the question, options (one list column or several) and answer columns."""
    columns = expand_columns(mapping["options"])
    if len(columns) == 1:
        options = _options_value(_field(record, columns[0]))
    else:
        options = [_field(record, column) for column in columns]
    return Raw(
        id=_optional_str(record, mapping, "id"),
        question=_field(record, mapping["question"]),
        options=options,
        answer=_field(record, mapping["answer"]),
        category=_optional(record, mapping, "category"),
        year=_optional(record, mapping, "year"),
        exam=_optional(record, mapping, "exam"),
        has_image=_optional(record, mapping, "has_image") or False,
    )


# --- Validation -------------------------------------------------------------------------------------


def answer_index(value: Any, base: str, n_options: int) -> int:
    """The 0-based index of the right option; RecordError says how the answer and --answer-base disagree."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        value = value.strip()
    if base == "letter":
        if not isinstance(value, str) or len(value) != 1 or value.upper() not in LETTERS:
            hint = " (a number: pass --answer-base 0 or 1)" if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else ""
            raise RecordError(f"answer {value!r} is not a letter{hint}")
        index = LETTERS.index(value.upper())
        if index >= n_options:
            raise RecordError(f"answer {value.upper()} is beyond the {n_options} options (A-{LETTERS[n_options - 1]})")
        return index
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        hint = " (a letter: pass --answer-base letter)" if isinstance(value, str) and len(value) == 1 and value.isalpha() else ""
        raise RecordError(f"answer {value!r} is not a whole number{hint}")
    first = int(base)
    if not first <= value < first + n_options:
        hint = ""
        if base == "1" and value == 0:
            hint = "; 0 with --answer-base 1: is the file 0-based? pass --answer-base 0"
        elif base == "0" and value == n_options:
            hint = f"; {n_options} with --answer-base 0: is the file 1-based? pass --answer-base 1"
        raise RecordError(f"answer {value} is outside {first}..{first + n_options - 1} for {n_options} options{hint}")
    return value - first


def _options(values: list[Any]) -> list[str]:
    """Options as stripped strings; trailing empty ones (a 4-option item in a 5-column file) are dropped."""
    texts = ["" if value is None else str(value).strip() for value in values]
    while texts and not texts[-1]:
        texts.pop()
    empty = [LETTERS[index] for index, text in enumerate(texts) if not text]
    if empty:
        raise RecordError(f"option {', '.join(empty)} is empty")
    if not 2 <= len(texts) <= len(LETTERS):
        raise RecordError(f"{len(texts)} non-empty options; 2 to {len(LETTERS)} are needed")
    return texts


def _year(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"year {value!r} is not a whole number")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise RecordError(f"has_image {value!r} is not true/false")


def to_item(raw: Raw, base: str, language: str, fallback_id: str) -> McqItem:
    """Validate one record's fields into an McqItem; RecordError says what is wrong."""
    if not isinstance(raw.question, str) or not raw.question.strip():
        raise RecordError("question is empty or not text")
    options = _options(raw.options)
    index = answer_index(raw.answer, base, len(options))
    return McqItem(
        id=raw.id.strip() if isinstance(raw.id, str) and raw.id.strip() else fallback_id,
        question=raw.question.strip(),
        options=options,
        answer=index,
        letters=list(LETTERS[: len(options)]),
        category=str(raw.category).strip() if raw.category not in (None, "") else None,
        year=_year(raw.year),
        exam=str(raw.exam).strip() if raw.exam not in (None, "") else None,
        has_image=_flag(raw.has_image),
        language=language,
    )


def _raw(fmt: str, record: Any, mapping: dict[str, str]) -> Raw:
    if not isinstance(record, dict):
        raise RecordError(f"expected an object, got {type(record).__name__}")
    if fmt == "careqa":
        return careqa_raw(record)
    if fmt == "medexpqa":
        return medexpqa_raw(record)
    if fmt == "healthqa_br":
        return healthqa_raw(record, mapping)
    return generic_raw(record, mapping)


@dataclass
class Loaded:
    items: list[McqItem]
    dropped: list[dict[str, str]]
    duplicate_questions: list[str]
    records: int


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def load_items(files: list[Path], fmt: str, mapping: dict[str, str], base: str, language: str, name: str, on_error: str) -> Loaded:
    """Every record of ``files`` as an item; a bad record is an error naming file and line (or skipped and listed)."""
    items: list[McqItem] = []
    dropped: list[dict[str, str]] = []
    first_place: dict[str, str] = {}
    seen_questions: dict[str, str] = {}
    duplicates: list[str] = []
    records = 0
    for path in files:
        for where, record in tqdm(iter_records(path), desc=path.name, unit=" records", leave=False):
            records += 1
            try:
                item = to_item(_raw(fmt, record, mapping), base, language, f"{name}-{records}")
                if item.id in first_place:
                    raise RecordError(f"id {item.id!r} already used at {first_place[item.id]}")
            except RecordError as error:
                if on_error == "fail":
                    raise CorpusError(f"{where}: {error}. Fix the record, or run with --on-error skip to leave it out.") from error
                dropped.append({"where": where, "reason": str(error)})
                continue
            first_place[item.id] = where
            key = _normalised(item.question) + "\x00" + "\x00".join(_normalised(option) for option in item.options)
            if key in seen_questions:
                duplicates.append(item.id)
            else:
                seen_questions[key] = item.id
            items.append(item)
    return Loaded(items, dropped, duplicates, records)


# --- Preparing --------------------------------------------------------------------------------------


def _summary(items: list[McqItem]) -> dict[str, Any]:
    return {
        "items": len(items),
        "option_counts": {str(count): number for count, number in sorted(Counter(item.n_options for item in items).items())},
        "answer_positions": dict(sorted(Counter(item.answer_letter for item in items).items())),
        "image_questions": sum(item.has_image for item in items),
        "categories": dict(sorted(Counter(item.category or "unknown" for item in items).items())),
        "years": {str(year): count for year, count in sorted(Counter(item.year for item in items).items(), key=lambda pair: str(pair[0]))},
    }


def _answer_base_warning(items: list[McqItem], base: str) -> str | None:
    """A whole-set hint that --answer-base is off by one: no item answers the first option (20+ items)."""
    if base != "letter" and len(items) >= 20 and not any(item.answer == 0 for item in items):
        return f"no item has its answer at the first option ({len(items)} items) with --answer-base {base}: check that the file is {base}-based"
    return None


def _kept_splits(folder: Path, split: str, fmt: str, language: str, replace: bool) -> dict[str, dict[str, Any]]:
    """The other splits of an earlier ``exam_mcq`` run in the same folder (same format and language), to carry over."""
    if not (folder / MANIFEST_FILE).is_file() or folder_owner(folder) != CORPUS_NAME:
        return {}
    manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    if (manifest.get("format"), manifest.get("language")) != (fmt, language):
        if replace:
            return {}
        raise CorpusError(
            f"{folder}: holds a --format {manifest.get('format')} --language {manifest.get('language')} set; "
            f"pick another --name, or pass --replace to replace it with this one."
        )
    return {name: summary for name, summary in manifest.get("splits", {}).items() if name != split and (folder / f"{name}.jsonl").is_file()}


def _check_arguments(fmt: str, name: str, language: str, split: str, base: str, on_error: str, mapping: dict[str, str]) -> None:
    checks = [
        (fmt in FORMATS, f"--format {fmt!r}: use one of {', '.join(FORMATS)}."),
        (bool(NAME.match(name)), f"--name {name!r}: use lower-case letters, digits and _ (it becomes data/<name>/)."),
        (language in LANGUAGES, f"--language {language!r}: use one of {', '.join(LANGUAGES)}."),
        (split in SPLITS, f"--split {split!r}: use one of {', '.join(SPLITS)}."),
        (base in ANSWER_BASES, f"--answer-base {base!r}: use one of {', '.join(ANSWER_BASES)}."),
        (on_error in ON_ERROR_CHOICES, f"--on-error {on_error!r}: use one of {', '.join(ON_ERROR_CHOICES)}."),
    ]
    for ok, message in checks:
        if not ok:
            raise CorpusError(message)
    if fmt == "generic":
        missing = [key for key in ("question", "options", "answer") if key not in mapping]
        if missing:
            raise CorpusError(f"--format generic needs --column-map with {', '.join(missing)} (e.g. question=stem,options=op1..op4,answer=cop,id=qid).")
    elif mapping and fmt != "healthqa_br":
        raise CorpusError(f"--column-map is for --format generic or healthqa_br; --format {fmt} reads its published fields.")


def prepare_exam_mcq(
    source: Path,
    fmt: str,
    name: str,
    language: str,
    split: str = "test",
    column_map: str | None = None,
    answer_base: str | None = None,
    on_error: str = "fail",
    output_root: Path = Path("."),
    replace: bool = False,
) -> dict[str, Any]:
    """Write ``output_root/data/<name>/<split>.jsonl`` and the manifest; return the manifest.

    Other splits an earlier run wrote in the same folder (same format and language) are kept.
    """
    mapping = parse_column_map(column_map)
    base = answer_base or DEFAULT_BASE.get(fmt, "1")
    _check_arguments(fmt, name, language, split, base, on_error, mapping)
    output_root = Path(output_root)
    dataset_dir = Path("data") / name
    files = resolve_files(fmt, Path(source), split, language)
    loaded = load_items(files, fmt, mapping, base, language, name, on_error)
    if not loaded.items:
        first = loaded.dropped[0] if loaded.dropped else None
        raise CorpusError(
            f"{files[0]}: no usable items in {loaded.records} records" + (f" (first problem: {first['where']}: {first['reason']})." if first else ".")
        )
    kept = _kept_splits(output_root / dataset_dir, split, fmt, language, replace)
    warning = _answer_base_warning(loaded.items, base)
    with publish_datasets(output_root, dataset_dir, {}, CORPUS_NAME, replace) as publication:
        staging = publication.staging
        path = staging / f"{split}.jsonl"
        write_items(path, loaded.items)
        for other in kept:
            write_items(staging / f"{other}.jsonl", read_items(output_root / dataset_dir / f"{other}.jsonl"))
        split_facts = {
            **_summary(loaded.items),
            "source_files": {str(file): {"sha256": sha256_file(file), "bytes": file.stat().st_size} for file in files},
            "records": loaded.records,
            "dropped_records": loaded.dropped,
            "duplicate_questions": {"count": len(loaded.duplicate_questions), "ids": loaded.duplicate_questions},
            "answer_base_warning": warning,
        }
        splits = {**kept, split: split_facts}
        outputs = [staging / f"{part}.jsonl" for part in sorted(splits)]
        manifest = {
            **manifest_header(
                CORPUS_NAME,
                files if len(files) > 1 else files[0],
                {"format": fmt, "split": split, "answer_base": base, "on_error": on_error, "column_map": mapping},
            ),
            "name": name,
            "format": fmt,
            "language": language,
            "scoring_protocol": SCORING_PROTOCOLS[fmt],
            "image_rule": "has_image only where the source says so (an image / has_image field); no text heuristic",
            "splits": dict(sorted(splits.items())),
            "dropped": {"malformed": len(loaded.dropped)} if loaded.dropped else {},
            "datasets": {
                f"{name}_{part}": {"file": (dataset_dir / f"{part}.jsonl").as_posix(), "records": count_records(staging / f"{part}.jsonl")}
                for part in sorted(splits)
            },
            "outputs": output_facts(outputs),
        }
        publication.write_manifest(manifest)
    return manifest


# --- Command line (mounted as ``medfactory prepare exam_mcq``) --------------------------------------


def prepare_command(
    source: Annotated[Path, typer.Option(help="The downloaded exam file (JSON/JSONL/CSV/Parquet) or its folder")],
    format: Annotated[str, typer.Option("--format", help="careqa, medexpqa, healthqa_br or generic")],
    name: Annotated[str, typer.Option(help="The set's name: writes data/<name>/<split>.jsonl")],
    language: Annotated[str, typer.Option(help="es, pt or en: the language of the questions")],
    split: Annotated[str, typer.Option(help="train, validation or test")] = "test",
    column_map: Annotated[str | None, typer.Option(help="question=COL,options=COL|op1..op4|A..E,answer=COL[,id=,category=,year=,exam=,has_image=]")] = None,
    answer_base: Annotated[str | None, typer.Option(help="0, 1 or letter: how the answer column numbers options (default: the set's own)")] = None,
    on_error: Annotated[str, typer.Option(help="fail, or skip (bad records are left out and listed in the manifest)")] = "fail",
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/<name>/")] = Path("."),
    replace: ReplaceOption = False,
) -> None:
    """Prepare a published exam set (CareQA, MedExpQA, HealthQA-BR or a mapped CSV/JSONL/Parquet) as an MCQ evaluation set."""
    with exit_on_corpus_error():
        manifest = prepare_exam_mcq(source, format, name, language, split, column_map, answer_base, on_error, output_root, replace)
    facts = manifest["splits"][split]
    options = ", ".join(f"{count} options: {number}" for count, number in facts["option_counts"].items())
    typer.echo(
        f"{split}: {facts['items']} of {facts['records']} records ({options}); dropped {len(facts['dropped_records'])}; "
        f"exact duplicate questions {facts['duplicate_questions']['count']}; with an image {facts['image_questions']}"
    )
    if facts["answer_base_warning"]:
        typer.secho(f"warning: {facts['answer_base_warning']}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {Path(output_root) / 'data' / name / f'{split}.jsonl'}")


PLUGIN = CorpusPlugin(
    name=CORPUS_NAME,
    summary="Published es/pt exam sets (CareQA, MedExpQA, HealthQA-BR, or any CSV/JSONL/Parquet with a column map) as MCQ evaluation sets",
    command=prepare_command,
)
