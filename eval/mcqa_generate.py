"""Multiple-choice QA by generation: the model writes its answer, a regex cascade reads the letter.

For models that do not put their probability mass on a single letter token (chat models that
answer ``La respuesta correcta es la B``), ``eval mcqa``'s log-likelihood protocols underrate them.
This protocol (``generate``) feeds the same letter prompt as ``eval mcqa --protocol letter`` (raw,
or the SFT prompt in a chat template, built by ``medfactory.eval.mcqa``'s own functions), decodes
greedily, and extracts the answer with :func:`extract_answer`: named regex rules, then a fallback
that matches the text against the option texts. An item nothing is extracted from counts as wrong.

Outputs have ``eval mcqa``'s shape (``per_item.csv`` + an ``extraction`` column, ``metrics.json``
with ``settings.protocol = "generate"`` and ``extraction`` counts, ``report.md``), so ``eval compare``
reads them; the generated texts go only to ``generations.jsonl``. docs/mcqa_generate.md.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.jsonl import write_jsonl
from medfactory.corpus.mcq import McqItem
from medfactory.eval import mcqa

PROTOCOL = "generate"
GENERATIONS_JSONL = "generations.jsonl"
NO_ANSWER = "none"  # the extraction of an item nothing was read from; also its confusion column
OPTION_TEXT = "option_text"
OVERLAP_THRESHOLD = 0.5
DEFAULT_MAX_NEW_TOKENS = 16

# --------------------------------------------------------------------------------------------
# Answer extraction
# --------------------------------------------------------------------------------------------

_CUE = r"(?:respuesta|resposta|answer|solucion|solucao|solution)"
_OPTION_WORD = r"(?:opcion|opcao|option|alternativa|alternative|letra|letter|choice)"
_ARTICLE = r"(?:la|el|a|o|the)"
_VERB = r"(?:es|e|is|sera|seria|would\s+be|will\s+be)"
_LETTER = r"(?P<letter>[A-Za-z])(?![A-Za-z0-9])"

# (name, pattern) in the order they are tried; the first rule with a valid letter wins, and within
# a rule the first valid match in the text. Patterns run on the accent-stripped text, words
# case-insensitively. A lowercase letter counts only when punctuation or the end follows it:
# ``a``, ``e`` and ``o`` are words in Spanish and Portuguese (``a alternativa``, ``e``, ``o``).
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # "Respuesta: B", "Resposta correta: (C)", "The answer is D", "La respuesta correcta es la opción B"
    (
        "answer_cue",
        re.compile(
            rf"(?i:{_CUE}(?:\s+(?:correcta|correta|correct|certa|final))?(?:\s+{_VERB})?)\s*[:=\-–]?\s*(?i:{_ARTICLE}\s+)?(?i:{_OPTION_WORD}\s+)?"
            rf"[(\[*]*{_LETTER}"
        ),
    ),
    # "la opción B", "alternativa C", "option (D)", "letra E"
    ("option_word", re.compile(rf"(?i:{_OPTION_WORD})\s*[:\-]?\s*[(\[]?{_LETTER}")),
    # "(B)", "[B]"
    ("parenthesised", re.compile(rf"[(\[]\s*{_LETTER}\s*[)\]]")),
    # "B) Vancomicina" anywhere after a space or line start; "B." or "B:" at a line start
    ("letter_paren", re.compile(rf"(?:^|(?<=\s)){_LETTER}\s*\)|(?m:^)\s*(?P<letter2>[A-Za-z])\s*[.:](?!\w)")),
    # a lone letter as the first word: "B", "B\n...", "B - Vancomicina", "**B**"
    ("leading_letter", re.compile(r"^[\s*_\"'`>#-]*(?P<letter>[A-Za-z])(?=[\s*_\"'`]*(?:$|[\n,;.!\-–—]))")),
)
RULE_NAMES = tuple(name for name, _ in RULES)
EXTRACTIONS = (*RULE_NAMES, OPTION_TEXT, NO_ANSWER)


@dataclass(frozen=True)
class Extraction:
    """What was read from one generation: the option position (None: nothing) and the rule that read it."""

    position: int | None
    rule: str


def strip_accents(text: str) -> str:
    """NFKD without combining marks: ``opción`` -> ``opcion``, ``opção`` -> ``opcao``."""
    return "".join(char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char))


def _normalise_words(text: str) -> str:
    """Accent-stripped, case-folded words separated by single spaces (punctuation dropped)."""
    return " ".join(re.findall(r"\w+", strip_accents(text).casefold()))


def _regex_letter(text: str, letters: Sequence[str]) -> Extraction | None:
    valid = {letter.upper(): position for position, letter in enumerate(letters)}
    for name, pattern in RULES:
        for match in pattern.finditer(text):
            group = "letter" if match.group("letter") else "letter2"
            letter = match.group(group)
            after = text[match.end(group) : match.end(group) + 1]
            if letter.islower() and after and not re.match(r"[).\]:,;*]", after):
                continue  # "a alternativa": the word a, not option A
            if letter.upper() in valid:
                return Extraction(valid[letter.upper()], name)
    return None


def _option_text(text: str, options: Sequence[str], threshold: float) -> Extraction | None:
    """The option the text names: normalised exact match (a leading answer cue and letter dropped), else the
    option whose word set overlaps the text's best (F1 of the two word sets, above ``threshold``, no tie)."""
    words = _normalise_words(text)
    bare = re.sub(rf"^{_CUE}(?:\s+(?:correcta|correta|correct))?\s+", "", words)
    normalised = [_normalise_words(option) for option in options]
    for candidate in (words, bare):
        if candidate and normalised.count(candidate) == 1:
            return Extraction(normalised.index(candidate), OPTION_TEXT)
    generated = set(words.split())
    if not generated:
        return None
    scores = []
    for option in normalised:
        tokens = set(option.split())
        shared = len(generated & tokens)
        scores.append(2 * shared / (len(generated) + len(tokens)) if tokens else 0.0)
    best = max(scores)
    if best > threshold and scores.count(best) == 1:
        return Extraction(scores.index(best), OPTION_TEXT)
    return None


def extract_answer(text: str, letters: Sequence[str], options: Sequence[str] = (), threshold: float = OVERLAP_THRESHOLD) -> Extraction:
    """The option a generated answer names: the first :data:`RULES` rule with a letter of ``letters``, else
    the option-text fallback (:func:`_option_text`), else ``Extraction(None, "none")``.

    ``letters`` are the item's own (A up to its last option, at most Z): the rules match any letter, and one
    past the item's last option (``F`` for a 4-option item) is no answer, so the next match or rule is tried."""
    stripped = strip_accents(text).strip()
    found = _regex_letter(stripped, letters)
    if found is None and options:
        found = _option_text(stripped, options, threshold)
    return found or Extraction(None, NO_ANSWER)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


@dataclass
class Generated:
    """One item's greedy answer: the text, what was extracted from it, and how many tokens went in and came out."""

    item: McqItem
    text: str
    extraction: Extraction
    prompt_tokens: int
    new_tokens: int

    @property
    def correct(self) -> bool:
        return self.extraction.position == self.item.answer


def prompt_ids(item: McqItem, scorer: mcqa.LogLikelihoodScorer, prompter: mcqa.ChatPrompter | None) -> list[int]:
    """The token ids ``eval mcqa --protocol letter`` reads: BOS + the raw letter prompt (ending ``Respuesta:``), or the
    SFT prompt in the chat template up to where the assistant's answer starts (the model then writes ``Respuesta: C) ...``)."""
    if prompter is None:
        return scorer.prefix + scorer.encode(mcqa.letter_prompt(item))
    return prompter.encode(item)[0]


def _left_padded(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for slot, ids in enumerate(batch):
        if ids:
            input_ids[slot, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
            attention_mask[slot, width - len(ids) :] = 1
    return input_ids, attention_mask


def generate_texts(
    network: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[list[str], list[int]]:
    """(greedy continuation of each prompt, decoded without special tokens; its number of new tokens), in prompt order.

    Batches of similar length, left-padded, ``do_sample=False``; generation stops at EOS or ``max_new_tokens``.
    """
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_id = pad_id if pad_id is not None else 0
    device = next(network.parameters()).device
    order = sorted(range(len(prompts)), key=lambda index: -len(prompts[index]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    texts: list[str] = [""] * len(prompts)
    counts: list[int] = [0] * len(prompts)
    with torch.inference_mode():
        for batch in progress(batches) if progress else batches:
            input_ids, attention_mask = _left_padded([prompts[index] for index in batch], pad_id)
            output = network.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, pad_token_id=pad_id,
            )  # fmt: skip
            for slot, index in enumerate(batch):
                new = output[slot, input_ids.shape[1] :].tolist()
                ends = [position for position, token in enumerate(new) if token in _stop_ids(network, tokenizer)]
                new = new[: ends[0] + 1] if ends else new
                counts[index] = len(new)
                texts[index] = tokenizer.decode(new, skip_special_tokens=True)
    return texts, counts


def _stop_ids(network: Any, tokenizer: Any) -> set[int]:
    """EOS ids of the generation config (and the tokenizer): what padding after an answer is made of."""
    configured = getattr(getattr(network, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {token for token in ids if token is not None}


def fit_window(ids: list[int], window: int | None, max_new_tokens: int) -> tuple[list[int], bool]:
    """(the prompt cut from the left so that it and ``max_new_tokens`` fit the model window, whether it was cut)."""
    if window is None or len(ids) + max_new_tokens <= window:
        return ids, False
    keep = window - max_new_tokens
    if keep < 1:
        raise mcqa.McqaError(f"--max-new-tokens {max_new_tokens} does not fit the model window of {window}")
    return ids[-keep:], True


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

NO_POSITION = -1  # the prediction of an item nothing was extracted from (never a gold position)


def _position_name(label: int) -> str:
    return NO_ANSWER if label == NO_POSITION else mcqa.POSITIONS[label]


def _block(gold: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    """n, correct, accuracy and macro-F1; macro-F1 averages the answer positions only (gold or extracted):
    an unextracted item is a miss of its gold position, not a class of its own."""
    scores = mcqa.per_class_scores(gold, predicted)
    positions = [label for label in scores if label != NO_POSITION]
    correct = sum(g == p for g, p in zip(gold, predicted, strict=True))
    return {
        "n": len(gold),
        "correct": correct,
        "accuracy": mcqa.accuracy(gold, predicted),
        "macro_f1": sum(scores[label]["f1"] for label in positions) / len(positions) if positions else float("nan"),
    }


def summarize(items: Sequence[McqItem], predicted: Sequence[int | None]) -> dict[str, Any]:
    """``eval mcqa``'s summary (same keys) of extracted positions; None (nothing extracted) counts as wrong,
    and as wrong (−1) in exam points; the confusion has a ``none`` column for it."""
    gold = [item.answer for item in items]
    positions = [NO_POSITION if value is None else value for value in predicted]
    correct = [g == p for g, p in zip(gold, positions, strict=True)]
    labels = sorted(set(gold) | set(positions), key=lambda label: (label == NO_POSITION, label))

    def grouped(attribute: Callable[[McqItem], Any], by_exam: bool = False) -> dict[str, Any]:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            groups[mcqa.group_key(attribute(item))].append(index)
        keys = sorted(groups, key=mcqa.group_sort_key)
        if by_exam:
            return {key: mcqa.exam_points([correct[i] for i in groups[key]]) for key in keys}
        return {key: _block([gold[i] for i in groups[key]], [positions[i] for i in groups[key]]) for key in keys}

    per_position = {label: values for label, values in mcqa.per_class_scores(gold, positions).items() if label != NO_POSITION}
    return {
        **_block(gold, positions),
        "per_position": {mcqa.POSITIONS[label]: values for label, values in sorted(per_position.items())},
        "confusion": {
            "labels": [_position_name(label) for label in labels if label != NO_POSITION],
            "column_labels": [_position_name(label) for label in labels],
            "rows": "gold position",
            "columns": "predicted position (none: nothing extracted)",
            "matrix": [row for label, row in zip(labels, mcqa.confusion_matrix(gold, positions, labels)) if label != NO_POSITION],
        },
        "exam_points": {"total": mcqa.exam_points(correct), "per_exam": grouped(lambda item: item.exam, by_exam=True)},
        "per_category": grouped(lambda item: item.category),
        "per_year": grouped(lambda item: item.year),
        "per_n_options": grouped(lambda item: item.n_options),
        "per_language": grouped(lambda item: item.language),
    }


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def per_item_frame(results: Sequence[Generated]) -> Any:
    """``eval mcqa``'s per-item columns (``prediction`` empty when nothing was extracted), then ``extraction`` and
    the prompt and generation lengths in tokens. No generated text: it may quote the item."""
    import pandas as pd

    records = []
    for result in results:
        item, position = result.item, result.extraction.position
        records.append({
            "id": item.id, "category": item.category, "year": item.year, "exam": item.exam, "language": item.language,
            "has_image": item.has_image, "n_options": item.n_options, "answer": mcqa.POSITIONS[item.answer],
            "prediction": mcqa.POSITIONS[position] if position is not None else "", "correct": result.correct,
            "extraction": result.extraction.rule, "prompt_tokens": result.prompt_tokens, "new_tokens": result.new_tokens,
        })  # fmt: skip
    frame = pd.DataFrame.from_records(records)
    frame["year"] = frame["year"].astype("Int64")
    return frame


def extraction_counts(results: Sequence[Generated]) -> dict[str, int]:
    """How many items each rule read (every rule listed, 0 included; they sum to n)."""
    counts = Counter(result.extraction.rule for result in results)
    return {name: counts.get(name, 0) for name in EXTRACTIONS}


def _confusion_table(confusion: dict[str, Any]) -> str:
    rows = [(label, *row) for label, row in zip(confusion["labels"], confusion["matrix"])]
    return mcqa.report_table(["gold \\ pred", *confusion["column_labels"]], rows)


def render_report(metrics: dict[str, Any]) -> str:
    """``report.md``: settings, overall scores, extraction counts and the breakdowns, tables only."""
    exam = metrics["exam_points"]["total"]
    overall = [("generated letter", metrics["n"], metrics["accuracy"], metrics["macro_f1"], exam["points"], exam["max_points"])]
    extraction = [(rule, count) for rule, count in metrics["extraction"]["counts"].items()]
    sections = [
        f"# Multiple-choice QA by generation: {Path(metrics['settings']['items']).name}\n",
        mcqa.settings_table(metrics),
        "## Overall (nothing extracted counts as wrong)\n",
        mcqa.report_table(["prediction", "n", "accuracy", "macro-F1", "exam points", "max points"], overall),
        "## Extraction (which rule read the answer)\n",
        mcqa.report_table(["rule", "items"], extraction),
        "## Exam points (+3 right, −1 wrong or nothing extracted)\n",
        mcqa.exam_table(metrics["exam_points"]["per_exam"]),
        "## Per category\n",
        mcqa.breakdown_table("category", metrics["per_category"]),
        "## Per year\n",
        mcqa.breakdown_table("year", metrics["per_year"]),
        "## Confusion over answer positions (rows gold, columns extracted)\n",
        _confusion_table(metrics["confusion"]),
    ]
    return "\n".join(sections)


def write_outputs(out_dir: Path, results: Sequence[Generated], metrics: dict[str, Any]) -> None:
    """``per_item.csv``, ``metrics.json``, ``report.md`` and ``generations.jsonl`` (id, extraction, prediction, text), atomically."""
    out_dir = Path(out_dir)
    with atomic_write(out_dir / mcqa.PER_ITEM_CSV) as handle:
        per_item_frame(results).to_csv(handle, index=False)
    write_json_atomic(out_dir / mcqa.METRICS_JSON, metrics)
    with atomic_write(out_dir / mcqa.REPORT_MD) as handle:
        handle.write(render_report(metrics))
    write_jsonl(out_dir / GENERATIONS_JSONL, (
        {"id": result.item.id, "extraction": result.extraction.rule,
         "prediction": mcqa.POSITIONS[result.extraction.position] if result.extraction.position is not None else None, "text": result.text}
        for result in results
    ))  # fmt: skip


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _check_options(batch_size: int, max_new_tokens: int, limit: int | None, dtype: str) -> None:
    if batch_size < 1:
        raise mcqa.McqaError("--batch-size must be at least 1")
    if max_new_tokens < 1:
        raise mcqa.McqaError("--max-new-tokens must be at least 1")
    if limit is not None and limit < 1:
        raise mcqa.McqaError("--limit must be at least 1")
    if dtype.lower() not in mcqa.DTYPES:
        raise mcqa.McqaError(f"unknown dtype {dtype!r}; choose one of {', '.join(mcqa.DTYPES)}")


def _prompt_record(language: str, scorer: mcqa.LogLikelihoodScorer, prompter: mcqa.ChatPrompter | None) -> dict[str, Any]:
    """``eval mcqa``'s letter prompt record, with the prompt the model generates after and no scored continuation."""
    record = mcqa.prompt_record("letter", language, scorer, prompter)
    record.pop("continuation_of_option_A", None)
    if prompter is not None:
        shape = mcqa.McqItem("shape", "{question}", [f"{{option {letter}}}" for letter in "ABCD"], 0, list("ABCD"), None, None, None, False, language)
        record["shape"] = scorer.tokenizer.decode(prompter.encode(shape)[0])
    record["generation"] = "greedy continuation of the shape, up to EOS or max_new_tokens; the answer is extracted from it"
    return record


def _scoring(max_new_tokens: int, truncated: int, batches: int) -> dict[str, Any]:
    return {
        "decoding": "greedy: transformers generate, do_sample=False, num_beams=1, left padding",
        "max_new_tokens": max_new_tokens,
        "extraction": (
            f"regex rules in order {', '.join(RULE_NAMES)} on the accent-stripped text (first rule with a letter valid for the item); "
            f"else {OPTION_TEXT}: normalised exact option text, or the option with the highest word-set F1 above {OVERLAP_THRESHOLD} (no tie)"
        ),
        "unextracted": "counted wrong (and −1 in exam points); prediction left empty in per_item.csv",
        "contexts_truncated_left": truncated,
        "generate_calls": batches,
    }


def _settings(
    items_path: Path, model: str, adapter: str | None, template: tuple[str | None, str], network: Any, prompter: Any, scorer: Any, **values: Any
) -> dict[str, Any]:
    """``eval mcqa``'s settings keys (shots 0: no few-shot here), protocol ``generate``, plus max_new_tokens."""
    parameter = next(network.parameters())
    return {
        "items": str(items_path), "model": model, "adapter": adapter, "protocol": PROTOCOL,
        "chat_template": template[0], "chat_template_source": template[1], "sft_prompt_from": prompter.sft_prompt.source if prompter else None,
        "shots": 0, "fewshot_from": None, "fewshot_pool_size": None, "seed": values["seed"], "batch_size": values["batch_size"],
        "include_images": values["include_images"], "limit": values["limit"], "dtype": str(parameter.dtype).removeprefix("torch."),
        "device": str(parameter.device), "max_length": scorer.max_length, "max_new_tokens": values["max_new_tokens"],
    }  # fmt: skip


def generate_items(
    network: Any, tokenizer: Any, items: Sequence[McqItem], prompter: mcqa.ChatPrompter | None, batch_size: int, max_new_tokens: int, progress: bool
) -> tuple[list[Generated], mcqa.LogLikelihoodScorer, dict[str, Any]]:
    """Every item's greedy answer and extraction; (results, the scorer that encoded the raw prompts, scoring record)."""
    scorer = mcqa.LogLikelihoodScorer(network, tokenizer)
    fitted = [fit_window(prompt_ids(item, scorer, prompter), scorer.max_length, max_new_tokens) for item in items]
    prompts = [ids for ids, _ in fitted]
    bar = mcqa.tqdm_progress("mcqa generate") if progress else None
    texts, counts = generate_texts(network, tokenizer, prompts, batch_size, max_new_tokens, bar)
    results = [
        Generated(item, text, extract_answer(text, item.letters, item.options), len(ids), count)
        for item, text, ids, count in zip(items, texts, prompts, counts, strict=True)
    ]
    return results, scorer, _scoring(max_new_tokens, sum(cut for _, cut in fitted), -(-len(items) // batch_size))


def evaluate(
    items_path: Path,
    model: str,
    out_dir: Path,
    adapter: str | None = None,
    chat_template: str = mcqa.NO_TEMPLATE,
    sft_prompt_from: Path | None = None,
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    include_images: bool = False,
    dtype: str = "auto",
    limit: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    loaded: tuple[Any, Any] | None = None,
    recipes_dir: Path = Path("recipes"),
) -> dict[str, Any]:
    """Generate an answer to every item, extract its letter, write the outputs and return the metrics.

    Items, chat templates and the model load exactly as in ``medfactory.eval.mcqa.evaluate``; ``loaded`` =
    (model, tokenizer) already in memory (tests), ``model`` / ``adapter`` then only recorded.
    """
    import torch

    _check_options(batch_size, max_new_tokens, limit, dtype)
    if loaded is None:
        mcqa.check_model_reference(model, "--model")
        if adapter:
            mcqa.check_model_reference(adapter, "--adapter")
    template = mcqa.resolve_chat_template(chat_template, model, adapter, recipes_dir)
    if template[0] is not None:
        mcqa.load_sft_prompt(mcqa.sft_prompt_path(items_path, sft_prompt_from))
    all_items = mcqa.load_items(items_path)
    items, n_images = mcqa.select_items(all_items, include_images, limit)
    if not items:
        raise mcqa.McqaError(f"{items_path}: no items left to evaluate (image questions excluded: {n_images})")

    torch.manual_seed(seed)  # greedy decoding draws nothing; recorded and set for any sampling a model config forces
    network, tokenizer = loaded if loaded is not None else mcqa.load_model(model, adapter, dtype, device)
    prompter = mcqa.chat_prompter(tokenizer, network, template[0], items_path, sft_prompt_from)
    results, scorer, scoring = generate_items(network, tokenizer, items, prompter, batch_size, max_new_tokens, progress)
    settings = _settings(
        items_path, model, adapter, template, network, prompter, scorer,
        seed=seed, batch_size=batch_size, include_images=include_images, limit=limit, max_new_tokens=max_new_tokens,
    )  # fmt: skip
    metrics = {
        "protocol": PROTOCOL,
        "prediction": "letter extracted from the greedy generation",
        **summarize(items, [result.extraction.position for result in results]),
        "extraction": {"counts": extraction_counts(results), "rules": list(EXTRACTIONS), "overlap_threshold": OVERLAP_THRESHOLD},
        "n_items_in_file": len(all_items),
        "n_image_items": sum(item.has_image for item in all_items),
        "n_image_items_excluded": n_images,
        "settings": settings,
        "prompt": _prompt_record(items[0].language, scorer, prompter),
        "scoring": scoring,
        "versions": mcqa.mcqa_versions(),
    }
    metrics = mcqa.json_safe(metrics)
    write_outputs(out_dir, results, metrics)
    return metrics


# --------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------


def mcqa_generate_command(
    items: Annotated[Path, typer.Option(help="MCQ JSONL (data/<name>/<split>.jsonl): id, question, options, answer, ...")],
    model: Annotated[str, typer.Option(help="Base model: hub name or local folder")],
    out_dir: Annotated[Path, typer.Option(help="Output folder (per_item.csv, metrics.json, report.md, generations.jsonl)")],
    adapter: Annotated[str | None, typer.Option(help="PEFT LoRA adapter folder, applied on top of --model")] = None,
    chat_template: Annotated[
        str,
        typer.Option(
            help="none: the raw Pregunta:/Respuesta: letter prompt; auto: the template of the recipe that trained --adapter (or --model); "
            "or a LLaMA-Factory template name (mistral, ...): the head_qa SFT prompt in that template, as trained"
        ),
    ] = mcqa.NO_TEMPLATE,
    sft_prompt_from: Annotated[Path | None, typer.Option(help="Manifest with the SFT prompt record (default: manifest.json beside --items)")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call (left-padded)")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens generated per answer")] = DEFAULT_MAX_NEW_TOKENS,
    include_images: Annotated[
        bool, typer.Option("--include-images/--exclude-images", help="Ask image questions text-only (default: leave them out, counted)")
    ] = False,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on a GPU, fp32 on CPU), bf16, fp16 or fp32")] = "auto",
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N items (after image exclusion)")] = None,
    seed: Annotated[int, typer.Option(help="Torch seed (greedy decoding draws nothing; recorded)")] = 0,
) -> None:
    """Accuracy of a model (+ LoRA adapter) on multiple-choice questions from its greedy answer, the letter read by a regex cascade."""
    try:
        if not Path(items).is_file():
            raise mcqa.McqaError(f"--items {items} does not exist or is not a file")
        mcqa.check_model_reference(model, "--model")
        if adapter:
            mcqa.check_model_reference(adapter, "--adapter")
        metrics = evaluate(
            items, model, out_dir, adapter=adapter, chat_template=chat_template, sft_prompt_from=sft_prompt_from, batch_size=batch_size,
            max_new_tokens=max_new_tokens, include_images=include_images, dtype=dtype, limit=limit, seed=seed,
        )  # fmt: skip
    except (ValueError, OSError) as error:  # McqaError, CorpusError, unreadable model / adapter / file
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    counts = ", ".join(f"{rule} {count}" for rule, count in metrics["extraction"]["counts"].items() if count)
    prompt = f"chat template {metrics['settings']['chat_template']}" if metrics["settings"]["chat_template"] else "raw prompts"
    typer.echo(
        f"{metrics['n']} items ({metrics['n_image_items_excluded']} image questions excluded), protocol generate, {prompt}: "
        f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}; extraction: {counts}"
    )
    typer.echo(f"report written to {Path(out_dir) / mcqa.REPORT_MD}")
