"""A general-domain instruction set (your file) as the replay dataset mixed into medical training.

Replay guards against forgetting: Meditron (Chen et al. 2023, the GAP-Replay corpus) mixed general-domain
RedPajama text into its medical continued pretraining. This plugin samples your general set so that
``replay / (replay + medical) = --ratio``, counted in records, where the medical count is that of
``--relative-to`` (a dataset file, JSON array or JSON Lines, or a dataset name registered in
``dataset_info.json``)::

    medfactory prepare replay --source general_es.jsonl --ratio 0.1 --relative-to head_qa_es_sft

``--source`` is alpaca (``instruction``, ``output``, optional ``input``, ``system`` and ``history``) or sharegpt
(``conversations`` of ``{"from", "value"}`` or ``messages`` of ``{"role", "content"}``: an optional
system turn, then user / assistant turns alternating, ending with the assistant), as a JSON array or
as JSON Lines; both are detected from the file (``--format`` / ``--file-type`` force them). Every
record is checked; a bad one is named by its line (and, in a JSON array, its record number) with
``--on-error fail`` (the default), or left out and counted with ``--on-error skip``. Exact duplicates
are removed. The sample is a deterministic function of ``--seed`` and each record's content (records
ranked by a hash), so a rerun writes the same files.

Writes ``data/<name>/train.json`` (alpaca with ``system`` and ``history``: a multi-turn conversation
keeps its earlier turns as history; registered as ``<name>``, stage sft), ``data/<name>/train_text.jsonl``
(``{"text"}``: the system prompt and every turn in order, separated by blank lines, without role labels,
registered as ``<name>_text``, stage pt) and ``manifest.json`` (counts, characters, the ratio asked and
achieved, the sha256 of both inputs; never text).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from medfactory.base.atomic import sha256_file, write_json_atomic
from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.jsonl import write_jsonl
from medfactory.base.manifest import dataset_records, manifest_header, output_facts
from medfactory.base.publish import publish_datasets
from medfactory.base.registry import REGISTRY_NAME, load_registry_before_writing
from medfactory.plugins import CorpusPlugin, ReplaceOption

PLUGIN_NAME = "replay"
DEFAULT_NAME = "spanish_general_replay"
TEXT_SUFFIX = "_text"
SFT_FILE = "train.json"
TEXT_FILE = "train_text.jsonl"
FORMATS = ("auto", "alpaca", "sharegpt")
FILE_TYPES = ("auto", "json", "jsonl")
ON_ERROR_CHOICES = ("fail", "skip")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,94}$")  # a folder under data/ and two registry keys
MAX_LISTED_ERRORS = 20
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant", "system": "system"}
SHAREGPT_KEYS = {"conversations": ("from", "value"), "messages": ("role", "content")}
ALPACA_FIELDS = ("instruction", "input", "output", "system")


@dataclass(frozen=True)
class Located:
    """Where a record is: its line, and its position in a JSON array (None in JSON Lines)."""

    line: int
    record: int | None = None

    def __str__(self) -> str:
        return f"record {self.record} (line {self.line})" if self.record is not None else f"line {self.line}"


@dataclass
class ReadResult:
    """Valid conversations in source order, the problems found, and what was counted on the way."""

    conversations: list[dict[str, Any]] = field(default_factory=list)
    problems: list[tuple[Located, str]] = field(default_factory=list)
    records: int = 0
    duplicates: int = 0
    record_format: str = ""
    file_type: str = ""


def dataset_dir(name: str) -> Path:
    return Path("data") / name


def registry_entries(name: str) -> dict[str, dict[str, Any]]:
    """``name`` (alpaca sft, with system and multi-turn history) and ``name_text`` (stage pt)."""
    folder = dataset_dir(name).as_posix()
    return {
        name: {
            "file_name": f"{folder}/{SFT_FILE}",
            "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"},
        },
        f"{name}{TEXT_SUFFIX}": {"file_name": f"{folder}/{TEXT_FILE}", "columns": {"prompt": "text"}},
    }


# --- Reading JSON arrays and JSON Lines, with the line of every record ------------------------------


def _decode(raw: bytes, source: Path, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(f"{source}, {where}: not UTF-8 text (byte {error.start}). Fix: save the file as UTF-8.") from error


def detect_file_type(source: Path) -> str:
    """``json`` when the first non-blank character opens an array, else ``jsonl``."""
    with open(source, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "json" if head.startswith(b"[") else "jsonl"


def iter_json_array(source: Path) -> Iterator[tuple[Located, Any]]:
    """(location, value) of every element of a JSON array file; a CorpusError naming the line when it is not one."""
    text = _decode(source.read_bytes(), source, "the file").lstrip("\ufeff")
    decoder = json.JSONDecoder()
    position, line, counted, index = _skip_space(text, 0), 1, 0, 0
    if text[position : position + 1] != "[":
        raise CorpusError(f"{source}: not a JSON array (it must start with '['). Fix: pass a JSON array or JSON Lines file.")
    position = _skip_space(text, position + 1)
    while position < len(text) and text[position] != "]":
        line, counted = line + text.count("\n", counted, position), position  # counted on from the last record: linear in the file
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise CorpusError(
                f"{source}, line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}) in record {index + 1}. "
                "A JSON array cannot be read past it, even with --on-error skip. Fix the file; nothing was written."
            ) from error
        index += 1
        yield Located(line, index), value
        position = _skip_space(text, end)
        if text[position : position + 1] == ",":
            position = _skip_space(text, position + 1)
        elif text[position : position + 1] != "]":
            at = text.count("\n", 0, position) + 1
            raise CorpusError(f"{source}, line {at}: expected ',' or ']' after record {index}. Fix the file; nothing was written.")
    if position >= len(text):
        raise CorpusError(f"{source}: the JSON array is not closed (no ']'): the file may be cut short. Nothing was written.")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def iter_json_lines(source: Path) -> Iterator[tuple[Located, Any | CorpusError]]:
    """(location, value) of every non-blank line; a line that is not JSON yields a CorpusError in place of its value."""
    with open(source, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").lstrip("\ufeff") if number == 1 else raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield Located(number), CorpusError(f"not UTF-8 (byte {error.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                yield Located(number), json.loads(line)
            except json.JSONDecodeError as error:
                yield Located(number), CorpusError(f"invalid JSON ({error.msg}, column {error.colno})")


def iter_records(source: Path, file_type: str) -> Iterator[tuple[Located, Any]]:
    return iter_json_array(source) if file_type == "json" else iter_json_lines(source)


# --- Validating alpaca and sharegpt records into one conversation shape -----------------------------


def detect_format(record: Any) -> str | None:
    if isinstance(record, dict):
        if any(key in record for key in SHAREGPT_KEYS):
            return "sharegpt"
        if "instruction" in record or "output" in record:
            return "alpaca"
    return None


def _text_field(record: dict[str, Any], key: str, required: bool) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field '{key}' is {'missing' if value is None else 'not a string'}")
    if required and not value.strip():
        raise ValueError(f"field '{key}' is empty")
    return value


def alpaca_conversation(record: dict[str, Any]) -> dict[str, Any]:
    """{"system", "turns": [(user, assistant), ...]} of an alpaca record (``input`` joins the instruction's turn)."""
    instruction, output = _text_field(record, "instruction", True), _text_field(record, "output", True)
    query, system = _text_field(record, "input", False), _text_field(record, "system", False)
    history = record.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) and text.strip() for text in pair) for pair in history
    ):
        raise ValueError("field 'history' is not a list of [instruction, response] pairs of non-empty strings")
    return {"system": system, "turns": [list(pair) for pair in history], "instruction": instruction, "input": query, "output": output}


def sharegpt_conversation(record: dict[str, Any]) -> dict[str, Any]:
    """The same shape from ``conversations`` / ``messages``: optional system first, then user / assistant pairs."""
    key = next(key for key in SHAREGPT_KEYS if key in record)
    role_key, text_key = SHAREGPT_KEYS[key]
    messages = record[key]
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"field '{key}' is not a non-empty list")
    system, turns = _text_field(record, "system", False), []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or not isinstance(message.get(text_key), str) or not message[text_key].strip():
            raise ValueError(f"{key}[{number}] has no non-empty string '{text_key}'")
        role = ROLES.get(str(message.get(role_key)))
        if role is None:
            raise ValueError(f"{key}[{number}] has an unsupported '{role_key}' (use human/user, gpt/assistant or system)")
        if role == "system":
            if number != 1:
                raise ValueError(f"{key}[{number}] is a system turn after the first turn")
            system = message[text_key]
        elif (role == "user") != (len(turns) % 2 == 0):
            raise ValueError(f"{key}[{number}] breaks the user / assistant alternation")
        else:
            turns.append(message[text_key])
    if len(turns) < 2 or len(turns) % 2:
        raise ValueError(f"'{key}' needs user / assistant pairs ending with the assistant")
    pairs = [[turns[i], turns[i + 1]] for i in range(0, len(turns) - 2, 2)]
    return {"system": system, "turns": pairs, "instruction": turns[-2], "input": "", "output": turns[-1]}


def alpaca_record(conversation: dict[str, Any]) -> dict[str, Any]:
    """The alpaca row LLaMA-Factory reads (``history``: the earlier [user, assistant] pairs)."""
    return {key: conversation[key] for key in ("instruction", "input", "output", "system")} | {"history": conversation["turns"]}


def plain_text(conversation: dict[str, Any]) -> str:
    """The conversation as one text for stage pt: system, then every turn in order, blank-line separated, no role labels."""
    first = "\n\n".join(part for part in (conversation["instruction"], conversation["input"]) if part)
    parts = [conversation["system"], *(text for pair in conversation["turns"] for text in pair), first, conversation["output"]]
    return "\n\n".join(part for part in parts if part)


def content_key(conversation: dict[str, Any]) -> str:
    """The exact-duplicate key: sha256 of the alpaca row as canonical JSON."""
    return hashlib.sha256(json.dumps(alpaca_record(conversation), sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def read_source(source: Path, record_format: str, file_type: str) -> ReadResult:
    """Every record of ``source`` validated in order; duplicates removed (counted), problems collected with their location."""
    result = ReadResult(file_type=detect_file_type(source) if file_type == "auto" else file_type)
    result.record_format = "" if record_format == "auto" else record_format
    seen: set[str] = set()
    for where, value in tqdm(iter_records(source, result.file_type), desc="replay records", unit="record", disable=None):
        result.records += 1
        if isinstance(value, CorpusError):
            result.problems.append((where, str(value)))
            continue
        if not isinstance(value, dict):
            result.problems.append((where, f"not a JSON object ({type(value).__name__})"))
            continue
        result.record_format = result.record_format or detect_format(value) or ""
        found = detect_format(value)
        if found != result.record_format:
            expected = result.record_format or "alpaca or sharegpt"
            result.problems.append((where, f"not a {expected} record (found {found or 'neither'}); pass --format to choose"))
            continue
        try:
            conversation = alpaca_conversation(value) if found == "alpaca" else sharegpt_conversation(value)
        except ValueError as error:
            result.problems.append((where, str(error)))
            continue
        key = content_key(conversation)
        if key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        conversation["key"] = key
        result.conversations.append(conversation)
    return result


# --- The medical set the replay is mixed with ------------------------------------------------------


def _string_characters(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_string_characters(item) for item in value.values())
    if isinstance(value, list):
        return sum(_string_characters(item) for item in value)
    return 0


def resolve_medical(relative_to: str, output_root: Path) -> tuple[Path, str | None]:
    """(the medical dataset file, its registry name or None): a file path, else a name in ``dataset_info.json``."""
    as_path = Path(relative_to)
    if as_path.is_file():
        return as_path, None
    registry = load_registry_before_writing(output_root / REGISTRY_NAME)
    entry = registry.get(relative_to)
    if entry is None:
        raise CorpusError(
            f"--relative-to {relative_to!r}: neither a file nor a dataset registered in {output_root / REGISTRY_NAME}. "
            "Fix: pass the medical dataset's file (JSON array or JSON Lines) or its registered name."
        )
    if not isinstance(entry.get("file_name"), str):
        raise CorpusError(f"--relative-to {relative_to!r}: its registry entry has no local file_name. Fix: pass the dataset's file instead.")
    path = output_root / entry["file_name"]
    if not path.is_file():
        raise CorpusError(
            f"--relative-to {relative_to!r}: registered for {entry['file_name']!r}, which is not prepared yet. "
            f"Fix: run the medfactory command that writes it (its 'prepare {entry.get('medfactory_plugin', '...')}') first."
        )
    return path, relative_to


def count_medical(path: Path) -> tuple[int, int]:
    """(records, characters of every string value) of a JSON array or JSON Lines dataset file."""
    records = characters = 0
    for where, value in iter_records(path, detect_file_type(path)):
        if isinstance(value, CorpusError):
            raise CorpusError(f"--relative-to {path}, {where}: {value}. Fix the file (it is the medical set the replay is counted against).")
        records += 1
        characters += _string_characters(value)
    if not records:
        raise CorpusError(f"--relative-to {path}: no records, so no replay ratio can be computed. Fix: pass the prepared medical set.")
    return records, characters


# --- Sampling and publishing -----------------------------------------------------------------------


def replay_count(medical: int, ratio: float) -> int:
    """Records r with r / (r + medical) closest to ``ratio``."""
    return round(ratio * medical / (1.0 - ratio))


def sample(conversations: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` conversations chosen by the hash of (seed, content), kept in source order: the same input and seed give the same sample."""
    ranked = sorted(range(len(conversations)), key=lambda i: hashlib.sha256(f"{seed}:{conversations[i]['key']}".encode()).hexdigest())
    return [conversations[i] for i in sorted(ranked[:count])]


def _check_options(name: str, ratio: float, record_format: str, file_type: str, on_error: str) -> None:
    if not NAME_PATTERN.match(name or ""):
        raise CorpusError(f"--name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit (it names data/<name>/ and two datasets).")
    if not 0.0 < ratio < 1.0:
        raise CorpusError(
            f"--ratio {ratio}: the share replay / (replay + medical) is between 0 and 1 (Meditron: 0.4 B of 48.1 B tokens; spanish_medical_replay_sft: 0.1)."
        )
    for flag, value, choices in (("--format", record_format, FORMATS), ("--file-type", file_type, FILE_TYPES), ("--on-error", on_error, ON_ERROR_CHOICES)):
        if value not in choices:
            raise CorpusError(f"{flag} {value!r}: use one of {', '.join(choices)}.")


def _problem_report(source: Path, result: ReadResult) -> str:
    listed = "; ".join(f"{where}: {reason}" for where, reason in result.problems[:MAX_LISTED_ERRORS])
    more = f" (and {len(result.problems) - MAX_LISTED_ERRORS} more)" if len(result.problems) > MAX_LISTED_ERRORS else ""
    return (
        f"{source}: {len(result.problems)} invalid record(s) of {result.records}: {listed}{more}. Nothing was written. "
        "Fix them, or run with --on-error skip to leave them out (counted in the manifest)."
    )


def _reason_kind(reason: str) -> str:
    """A problem without its details (turn numbers, columns), to count problems by kind."""
    return re.sub(r"\[\d+\]", "[n]", re.sub(r" \(.*\)", "", reason))


def prepare_replay(
    source: Path, relative_to: str, ratio: float, name: str = DEFAULT_NAME, output_root: Path = Path("."), seed: int = 42,
    record_format: str = "auto", file_type: str = "auto", on_error: str = "fail", replace: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Validate, de-duplicate and sample ``source``, write ``data/<name>/`` and register ``name`` and ``name_text``; return the manifest."""
    _check_options(name, ratio, record_format, file_type, on_error)
    source, output_root = Path(source), Path(output_root)
    if not source.is_file():
        raise CorpusError(f"{source}: not found or not a file. Pass --source your general-domain instruction set (alpaca or sharegpt, JSON or JSONL).")
    medical_path, medical_name = resolve_medical(relative_to, output_root)
    medical_records, medical_characters = count_medical(medical_path)
    result = read_source(source, record_format, file_type)
    if result.problems and on_error == "fail":
        raise CorpusError(_problem_report(source, result))
    needed = replay_count(medical_records, ratio)
    available = len(result.conversations)
    if needed < 1 or needed > available:
        most = available / (available + medical_records)
        raise CorpusError(
            f"--ratio {ratio} of {medical_records} medical records needs {needed} replay records; {source} has {available} usable "
            f"(after {len(result.problems)} invalid and {result.duplicates} duplicates). Nothing was written. "
            f"Fix: a ratio between {1 / (1 + medical_records):.4g} and {most:.4g}, or a larger --source."
        )
    chosen = sample(result.conversations, needed, seed)
    entries = registry_entries(name)
    with publish_datasets(output_root, dataset_dir(name), entries, PLUGIN_NAME, replace) as publication:
        sft_path, text_path = publication.staging / SFT_FILE, publication.staging / TEXT_FILE
        write_json_atomic(sft_path, [alpaca_record(conversation) for conversation in chosen])
        texts = [plain_text(conversation) for conversation in chosen]
        write_jsonl(text_path, ({"text": text} for text in texts))
        replay_characters = sum(len(text) for text in texts)
        skipped = dict(sorted(Counter(_reason_kind(reason) for _, reason in result.problems).items()))
        manifest = {
            **manifest_header(PLUGIN_NAME, source, {"ratio": ratio, "seed": seed, "format": record_format, "file_type": file_type, "on_error": on_error}),
            "name": name,
            "source_sha256": sha256_file(source),
            "source_format": result.record_format,
            "source_file_type": result.file_type,
            "records_read": result.records,
            "valid": available + result.duplicates,
            "duplicates_removed": result.duplicates,
            "skipped": skipped,
            "skipped_records": [{"line": where.line, "record": where.record, "reason": reason} for where, reason in result.problems],
            "multi_turn": sum(bool(conversation["turns"]) for conversation in chosen),
            "medical": {
                "path": str(medical_path.resolve()),
                "dataset": medical_name,
                "sha256": sha256_file(medical_path),
                "records": medical_records,
                "characters": medical_characters,
            },  # fmt: skip
            "replay_records": needed,
            "ratio_asked": ratio,
            "ratio_achieved": needed / (needed + medical_records),
            "replay_characters": replay_characters,
            "characters_ratio_achieved": replay_characters / (replay_characters + medical_characters),
            "dropped": {**skipped, "duplicate": result.duplicates, "not_sampled": available - needed},
            "datasets": dataset_records(publication.staging, entries, dataset_dir(name)),
            "outputs": output_facts([sft_path, text_path]),
            "registered": sorted(entries),
        }
        publication.write_manifest(manifest)
    return manifest


# --- Command line (mounted as ``medfactory prepare replay``) ----------------------------------------


def prepare_command(
    source: Annotated[Path, typer.Option(help="General-domain instructions: alpaca or sharegpt, JSON array or JSON Lines")],
    ratio: Annotated[float, typer.Option(help="replay / (replay + medical), in records (e.g. 0.1)")],
    relative_to: Annotated[str, typer.Option(help="The medical set the replay is mixed with: its file, or its name in dataset_info.json")],
    name: Annotated[str, typer.Option(help="data/<name>/; registered as <name> (sft) and <name>_text (pt)")] = DEFAULT_NAME,
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/<name>/ and dataset_info.json")] = Path("."),
    seed: Annotated[int, typer.Option(help="Which records the sample keeps (same seed and input: same files)")] = 42,
    record_format: Annotated[str, typer.Option("--format", help="auto, alpaca or sharegpt")] = "auto",
    file_type: Annotated[str, typer.Option(help="auto, json (an array) or jsonl")] = "auto",
    on_error: Annotated[str, typer.Option(help="fail (list every invalid record) or skip (leave them out, counted)")] = "fail",
    replace: ReplaceOption = False,
) -> None:
    """Sample a general-domain instruction set as replay data at a stated share of a medical set."""
    with exit_on_corpus_error():
        manifest = prepare_replay(source, relative_to, ratio, name, output_root, seed, record_format, file_type, on_error, replace)
    skipped = ", ".join(f"{reason} {count}" for reason, count in manifest["skipped"].items())
    typer.echo(
        f"{manifest['replay_records']} replay records of {manifest['records_read']} read ({manifest['source_format']}, {manifest['source_file_type']}); "
        f"duplicates {manifest['duplicates_removed']}; skipped: {skipped or 'none'}"
    )
    typer.echo(
        f"ratio {manifest['ratio_achieved']:.4f} of {manifest['medical']['records']} medical records (asked {manifest['ratio_asked']}); "
        f"by characters {manifest['characters_ratio_achieved']:.4f}"
    )
    typer.echo(f"wrote {Path(output_root) / dataset_dir(name)}; registered {', '.join(manifest['registered'])} in {Path(output_root) / REGISTRY_NAME}")


PLUGIN = CorpusPlugin(
    name=PLUGIN_NAME,
    summary="A general-domain instruction set (alpaca / sharegpt) sampled as replay data at a stated share of a medical set",
    command=prepare_command,
)
