"""``medfactory generate translate``: English MCQ sets, Q&A pairs or documents into Spanish or Portuguese.

Each item becomes one or more requests (an MCQ item: one JSON request with its question and every
option; a Q&A pair: one plain-text request per non-empty field; a document: one request per chunk of
whole sentences). The replies go through the gates of :mod:`medfactory.generate.gates`; an item is kept
only when every one of its requests passes, and is counted under the first gate it fails. Requests are
built deterministically from the source, so the client's request cache answers a rerun (after kill -9,
a failure, a change of thresholds) without sending finished requests again. Outputs, gates, resume and
the ``llamafactory-cli`` predict alternative: docs/translation.md.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medfactory.base.atomic import sha256_file, write_json_atomic
from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import JsonlLineError, iter_jsonl, write_jsonl
from medfactory.base.manifest import dataset_records, manifest_header, output_facts
from medfactory.base.names import safe_component
from medfactory.base.publish import publish_datasets
from medfactory.corpus.mcq import PROMPTS as MCQ_PROMPTS
from medfactory.corpus.mcq import McqItem, answer_of, prompt_of, read_items, write_items
from medfactory.corpus.sentences import chunk_text
from medfactory.generate import gates
from medfactory.generate.client import ChatRequest, ClientSettings, Completion, LlmClient
from medfactory.generate.predictions import PredictionsClient
from medfactory.generate.prompts import PROMPT_VERSION, mcq_input, prompt_for, prompt_sha256, user_message
from medfactory.generate.request_cache import request_cache_path

log = logging.getLogger(__name__)

OWNER = "translate"  # the manifest's plugin: who may replace data/NAME/
KINDS = ("mcq", "qa", "documents")
TARGET_LANGUAGES = ("es", "pt")
SOURCE_LANGUAGES = ("en", "es", "pt")
QA_FIELDS = ("instruction", "input", "output")
TEMPERATURE = 0.0  # greedy: the same request gets the same answer, which the cache keeps
DEFAULT_MAX_TOKENS = 1024  # the MIMIC-CXR-PT-BR run's max_new_tokens: fits a 1,500-character chunk translated
DEFAULT_CHUNK_CHARACTERS = 1500
FINISH_LENGTH = "length"

REQUESTS_FILE = "translate_requests.jsonl"
REQUESTS_SUFFIX = "_requests"  # data/NAME_requests/: the requests set of --requests-only
IDS_FILE = "translate_ids.json"
PROVENANCE_FILE = "provenance.jsonl"
ITEMS_FILE = "items.jsonl"
SFT_FILE = "sft.json"
TRAIN_FILE = "train.jsonl"
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}


@dataclass(frozen=True)
class TranslateOptions:
    """What to translate and how; the manifest records every field but the paths' contents."""

    kind: str
    source: Path
    name: str
    source_language: str = "en"
    target_language: str = "es"
    output_root: Path = Path(".")
    back_translate: bool = False
    min_chrf: float = gates.DEFAULT_MIN_CHRF
    max_tokens: int = DEFAULT_MAX_TOKENS
    chunk_characters: int = DEFAULT_CHUNK_CHARACTERS
    replace: bool = False
    requests_only: bool = False  # write the requests set for a llamafactory-cli predict run; send nothing
    predictions: Path | None = None  # that run's generated_predictions.jsonl: the replies, instead of an endpoint

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source_language": self.source_language,
            "target_language": self.target_language,
            "back_translate": self.back_translate,
            "min_chrf": self.min_chrf if self.back_translate else None,
            "max_tokens": self.max_tokens,
            "temperature": TEMPERATURE,
            "chunk_characters": self.chunk_characters if self.kind == "documents" else None,
        }


@dataclass
class Part:
    """One request: the alpaca row it is (instruction, input) and the source fields it translates."""

    row_id: str
    instruction: str
    input: str
    sources: list[str]
    mcq: bool = False
    translations: list[str] | None = None
    gate: str | None = None
    chrf: float | None = None


@dataclass
class Unit:
    """One output record (an MCQ item, a Q&A pair, a document) and its requests, in order."""

    id: str
    record: Any
    parts: list[Part]
    fields: list[str] = field(default_factory=list)  # qa: the field of each part; documents: the whitespace after each chunk

    @property
    def gate(self) -> str | None:
        return next((part.gate for part in self.parts if part.gate), None)


def check_options(options: TranslateOptions) -> None:
    """Refuse an impossible combination before anything is read or sent."""
    if options.kind not in KINDS:
        raise CorpusError(f"--kind {options.kind!r}: choose one of {', '.join(KINDS)}.")
    if options.target_language not in TARGET_LANGUAGES:
        raise CorpusError(f"--target-language {options.target_language!r}: choose one of {', '.join(TARGET_LANGUAGES)}.")
    if options.source_language not in SOURCE_LANGUAGES or options.source_language == options.target_language:
        raise CorpusError(f"--source-language {options.source_language!r}: choose one of {', '.join(SOURCE_LANGUAGES)}, other than the target.")
    safe_component(options.name, "--name", fix="Fix: pass --name with letters, digits and _ (it names data/NAME/ and the dataset).")
    if options.max_tokens < 16:
        raise CorpusError(f"--max-tokens {options.max_tokens}: at least 16 (a translation is about as long as its source).")
    if options.chunk_characters < 100:
        raise CorpusError(f"--chunk-characters {options.chunk_characters}: at least 100 (a chunk is one or more whole sentences).")
    if not 0 <= options.min_chrf <= 100:
        raise CorpusError(f"--min-chrf {options.min_chrf}: chrF is between 0 and 100.")
    if options.requests_only and options.predictions is not None:
        raise CorpusError("--requests-only writes the requests a predict run answers; --predictions reads its answers: pass one of them.")
    if options.back_translate and (options.requests_only or options.predictions is not None):
        raise CorpusError("--back-translate needs a served model (the back-translations are requests built from the replies): drop it, or serve the model.")


# --- Reading the sources -----------------------------------------------------------------------------------


def _json_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) of a JSONL file (where = "line N") or of a JSON array (where = "record N")."""
    if not path.is_file():
        raise CorpusError(f"{path}: not found (or not a file). Pass --source the file to translate.")
    if path.suffix == ".json":
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise CorpusError(f"{path}, line {error.lineno}: invalid JSON ({error.msg}, column {error.colno}).") from error
        if not isinstance(payload, list):
            raise CorpusError(f"{path}: expected a JSON array of objects (alpaca), got {type(payload).__name__}.")
        for number, record in enumerate(payload, start=1):
            if not isinstance(record, dict):
                raise CorpusError(f"{path}, record {number}: expected a JSON object, got {type(record).__name__}.")
            yield f"record {number}", record
        return
    try:
        for number, record in iter_jsonl(path):
            yield f"line {number}", record
    except JsonlLineError as error:
        raise CorpusError(f"{path}, line {error.line}: {error.reason}. Fix: one JSON object per line.") from error


def _record_id(record: dict[str, Any], default: str, path: Path, where: str, seen: dict[str, str]) -> str:
    raw = record.get("id", default)
    if isinstance(raw, bool) or not isinstance(raw, (str, int)) or not str(raw).strip():
        raise CorpusError(f"{path}, {where}: 'id' must be a non-empty string or number.")
    record_id = str(raw).strip()
    if record_id in seen:
        raise CorpusError(f"{path}, {where}: id {record_id!r} already used ({seen[record_id]}). Ids must be unique: outputs keep them.")
    seen[record_id] = where
    return record_id


def _text_field(record: dict[str, Any], key: str, path: Path, where: str, required: bool) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise CorpusError(f"{path}, {where}: '{key}' must be a{' non-empty' if required else ''} string.")
    return value


def read_mcq_units(options: TranslateOptions) -> list[Unit]:
    """One unit per MCQ item: one JSON request with the question and every option."""
    instruction = prompt_for(options.target_language, "mcq")
    units = []
    for item in read_items(options.source):
        if item.language != options.source_language:
            raise CorpusError(f"{options.source}: item {item.id!r} is in {item.language!r}, not --source-language {options.source_language!r}.")
        part = Part(item.id, instruction, mcq_input(item.question, item.options), [item.question, *item.options], mcq=True)
        units.append(Unit(item.id, item, [part]))
    return units


def read_qa_units(options: TranslateOptions) -> list[Unit]:
    """One unit per alpaca pair: one plain-text request per non-empty field (instruction, input, output)."""
    instruction = prompt_for(options.target_language, "text")
    units, seen = [], {}
    for number, (where, record) in enumerate(_json_records(options.source), start=1):
        record_id = _record_id(record, f"{options.source.stem}-{number}", options.source, where, seen)
        texts = {key: _text_field(record, key, options.source, where, required=key != "input") for key in QA_FIELDS}
        names = [key for key in QA_FIELDS if texts[key].strip()]
        parts = [Part(f"{record_id}:{key}", instruction, texts[key], [texts[key]]) for key in names]
        units.append(Unit(record_id, record, parts, names))
    return units


def read_document_units(options: TranslateOptions) -> list[Unit]:
    """One unit per document: one request per chunk of whole sentences (``corpus.sentences.chunk_text``)."""
    instruction = prompt_for(options.target_language, "text")
    units, seen = [], {}
    for where, record in _json_records(options.source):
        record_id = _record_id(record, "", options.source, where, seen)
        text = _text_field(record, "text", options.source, where, required=True)
        chunks = [chunk for chunk in chunk_text(text, options.chunk_characters, options.source_language) if chunk.strip()]
        parts = [Part(f"{record_id}:{index}", instruction, chunk.strip(), [chunk.strip()]) for index, chunk in enumerate(chunks)]
        # The whitespace that ended each chunk in the source joins the translated chunks the same way.
        units.append(Unit(record_id, record, parts, [chunk[len(chunk.rstrip()) :] for chunk in chunks]))
    return units


READERS = {"mcq": read_mcq_units, "qa": read_qa_units, "documents": read_document_units}


# --- Requests and gates ---------------------------------------------------------------------------------------


def chat_request(row_id: str, instruction: str, source: str, max_tokens: int) -> ChatRequest:
    """The request of one alpaca row, as LLaMA-Factory would build its user turn (no system prompt)."""
    return ChatRequest(row_id, ({"role": "user", "content": user_message(instruction, source)},), TEMPERATURE, max_tokens)


def judge(part: Part, completion: Completion, settings: gates.GateSettings) -> None:
    """Set ``part.translations`` (stripped) and ``part.gate`` (None when every gate passes) from its reply."""
    if not completion.ok:
        part.gate = gates.REQUEST_FAILED
        return
    if completion.finish_reason == FINISH_LENGTH:  # cut by max_tokens: a cut JSON object is unparseable *because* truncated
        part.gate = gates.TRUNCATED
        return
    if part.mcq:
        parsed = gates.parse_mcq(completion.text or "")
        if parsed is None:
            part.gate = gates.UNPARSEABLE
            return
        if len(parsed[1]) != len(part.sources) - 1:
            part.gate = gates.OPTION_COUNT
            return
        translations = [parsed[0], *parsed[1]]
    else:
        translations = [completion.text or ""]
    part.translations = [text.strip() for text in translations]
    part.gate = gates.translation_gate(part.translations, part.sources, settings, options_from=1 if part.mcq else None)


def _back_request(part: Part, source_language: str, max_tokens: int) -> ChatRequest:
    translations = part.translations or []
    if part.mcq:
        return chat_request(f"{part.row_id}:back", prompt_for(source_language, "mcq"), mcq_input(translations[0], translations[1:]), max_tokens)
    return chat_request(f"{part.row_id}:back", prompt_for(source_language, "text"), translations[0], max_tokens)


def back_translate(client: LlmClient, units: list[Unit], options: TranslateOptions) -> None:
    """Translate the parts of every otherwise kept unit back; a chrF against the source under ``min_chrf`` fails the part."""
    pending = [part for unit in units if unit.gate is None for part in unit.parts]
    requests = [_back_request(part, options.source_language, options.max_tokens) for part in pending]
    for part, completion in zip(pending, client.complete(requests, desc="back-translate"), strict=True):
        back: list[str] | None = None
        if completion.ok and part.mcq:
            parsed = gates.parse_mcq(completion.text or "")
            back = None if parsed is None else [parsed[0], *parsed[1]]
        elif completion.ok:
            back = [completion.text or ""]
        score = gates.chrf("\n".join(text.strip() for text in back), "\n".join(part.sources)) if back else 0.0
        part.chrf = round(score, 2)
        if score < options.min_chrf:
            part.gate = gates.BACK_TRANSLATION


def run_requests(client: LlmClient | PredictionsClient, units: list[Unit], options: TranslateOptions) -> None:
    """Send every part (the cache answers what it holds), judge each reply, then back-translate if asked."""
    settings = gates.GateSettings(options.target_language)
    parts = [part for unit in units for part in unit.parts]
    requests = (chat_request(part.row_id, part.instruction, part.input, options.max_tokens) for part in parts)
    for part, completion in zip(parts, client.complete(requests, desc=f"translate {options.kind}"), strict=True):
        judge(part, completion, settings)
    if options.back_translate:
        back_translate(client, units, options)


def applied_gates(kind: str, back: bool) -> list[str]:
    """The gates a kind's replies go through, in order."""
    skipped = set() if kind == "mcq" else {gates.UNPARSEABLE, gates.OPTION_COUNT, gates.IDENTICAL_OPTIONS}
    if not back:
        skipped.add(gates.BACK_TRANSLATION)
    return [gate for gate in gates.GATES if gate not in skipped]


# --- Outputs ----------------------------------------------------------------------------------------------------


def translated_item(unit: Unit, language: str) -> McqItem:
    question, *options = unit.parts[0].translations or []
    return replace(unit.record, question=question, options=options, language=language)


def translated_pair(unit: Unit) -> dict[str, Any]:
    texts = {name: part.translations[0] for name, part in zip(unit.fields, unit.parts, strict=True) if part.translations}
    return {"instruction": texts["instruction"], "input": texts.get("input", ""), "output": texts["output"], "id": unit.id}


def translated_document(unit: Unit) -> dict[str, Any]:
    text = "".join(part.translations[0] + after for part, after in zip(unit.parts, unit.fields, strict=True) if part.translations)
    return {"id": unit.id, "text": text.strip()}


def provenance_rows(units: list[Unit], order: list[str], model: str) -> Iterator[dict[str, Any]]:
    """One row per source record: kept or not, the gates it passed, and the lowest back-translation chrF of its parts."""
    for unit in units:
        gate = unit.gate
        passed = order if gate is None else order[: order.index(gate)]
        scores = [part.chrf for part in unit.parts if part.chrf is not None]
        yield {
            "id": unit.id,
            "source_id": unit.id,
            "kept": gate is None,
            "rejected_by": gate,
            "gates_passed": passed,
            "model": model,
            "prompt_version": PROMPT_VERSION,
            "back_translation_chrf": min(scores) if scores else None,
        }


def registry_entry(kind: str, name: str) -> dict[str, dict[str, Any]]:
    folder = f"data/{name}"
    if kind == "documents":
        return {name: {"file_name": f"{folder}/{TRAIN_FILE}", "columns": {"prompt": "text"}}}
    return {name: {"file_name": f"{folder}/{SFT_FILE}", "columns": dict(ALPACA_COLUMNS)}}


def write_kind_outputs(staging: Path, kind: str, kept: list[Unit], language: str) -> tuple[list[Path], dict[str, Any]]:
    """The kind's dataset files in ``staging``; (paths, facts for the manifest)."""
    if kind == "documents":
        write_jsonl(staging / TRAIN_FILE, (translated_document(unit) for unit in kept))
        return [staging / TRAIN_FILE], {"documents": len(kept)}
    if kind == "qa":
        write_json_atomic(staging / SFT_FILE, [translated_pair(unit) for unit in kept])
        return [staging / SFT_FILE], {"pairs": len(kept)}
    items = [translated_item(unit, language) for unit in kept]
    write_items(staging / ITEMS_FILE, items)
    style = MCQ_PROMPTS[language]
    # As HEAD-QA's SFT set: image questions cannot be answered from the text, so they are in items.jsonl only.
    rows = [
        {"instruction": prompt_of(item, style), "input": "", "output": answer_of(item, item.answer, style), "id": item.id}
        for item in items
        if not item.has_image
    ]
    write_json_atomic(staging / SFT_FILE, rows)
    sft = {"file": SFT_FILE, "items": len(rows), "skipped": {"image_question": len(items) - len(rows)}, "prompt": style.record()}
    return [staging / ITEMS_FILE, staging / SFT_FILE], {"items": len(items), "sft": sft}


def write_request_files(staging: Path, units: list[Unit]) -> list[Path]:
    """``translate_requests.jsonl`` (alpaca rows, output empty, as mimic_cxr's translate.jsonl) and its row ids."""
    parts = [part for unit in units for part in unit.parts]
    write_jsonl(staging / REQUESTS_FILE, ({"instruction": part.instruction, "input": part.input, "output": ""} for part in parts))
    write_json_atomic(staging / IDS_FILE, [part.row_id for part in parts])
    return [staging / REQUESTS_FILE, staging / IDS_FILE]


def requests_name(name: str) -> str:
    """The registered requests set of ``generate translate --name NAME --requests-only``."""
    return f"{name}{REQUESTS_SUFFIX}"


def write_requests_set(options: TranslateOptions, units: list[Unit]) -> dict[str, Any]:
    """``data/NAME_requests/``: the requests as an alpaca set registered as NAME_requests, their row ids, a manifest; nothing sent."""
    name = requests_name(options.name)
    folder = Path("data") / name
    entry = {name: {"file_name": f"{folder.as_posix()}/{REQUESTS_FILE}", "columns": dict(ALPACA_COLUMNS)}}
    with publish_datasets(options.output_root, folder, entry, OWNER, options.replace) as publication:
        outputs = write_request_files(publication.staging, units)
        manifest = {
            **manifest_header(OWNER, options.source, options.record()),
            "name": name, "for": options.name, "source_sha256": sha256_file(options.source), "prompt_version": PROMPT_VERSION,
            "records": len(units), "requests": sum(len(unit.parts) for unit in units), "dropped": {},
            "datasets": dataset_records(publication.staging, entry, folder), "outputs": output_facts(outputs), "registered": name,
        }  # fmt: skip
        publication.write_manifest(manifest)
    return manifest


def translation_client(options: TranslateOptions, settings: ClientSettings, units: list[Unit]) -> LlmClient | PredictionsClient:
    """The engine: the endpoint (through the request cache), or a predict run's replies joined to the written requests."""
    if options.predictions is None:
        return LlmClient(settings, request_cache_path(options.output_root, options.name))  # refuses a remote endpoint before the cache is made
    ids_path = Path(options.output_root) / "data" / requests_name(options.name) / IDS_FILE
    client = PredictionsClient(options.predictions, ids_path, settings.model)
    client.check_requests([part.row_id for unit in units for part in unit.parts])
    return client


def gate_counts(units: list[Unit], order: list[str]) -> dict[str, Any]:
    """``{total, kept, gates: {gate: removed}}`` of records, and the same of requests (``parts``)."""
    by_unit = Counter(unit.gate for unit in units if unit.gate)
    by_part = Counter(part.gate for unit in units for part in unit.parts if part.gate)
    parts = [part for unit in units for part in unit.parts]
    return {
        "total": len(units),
        "kept": sum(unit.gate is None for unit in units),
        "gates": {gate: by_unit[gate] for gate in order},
        "parts": {"total": len(parts), "kept": sum(part.gate is None for part in parts), "gates": {gate: by_part[gate] for gate in order}},
    }


def build_manifest(
    options: TranslateOptions, settings: ClientSettings, client: LlmClient | PredictionsClient, units: list[Unit], facts: dict[str, Any]
) -> dict[str, Any]:
    """Counts, options, thresholds, the client's summary and the prompt version: no source text, no reply."""
    order = applied_gates(options.kind, options.back_translate)
    counts = gate_counts(units, order)
    instructions = sorted({part.instruction for unit in units for part in unit.parts})
    thresholds = {**gates.GateSettings(options.target_language).record(), "back_translation_min_chrf": options.min_chrf if options.back_translate else None}
    return {
        **manifest_header(OWNER, options.source, options.record()),
        "name": options.name,
        "source_sha256": sha256_file(options.source),
        "prompt_version": PROMPT_VERSION,
        "prompt_sha256": [prompt_sha256(instruction) for instruction in instructions],
        "model": settings.model,
        "engine": "served endpoint" if options.predictions is None else f"llamafactory-cli predict ({options.predictions})",
        **counts,
        "gate_order": order,
        "thresholds": thresholds,
        "dropped": {gate: count for gate, count in counts["gates"].items() if count},
        "client": client.summary.record(),
        "request_cache": str(client.cache_path) if client.cache_path else None,
        **facts,
    }


def translate_dataset(options: TranslateOptions, settings: ClientSettings) -> dict[str, Any]:
    """Translate ``options.source`` into ``data/NAME/`` and register NAME; return the manifest.

    Nothing is written when the source is bad or the endpoint refused; a failure later (a dead endpoint,
    every item rejected) leaves the previous ``data/NAME/`` and registry as they were, and the request cache
    keeps every finished request for the rerun.
    """
    check_options(options)
    options = replace(options, source=Path(options.source), output_root=Path(options.output_root))
    units = READERS[options.kind](options)
    if not units:
        raise CorpusError(f"{options.source}: nothing to translate (no record).")
    if options.requests_only:
        return write_requests_set(options, units)
    client = translation_client(options, settings, units)
    entry = registry_entry(options.kind, options.name)
    folder = Path("data") / options.name
    try:
        with publish_datasets(options.output_root, folder, entry, OWNER, options.replace) as publication:
            run_requests(client, units, options)
            kept = [unit for unit in units if unit.gate is None]
            if not kept:
                counts = gate_counts(units, applied_gates(options.kind, options.back_translate))["gates"]
                replies = f"cached in {client.cache_path}" if client.cache_path else f"in {options.predictions}"
                raise CorpusError(
                    f"{options.source}: every one of {len(units)} records was rejected ({ {g: n for g, n in counts.items() if n} }); "
                    f"nothing was written. The replies are {replies}. Check the model and --max-tokens (docs/translation.md, 'Gates')."
                )
            staging = publication.staging
            outputs, facts = write_kind_outputs(staging, options.kind, kept, options.target_language)
            write_jsonl(staging / PROVENANCE_FILE, provenance_rows(units, applied_gates(options.kind, options.back_translate), settings.model))
            outputs += [staging / PROVENANCE_FILE, *write_request_files(staging, units)]
            manifest = build_manifest(options, settings, client, units, facts)
            manifest.update({"datasets": dataset_records(staging, entry, folder), "outputs": output_facts(outputs), "registered": options.name})
            publication.write_manifest(manifest)
    finally:
        client.close()
    log.info("translated %s: %d of %d kept", options.name, manifest["kept"], manifest["total"])
    return manifest
