"""Multiple-choice QA: HEAD-QA (Spanish specialist exams) and Portuguese exam questions.

Accuracy, macro-F1 over answer positions and HEAD-QA exam points of a causal LM (with an
optional PEFT LoRA adapter), scored by log-likelihood under two protocols: ``letter`` (the answer
letter, as BioMistral) and ``loglik_norm`` (each option's text, per byte; lm-evaluation-harness's
headqa scoring rule). Prompts are raw text (``--chat-template none``) or, for chat-tuned models, the
project's head_qa SFT prompt encoded by a LLaMA-Factory chat template exactly as training encoded it
(``--chat-template mistral`` / ``auto``). docs/mcqa.md says exactly which prompt each protocol reads,
what is scored, how it is tokenised and batched, and how few-shot examples are drawn.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.tables import markdown_table
from medfactory.base.versions import package_versions
from medfactory.corpus.mcq import LETTERS, McqItem, lettered_options, read_items

if TYPE_CHECKING:  # heavy imports stay lazy: `medfactory --help` must not load torch
    import pandas as pd
    import torch

PROTOCOLS = ("letter", "loglik_norm")
NO_TEMPLATE = "none"
AUTO_TEMPLATE = "auto"
# Answer positions: the format's letters (2 to 26 options). per_item.csv always has the A-E score columns (the
# HEAD-QA layout, unchanged for sets of up to 5 options), and one more per position a longer item has.
POSITIONS = "".join(LETTERS)
MIN_POSITION_COLUMNS = 5
DTYPES = {
    "auto": None,
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float32": "float32",
}
POINTS_RIGHT = 3
POINTS_WRONG = -1
NONE_KEY = "(none)"

PER_ITEM_CSV = "per_item.csv"
METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"


@dataclass(frozen=True)
class Labels:
    """The words a prompt uses, in one language."""

    header: str
    question: str
    answer: str


LABELS = {
    "es": Labels(
        "Las siguientes son preguntas de opción múltiple (con sus respuestas) sobre conocimientos médicos.",
        "Pregunta",
        "Respuesta",
    ),
    "pt": Labels(
        "As seguintes são questões de múltipla escolha (com respostas) sobre conhecimentos médicos.",
        "Pergunta",
        "Resposta",
    ),
    "en": Labels(
        "The following are multiple choice questions (with answers) about medical knowledge.",
        "Question",
        "Answer",
    ),
}


class McqaError(ValueError):
    """Bad input or setting for the MCQ evaluation; the message names the file or option."""


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


def to_item(source: McqItem | dict[str, Any], where: str = "item") -> McqItem:
    """The item as scored: question and options stripped; a JSON record is validated as an McqItem first.

    Every option count the format accepts (2 to 26, letters A-Z) is scored; beyond the format's own
    checks, the language must have prompt labels.
    """
    if isinstance(source, dict):
        try:
            source = McqItem.from_dict(source)
        except (TypeError, ValueError) as error:
            raise McqaError(f"{where}: not an MCQ item: {error}") from error
    if not 2 <= source.n_options <= len(POSITIONS) or source.letters != list(POSITIONS[: source.n_options]):  # the format's own rule
        raise McqaError(f"{where} ({source.id}): {source.n_options} options; 2 to {len(POSITIONS)}, lettered A.., are supported")
    if source.language not in LABELS:
        raise McqaError(f"{where} ({source.id}): language {source.language!r}; supported: {', '.join(sorted(LABELS))}")
    return replace(source, question=source.question.strip(), options=[option.strip() for option in source.options])


def load_items(path: Path) -> list[McqItem]:
    """Items of an MCQ JSONL file (read and validated by ``medfactory.corpus.mcq.read_items``), 2 to 26 options each."""
    path = Path(path)
    if not path.is_file():
        raise McqaError(f"{path} does not exist or is not a file")
    items = [to_item(item, f"{path}, item {index + 1}") for index, item in enumerate(read_items(path))]
    if not items:
        raise McqaError(f"{path} has no items")
    return items


def select_items(items: Sequence[McqItem], include_images: bool, limit: int | None) -> tuple[list[McqItem], int]:
    """(items to evaluate, how many image questions were left out); ``limit`` applies after that."""
    kept = [item for item in items if include_images or not item.has_image]
    excluded = len(items) - len(kept)
    if limit is not None:
        kept = kept[:limit]
    return kept, excluded


# --------------------------------------------------------------------------------------------
# Few-shot examples and prompts
# --------------------------------------------------------------------------------------------


def _question_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _rng(seed: int, item_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\0{item_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class FewShotSampler:
    """Draws ``k`` solved examples per item from a pool, deterministically, never the item itself."""

    def __init__(self, pool: Sequence[McqItem], seed: int = 0):
        # sorted by id: the draw depends on the pool's content, not on its file order
        self.pool = sorted((item for item in pool if not item.has_image), key=lambda item: item.id)
        self.seed = seed
        self._by_id: dict[str, list[int]] = defaultdict(list)
        self._by_question: dict[str, list[int]] = defaultdict(list)
        for index, item in enumerate(self.pool):
            self._by_id[item.id].append(index)
            self._by_question[_question_key(item.question)].append(index)

    def sample(self, item: McqItem, k: int) -> list[McqItem]:
        if k <= 0:
            return []
        excluded = set(self._by_id.get(item.id, ())) | set(self._by_question.get(_question_key(item.question), ()))
        available = len(self.pool) - len(excluded)
        if available < k:
            raise McqaError(
                f"{k}-shot needs {k} pool examples other than item {item.id!r}, but the pool has only {available} "
                "(image questions are never used as examples)"
            )
        drawn = _rng(self.seed, item.id).sample(range(len(self.pool)), k + len(excluded))
        return [self.pool[index] for index in drawn if index not in excluded][:k]


def letter_prompt(item: McqItem, shots: Sequence[McqItem] = ()) -> str:
    """Header, solved examples, the question with lettered options and the answer cue (no trailing space)."""
    labels = LABELS[item.language]
    blocks = [labels.header]
    for shot in shots:
        blocks.append(f"{labels.question}: {shot.question}\n{lettered_options(shot)}\n{labels.answer}: {shot.answer_letter}")
    blocks.append(f"{labels.question}: {item.question}\n{lettered_options(item)}\n{labels.answer}:")
    return "\n\n".join(blocks)


def loglik_context(item: McqItem, shots: Sequence[McqItem] = ()) -> str:
    """lm-eval headqa layout: solved examples, then ``<Question>: text\\n<Answer>:`` (options not listed)."""
    labels = LABELS[item.language]
    blocks = [f"{labels.question}: {shot.question}\n{labels.answer}: {shot.answer_text}" for shot in shots]
    blocks.append(f"{labels.question}: {item.question}\n{labels.answer}:")
    return "\n\n".join(blocks)


def build_prompt(item: McqItem, protocol: str, shots: Sequence[McqItem] = ()) -> str:
    """The context string the model reads before every option's continuation."""
    if protocol == "letter":
        return letter_prompt(item, shots)
    if protocol == "loglik_norm":
        return loglik_context(item, shots)
    raise McqaError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def continuations(item: McqItem, protocol: str) -> list[str]:
    """The strings scored after the context, one per option: ``" A"``... or ``" " + option text``."""
    if protocol == "letter":
        return [f" {letter}" for letter in item.letters]
    if protocol == "loglik_norm":
        return [f" {option}" for option in item.options]
    raise McqaError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


# --------------------------------------------------------------------------------------------
# Chat templates: the SFT prompt, encoded by LLaMA-Factory as training encoded it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SftPrompt:
    """The prompt of the SFT set a model was trained on: the ``sft.prompt`` record of a head_qa manifest."""

    user: str
    response: str
    instruction: str
    answer_prefix: str
    source: str

    def user_text(self, item: McqItem) -> str:
        """The user turn: instruction, question and lettered options, as in ``sft_train.json``."""
        return self.user.format(instruction=self.instruction, question=item.question, options=lettered_options(item))

    def response_text(self, item: McqItem, index: int) -> str:
        """The assistant turn that teaches option ``index``: ``Respuesta: C) <text>``."""
        return self.response.format(answer_prefix=self.answer_prefix, letter=item.letters[index], option=item.options[index])


def load_sft_prompt(path: Path) -> SftPrompt:
    """The ``sft.prompt`` record of a prepared head_qa manifest (``medfactory prepare head_qa``)."""
    fix = "run `medfactory prepare head_qa` (it records the prompt) or pass --sft-prompt-from data/head_qa_es/manifest.json"
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise McqaError(f"{path}: cannot read the SFT prompt record ({error}). Fix: {fix}.") from error
    record = manifest.get("sft", {}).get("prompt") if isinstance(manifest, dict) and isinstance(manifest.get("sft"), dict) else None
    if not isinstance(record, dict):
        raise McqaError(f"{path}: no `sft.prompt` record (the prompt the SFT set was built with). Fix: {fix}.")
    missing = [key for key in ("user", "response", "instruction", "answer_prefix") if not isinstance(record.get(key), str)]
    if missing:
        raise McqaError(f"{path}: `sft.prompt` lacks {', '.join(missing)}. Fix: {fix}.")
    prompt = SftPrompt(record["user"], record["response"], record["instruction"], record["answer_prefix"], str(path))
    probe = McqItem("probe", "q", ["a", "b"], 0, ["A", "B"], None, None, None, False, "es")
    try:
        prompt.user_text(probe), prompt.response_text(probe, 0)
    except (KeyError, IndexError, ValueError) as error:
        raise McqaError(f"{path}: `sft.prompt` has an unknown placeholder ({error}). Fix: {fix}.") from error
    return prompt


def sft_prompt_path(items_path: Path, sft_prompt_from: Path | None) -> Path:
    """``--sft-prompt-from``, else the manifest beside the items (data/head_qa_es/manifest.json for its splits)."""
    return Path(sft_prompt_from) if sft_prompt_from is not None else Path(items_path).parent / "manifest.json"


def _template_names() -> list[str]:
    from llamafactory.data.template import TEMPLATES  # lazy: importing LLaMA-Factory takes seconds

    return sorted(TEMPLATES)


def _recipe_templates(recipes_dir: Path, key: str, value: str) -> dict[str, str]:
    """``{recipe file: template}`` of the recipes whose ``key`` names ``value`` (a path or a hub id)."""
    import yaml

    found = {}
    target = Path(value).expanduser()
    for path in sorted(Path(recipes_dir).glob("*.yaml")):
        try:
            recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(recipe, dict) or not recipe.get("template") or not isinstance(recipe.get(key), str):
            continue
        named = recipe[key]
        same = named == value or (Path(named).exists() and target.exists() and Path(named).resolve() == target.resolve())
        if same and (key == "output_dir" or not recipe.get("adapter_name_or_path")):
            found[str(path)] = str(recipe["template"])
    return found


def find_chat_template(model: str, adapter: str | None, recipes_dir: Path = Path("recipes")) -> tuple[str | None, str]:
    """(template, where it was found) for ``--chat-template auto``; (None, why not) when nothing says.

    In order: LLaMA-Board's ``training_args.yaml`` in the adapter (or model) folder; the recipe in
    ``recipes/`` whose ``output_dir`` is the adapter (with an adapter) or whose ``model_name_or_path``
    is the model (without one); several recipes must agree.
    """
    import yaml

    for folder in (adapter, model):
        args = Path(folder).expanduser() / "training_args.yaml" if folder else None
        if args is not None and args.is_file():
            template = (yaml.safe_load(args.read_text(encoding="utf-8")) or {}).get("template")
            if template:
                return str(template), str(args)
    key, value = ("output_dir", adapter) if adapter else ("model_name_or_path", model)
    found = _recipe_templates(recipes_dir, key, value)
    if len(set(found.values())) == 1:
        return next(iter(found.values())), ", ".join(found)
    if found:
        return None, f"recipes disagree: {', '.join(f'{path} ({name})' for path, name in found.items())}"
    return None, f"no training_args.yaml and no recipe in {recipes_dir}/ with {key}: {value}"


def resolve_chat_template(choice: str, model: str, adapter: str | None, recipes_dir: Path = Path("recipes")) -> tuple[str | None, str]:
    """(LLaMA-Factory template name or None for raw prompts, where the choice came from)."""
    if choice == NO_TEMPLATE:
        return None, "--chat-template none"
    if choice == AUTO_TEMPLATE:
        name, source = find_chat_template(model, adapter, recipes_dir)
        if name is None:
            raise McqaError(
                f"--chat-template auto: {source}. Fix: pass the template the model was trained with "
                "(e.g. --chat-template mistral, as the Spanish recipes) or --chat-template none for raw prompts."
            )
        source = f"auto: {source}"
    else:
        name, source = choice, "--chat-template"
    names = _template_names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise McqaError(f"--chat-template {name!r} ({source}) is not a LLaMA-Factory template. Fix: {hint}templates: {', '.join(names)}.")
    return name, source


def _common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    length = 0
    for column in zip(*sequences):
        if any(token != column[0] for token in column):
            break
        length += 1
    return length


class ChatPrompter:
    """An item as LLaMA-Factory's template encodes the SFT example, as token ids.

    The user turn is the SFT prompt (:class:`SftPrompt`), few-shot examples are earlier user /
    assistant turns, and option ``k``'s answer is the SFT target for ``k`` in the assistant turn;
    ``encode_multiturn`` is the call LLaMA-Factory's supervised processor makes, with the system the
    SFT rows have (none: the template's default).
    """

    def __init__(self, tokenizer: Any, template_name: str, sft_prompt: SftPrompt) -> None:
        from llamafactory.data.template import get_template_and_fix_tokenizer  # lazy: heavy
        from llamafactory.hparams import DataArguments

        self.tokenizer = tokenizer
        self.name = template_name
        self.sft_prompt = sft_prompt
        self.template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=template_name))

    def _turns(self, item: McqItem, answer: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.sft_prompt.user_text(item)}, {"role": "assistant", "content": self.sft_prompt.response_text(item, answer)}]

    def encode(self, item: McqItem, shots: Sequence[McqItem] = ()) -> tuple[list[int], list[list[int]]]:
        """(the training input ids before the answer, each option's answer ids as training labels them)."""
        history = [turn for shot in shots for turn in self._turns(shot, shot.answer)]
        prompt: list[int] | None = None
        answers = []
        for index in range(item.n_options):
            pairs = self.template.encode_multiturn(self.tokenizer, [*history, *self._turns(item, index)])
            ids = [token for source, target in pairs[:-1] for token in source + target] + list(pairs[-1][0])
            if prompt is not None and ids != prompt:
                raise McqaError(f"--chat-template {self.name}: item {item.id}'s prompt tokens depend on its answer; not supported")
            prompt = ids
            answers.append(list(pairs[-1][1]))
        return prompt or [], answers

    def pairs(self, item: McqItem, protocol: str, shots: Sequence[McqItem] = ()) -> tuple[list[int], list[list[int]]]:
        """(context ids, each option's scored ids): the context runs to where the options' answers part.

        ``letter``: the fewest tokens from there on that tell the options apart (``▁C`` after
        ``Respuesta:``); ``loglik_norm``: the whole rest of each answer, as trained (``▁C ) ▁text . </s>``).
        """
        prompt, answers = self.encode(item, shots)
        common = _common_prefix(answers)
        if protocol == "letter":
            width = 1
            while len({tuple(answer[common : common + width]) for answer in answers}) < len(answers):
                width += 1
            scored = [answer[common : common + width] for answer in answers]
        else:
            scored = [answer[common:] for answer in answers]
        if any(not ids for ids in scored):
            raise McqaError(f"--chat-template {self.name}: two options of item {item.id} encode to the same answer")
        return prompt + answers[0][:common], scored

    def scored_texts(self, item: McqItem) -> list[str]:
        """What ``loglik_norm`` divides by the UTF-8 length of: each answer after the prefix all share (``C) <text>``)."""
        texts = [self.sft_prompt.response_text(item, index) for index in range(item.n_options)]
        shared = len(os.path.commonprefix(texts))
        return [text[shared:].strip() or text for text in texts]


# --------------------------------------------------------------------------------------------
# Model and log-likelihoods
# --------------------------------------------------------------------------------------------


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    key = dtype.lower()
    if key not in DTYPES:
        raise McqaError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    name = DTYPES[key]
    if name is None:  # auto: bf16 on a GPU that has it, float32 otherwise (bf16 on CPU is slow)
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        name = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
    return getattr(torch, name)


MODEL_FIX = "Fix: pass a model folder (e.g. saves/<run>, run from the repository root) or a Hugging Face hub id (org/name)."


def check_model_reference(reference: str, flag: str) -> None:
    """Refuse a ``--model`` / ``--adapter`` that names a local path that is not a folder, before anything loads.

    Names that could be hub ids (``org/name``, ``gpt2``) are left to the loader, whose errors
    :func:`load_model` names the same way.
    """
    path = Path(reference).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise McqaError(f"{flag} {reference}: a file, not a model folder. {MODEL_FIX}")
    local = path.is_absolute() or reference.startswith((".", "~")) or reference.count("/") > 1 or (
        "/" in reference and Path(reference.split("/")[0]).is_dir()
    )
    if local:
        raise McqaError(f"{flag} {reference}: no such folder (from {Path.cwd()}). {MODEL_FIX}")


def load_named(flag: str, reference: str, load: Callable[[], Any]) -> Any:
    """``load()``, with any failure (no folder, no hub, a truncated weight file, no tokenizer) named by flag and path.

    Used by the other evaluations too (bertscore's --pt-model / --xlmr-model).
    """
    try:
        return load()
    except Exception as error:  # transformers / hub / safetensors raise many kinds; one message names them
        detail = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        if Path(reference).expanduser().exists():
            raise McqaError(
                f"{flag} {reference}: cannot be loaded ({detail}). Fix: the folder needs config.json, the tokenizer files and "
                "complete weights; download or export the model again (a copy that stopped half way leaves a truncated file)."
            ) from error
        raise McqaError(f"{flag} {reference}: not a local folder, and not loadable from the Hugging Face Hub or its cache ({detail}). {MODEL_FIX}") from error


def load_model(model: str, adapter: str | None = None, dtype: str = "auto", device: str | None = None):
    """(model in eval mode on ``device``, tokenizer); the LoRA adapter, if any, is applied unmerged."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_reference(model, "--model")
    if adapter:
        check_model_reference(adapter, "--adapter")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = load_named("--model", model, lambda: AutoTokenizer.from_pretrained(model))
    network = load_named("--model", model, lambda: AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype))
    if adapter:
        from peft import PeftModel

        network = load_named("--adapter", adapter, lambda: PeftModel.from_pretrained(network, adapter))
    network.to(device)
    network.eval()
    return network, tokenizer


@dataclass
class _Sequence:
    """One row of a forward pass: fed tokens, where the scored span starts, and what is scored.

    ``targets`` holds (option index, token ids); the logits at position ``start + j`` score
    token ``j`` of each target. Several single-token targets can share one row (letters).
    """

    item: int
    tokens: list[int]
    start: int
    targets: list[tuple[int, list[int]]]


@dataclass
class ScoringStats:
    truncated: int = 0
    boundary_mismatches: int = 0
    forward_passes: int = 0
    sequences: int = 0


class LogLikelihoodScorer:
    """Sums of continuation log-probabilities for (context, continuation) pairs, batched."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_length = max_length or self._model_window()
        self.prefix = self._bos_prefix()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        self.stats = ScoringStats()

    def _model_window(self) -> int | None:
        config = getattr(self.model, "config", None)
        window = getattr(config, "max_position_embeddings", None)
        tokenizer_max = getattr(self.tokenizer, "model_max_length", None)
        if tokenizer_max is not None and tokenizer_max < 10**9:
            window = min(window, tokenizer_max) if window else tokenizer_max
        return window

    def _bos_prefix(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return []
        probe = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return [bos] if probe and probe[0] == bos else []

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context tokens with BOS, continuation tokens), as lm-eval's ``_encode_pair``."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            continuation = context[-spaces:] + continuation
            context = context[:-spaces]
        context_ids = self.encode(context)
        whole = self.encode(context + continuation)
        if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
            continuation_ids = whole[len(context_ids):]
        else:  # a token merged across the boundary: fall back to encoding the continuation alone
            self.stats.boundary_mismatches += 1
            continuation_ids = self.encode(continuation)
        if not continuation_ids:
            raise McqaError(f"continuation {continuation!r} encodes to no tokens")
        return self.prefix + context_ids, continuation_ids

    def _fit(self, context_ids: list[int], longest: int) -> list[int]:
        """The context cut from the left so that context + continuation[:-1] fits the window."""
        if self.max_length is None or len(context_ids) + longest - 1 <= self.max_length:
            return context_ids
        keep = self.max_length - longest + 1
        if keep < 1:
            raise McqaError(f"a continuation of {longest} tokens does not fit the model window of {self.max_length}")
        self.stats.truncated += 1
        return context_ids[-keep:]

    def sequences_for(self, index: int, context: str, options: Sequence[str], share_single_tokens: bool = True) -> tuple[list[_Sequence], list[list[int]]]:
        """Rows that score every option of one item, and each option's continuation tokens.

        When every continuation is one token (letters), one row of the context scores them all:
        in a causal LM the logits at the context's last position do not depend on what follows.
        """
        return self.rows_for_pairs(index, [self.encode_pair(context, option) for option in options], share_single_tokens)

    def rows_for_pairs(
        self, index: int, pairs: Sequence[tuple[list[int], list[int]]], share_single_tokens: bool = True
    ) -> tuple[list[_Sequence], list[list[int]]]:
        """Rows for (context ids, continuation ids) pairs, already encoded (chat templates encode their own)."""
        continuation_ids = [pair[1] for pair in pairs]
        same_context = all(pair[0] == pairs[0][0] for pair in pairs)
        if share_single_tokens and same_context and all(len(ids) == 1 for ids in continuation_ids):
            context_ids = self._fit(pairs[0][0], 1)
            rows = [_Sequence(index, context_ids, len(context_ids) - 1, list(enumerate(continuation_ids)))]
        else:
            rows = []
            for option, (context_ids, ids) in enumerate(pairs):
                context_ids = self._fit(context_ids, len(ids))
                rows.append(_Sequence(index, context_ids + ids[:-1], len(context_ids) - 1, [(option, ids)]))
        return rows, continuation_ids

    def score(
        self,
        rows: Sequence[_Sequence],
        batch_size: int = 8,
        progress: Callable[[Iterable], Iterable] | None = None,
    ) -> dict[tuple[int, int], float]:
        """``{(item, option): sum of log-probabilities of the option's continuation tokens}``."""
        import torch

        if batch_size < 1:
            raise McqaError("batch size must be at least 1")
        order = sorted(range(len(rows)), key=lambda row: -len(rows[row].tokens))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        results: dict[tuple[int, int], float] = {}
        with torch.inference_mode():
            for batch in progress(batches) if progress else batches:
                width = max(len(rows[row].tokens) for row in batch)
                input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for slot, row in enumerate(batch):
                    tokens = rows[row].tokens
                    input_ids[slot, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                    attention_mask[slot, : len(tokens)] = 1
                logits = self.model(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device), use_cache=False
                ).logits
                self.stats.forward_passes += 1
                self.stats.sequences += len(batch)
                for slot, row in enumerate(batch):
                    sequence = rows[row]
                    span = max(len(ids) for _, ids in sequence.targets)
                    logprobs = torch.log_softmax(logits[slot, sequence.start : sequence.start + span].float(), dim=-1)
                    for option, ids in sequence.targets:
                        picked = logprobs[torch.arange(len(ids), device=logprobs.device), torch.tensor(ids, device=logprobs.device)]
                        results[(sequence.item, option)] = float(picked.sum())
        return results


# --------------------------------------------------------------------------------------------
# Scoring items
# --------------------------------------------------------------------------------------------


@dataclass
class ItemScores:
    """Per-option scores of one item and the predictions they give (0-based positions)."""

    item: McqItem
    prompt: str
    loglik: list[float]
    tokens: list[list[str]]
    predictions: dict[str, int] = field(default_factory=dict)
    normalised: dict[str, list[float]] = field(default_factory=dict)
    scored_texts: list[str] = field(default_factory=list)  # what loglik_norm divides by the length of


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


def _item_rows(
    scorer: LogLikelihoodScorer,
    index: int,
    item: McqItem,
    protocol: str,
    examples: Sequence[McqItem],
    prompter: ChatPrompter | None,
    share_single_tokens: bool,
) -> tuple[str, list[_Sequence], list[list[int]], list[str]]:
    """(prompt as text, rows, each option's scored ids, the texts loglik_norm normalises by) of one item."""
    if prompter is None:
        prompt = build_prompt(item, protocol, examples)
        rows, ids = scorer.sequences_for(index, prompt, continuations(item, protocol), share_single_tokens)
        return prompt, rows, ids, list(item.options)
    context, scored = prompter.pairs(item, protocol, examples)
    rows, ids = scorer.rows_for_pairs(index, [(context, option) for option in scored], share_single_tokens)
    return scorer.tokenizer.decode(context), rows, ids, prompter.scored_texts(item)


def score_items(
    scorer: LogLikelihoodScorer,
    items: Sequence[McqItem],
    protocol: str,
    shots: int = 0,
    sampler: FewShotSampler | None = None,
    batch_size: int = 8,
    progress: Callable[[Iterable], Iterable] | None = None,
    share_single_tokens: bool = True,
    prompter: ChatPrompter | None = None,
) -> list[ItemScores]:
    """Score every option of every item; ``predictions`` holds the protocol's prediction variants.

    ``letter``: ``{"letter": argmax}``. ``loglik_norm``: ``{"bytes": ..., "raw": ..., "chars": ...}``
    (per-byte normalised, unnormalised, per-character normalised). With a ``prompter`` the prompt is
    the chat-templated SFT prompt (:class:`ChatPrompter`), else the raw text of :func:`build_prompt`.
    """
    if protocol not in PROTOCOLS:
        raise McqaError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if shots and sampler is None:
        raise McqaError(f"{shots}-shot needs a pool of examples (--fewshot-from)")
    rows: list[_Sequence] = []
    prompts, token_ids, texts = [], [], []
    for index, item in enumerate(items):
        examples = sampler.sample(item, shots) if shots else []
        prompt, item_rows, ids, scored_texts = _item_rows(scorer, index, item, protocol, examples, prompter, share_single_tokens)
        rows.extend(item_rows)
        prompts.append(prompt)
        token_ids.append(ids)
        texts.append(scored_texts)
    logliks = scorer.score(rows, batch_size=batch_size, progress=progress)

    scored = []
    for index, item in enumerate(items):
        loglik = [logliks[(index, option)] for option in range(item.n_options)]
        tokens = [scorer.tokenizer.convert_ids_to_tokens(ids) for ids in token_ids[index]]
        result = ItemScores(item, prompts[index], loglik, tokens, scored_texts=texts[index])
        if protocol == "letter":
            result.predictions["letter"] = _argmax(loglik)
        else:
            per_byte = [value / len(text.encode("utf-8")) for value, text in zip(loglik, texts[index])]
            per_char = [value / len(text) for value, text in zip(loglik, texts[index])]
            result.normalised = {"bytes": per_byte, "chars": per_char}
            result.predictions = {"bytes": _argmax(per_byte), "raw": _argmax(loglik), "chars": _argmax(per_char)}
        scored.append(result)
    return scored


PRIMARY = {"letter": "letter", "loglik_norm": "bytes"}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def confusion_matrix(gold: Sequence[int], predicted: Sequence[int], labels: Sequence[int]) -> list[list[int]]:
    """Counts, rows = gold position, columns = predicted position, in ``labels`` order."""
    where = {label: index for index, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        matrix[where[g]][where[p]] += 1
    return matrix


def per_class_scores(gold: Sequence[int], predicted: Sequence[int]) -> dict[int, dict[str, float]]:
    """Precision, recall, F1 and support per position that occurs as gold or prediction."""
    labels = sorted(set(gold) | set(predicted))
    matrix = confusion_matrix(gold, predicted, labels)
    scores = {}
    for index, label in enumerate(labels):
        tp = matrix[index][index]
        fp = sum(matrix[row][index] for row in range(len(labels))) - tp
        fn = sum(matrix[index]) - tp
        scores[label] = {
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "support": tp + fn,
        }
    return scores


def macro_f1(gold: Sequence[int], predicted: Sequence[int]) -> float:
    """Unweighted mean of the per-position F1 (positions seen as gold or prediction); NaN when empty."""
    scores = per_class_scores(gold, predicted)
    return sum(entry["f1"] for entry in scores.values()) / len(scores) if scores else math.nan


def accuracy(gold: Sequence[int], predicted: Sequence[int]) -> float:
    pairs = list(zip(gold, predicted, strict=True))
    return sum(g == p for g, p in pairs) / len(pairs) if pairs else math.nan


def exam_points(correct: Sequence[bool]) -> dict[str, int]:
    """HEAD-QA scoring: +3 right, −1 wrong, 0 unanswered (never: the model always answers)."""
    right = sum(1 for value in correct if value)
    wrong = len(correct) - right
    return {
        "points": POINTS_RIGHT * right + POINTS_WRONG * wrong,
        "max_points": POINTS_RIGHT * len(correct),
        "n": len(correct),
        "right": right,
        "wrong": wrong,
        "unanswered": 0,
    }


def group_key(value: Any) -> str:
    return NONE_KEY if value is None else str(value)


def group_sort_key(key: str) -> tuple[int, str]:
    return (1, key) if key == NONE_KEY else (0, key)


def summarize(items: Sequence[McqItem], predicted: Sequence[int]) -> dict[str, Any]:
    """Accuracy, macro-F1, confusion, exam points and the per-category / year / exam breakdowns."""
    gold = [item.answer for item in items]
    correct = [g == p for g, p in zip(gold, predicted, strict=True)]
    labels = sorted(set(gold) | set(predicted))

    def block(indices: list[int]) -> dict[str, Any]:
        g = [gold[i] for i in indices]
        p = [predicted[i] for i in indices]
        return {"n": len(indices), "correct": sum(correct[i] for i in indices), "accuracy": accuracy(g, p), "macro_f1": macro_f1(g, p)}

    def grouped(attribute: Callable[[McqItem], Any]) -> dict[str, Any]:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            groups[group_key(attribute(item))].append(index)
        return {key: block(groups[key]) for key in sorted(groups, key=group_sort_key)}

    exams: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        exams[group_key(item.exam)].append(index)
    return {
        **block(list(range(len(items)))),
        "per_position": {POSITIONS[label]: values for label, values in per_class_scores(gold, predicted).items()},
        "confusion": {
            "labels": [POSITIONS[label] for label in labels],
            "rows": "gold position",
            "columns": "predicted position",
            "matrix": confusion_matrix(gold, predicted, labels),
        },
        "exam_points": {
            "total": exam_points(correct),
            "per_exam": {key: exam_points([correct[i] for i in exams[key]]) for key in sorted(exams, key=group_sort_key)},
        },
        "per_category": grouped(lambda item: item.category),
        "per_year": grouped(lambda item: item.year),
        "per_n_options": grouped(lambda item: item.n_options),
        "per_language": grouped(lambda item: item.language),
    }


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def _item_columns(result: ItemScores, protocol: str) -> dict[str, Any]:
    """Metadata, gold and predicted letters of one item (and lm-eval's two variants for ``loglik_norm``)."""
    item = result.item
    prediction = result.predictions[PRIMARY[protocol]]
    record: dict[str, Any] = {
        "id": item.id,
        "category": item.category,
        "year": item.year,
        "exam": item.exam,
        "language": item.language,
        "has_image": item.has_image,
        "n_options": item.n_options,
        "answer": POSITIONS[item.answer],
        "prediction": POSITIONS[prediction],
        "correct": prediction == item.answer,
    }
    if protocol == "loglik_norm":
        for variant, column in (("raw", "unnorm"), ("chars", "char_norm")):
            record[f"prediction_{column}"] = POSITIONS[result.predictions[variant]]
            record[f"correct_{column}"] = result.predictions[variant] == item.answer
    return record


def position_columns(items: Iterable[McqItem]) -> str:
    """The letters per_item.csv has a score column for: A-E, or A up to the set's longest item's last letter."""
    return POSITIONS[: max([MIN_POSITION_COLUMNS, *(item.n_options for item in items)])]


def _per_position(name: str, values: Sequence[Any], missing: Any, letters: str) -> dict[str, Any]:
    """``<name>_A`` ... one column per letter of ``letters``, ``missing`` past the item's last option."""
    return {f"{name}_{letter}": values[position] if position < len(values) else missing for position, letter in enumerate(letters)}


def _option_columns(result: ItemScores, protocol: str, letters: str) -> dict[str, Any]:
    """Every option's score; for ``loglik_norm`` also the per-byte score and the two lengths it divides by."""
    if protocol == "letter":
        return _per_position("logprob", result.loglik, math.nan, letters)
    texts = result.scored_texts or result.item.options
    return {
        **_per_position("loglik", result.loglik, math.nan, letters),
        **_per_position("loglik_norm", result.normalised["bytes"], math.nan, letters),
        **_per_position("n_bytes", [len(text.encode("utf-8")) for text in texts], None, letters),
        **_per_position("n_chars", [len(text) for text in texts], None, letters),
    }


def per_item_frame(scored: Sequence[ItemScores], protocol: str) -> pd.DataFrame:
    """One row per item: metadata, gold and predicted letters, per-option scores in columns A-E (A up to the
    set's largest option count when an item has more than 5 options; empty past an item's last option)."""
    import pandas as pd

    letters = position_columns(result.item for result in scored)
    frame = pd.DataFrame.from_records([{**_item_columns(result, protocol), **_option_columns(result, protocol, letters)} for result in scored])
    for column in ("year", *[c for c in frame.columns if c.startswith(("n_bytes_", "n_chars_"))]):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


def mcqa_versions() -> dict[str, str | None]:
    return package_versions(("medfactory", "torch", "transformers", "tokenizers", "peft", "numpy", "pandas"), python=True)


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(key): json_safe(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(inner) for inner in value]
    return value


def letter_tokens(scored: Sequence[ItemScores]) -> dict[str, list[list[str]]]:
    seen: dict[str, list[list[str]]] = {}
    for result in scored:
        for letter, tokens in zip(result.item.letters, result.tokens):
            variants = seen.setdefault(letter, [])
            if list(tokens) not in variants:
                variants.append(list(tokens))
    return dict(sorted(seen.items()))


def _scoring_description(protocol: str, scored: Sequence[ItemScores], stats: ScoringStats, bos: bool, chat: bool = False) -> dict[str, Any]:
    common = {
        "bos_prepended": bos if not chat else "by the chat template (its prefix), not by the scorer",
        "log_softmax_dtype": "float32",
        "contexts_truncated_left": stats.truncated,
        "boundary_mismatches": stats.boundary_mismatches,
        "forward_passes": stats.forward_passes,
        "sequences": stats.sequences,
    }
    if protocol == "letter":
        if chat:
            score = "log P(the first answer tokens that tell the options apart | templated prompt + the answer prefix they share)"
            continuation = "the SFT answer's tokens as the template encodes them, from where the options part: e.g. '▁C' after 'Respuesta:'"
        else:
            score = "log P(' ' + letter | prompt ending in the answer cue), summed over the continuation's tokens"
            continuation = "' ' + letter, e.g. ' A'; tokens = encode(prompt + ' A')[len(encode(prompt)):]"
        return {
            "score": score,
            "continuation": continuation,
            "letter_tokens": letter_tokens(scored),
            "single_token_items": sum(all(len(tokens) == 1 for tokens in result.tokens) for result in scored),
            "prediction": "argmax over options",
            **common,
        }
    if chat:
        return {
            "score": "log P(rest of the SFT answer, e.g. ' C) <text></s>', as the template encodes it | templated prompt + shared answer prefix)",
            "prediction": "argmax of loglik / UTF-8 byte length of the answer after its shared prefix ('C) <text>')",
            "unnormalised": "argmax of loglik",
            "char_normalised": "argmax of loglik / len('C) <text>') in characters",
            **common,
        }
    return {
        "score": "log P(' ' + option text | context), summed over the continuation's tokens",
        "prediction": "argmax of loglik / UTF-8 byte length of the option text (leading space excluded)",
        "unnormalised": "argmax of loglik (lm-eval acc)",
        "char_normalised": "argmax of loglik / len(option text) in characters (what lm-eval's acc_norm code computes)",
        **common,
    }


def prompt_record(protocol: str, language: str, scorer: LogLikelihoodScorer, prompter: ChatPrompter | None) -> dict[str, Any]:
    """The exact prompt shape (placeholders for the question and options) and what is scored after it."""
    letters = list(POSITIONS[:4])
    shape = McqItem("shape", "{question}", [f"{{option {letter}}}" for letter in letters], 0, letters, None, None, None, False, language)
    if prompter is None:
        return {
            "format": "raw text: no chat template",
            "chat_template": None,
            "labels": f"the item's language ({language}: {LABELS[language].question} / {LABELS[language].answer})",
            "shape": build_prompt(shape, protocol),
            "continuation_of_option_A": continuations(shape, protocol)[0],
            "bos_prepended": bool(scorer.prefix),
            "few_shot": "k solved examples before the question, as blocks rendered like it, separated by a blank line",
        }
    context, scored = prompter.pairs(shape, protocol)
    return {
        "format": f"chat: LLaMA-Factory template {prompter.name!r} over the head_qa SFT prompt, encoded as training encodes it",
        "chat_template": prompter.name,
        "sft_prompt_from": prompter.sft_prompt.source,
        "system": prompter.template.default_system or None,
        "user": prompter.sft_prompt.user,
        "response": prompter.sft_prompt.response,
        "shape": scorer.tokenizer.decode(context),
        "continuation_of_option_A": scorer.tokenizer.decode(scored[0]),
        "few_shot": "k earlier user / assistant turns: each example's SFT prompt and its right answer",
    }


def _cell(value: Any, digits: int = 4) -> str:
    """A report cell: floats to ``digits`` places, missing values (None, NaN) left blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def report_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table of formatted cells, newline-terminated: a blank line follows it in the report."""
    return markdown_table(header, [[_cell(value) for value in row] for row in rows]) + "\n"


def settings_table(metrics: dict[str, Any]) -> str:
    settings = metrics["settings"]
    images = f"{'included' if settings['include_images'] else 'excluded'} ({metrics['n_image_items']} in file)"
    rows = [
        ("model", settings["model"]),
        ("adapter", settings["adapter"] or "none"),
        ("protocol", settings["protocol"]),
        ("prompt", f"chat template {settings['chat_template']}" if settings.get("chat_template") else "raw text (no chat template)"),
        ("shots", settings["shots"]),
        ("few-shot pool", settings["fewshot_from"] or "none"),
        ("seed", settings["seed"]),
        ("dtype / device", f"{settings['dtype']} / {settings['device']}"),
        ("image questions", images),
    ]
    return report_table(["setting", "value"], rows)


VARIANT_NAMES = {"unnormalised": "loglik, unnormalised (lm-eval acc)", "char_normalised": "loglik / characters (lm-eval acc_norm code)"}


def _overall_table(metrics: dict[str, Any]) -> str:
    """The primary prediction's scores, then each variant's (``loglik_norm`` only)."""
    exam = metrics["exam_points"]["total"]
    primary = "letter log-prob (primary)" if metrics["settings"]["protocol"] == "letter" else "loglik / bytes (primary)"
    rows = [(primary, metrics["n"], metrics["accuracy"], metrics["macro_f1"], exam["points"], exam["max_points"])]
    for key, variant in metrics.get("variants", {}).items():
        points = variant["exam_points"]["total"]
        rows.append((VARIANT_NAMES.get(key, key), variant["n"], variant["accuracy"], variant["macro_f1"], points["points"], points["max_points"]))
    return report_table(["prediction", "n", "accuracy", "macro-F1", "exam points", "max points"], rows)


def exam_table(per_exam: dict[str, Any]) -> str:
    rows = [(key, e["n"], e["right"], e["wrong"], e["points"], e["max_points"]) for key, e in per_exam.items()]
    return report_table(["exam", "n", "right", "wrong", "points", "max points"], rows)


def breakdown_table(name: str, groups: dict[str, Any]) -> str:
    rows = [(key, entry["n"], entry["correct"], entry["accuracy"], entry["macro_f1"]) for key, entry in groups.items()]
    return report_table([name, "n", "correct", "accuracy", "macro-F1"], rows)


def _confusion_table(confusion: dict[str, Any]) -> str:
    rows = [(label, *row) for label, row in zip(confusion["labels"], confusion["matrix"])]
    return report_table(["gold \\ pred", *confusion["labels"]], rows)


def render_report(metrics: dict[str, Any]) -> str:
    """``report.md``: settings and tables, no prose."""
    sections = [
        f"# Multiple-choice QA: {Path(metrics['settings']['items']).name}\n",
        settings_table(metrics),
        "## Overall\n",
        _overall_table(metrics),
        "## Exam points (+3 right, −1 wrong)\n",
        exam_table(metrics["exam_points"]["per_exam"]),
        "## Per category\n",
        breakdown_table("category", metrics["per_category"]),
        "## Per year\n",
        breakdown_table("year", metrics["per_year"]),
        "## Per number of options\n",
        breakdown_table("options", metrics["per_n_options"]),
        "## Confusion over answer positions (rows gold, columns predicted)\n",
        _confusion_table(metrics["confusion"]),
    ]
    return "\n".join(sections)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def tqdm_progress(description: str) -> Callable[[Iterable], Iterable]:
    from tqdm import tqdm

    def wrap(batches: Iterable) -> Iterable:
        batches = list(batches)
        return tqdm(batches, total=len(batches), desc=description, unit="batch")

    return wrap


def _check_options(protocol: str, shots: int, batch_size: int, limit: int | None, fewshot_from: Path | None, dtype: str) -> None:
    """Refuse a bad setting before any file is read or model loaded; the message names the option."""
    if protocol not in PROTOCOLS:
        raise McqaError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if shots < 0:
        raise McqaError("--shots must be 0 or more")
    if batch_size < 1:
        raise McqaError("--batch-size must be at least 1")
    if limit is not None and limit < 1:
        raise McqaError("--limit must be at least 1")
    if shots and fewshot_from is None:
        raise McqaError(f"--shots {shots} needs a pool of examples: give --fewshot-from (a validation or train file)")
    if dtype.lower() not in DTYPES:
        raise McqaError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def _fewshot_sampler(fewshot_from: Path | None, shots: int, seed: int) -> FewShotSampler | None:
    """The sampler over the ``--fewshot-from`` pool (None at 0 shots); the pool must hold ``shots`` text-only items."""
    if not shots or fewshot_from is None:
        return None
    sampler = FewShotSampler(load_items(fewshot_from), seed)
    if len(sampler.pool) < shots:
        raise McqaError(f"{fewshot_from} has {len(sampler.pool)} text-only examples; {shots}-shot needs at least {shots}")
    return sampler


def prediction_metrics(items: Sequence[McqItem], scored: Sequence[ItemScores], protocol: str) -> dict[str, Any]:
    """:func:`summarize` of the protocol's primary prediction; for ``loglik_norm`` also of lm-eval's two variants."""
    predictions = {variant: [result.predictions[variant] for result in scored] for variant in scored[0].predictions}
    primary = PRIMARY[protocol]
    metrics: dict[str, Any] = {
        "protocol": protocol,
        "prediction": primary if protocol == "loglik_norm" else "letter",
        **summarize(items, predictions[primary]),
    }
    if protocol == "loglik_norm":
        metrics["variants"] = {
            "unnormalised": summarize(items, predictions["raw"]),
            "char_normalised": summarize(items, predictions["chars"]),
        }
    return metrics


def write_outputs(out_dir: Path, scored: Sequence[ItemScores], protocol: str, metrics: dict[str, Any]) -> None:
    """``per_item.csv``, ``metrics.json`` and ``report.md``, each written atomically."""
    out_dir = Path(out_dir)
    frame = per_item_frame(scored, protocol)
    with atomic_write(out_dir / PER_ITEM_CSV) as handle:
        frame.to_csv(handle, index=False)
    write_json_atomic(out_dir / METRICS_JSON, metrics)
    with atomic_write(out_dir / REPORT_MD) as handle:
        handle.write(render_report(metrics))


def chat_prompter(
    tokenizer: Any, network: Any, template: str | None, items_path: Path, sft_prompt_from: Path | None
) -> ChatPrompter | None:
    """The prompter of ``template`` over the SFT prompt record (None without a template)."""
    if template is None:
        return None
    prompter = ChatPrompter(tokenizer, template, load_sft_prompt(sft_prompt_path(items_path, sft_prompt_from)))
    embeddings = network.get_input_embeddings().num_embeddings if hasattr(network, "get_input_embeddings") else None
    if embeddings is not None and len(tokenizer) > embeddings:
        raise McqaError(
            f"--chat-template {template} adds tokens ({len(tokenizer)} in the tokenizer) that the model's {embeddings} embeddings lack. "
            "Fix: use the template the model was trained with."
        )
    return prompter


def _settings(
    items_path: Path, model: str, adapter: str | None, protocol: str, template: tuple[str | None, str], **values: Any
) -> dict[str, Any]:
    network, sampler, scorer, prompter = values.pop("network"), values.pop("sampler"), values.pop("scorer"), values.pop("prompter")
    parameter = next(network.parameters())
    return {
        "items": str(items_path),
        "model": model,
        "adapter": adapter,
        "protocol": protocol,
        "chat_template": template[0],
        "chat_template_source": template[1],
        "sft_prompt_from": prompter.sft_prompt.source if prompter else None,
        "shots": values["shots"],
        "fewshot_from": str(values["fewshot_from"]) if values["fewshot_from"] else None,
        "fewshot_pool_size": len(sampler.pool) if sampler else None,
        "seed": values["seed"],
        "batch_size": values["batch_size"],
        "include_images": values["include_images"],
        "limit": values["limit"],
        "dtype": str(parameter.dtype).removeprefix("torch."),
        "device": str(parameter.device),
        "max_length": scorer.max_length,
    }


def evaluate(
    items_path: Path,
    model: str,
    out_dir: Path,
    adapter: str | None = None,
    protocol: str = "letter",
    shots: int = 0,
    fewshot_from: Path | None = None,
    seed: int = 0,
    batch_size: int = 8,
    include_images: bool = False,
    dtype: str = "auto",
    limit: int | None = None,
    device: str | None = None,
    progress: bool = True,
    loaded: tuple[Any, Any] | None = None,
    chat_template: str = NO_TEMPLATE,
    sft_prompt_from: Path | None = None,
    recipes_dir: Path = Path("recipes"),
) -> dict[str, Any]:
    """Score the items, write ``per_item.csv``, ``metrics.json``, ``report.md``; return the metrics.

    ``chat_template``: ``none`` (raw prompts), ``auto`` (:func:`find_chat_template`) or a LLaMA-Factory
    template name; with a template the prompt is the SFT prompt of ``sft_prompt_from`` (default: the
    manifest beside the items). ``loaded`` = (model, tokenizer) already in memory (tests); ``model`` /
    ``adapter`` are then only recorded.
    """
    _check_options(protocol, shots, batch_size, limit, fewshot_from, dtype)
    if loaded is None:  # a missing folder fails in a second, not after the items and templates are read
        check_model_reference(model, "--model")
        if adapter:
            check_model_reference(adapter, "--adapter")
    template = resolve_chat_template(chat_template, model, adapter, recipes_dir)
    if template[0] is not None:  # before the model loads: a missing record fails fast
        load_sft_prompt(sft_prompt_path(items_path, sft_prompt_from))
    all_items = load_items(items_path)
    items, n_images = select_items(all_items, include_images, limit)
    if not items:
        raise McqaError(f"{items_path}: no items left to evaluate (image questions excluded: {n_images})")
    sampler = _fewshot_sampler(fewshot_from, shots, seed)

    network, tokenizer = loaded if loaded is not None else load_model(model, adapter, dtype, device)
    prompter = chat_prompter(tokenizer, network, template[0], items_path, sft_prompt_from)
    scorer = LogLikelihoodScorer(network, tokenizer)
    bar = tqdm_progress(f"mcqa {protocol}") if progress else None
    scored = score_items(scorer, items, protocol, shots, sampler, batch_size, bar, prompter=prompter)

    settings = _settings(
        items_path, model, adapter, protocol, template, network=network, sampler=sampler, scorer=scorer, prompter=prompter,
        shots=shots, fewshot_from=fewshot_from, seed=seed, batch_size=batch_size, include_images=include_images, limit=limit,
    )  # fmt: skip
    metrics = {
        **prediction_metrics(items, scored, protocol),
        "n_items_in_file": len(all_items),
        "n_image_items": sum(item.has_image for item in all_items),
        "n_image_items_excluded": n_images,
        "settings": settings,
        "prompt": prompt_record(protocol, items[0].language, scorer, prompter),
        "scoring": _scoring_description(protocol, scored, scorer.stats, bool(scorer.prefix), chat=prompter is not None),
        "versions": mcqa_versions(),
    }
    metrics = json_safe(metrics)
    write_outputs(out_dir, scored, protocol, metrics)
    return metrics


# --------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------


def mcqa_command(
    items: Annotated[Path, typer.Option(help="MCQ JSONL (data/<name>/<split>.jsonl): id, question, options, answer, ...")],
    model: Annotated[str, typer.Option(help="Base model: hub name or local folder")],
    out_dir: Annotated[Path, typer.Option(help="Output folder (per_item.csv, metrics.json, report.md)")],
    adapter: Annotated[str | None, typer.Option(help="PEFT LoRA adapter folder, applied on top of --model")] = None,
    protocol: Annotated[
        str, typer.Option(help="letter: log-prob of the answer letter (BioMistral); loglik_norm: option log-likelihood / bytes (lm-eval headqa's rule)")
    ] = "letter",
    chat_template: Annotated[
        str,
        typer.Option(
            help="none: raw Pregunta:/Respuesta: prompts; auto: the template of the recipe that trained --adapter (or --model); "
            "or a LLaMA-Factory template name (mistral, llama2, ...): the head_qa SFT prompt in that template, as trained"
        ),
    ] = NO_TEMPLATE,
    sft_prompt_from: Annotated[
        Path | None, typer.Option(help="Manifest with the SFT prompt record (default: manifest.json beside --items)")
    ] = None,
    shots: Annotated[int, typer.Option(help="Solved examples in each prompt (k-shot); needs --fewshot-from")] = 0,
    fewshot_from: Annotated[Path | None, typer.Option(help="Pool of solved examples (validation or train JSONL)")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the few-shot draw")] = 0,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass")] = 8,
    include_images: Annotated[
        bool, typer.Option("--include-images/--exclude-images", help="Score image questions text-only (default: leave them out, counted)")
    ] = False,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on a GPU, fp32 on CPU), bf16, fp16 or fp32")] = "auto",
    limit: Annotated[int | None, typer.Option(help="Score only the first N items (after image exclusion)")] = None,
) -> None:
    """Accuracy, macro-F1 and HEAD-QA exam points of a model (+ LoRA adapter) on multiple-choice questions."""
    try:
        if protocol not in PROTOCOLS:
            raise McqaError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if shots and fewshot_from is None:
            raise McqaError(f"--shots {shots} needs a pool of examples: give --fewshot-from (a validation or train file)")
        for path, option in ((items, "--items"), (fewshot_from, "--fewshot-from")):
            if path is not None and not Path(path).is_file():
                raise McqaError(f"{option} {path} does not exist or is not a file")
        check_model_reference(model, "--model")
        if adapter:
            check_model_reference(adapter, "--adapter")
        if fewshot_from is not None and not shots:
            typer.secho("note: --fewshot-from is ignored with --shots 0", fg=typer.colors.YELLOW, err=True)
        if chat_template == NO_TEMPLATE and adapter:
            trained_with, source = find_chat_template(model, adapter)
            if trained_with:
                typer.secho(
                    f"note: {adapter} was trained with template {trained_with!r} ({source}); raw prompts underrate it. "
                    "Pass --chat-template auto to score it with the prompt it was trained on.",
                    fg=typer.colors.YELLOW, err=True,
                )  # fmt: skip
        metrics = evaluate(
            items, model, out_dir, adapter=adapter, protocol=protocol, shots=shots, fewshot_from=fewshot_from, seed=seed,
            batch_size=batch_size, include_images=include_images, dtype=dtype, limit=limit, chat_template=chat_template,
            sft_prompt_from=sft_prompt_from,
        )  # fmt: skip
    except (ValueError, OSError) as error:  # McqaError, unreadable model / adapter / file
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error

    points = metrics["exam_points"]["total"]
    prompt = f"chat template {metrics['settings']['chat_template']}" if metrics["settings"]["chat_template"] else "raw prompts"
    typer.echo(
        f"{metrics['n']} items ({metrics['n_image_items_excluded']} image questions excluded), protocol {protocol}, {prompt}, "
        f"{shots}-shot: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"exam points {points['points']} / {points['max_points']}"
    )
    for name, variant in metrics.get("variants", {}).items():
        typer.echo(f"  {name}: accuracy {variant['accuracy']:.4f}, macro-F1 {variant['macro_f1']:.4f}")
    typer.echo(f"report written to {Path(out_dir) / REPORT_MD}")
