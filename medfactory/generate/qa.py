"""``medfactory generate qa``: questions with answers (or MCQ items) written by a served model from document chunks.

Source: the ``chunks.jsonl`` of ``medfactory prepare documents`` (train documents only). For each chunk,
one request (prompt :data:`GENERATE_PROMPT_VERSION`, in the chunk's language) asks for N questions with
their answers (and, with ``mcq``, three distractors) as a JSON array. Each reply goes through the gates
in this order, every removal counted under its gate's name in the manifest (docs/qa_generation.md):

per chunk   request_failed, truncated, unparseable (no JSON array / object, or an empty one)
per pair    schema (:class:`QaPair` / :class:`McqPair`), beyond_requested, ungrounded_lexical
            (:func:`~medfactory.generate.grounding.lexical_overlap` below the threshold), contaminated
            (exact or near copy of an item of a registered evaluation set), verification_failed /
            unverified (the model's own verdict, a second request; skipped with ``verify=False``),
            duplicate (exact or near copy of a question kept before it)

Outputs: ``data/<name>/sft.json`` (alpaca), ``items.jsonl`` (MCQ format, with ``mcq``),
``provenance.jsonl`` and ``manifest.json``; registry entry ``<name>`` (sft). Requests are deterministic
(temperature 0, fixed prompts) and cached (``request_cache_path``), so a rerun after kill -9 sends only
what was not answered. No source text, prompt or answer is logged or put in the manifest.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from medfactory.base.atomic import sha256_file, write_json_atomic
from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import JsonlLineError, iter_jsonl, write_jsonl
from medfactory.base.manifest import dataset_records, manifest_header, output_facts
from medfactory.base.publish import folder_owner, publish_datasets
from medfactory.corpus.contamination import ReferenceIndex
from medfactory.corpus.dedup import DEFAULT_THRESHOLD, NearDuplicateIndex, duplicate_key
from medfactory.corpus.mcq import LETTERS, PROMPTS, McqItem, answer_of, prompt_of, read_items, write_items
from medfactory.generate.client import ChatRequest, ClientSettings, LlmClient
from medfactory.generate.grounding import DEFAULT_MIN_OVERLAP, VERIFY_PROMPT_VERSION, content_words, lexical_overlap, parse_verdict, verification_messages
from medfactory.generate.predict_rounds import PredictRoundNeeded, RoundsClient, store_round, write_round
from medfactory.generate.request_cache import request_cache_path

PLUGIN_NAME = "generate_qa"
GENERATE_PROMPT_VERSION = "qa-generate/1"
LANGUAGES = ("es", "pt")
DEFAULT_QUESTIONS = 3
MAX_QUESTIONS = 10
DISTRACTORS = 3
DEFAULT_MAX_TOKENS = 1024
VERIFY_MAX_TOKENS = 32
DEFAULT_SEED = 42
# Questions are short (10-30 words): 3-word shingles, not the 5 of whole notes, so that a near copy
# of a question still shares most of its shingles.
QUESTION_SHINGLE_SIZE = 3
QUESTION_CHARS = (8, 600)
ANSWER_CHARS = (1, 1500)
SFT_FILE, ITEMS_FILE, PROVENANCE_FILE = "sft.json", "items.jsonl", "provenance.jsonl"
# Folders whose MCQ .jsonl files are evaluation sets: written by these plugins (manifest `plugin`).
EVAL_PLUGINS = frozenset({"head_qa", "pt_exam_mcq", "exam_mcq", "translate"})  # translate: its --kind mcq sets (items.jsonl)
MCQ_KEYS = ("question", "options", "answer")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
CHUNK_GATES = ("request_failed", "truncated", "unparseable")
PAIR_GATES = ("schema", "beyond_requested", "ungrounded_lexical", "contaminated", "verification_failed", "unverified", "duplicate")
MAX_EXAMPLES = 20
_CHUNK_FIX = (
    'each line must be one chunk as `medfactory prepare documents` writes chunks.jsonl: {"id", "document_id", "chunk", "text", '
    '"topic", "language"} with a non-empty text and language es or pt. Fix the line, or pass the chunks.jsonl of data/<documents set>/'
)


# --- Chunks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One chunk of a training document (its text is sent to the endpoint, never logged)."""

    id: str
    document_id: str
    chunk: int
    text: str
    topic: str | None
    language: str


def _chunk_problem(record: dict[str, Any], language: str | None) -> str | None:
    for key in ("id", "document_id", "text"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            return f'"{key}" is missing or not a non-empty string'
    if isinstance(record.get("chunk"), bool) or not isinstance(record.get("chunk"), int):
        return '"chunk" is missing or not an integer'
    if record.get("topic") is not None and not isinstance(record["topic"], str):
        return '"topic" must be a string or null'
    if record.get("language") not in LANGUAGES:
        return f'"language" must be one of {", ".join(LANGUAGES)}'
    if language is not None and record["language"] != language:
        return f"language {record['language']} but --language {language} (omit --language to use each chunk's own)"
    return None


def read_chunks(path: Path, language: str | None = None) -> list[Chunk]:
    """Every chunk of ``path``, checked before anything is sent; CorpusError naming the file and line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file. Fix: pass --source the chunks.jsonl that `medfactory prepare documents` wrote (data/<name>/chunks.jsonl).")
    chunks: list[Chunk] = []
    first_line: dict[str, int] = {}
    try:
        for number, record in iter_jsonl(path):
            problem = _chunk_problem(record, language)
            if problem is None and record["id"] in first_line:
                problem = f"chunk id already used on line {first_line[record['id']]}"
            if problem:
                raise CorpusError(f"{path}, line {number}: {problem}. Fix: {_CHUNK_FIX}.")
            first_line[record["id"]] = number
            chunks.append(Chunk(record["id"], record["document_id"], record["chunk"], record["text"], record.get("topic"), record["language"]))
    except JsonlLineError as error:
        raise CorpusError(f"{path}, line {error.line}: {error.reason}. Fix: {_CHUNK_FIX}.") from None
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: not UTF-8 (byte offset {error.start}). Fix: pass the chunks.jsonl `medfactory prepare documents` wrote.") from None
    if not chunks:
        raise CorpusError(f"{path}: no chunk. Fix: prepare documents first (`medfactory prepare documents`), then pass its chunks.jsonl.")
    return chunks


# --- The generation prompt ---------------------------------------------------------------------------

_GENERATE = {
    "es": {
        "system": "Eres un médico docente que redacta preguntas de examen a partir de textos médicos. Respondes solo con JSON.",
        "task": "Lee el texto médico y escribe {n} preguntas distintas que se respondan con lo que dice el texto, cada una con su respuesta correcta",
        "mcq": " y tres respuestas incorrectas pero verosímiles (distractores), distintas entre sí y de la correcta",
        "rules": "La respuesta debe apoyarse en el texto y usar sus palabras. Escribe en español. Responde solo con un array JSON, sin otro texto:",
        "passage": "Texto",
    },
    "pt": {
        "system": "Você é um médico professor que escreve questões de prova a partir de textos médicos. Responde apenas com JSON.",
        "task": "Leia o texto médico e escreva {n} perguntas diferentes que se respondam com o que o texto diz, cada uma com a sua resposta correta",
        "mcq": " e três respostas incorretas mas plausíveis (distratores), diferentes entre si e da correta",
        "rules": "A resposta deve se apoiar no texto e usar as palavras dele. Escreva em português. Responda apenas com um array JSON, sem outro texto:",
        "passage": "Texto",
    },
}
_SHAPE_QA = '[{"question": "...", "answer": "..."}]'
_SHAPE_MCQ = '[{"question": "...", "answer": "...", "distractors": ["...", "...", "..."]}]'


def generation_messages(chunk: Chunk, questions: int, mcq: bool) -> tuple[dict[str, str], ...]:
    """The chat messages of a chunk's request (prompt ``GENERATE_PROMPT_VERSION``, in the chunk's language)."""
    words = _GENERATE[chunk.language]
    task = words["task"].format(n=questions) + (words["mcq"] if mcq else "") + "."
    user = f'{task} {words["rules"]}\n{_SHAPE_MCQ if mcq else _SHAPE_QA}\n\n{words["passage"]}:\n"""\n{chunk.text}\n"""'
    return ({"role": "system", "content": words["system"]}, {"role": "user", "content": user})


# --- Parsing and the schema --------------------------------------------------------------------------


def first_json(text: str | None) -> Any:
    """The first JSON array or object in ``text`` (code fences and prose around it are skipped); None when there is none."""
    if not text:
        return None
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        return value
    return None


def records_of(value: Any) -> list[Any]:
    """The pair records of a parsed reply: an array's elements, an object's list under a usual key, or the object itself."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in ("questions", "items", "preguntas", "perguntas", "questoes", "questões"):
            if isinstance(value.get(key), list):
                return value[key]
        return [value]
    return []


def _squashed(text: str) -> str:
    return " ".join(text.split()).casefold()


class QaPair(BaseModel):
    """A generated question with its answer. Other keys the model adds (an explanation ...) are ignored."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, strict=True)

    question: str = Field(min_length=QUESTION_CHARS[0], max_length=QUESTION_CHARS[1])
    answer: str = Field(min_length=ANSWER_CHARS[0], max_length=ANSWER_CHARS[1])

    @model_validator(mode="after")
    def _answer_is_not_the_question(self) -> QaPair:
        if _squashed(self.answer) == _squashed(self.question):
            raise ValueError("the answer repeats the question")
        return self


class McqPair(QaPair):
    """A generated MCQ item: the right answer and three distinct distractors, none equal to the answer."""

    distractors: list[str] = Field(min_length=DISTRACTORS, max_length=DISTRACTORS)

    @field_validator("distractors")
    @classmethod
    def _distractors_are_usable(cls, values: list[str]) -> list[str]:
        values = [value.strip() for value in values]
        if any(not ANSWER_CHARS[0] <= len(value) <= ANSWER_CHARS[1] for value in values):
            raise ValueError(f"each distractor must hold {ANSWER_CHARS[0]} to {ANSWER_CHARS[1]} characters")
        if len({_squashed(value) for value in values}) < len(values):
            raise ValueError("distractors repeat one another")
        return values

    @model_validator(mode="after")
    def _distractors_differ_from_the_answer(self) -> McqPair:
        if _squashed(self.answer) in {_squashed(value) for value in self.distractors}:
            raise ValueError("a distractor repeats the answer")
        return self


def validate_pair(record: Any, mcq: bool) -> QaPair | None:
    """The record as a :class:`QaPair` (:class:`McqPair` with ``mcq``), or None when it breaks the schema."""
    try:
        return (McqPair if mcq else QaPair).model_validate(record)
    except ValidationError:
        return None


# --- Evaluation sets: contamination ------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: its name in the manifest (``<folder>/<file stem>``) and its file."""

    name: str
    path: Path


def _looks_like_mcq(path: Path) -> bool:
    """Whether the first record of ``path`` has the MCQ keys (provenance and text files do not)."""
    try:
        for _, record in iter_jsonl(path):
            return all(key in record for key in MCQ_KEYS)
    except (JsonlLineError, UnicodeDecodeError):
        return True  # let read_items name the broken line
    return False


def default_eval_sets(output_root: Path) -> list[EvalSet]:
    """Every MCQ ``.jsonl`` under ``output_root/data/`` in a folder an MCQ plugin wrote (:data:`EVAL_PLUGINS`)."""
    data = Path(output_root) / "data"
    found: list[EvalSet] = []
    if not data.is_dir():
        return found
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder_owner(folder) not in EVAL_PLUGINS:
            continue
        for path in sorted(p for p in folder.glob("*.jsonl") if p.is_file() and not p.name.startswith(".")):
            if _looks_like_mcq(path):
                found.append(EvalSet(f"{folder.name}/{path.stem}", path))
    return found


def eval_sets_of(output_root: Path, extra: list[Path]) -> list[EvalSet]:
    """The default sets and ``extra`` (``--eval-sets``), each file once, names made unique."""
    sets, seen, names = [], set(), Counter()
    for entry in [*default_eval_sets(output_root), *(EvalSet(f"{Path(p).parent.name}/{Path(p).stem}", Path(p)) for p in extra)]:
        resolved = entry.path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        names[entry.name] += 1
        name = entry.name if names[entry.name] == 1 else f"{entry.name}#{names[entry.name]}"
        sets.append(EvalSet(name, entry.path))
    return sets


def item_texts(question: str, answer: str) -> tuple[str, str]:
    """What contamination compares: the question alone, and the question with its (right) answer."""
    return question, f"{question}\n{answer}"


@dataclass
class EvalIndex:
    """The evaluation sets' items, indexed once: labels ``<set>\\t<item id>``."""

    index: ReferenceIndex
    sets: list[dict[str, Any]]

    def sets_matched(self, question: str, answer: str) -> dict[str, str]:
        """``{set name: first matched item id}`` of the sets whose items this pair copies."""
        found: dict[str, str] = {}
        for text in item_texts(question, answer):
            for match in self.index.matches(text):
                name, item_id = match.label.split("\t", 1)
                found.setdefault(name, item_id)
        return found


def load_eval_index(sets: list[EvalSet], threshold: float) -> EvalIndex:
    """Read every evaluation set (CorpusError naming a bad file and line) into one :class:`ReferenceIndex`."""
    index = ReferenceIndex(threshold=threshold, shingle_size=QUESTION_SHINGLE_SIZE)
    facts = []
    for entry in tqdm(sets, desc="index evaluation sets", unit="set", disable=not sets):
        items = read_items(entry.path)
        for item in items:
            for text in item_texts(item.question, item.answer_text):
                index.add(f"{entry.name}\t{item.id}", text)
        facts.append({"name": entry.name, "file": str(entry.path), "sha256": sha256_file(entry.path), "items": len(items)})
    return EvalIndex(index, facts)


# --- The run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QaOptions:
    """What ``generate qa`` does besides the endpoint (``ClientSettings``)."""

    name: str
    mcq: bool = False
    questions_per_chunk: int = DEFAULT_QUESTIONS
    language: str | None = None
    eval_sets: tuple[Path, ...] = ()
    verify: bool = True
    min_overlap: float = DEFAULT_MIN_OVERLAP
    near_threshold: float = DEFAULT_THRESHOLD
    seed: int = DEFAULT_SEED
    max_tokens: int = DEFAULT_MAX_TOKENS
    output_root: Path = Path(".")
    replace: bool = False

    def record(self) -> dict[str, Any]:
        """The options as the manifest records them."""
        return {
            "mcq": self.mcq, "questions_per_chunk": self.questions_per_chunk, "language": self.language,
            "eval_sets": [str(path) for path in self.eval_sets], "verify": self.verify, "min_overlap": self.min_overlap,
            "near_threshold": self.near_threshold, "seed": self.seed, "max_tokens": self.max_tokens, "temperature": 0.0,
        }  # fmt: skip

    def prompt_version(self) -> str:
        return f"{GENERATE_PROMPT_VERSION}+{VERIFY_PROMPT_VERSION}" if self.verify else GENERATE_PROMPT_VERSION


@dataclass
class Candidate:
    """A pair that passed the cheap gates, waiting for verification and de-duplication."""

    id: str
    chunk: Chunk
    pair: QaPair
    overlap: float
    verified: bool | None = None


@dataclass
class Tally:
    """What each gate removed, and what else the manifest reports (counts and ids only)."""

    dropped: Counter = field(default_factory=Counter)
    contaminated_by_set: Counter = field(default_factory=Counter)
    contamination_examples: list[dict[str, str]] = field(default_factory=list)
    verdicts: Counter = field(default_factory=Counter)
    pairs_parsed: int = 0


def check_options(options: QaOptions) -> None:
    """CorpusError for an option out of range, before anything is read or sent."""
    if not NAME_PATTERN.match(options.name or ""):
        raise CorpusError(f"--name {options.name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit (it names data/<name>/).")
    if not 1 <= options.questions_per_chunk <= MAX_QUESTIONS:
        raise CorpusError(f"--questions-per-chunk {options.questions_per_chunk}: use 1 to {MAX_QUESTIONS}.")
    if options.language is not None and options.language not in LANGUAGES:
        raise CorpusError(f"--language {options.language!r}: use one of {', '.join(LANGUAGES)} (or omit it: each chunk's own language).")
    if not 0.0 <= options.min_overlap <= 1.0:
        raise CorpusError(f"--min-overlap {options.min_overlap}: a share between 0 and 1, e.g. {DEFAULT_MIN_OVERLAP}.")
    if not 0.0 < options.near_threshold <= 1.0:
        raise CorpusError(f"--near-threshold {options.near_threshold}: an estimated Jaccard in (0, 1], e.g. {DEFAULT_THRESHOLD}.")
    if options.max_tokens < 16:
        raise CorpusError(f"--max-tokens {options.max_tokens}: at least 16 (a reply of {options.questions_per_chunk} items needs several hundred).")


def generation_requests(chunks: list[Chunk], options: QaOptions) -> list[ChatRequest]:
    """One deterministic request per chunk (same chunk, prompt and options: same cache key)."""
    return [
        ChatRequest(chunk.id, generation_messages(chunk, options.questions_per_chunk, options.mcq), temperature=0.0, max_tokens=options.max_tokens)
        for chunk in chunks
    ]


def _pairs_of_reply(text: str | None, finish_reason: str | None, ok: bool, options: QaOptions, tally: Tally) -> list[tuple[int, QaPair]]:
    """(position, pair) of the schema-valid pairs of one reply, the chunk-level and schema gates counted."""
    if not ok:
        tally.dropped["request_failed"] += 1
        return []
    if finish_reason == "length":
        tally.dropped["truncated"] += 1
        return []
    records = records_of(first_json(text))
    if not records:
        tally.dropped["unparseable"] += 1
        return []
    tally.pairs_parsed += len(records)
    pairs = []
    for position, record in enumerate(records):
        pair = validate_pair(record, options.mcq)
        if pair is None:
            tally.dropped["schema"] += 1
        elif len(pairs) >= options.questions_per_chunk:
            tally.dropped["beyond_requested"] += 1
        else:
            pairs.append((position, pair))
    return pairs


def _screen(chunk: Chunk, pairs: list[tuple[int, QaPair]], evals: EvalIndex, options: QaOptions, tally: Tally) -> Iterator[Candidate]:
    """The pairs of one chunk that are grounded lexically and copy no evaluation item."""
    passage_words = content_words(chunk.text, chunk.language)
    for position, pair in pairs:
        candidate_id = f"{chunk.id}:q{position + 1}"
        overlap = lexical_overlap(pair.answer, passage_words, chunk.language)
        if overlap < options.min_overlap:
            tally.dropped["ungrounded_lexical"] += 1
            continue
        matched = evals.sets_matched(pair.question, pair.answer)
        if matched:
            tally.dropped["contaminated"] += 1
            tally.contaminated_by_set.update(matched.keys())
            for name, item_id in matched.items():
                if len(tally.contamination_examples) < MAX_EXAMPLES:
                    tally.contamination_examples.append({"id": candidate_id, "eval_set": name, "eval_id": item_id})
            continue
        yield Candidate(candidate_id, chunk, pair, overlap)


def screened_candidates(client: LlmClient | RoundsClient, chunks: list[Chunk], evals: EvalIndex, options: QaOptions, tally: Tally) -> list[Candidate]:
    """Send one request per chunk; the pairs that pass the gates before verification."""
    candidates: list[Candidate] = []
    for chunk, completion in zip(chunks, client.complete(generation_requests(chunks, options), desc="generate qa"), strict=True):
        pairs = _pairs_of_reply(completion.text, completion.finish_reason, completion.ok, options, tally)
        candidates.extend(_screen(chunk, pairs, evals, options, tally))
    return candidates


def verified_candidates(client: LlmClient | RoundsClient, candidates: list[Candidate], tally: Tally) -> list[Candidate]:
    """Ask the model whether each passage supports its answer; keep the clear yeses."""
    requests = [
        ChatRequest(c.id, verification_messages(c.chunk.text, c.pair.question, c.pair.answer, c.chunk.language), temperature=0.0, max_tokens=VERIFY_MAX_TOKENS)
        for c in candidates
    ]
    kept = []
    for candidate, completion in zip(candidates, client.complete(requests, desc="verify qa"), strict=True):
        if not completion.ok:
            tally.dropped["verification_failed"] += 1
            continue
        candidate.verified = parse_verdict(completion.text)
        tally.verdicts[{True: "supported", False: "not_supported", None: "no_verdict"}[candidate.verified]] += 1
        if candidate.verified is True:
            kept.append(candidate)
        else:
            tally.dropped["unverified"] += 1
    return kept


def deduplicated(candidates: list[Candidate], threshold: float, tally: Tally) -> tuple[list[Candidate], NearDuplicateIndex]:
    """The candidates whose question is neither an exact nor a near copy of one kept before it (in chunk order)."""
    index = NearDuplicateIndex(threshold=threshold, shingle_size=QUESTION_SHINGLE_SIZE)
    exact: set[int] = set()
    kept = []
    for candidate in candidates:
        key = duplicate_key(candidate.pair.question)
        if key in exact or index.add_if_new(candidate.id, candidate.pair.question) is not None:
            tally.dropped["duplicate"] += 1
            continue
        exact.add(key)
        kept.append(candidate)
    return kept, index


# --- Outputs -------------------------------------------------------------------------------------------


def mcq_item(candidate: Candidate, seed: int) -> McqItem:
    """The MCQ item of a kept pair: the right answer at a position drawn from the seed and the id (stable, not always A)."""
    pair = candidate.pair
    if not isinstance(pair, McqPair):  # a bug (an MCQ run validates with McqPair), not bad input
        raise TypeError(f"{candidate.id}: not an MCQ pair")
    options = list(pair.distractors)
    position = random.Random(f"{seed}:{candidate.id}").randrange(len(options) + 1)
    options.insert(position, pair.answer)
    return McqItem(
        id=candidate.id, question=pair.question, options=options, answer=position, letters=list(LETTERS[: len(options)]),
        category=candidate.chunk.topic, year=None, exam=None, has_image=False, language=candidate.chunk.language,
    )  # fmt: skip


def sft_row(candidate: Candidate, item: McqItem | None) -> dict[str, str]:
    """The alpaca row: the MCQ prompt of corpus.mcq in the item's language, or the question itself."""
    if item is None:
        return {"instruction": candidate.pair.question, "input": "", "output": candidate.pair.answer, "id": candidate.id}
    style = PROMPTS[item.language]
    return {"instruction": prompt_of(item, style), "input": "", "output": answer_of(item, item.answer, style), "id": candidate.id}


def provenance_record(candidate: Candidate, model: str, prompt_version: str) -> dict[str, Any]:
    return {
        "id": candidate.id, "document_id": candidate.chunk.document_id, "chunk_id": candidate.chunk.id, "model": model,
        "prompt_version": prompt_version, "lexical_overlap": candidate.overlap, "verified": candidate.verified,
    }  # fmt: skip


def registry_entry(name: str) -> dict[str, dict[str, Any]]:
    return {name: {"file_name": f"data/{name}/{SFT_FILE}", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}}


def write_outputs(staging: Path, kept: list[Candidate], options: QaOptions, model: str) -> tuple[list[Path], Counter]:
    """sft.json, items.jsonl (MCQ) and provenance.jsonl in ``staging``; the files and the answer letters."""
    items = [mcq_item(candidate, options.seed) for candidate in kept] if options.mcq else [None] * len(kept)
    paths = [staging / SFT_FILE]
    write_json_atomic(paths[0], [sft_row(candidate, item) for candidate, item in zip(kept, items)])
    letters: Counter = Counter()
    if options.mcq:
        write_items(staging / ITEMS_FILE, [item for item in items if item is not None])
        letters.update(item.answer_letter for item in items if item is not None)
        paths.append(staging / ITEMS_FILE)
    write_jsonl(staging / PROVENANCE_FILE, (provenance_record(candidate, model, options.prompt_version()) for candidate in kept))
    paths.append(staging / PROVENANCE_FILE)
    return paths, letters


def gate_counts(tally: Tally, kept: int, chunks: int) -> dict[str, Any]:
    """Every gate with its count (zeros included), per unit, and the balance they add up to."""
    return {
        "order": [*CHUNK_GATES, *PAIR_GATES],
        "chunks": {"sent": chunks, **{gate: tally.dropped[gate] for gate in CHUNK_GATES}},
        "pairs": {"parsed": tally.pairs_parsed, **{gate: tally.dropped[gate] for gate in PAIR_GATES}, "kept": kept},
        "contaminated": dict(sorted(tally.contaminated_by_set.items())),
    }


def _manifest(source: Path, chunks: list[Chunk], evals: EvalIndex, tally: Tally, kept: list[Candidate], context: dict[str, Any]) -> dict[str, Any]:
    options, client, dedup = context["options"], context["client"], context["dedup"]
    return {
        **manifest_header(PLUGIN_NAME, source, options.record()),
        "name": options.name,
        "kind": "mcq" if options.mcq else "qa",
        "source_sha256": sha256_file(source),
        "prompt_version": options.prompt_version(),
        "model": client.settings.model,
        "chunks": len(chunks),
        "documents": len({chunk.document_id for chunk in chunks}),
        "languages": dict(sorted(Counter(chunk.language for chunk in kept_chunks(kept)).items())),
        "topics": dict(sorted(Counter(chunk.topic or "none" for chunk in chunks).items())),
        "gates": gate_counts(tally, len(kept), len(chunks)),
        "verdicts": dict(sorted(tally.verdicts.items())),
        "kept": len(kept),
        "dropped": {gate: tally.dropped[gate] for gate in (*CHUNK_GATES, *PAIR_GATES)},
        "contaminated": dict(sorted(tally.contaminated_by_set.items())),
        "contamination": {
            "eval_sets": evals.sets,
            "examples": tally.contamination_examples,
            "compared": "question; question + right answer",
            **evals.index.settings(),
        },  # fmt: skip
        "deduplication": {"of": "question", "exact_key": "duplicate_key", **dedup.settings()},
        "client": client.summary.record(),
    }


def kept_chunks(kept: list[Candidate]) -> Iterator[Chunk]:
    return (candidate.chunk for candidate in kept)


def _no_item_error(source: Path, tally: Tally, chunks: int) -> CorpusError:
    counts = ", ".join(f"{gate} {tally.dropped[gate]}" for gate in (*CHUNK_GATES, *PAIR_GATES) if tally.dropped[gate])
    return CorpusError(
        f"{source}: no generated item passed the gates ({chunks} chunks, {tally.pairs_parsed} pairs parsed; removed: {counts or 'none'}). "
        "Nothing was written; the previous dataset, if any, is unchanged. Check that --endpoint serves an instruction-tuned model "
        "(answers are cached, so a rerun with other gate options sends nothing again)."
    )


def generate_qa(
    source: Path, options: QaOptions, settings: ClientSettings, cache_path: Path | None = None, rounds: bool = False, predictions: Path | None = None
) -> dict[str, Any]:
    """Generate, gate and publish ``data/<name>/``; return the manifest. CorpusError (GenerationError) on bad input or a failing endpoint.

    The folder and its registry entry are replaced together, and only on success. With ``rounds`` the replies come from
    llamafactory-cli predict runs (:mod:`medfactory.generate.predict_rounds`; ``predictions`` is the last run's output): while a
    request is unanswered nothing is published, and the round to predict is written instead; its manifest is returned under ``round``.
    """
    check_options(options)
    source, output_root = Path(source), Path(options.output_root)
    chunks = read_chunks(source, options.language)
    evals = load_eval_index(eval_sets_of(output_root, list(options.eval_sets)), options.near_threshold)
    cache_path = cache_path or request_cache_path(output_root, options.name)
    if predictions is not None:
        if not rounds:
            raise CorpusError("--predictions answers a predict round: pass --engine predict with it.")
        store_round(output_root, options.name, predictions, cache_path)
    try:
        return _generate_and_publish(source, chunks, evals, options, settings, cache_path, rounds)
    except PredictRoundNeeded as pending:
        return {"round": write_round(output_root, options.name, PLUGIN_NAME, pending.requests, source)}


def _generate_and_publish(
    source: Path, chunks: list[Chunk], evals: EvalIndex, options: QaOptions, settings: ClientSettings, cache_path: Path, rounds: bool
) -> dict[str, Any]:
    entry = registry_entry(options.name)
    with publish_datasets(options.output_root, Path("data") / options.name, entry, PLUGIN_NAME, options.replace) as publication:
        client = RoundsClient(cache_path, settings.model) if rounds else LlmClient(settings, cache_path)
        try:
            tally = Tally()
            candidates = screened_candidates(client, chunks, evals, options, tally)
            if rounds:
                client.raise_if_pending()  # verification is built from these replies
            if options.verify:
                candidates = verified_candidates(client, candidates, tally)
                if rounds:
                    client.raise_if_pending()
            kept, dedup = deduplicated(candidates, options.near_threshold, tally)
        finally:
            client.close()
        if not kept:
            raise _no_item_error(source, tally, len(chunks))
        outputs, letters = write_outputs(publication.staging, kept, options, settings.model)
        manifest = _manifest(source, chunks, evals, tally, kept, {"options": options, "client": client, "dedup": dedup})
        if options.mcq:
            manifest["mcq"] = {"answer_positions": dict(sorted(letters.items())), "sft_prompt": {lang: PROMPTS[lang].record() for lang in LANGUAGES}}
        records = dataset_records(publication.staging, entry, Path("data") / options.name)
        manifest.update(datasets=records, outputs=output_facts(outputs), registered=options.name)
        publication.write_manifest(manifest)
    return manifest
