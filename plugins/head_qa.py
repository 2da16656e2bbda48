"""HEAD-QA (Vilares & Gómez-Rodríguez, ACL 2019): Spanish healthcare specialisation exams, as
evaluation sets, an SFT instruction set and a DPO preference set.

Writes ``data/head_qa_<language>/`` (train / validation / test in the MCQ format, ``sft_train.json``,
``dpo_train.json``, manifest) and registers ``head_qa_<language>_sft`` / ``_dpo``. The SFT and DPO sets
come from disjoint parts of the train questions (a seeded hash of each question id), so DPO never
sees a question SFT has already taught. The release format, the splits, the preference split and the
pair rule are in docs/mcqa.md ("Source formats").
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.atomic import sha256_file, write_json_atomic
from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.manifest import dataset_records, manifest_header, output_facts
from medfactory.base.publish import publish_datasets
from medfactory.base.registry import REGISTRY_NAME
from medfactory.corpus.mcq import LETTERS, PROMPTS, McqItem, PromptStyle, answer_of, prompt_of, write_items
from medfactory.plugins import CorpusPlugin, ReplaceOption

CORPUS_NAME = "head_qa"
LANGUAGE_CHOICES = ("es", "en")
ON_ERROR_CHOICES = ("fail", "skip")
DEFAULT_SEED = 42
# Share of the text-only train questions held out for DPO; the rest is the SFT set. Ours: SFT, the
# stage that teaches the answer format, keeps most questions; ~780 pairs are ~49 DPO steps of 16.
DEFAULT_DPO_FRACTION = 0.3
# Output split -> the official file prefix.
SPLITS = {"train": "train", "validation": "dev", "test": "test"}
OPTION_COUNTS = (4, 5)
SFT_FILE = "sft_train.json"
DPO_FILE = "dpo_train.json"
# The exam acronym in "Cuaderno_2013_1_B", as the files spell the categories.
CATEGORY_CODES = {
    "B": "biology",
    "E": "nursery",
    "F": "pharmacology",
    "M": "medicine",
    "P": "psychology",
    "Q": "chemistry",
}
EXAM_NAME = re.compile(r"^Cuaderno_(?P<year>\d{4})_(?P<round>\d+)_(?P<code>[A-Z]+)$")


def dataset_dir(language: str) -> Path:
    return Path("data") / f"{CORPUS_NAME}_{language}"


def registry_entries(language: str) -> dict[str, dict[str, Any]]:
    folder = dataset_dir(language).as_posix()
    return {
        f"{CORPUS_NAME}_{language}_sft": {
            "file_name": f"{folder}/{SFT_FILE}",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        },
        f"{CORPUS_NAME}_{language}_dpo": {
            "file_name": f"{folder}/{DPO_FILE}",
            "ranking": True,
            "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
        },
    }


def split_file_name(prefix: str, language: str) -> str:
    """``train_HEAD.json`` (es) or ``train_HEAD_EN.json`` (en)."""
    return f"{prefix}_HEAD{'_EN' if language == 'en' else ''}.json"


def resolve_source(source: Path, language: str) -> Path:
    """The folder holding the three split files: ``source/<language>`` or ``source`` itself."""
    source = Path(source)
    names = [split_file_name(prefix, language) for prefix in SPLITS.values()]
    if not source.exists():
        raise CorpusError(
            f"{source}: not found. Pass --source the HEAD-QA folder (the one holding es/ and en/) or its "
            f"{language}/ folder, which holds {', '.join(names)}."
        )
    if not source.is_dir():
        raise CorpusError(f"{source}: is a file. Pass --source the HEAD-QA folder (holding es/ and en/).")
    for folder in (source / language, source):
        if all((folder / name).is_file() for name in names):
            return folder
    folder = source / language if (source / language).is_dir() else source
    missing = [name for name in names if not (folder / name).is_file()]
    found = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    raise CorpusError(
        f"{folder}: missing {', '.join(missing)} (the official HEAD-QA split files for --language {language}); "
        f"found {', '.join(found[:20]) or 'nothing'}{' ...' if len(found) > 20 else ''}."
    )


class QuestionError(ValueError):
    """One malformed question: the message says what is wrong with it."""


def _exam_fields(key: str, exam: dict[str, Any]) -> tuple[str, str | None, int | None]:
    """(name, category, year) of an exam entry; category and year fall back on the exam name."""
    name = exam.get("name") or key
    if not isinstance(name, str):
        name = key
    match = EXAM_NAME.match(name) or EXAM_NAME.match(key)
    category = exam.get("category")
    if not isinstance(category, str) or not category.strip():
        category = CATEGORY_CODES.get(match["code"]) if match else None
    year: Any = exam.get("year")
    if isinstance(year, str) and year.strip().isdigit():
        year = int(year)
    elif isinstance(year, bool) or not isinstance(year, int):
        year = int(match["year"]) if match else None
    return name, category.strip() if category else None, year


def _as_id(value: Any) -> str | None:
    """A qid/aid/ra as a string: "3" and 3 are the same id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def build_item(question: Any, exam: str, category: str | None, year: int | None, language: str) -> McqItem:
    """One HEAD-QA question as an McqItem; QuestionError says what is malformed."""
    if not isinstance(question, dict):
        raise QuestionError(f"expected a JSON object, got {type(question).__name__}")
    qid = _as_id(question.get("qid"))
    if qid is None:
        raise QuestionError("no qid")
    qtext = question.get("qtext")
    if not isinstance(qtext, str) or not qtext.strip():
        raise QuestionError("empty or missing qtext")
    answers = question.get("answers")
    if not isinstance(answers, list):
        raise QuestionError("answers is missing or not a list")
    if len(answers) not in OPTION_COUNTS:
        raise QuestionError(f"{len(answers)} answers; HEAD-QA questions have 4 (2015-2017) or 5 (2013-2014)")
    options: list[tuple[int, str, str]] = []
    for position, answer in enumerate(answers, start=1):
        if not isinstance(answer, dict):
            raise QuestionError(f"answer #{position} is not a JSON object")
        aid = _as_id(answer.get("aid"))
        if aid is None or not aid.isdigit():
            raise QuestionError(f"answer #{position} has no numeric aid")
        atext = answer.get("atext")
        if not isinstance(atext, str) or not atext.strip():
            raise QuestionError(f"answer aid {aid} has an empty or missing atext")
        options.append((int(aid), aid, atext.strip()))
    aids = [aid for _, aid, _ in options]
    repeated = sorted({aid for aid in aids if aids.count(aid) > 1})
    if repeated:
        raise QuestionError(f"aid {', '.join(repeated)} appears more than once")
    options.sort()  # by numeric aid: the order of the printed exam
    right = _as_id(question.get("ra"))
    if right is None:
        raise QuestionError("no ra (right answer id)")
    numbers = [number for number, _, _ in options]
    if not right.isdigit() or int(right) not in numbers:
        raise QuestionError(f"ra {right!r} is none of the aids {', '.join(aids)}")
    answer_index = numbers.index(int(right))
    image = question.get("image")
    if image is not None and not isinstance(image, str):
        raise QuestionError(f"image must be a path or empty, not {image!r}")
    return McqItem(
        id=f"{exam}-{qid}",
        question=qtext.strip(),
        options=[text for _, _, text in options],
        answer=answer_index,
        letters=list(LETTERS[: len(options)]),
        category=category,
        year=year,
        exam=exam,
        has_image=bool(image and image.strip()),
        language=language,
    )


def load_split(path: Path, language: str, on_error: str = "fail") -> tuple[list[McqItem], list[dict[str, str]]]:
    """The items of one official split file, and the questions dropped (``on_error="skip"``)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CorpusError(f"{path}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}).") from error
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: not UTF-8 (byte offset {error.start}); the official files are UTF-8 JSON.") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("exams"), dict):
        raise CorpusError(f"{path}: expected a JSON object with an 'exams' object (the HEAD-QA layout).")
    file_language = payload.get("language")
    if file_language is not None and file_language != language:
        raise CorpusError(f"{path}: holds language {file_language!r}, but --language is {language!r}.")
    items: list[McqItem] = []
    dropped: list[dict[str, str]] = []
    seen: set[str] = set()
    for key, exam in payload["exams"].items():
        if not isinstance(exam, dict) or not isinstance(exam.get("data"), list):
            raise CorpusError(f"{path}: exam {key}: expected an object with a 'data' list of questions.")
        name, category, year = _exam_fields(key, exam)
        for position, question in enumerate(exam["data"], start=1):
            qid = _as_id(question.get("qid")) if isinstance(question, dict) else None
            where = f"qid {qid}" if qid else f"question #{position}"
            try:
                item = build_item(question, name, category, year, language)
                if item.id in seen:
                    raise QuestionError("qid repeated in the exam")
            except QuestionError as error:
                if on_error == "fail":
                    raise CorpusError(
                        f"{path}: exam {name}, {where}: {error}. Fix the entry, or run with --on-error skip to leave it out."
                    ) from error
                dropped.append({"exam": name, "qid": qid or f"#{position}", "reason": str(error)})
                continue
            seen.add(item.id)
            items.append(item)
    return items, dropped


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def duplicates_of_right_answer(item: McqItem) -> list[int]:
    """Wrong options whose text is the right answer's (lost superscripts: "sp ." twice)."""
    right = _normalised(item.answer_text)
    return [index for index, option in enumerate(item.options) if index != item.answer and _normalised(option) == right]


def has_duplicate_options(item: McqItem) -> bool:
    texts = [_normalised(option) for option in item.options]
    return len(set(texts)) < len(texts)


def preference_part(item_id: str, seed: int, dpo_fraction: float) -> str:
    """``"dpo"`` or ``"sft"``: which training set a train question belongs to.

    sha256 of ``"<seed>:preference-split:<id>"`` read as a number in [0, 1): below ``dpo_fraction`` is
    DPO. It depends only on the seed and the id, so a question keeps its part when others are added
    or dropped, and the two sets never share a question.
    """
    digest = hashlib.sha256(f"{seed}:preference-split:{item_id}".encode()).digest()
    return "dpo" if int.from_bytes(digest[:8], "big") / 2**64 < dpo_fraction else "sft"


def rejected_index(item: McqItem, seed: int) -> int | None:
    """The wrong option of the DPO pair: drawn from the options whose text differs from the right answer's.

    ``random.Random`` seeded with a string is stable across runs and Python processes, and the
    seed names the question, so a pair never changes when other questions are added or dropped.
    """
    right = _normalised(item.answer_text)
    candidates = [index for index, option in enumerate(item.options) if _normalised(option) != right]
    if not candidates:
        return None
    return random.Random(f"{seed}:{item.id}").choice(candidates)


@dataclass
class TrainingSets:
    """The SFT rows and DPO pairs from disjoint parts of the train questions, and what was left out."""

    sft: list[dict[str, Any]]
    dpo: list[dict[str, Any]]
    sft_skipped: Counter
    dpo_skipped: Counter
    split: dict[str, Any]


def training_sets(items: list[McqItem], style: PromptStyle, seed: int, dpo_fraction: float = DEFAULT_DPO_FRACTION) -> TrainingSets:
    """SFT rows and DPO pairs from the text-only train items, each question in one set only (:func:`preference_part`)."""
    sft: list[dict] = []
    dpo: list[dict] = []
    sft_skipped: Counter = Counter()
    dpo_skipped: Counter = Counter()
    parts: Counter = Counter()
    for item in items:
        if item.has_image:  # not answerable from the text: in neither set
            parts["image_question"] += 1
            continue
        part = preference_part(item.id, seed, dpo_fraction)
        parts[part] += 1
        prompt = prompt_of(item, style)
        chosen = answer_of(item, item.answer, style)
        if part == "sft":
            if duplicates_of_right_answer(item):
                sft_skipped["right_answer_text_repeated"] += 1
            else:
                sft.append({"instruction": prompt, "input": "", "output": chosen, "id": item.id})
            continue
        wrong = rejected_index(item, seed)
        if wrong is None:
            dpo_skipped["no_distinct_wrong_option"] += 1
            continue
        dpo.append({"instruction": prompt, "input": "", "chosen": chosen, "rejected": answer_of(item, wrong, style), "id": item.id})
    split = {
        "rule": (
            f"text-only train questions; sha256('{seed}:preference-split:<id>') as a fraction of 2**64 "
            f"< {dpo_fraction} -> DPO, else SFT (disjoint; a question keeps its part whatever else changes)"
        ),
        "seed": seed,
        "dpo_fraction": dpo_fraction,
        "train_questions": len(items),
        "image_questions_excluded": parts["image_question"],
        "sft_questions": parts["sft"],
        "dpo_questions": parts["dpo"],
    }
    return TrainingSets(sft, dpo, sft_skipped, dpo_skipped, split)


def _split_summary(items: list[McqItem], source_name: str) -> dict[str, Any]:
    return {
        "source_file": source_name,
        "items": len(items),
        "exams": len({item.exam for item in items}),
        "options": {str(count): number for count, number in sorted(Counter(len(item.options) for item in items).items())},
        "image_questions": sum(item.has_image for item in items),
        "answer_positions": {letter: number for letter, number in sorted(Counter(item.answer_letter for item in items).items())},
        "categories": dict(sorted(Counter(item.category or "unknown" for item in items).items())),
        "years": {str(year): number for year, number in sorted(Counter(item.year for item in items).items(), key=lambda pair: str(pair[0]))},
    }


def _file_facts(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _load_splits(folder: Path, language: str, on_error: str) -> tuple[dict[str, list[McqItem]], list[dict[str, str]], dict[str, dict[str, Any]]]:
    """The items of every official split, the questions dropped, and the facts of each source file.

    The official splits share no exam; an exam found in two splits means the files were mixed up.
    """
    splits: dict[str, list[McqItem]] = {}
    dropped: list[dict[str, str]] = []
    source_files: dict[str, dict[str, Any]] = {}
    exam_split: dict[str, str] = {}
    for split, prefix in SPLITS.items():
        path = folder / split_file_name(prefix, language)
        items, split_dropped = load_split(path, language, on_error)
        for exam in sorted({item.exam for item in items}):
            if exam in exam_split:
                raise CorpusError(f"{path}: exam {exam} is also in the {exam_split[exam]} split; the official splits share no exam.")
            exam_split[exam] = split
        if not items:
            raise CorpusError(f"{path}: no questions (dropped: {len(split_dropped)}).")
        splits[split] = items
        dropped.extend({"split": split, **entry} for entry in split_dropped)
        source_files[path.name] = _file_facts(path)
    return splits, dropped, source_files


def _sft_summary(sft: list[dict[str, Any]], skipped: Counter, style: PromptStyle) -> dict[str, Any]:
    return {
        "file": SFT_FILE,
        "from_split": "train (its SFT part: preference_split)",
        "items": len(sft),
        "skipped": dict(sorted(skipped.items())),
        "instruction": style.instruction,
        "output_format": f"{style.answer_prefix}: <letter>) <option text>",
        "prompt": style.record(),
    }


def _dpo_summary(dpo: list[dict[str, Any]], skipped: Counter, seed: int) -> dict[str, Any]:
    rejected_letters = Counter(row["rejected"].split(": ", 1)[1][0] for row in dpo)
    return {
        "file": DPO_FILE,
        "from_split": "train (its DPO part, disjoint from the SFT part: preference_split)",
        "pairs": len(dpo),
        "skipped": dict(sorted(skipped.items())),
        "rejected_rule": (
            f"one wrong option per question, random.Random(f'{seed}:<id>').choice(options whose "
            "text differs from the right answer's)"
        ),
        "rejected_positions": dict(sorted(rejected_letters.items())),
    }


def prepare_head_qa(
    source: Path,
    language: str = "es",
    output_root: Path = Path("."),
    seed: int = DEFAULT_SEED,
    on_error: str = "fail",
    dpo_fraction: float = DEFAULT_DPO_FRACTION,
    replace: bool = False,
) -> dict[str, Any]:
    """Prepare HEAD-QA into ``output_root/data/head_qa_<language>`` and register it; return the manifest.

    The dataset folder and its registry entries are replaced together: a failed run leaves the previous ones as they were.
    """
    if language not in LANGUAGE_CHOICES:
        raise CorpusError(f"--language {language!r}: HEAD-QA ships {', '.join(LANGUAGE_CHOICES)}.")
    if on_error not in ON_ERROR_CHOICES:
        raise CorpusError(f"on_error={on_error!r}: use one of {', '.join(ON_ERROR_CHOICES)}.")
    if isinstance(dpo_fraction, bool) or not isinstance(dpo_fraction, (int, float)) or not 0 < dpo_fraction < 1:
        raise CorpusError(f"--dpo-fraction {dpo_fraction!r}: the share of train questions held out for DPO must be between 0 and 1, e.g. 0.3.")
    output_root = Path(output_root)
    folder = resolve_source(Path(source), language)
    splits, dropped, source_files = _load_splits(folder, language, on_error)
    style = PROMPTS[language]
    sets = training_sets(splits["train"], style, seed, dpo_fraction)
    for name, rows in (("SFT", sets.sft), ("DPO", sets.dpo)):
        if not rows:
            raise CorpusError(
                f"{folder}: no train question is usable for {name} ({sets.split['sft_questions']} text-only questions in the SFT part, "
                f"{sets.split['dpo_questions']} in the DPO part). Fix: a --dpo-fraction nearer 0.5, or more train questions."
            )
    sft, dpo = sets.sft, sets.dpo

    with publish_datasets(output_root, dataset_dir(language), registry_entries(language), CORPUS_NAME, replace) as publication:
        staging = publication.staging
        outputs = []
        for split, items in splits.items():
            write_items(staging / f"{split}.jsonl", items)
            outputs.append(staging / f"{split}.jsonl")
        write_json_atomic(staging / SFT_FILE, sft)
        write_json_atomic(staging / DPO_FILE, dpo)
        outputs += [staging / SFT_FILE, staging / DPO_FILE]
        manifest = {
            **manifest_header(CORPUS_NAME, folder, {"seed": seed, "on_error": on_error, "dpo_fraction": dpo_fraction}),
            "language": language,
            "source_files": source_files,
            "items": sum(len(items) for items in splits.values()),
            "splits": {split: _split_summary(items, split_file_name(SPLITS[split], language)) for split, items in splits.items()},
            "questions_with_repeated_option_text": [
                item.id for items in splits.values() for item in items if has_duplicate_options(item)
            ],
            "preference_split": sets.split,
            "sft": _sft_summary(sft, sets.sft_skipped, style),
            "dpo": _dpo_summary(dpo, sets.dpo_skipped, seed),
            "dropped": dict(sorted(Counter(entry["split"] for entry in dropped).items())),
            "dropped_questions": dropped,
            "datasets": dataset_records(staging, registry_entries(language), dataset_dir(language)),
            "outputs": output_facts(outputs),
            "registered": sorted(registry_entries(language)),
        }
        publication.write_manifest(manifest)
    return manifest


# --- Command line (mounted as ``medfactory prepare head_qa``) -------------------------------------------


def prepare_command(
    source: Annotated[Path, typer.Option(help="The HEAD-QA folder (holding es/ and en/) or one language folder")],
    language: Annotated[str, typer.Option(help="es (original) or en (machine translation)")] = "es",
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/head_qa_<language>/ and dataset_info.json")] = Path("."),
    seed: Annotated[int, typer.Option(help="Seed of the SFT / DPO split of train and of the wrong option drawn as DPO 'rejected'")] = DEFAULT_SEED,
    on_error: Annotated[str, typer.Option(help="fail or skip (malformed questions are left out and listed in the manifest)")] = "fail",
    dpo_fraction: Annotated[float, typer.Option(help="Share of the train questions held out for DPO (the rest is SFT; disjoint)")] = DEFAULT_DPO_FRACTION,
    replace: ReplaceOption = False,
) -> None:
    """Prepare HEAD-QA: MCQ evaluation sets per split, SFT and DPO sets from disjoint parts of train, registered as head_qa_<language>_sft/_dpo."""
    with exit_on_corpus_error():
        manifest = prepare_head_qa(source, language=language, output_root=output_root, seed=seed, on_error=on_error, dpo_fraction=dpo_fraction, replace=replace)
    for split, summary in manifest["splits"].items():
        options = ", ".join(f"{count} options: {number}" for count, number in summary["options"].items())
        typer.echo(f"{split}: {summary['items']} questions ({options}; with an image: {summary['image_questions']})")
    split = manifest["preference_split"]
    typer.echo(
        f"train questions split for training: {split['sft_questions']} SFT, {split['dpo_questions']} DPO "
        f"(disjoint, DPO fraction {split['dpo_fraction']}; image questions in neither: {split['image_questions_excluded']})"
    )
    skipped = ", ".join(f"{reason} {count}" for reason, count in manifest["sft"]["skipped"].items())
    typer.echo(f"sft: {manifest['sft']['items']} instructions (skipped: {skipped or 'none'})")
    skipped = ", ".join(f"{reason} {count}" for reason, count in manifest["dpo"]["skipped"].items())
    typer.echo(f"dpo: {manifest['dpo']['pairs']} pairs, seed {manifest['options']['seed']} (skipped: {skipped or 'none'})")
    typer.echo(f"dropped as malformed: {sum(manifest['dropped'].values())}")
    folder = Path(output_root) / dataset_dir(language)
    typer.echo(f"wrote {folder}; registered {', '.join(manifest['registered'])} in {Path(output_root) / REGISTRY_NAME}")


PLUGIN = CorpusPlugin(
    name=CORPUS_NAME,
    summary="HEAD-QA Spanish healthcare exams (official JSON): MCQ eval sets + SFT + DPO from disjoint parts of train",
    command=prepare_command,
)
