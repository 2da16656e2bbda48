"""``medfactory generate predict``: a registered predict set answered by a served engine, written as a predict run writes it.

Every stage that predicts with ``llamafactory-cli train`` (``do_predict``) reads its replies from
``<output_dir>/generated_predictions.jsonl``: the Likert completions, the MIMIC-CXR translation, the clinical
cases. This command builds the same conversations from the same registered dataset (LLaMA-Factory's own
``get_dataset_list`` and dataset converter, so the turns are the ones predict would template), sends them to an
OpenAI-compatible endpoint (vLLM, ``llamafactory-cli api``; loopback unless allowed) through
:class:`~medfactory.generate.client.LlmClient` (concurrency, retries, the request cache), and writes one
``{"prompt", "predict", "label"}`` row per record in the dataset's order, so the next stage runs unchanged.
``prompt`` holds the turns' text (the server applies the chat template), ``label`` the record's response.

Nothing is written unless every request succeeded (the row order is the join); a rerun sends only what the cache
lacks. Image records (the MIMIC-CXR-PT-BR scenarios) go as OpenAI content parts, each ``<image>`` placeholder of a
turn replaced by its image as a base64 data URL, which vLLM and ``llamafactory-cli api`` both read; video and
audio records are refused. The server renders the turns, so it must run with the recipe's template and image
settings: :data:`SERVER_KEYS` of the recipe are printed and kept in the summary for that reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import iter_jsonl, jsonl_line
from medfactory.generate.client import ChatRequest, ClientSettings, LlmClient

PREDICTIONS_FILE = "generated_predictions.jsonl"  # LLaMA-Factory's name: the next stage reads it unchanged
SUMMARY_FILE = "served_predict.json"
# LLaMA-Factory's DatasetAttr fields that name a record's columns (llamafactory/data/parser.py).
COLUMN_ATTRIBUTES = ("prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag")
RECIPE_KEYS_NOT_SENT = ("top_p", "top_k", "repetition_penalty", "num_beams", "length_penalty")  # not in this client's request
# Recipe values the server must run with: the model it loads (adapter, quantization) and the prompt it builds
# (start `llamafactory-cli api` with them; vLLM: the merged or LoRA model, the chat template and the processor).
SERVER_KEYS = ("adapter_name_or_path", "quantization_bit", "template", "default_system", "image_max_pixels", "image_min_pixels", "enable_thinking")


@dataclass(frozen=True)
class PredictSettings:
    """Which set, where, and the decoding values sent with every request."""

    dataset: str
    dataset_dir: Path
    output_dir: Path
    max_tokens: int = 512
    temperature: float = 0.0
    not_sent: tuple[str, ...] = ()  # recipe decoding values this client does not send (reported)
    server_values: tuple[tuple[str, Any], ...] = ()  # recipe values the server must be started with (reported)
    media_dir: Path | None = None  # LLaMA-Factory's media_dir (image paths are relative to it; default dataset_dir)


def settings_from_recipe(
    recipe: Path, dataset: str | None, output_dir: Path | None, max_tokens: int | None, overrides: dict[str, Any] | None = None
) -> PredictSettings:
    """The predict recipe's set, output folder and decoding (greedy unless ``do_sample``); explicit options win.

    ``overrides`` are llamafactory-cli ``key=value`` overrides of the recipe, read as a predict run would read them.
    """
    import yaml

    try:
        values = yaml.safe_load(Path(recipe).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise CorpusError(f"{recipe}: cannot read the recipe ({error.__class__.__name__}). Pass a recipe file of recipes/.") from None
    values = {**values, **(overrides or {})}
    dataset = dataset or values.get("eval_dataset")
    if not isinstance(dataset, str) or not dataset:
        raise CorpusError(f"{recipe}: no eval_dataset; pass --dataset NAME.")
    temperature = float(values.get("temperature", 0.0)) if values.get("do_sample") else 0.0
    return PredictSettings(
        dataset=dataset, dataset_dir=Path(values.get("dataset_dir") or "."), output_dir=Path(output_dir or values.get("output_dir") or "saves/predict"),
        max_tokens=int(max_tokens or values.get("max_new_tokens") or 512), temperature=temperature,
        not_sent=tuple(key for key in RECIPE_KEYS_NOT_SENT if key in values),
        server_values=tuple((key, values[key]) for key in SERVER_KEYS if key in values),
        media_dir=Path(values["media_dir"]) if values.get("media_dir") else None,
    )  # fmt: skip


def _dataset_attr(name: str, dataset_dir: Path) -> Any:
    from llamafactory.data.parser import get_dataset_list

    try:
        (attr,) = get_dataset_list([name], str(dataset_dir))
    except ValueError as error:  # LLaMA-Factory: "Undefined dataset ... in dataset_info.json."
        raise CorpusError(f"{dataset_dir / 'dataset_info.json'}: {error} Prepare or register the set first.") from None
    if attr.load_from != "file":
        raise CorpusError(f"{name}: a {attr.load_from} dataset; only local files are read (prepare it first).")
    if attr.videos or attr.audios:
        raise CorpusError(f"{name}: its records have videos or audio; serve-predicting them is not supported, use llamafactory-cli train (do_predict).")
    return attr


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) of a JSON array or a JSONL file."""
    if not path.is_file():
        raise CorpusError(f"{path}: not found. Prepare the set first (the registry names this file).")
    if path.suffix == ".jsonl":
        try:
            return [(f"{path}, line {number}", record) for number, record in iter_jsonl(path)]
        except ValueError as error:
            raise CorpusError(f"{error}.") from error
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise CorpusError(f"{path}: not JSON. Prepare the set again.") from None
    if not isinstance(records, list):
        raise CorpusError(f"{path}: not a JSON array of records.")
    return [(f"{path}, record {number}", record) for number, record in enumerate(records, start=1)]


def predict_requests(settings: PredictSettings) -> tuple[list[ChatRequest], list[str], list[str]]:
    """(requests, prompts, labels) of every record in order, built by LLaMA-Factory's converter as predict builds them."""
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.hparams import DataArguments

    attr = _dataset_attr(settings.dataset, settings.dataset_dir)
    media_dir = None if settings.media_dir is None else str(settings.media_dir)
    converter = get_dataset_converter(attr.formatting, attr, DataArguments(dataset_dir=str(settings.dataset_dir), media_dir=media_dir))
    # The converter indexes every mapped column: a record that lacks an optional one reads it as None, as `datasets` would.
    columns = [getattr(attr, name) for name in COLUMN_ATTRIBUTES if isinstance(getattr(attr, name, None), str)]
    requests, prompts, labels = [], [], []
    for number, (where, record) in enumerate(_records(Path(settings.dataset_dir) / attr.dataset_name), start=1):
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: not a JSON object.")
        example = converter({column: record.get(column) for column in columns} | record)
        turns = [{"role": "system", "content": example["_system"]}] if example["_system"] else []
        turns += [{"role": turn["role"], "content": turn["content"]} for turn in example["_prompt"]]
        if not turns or turns[-1]["role"] != "user":
            raise CorpusError(f"{where}: its conversation does not end with a user turn, so there is nothing to answer.")
        images = example.get("_images") or []
        if not all(isinstance(image, str) for image in images):
            raise CorpusError(f"{where}: its images are not file paths; only image files can be sent.")
        try:
            requests.append(ChatRequest(f"{settings.dataset}-{number}", turns, settings.temperature, settings.max_tokens, tuple(images)))
        except ValueError as error:  # images and <image> placeholders do not pair up (LLaMA-Factory refuses that too)
            raise CorpusError(f"{where}: {str(error).split(': ', 1)[1]}. Prepare the set again.") from None
        prompts.append("\n".join(turn["content"] for turn in turns))
        labels.append(example["_response"][0]["content"] if example["_response"] else "")
    if not requests:
        raise CorpusError(f"{settings.dataset}: the set has no records.")
    return requests, prompts, labels


@dataclass(frozen=True)
class PromptCheck:
    """The prompt a predict run would build (the model's tokenizer, the recipe's template and default system).

    The server applies its own chat template, so a server started with another template (vLLM's default, a chat
    template around raw text) answers a different prompt without saying so. Its reply reports how many prompt
    tokens it built (``usage.prompt_tokens``); :meth:`mismatch` compares that with the count this template builds
    (:meth:`expected_lengths`, computed once per run: it loads the tokenizer).
    """

    tokenizer: str  # a local folder with the served model's tokenizer
    template: str
    default_system: str | None = None

    def expected_lengths(self, requests: list[ChatRequest]) -> list[int | None]:
        """Prompt tokens of each text request as LLaMA-Factory encodes it (None for image requests: the server expands images)."""
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer)
        except (OSError, ValueError) as error:
            raise CorpusError(f"{self.tokenizer}: cannot load the tokenizer to check the served prompts ({type(error).__name__}).") from None
        template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=self.template, default_system=self.default_system))
        lengths: list[int | None] = []
        for request in requests:
            if request.images:
                lengths.append(None)
                continue
            system = next((m["content"] for m in request.messages if m["role"] == "system"), None)
            turns = [dict(m) for m in request.messages if m["role"] != "system"]
            prompt_ids, _ = template.encode_oneturn(tokenizer, [*turns, {"role": "assistant", "content": ""}], system)
            lengths.append(len(prompt_ids))
        return lengths

    def mismatch(self, expected_lengths: list[int | None], completions: list[Any]) -> str | None:
        """The first record whose served prompt length differs from ``expected_lengths`` (in the records' order), as a message;
        None when all agree. A completion that failed, or reports no count, is not compared."""
        for number, (expected, completion) in enumerate(zip(expected_lengths, completions, strict=True), start=1):
            if completion is not None and expected is not None and completion.prompt_tokens and completion.prompt_tokens != expected:
                system = f" and default_system {self.default_system!r}" if self.default_system else ""
                return (f"record {number}: the server built a prompt of {completion.prompt_tokens} tokens where template {self.template!r} builds "
                        f"{expected}, so it runs another chat template. Start it as the recipe builds prompts: llamafactory-cli api with "
                        f"template {self.template!r}{system} (docs/generation.md)")  # fmt: skip
        return None


def _probe_prompt(check: PromptCheck, expected: list[int | None], requests: list[ChatRequest], client_settings: ClientSettings) -> None:
    """Send the first text request, uncached, and stop before the run if the server built another prompt (nothing is cached)."""
    first = next((index for index, request in enumerate(requests) if not request.images), None)
    if first is None:
        return
    (completion,) = LlmClient(client_settings, None).complete([requests[first]], desc="prompt check")
    answered = [completion if index == first and completion.ok else None for index in range(len(requests))]  # a failed probe fails the run next
    problem = check.mismatch(expected, answered)
    if problem:
        raise CorpusError(f"{problem}; nothing was written or cached.")


def serve_predict(settings: PredictSettings, client_settings: ClientSettings, cache_path: Path, prompt_check: PromptCheck | None = None) -> dict[str, Any]:
    """Answer every record through the endpoint; write generated_predictions.jsonl and a summary; return the summary.

    With ``prompt_check``, nothing is written unless the server built every prompt as the recipe's template does.
    """
    requests, prompts, labels = predict_requests(settings)
    expected = prompt_check.expected_lengths(requests) if prompt_check is not None else []
    if prompt_check is not None:  # before the cache is opened: a wrong server leaves no file behind
        _probe_prompt(prompt_check, expected, requests, client_settings)
    client = LlmClient(client_settings, cache_path)  # refuses a remote endpoint before anything is sent
    try:
        completions = list(client.complete(requests, desc=f"predict {settings.dataset}"))
    finally:
        client.close()
    failed = sum(not completion.ok for completion in completions)
    if failed:
        raise CorpusError(
            f"{failed} of {len(requests)} requests failed, so {settings.output_dir / PREDICTIONS_FILE} was not written (its row order is the join). "
            f"Run the same command again: the {len(requests) - failed} answered are in {cache_path}."
        )
    problem = prompt_check.mismatch(expected, completions) if prompt_check is not None else None
    if problem:  # answers cached by an earlier run against a server with another template
        raise CorpusError(f"{problem}; {settings.output_dir / PREDICTIONS_FILE} was not written. The cache {cache_path} holds answers to "
                          "those other prompts: delete it, restart the server, and run again.")  # fmt: skip
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(settings.output_dir / PREDICTIONS_FILE) as handle:
        for prompt, completion, label in zip(prompts, completions, labels, strict=True):
            handle.write(jsonl_line({"prompt": prompt, "predict": completion.text, "label": label}))
    summary = {"dataset": settings.dataset, "records": len(requests), "engine": "served endpoint", "model": client_settings.model,
               "endpoint": client_settings.endpoint, "max_tokens": settings.max_tokens, "temperature": settings.temperature,
               "recipe_values_not_sent": list(settings.not_sent), "server_must_match": dict(settings.server_values),
               "images": sum(len(request.images) for request in requests), "client": client.summary.record(),
               "prompt_check": None if prompt_check is None else {"template": prompt_check.template, "default_system": prompt_check.default_system,
                                                                  "records_checked": sum(not request.images for request in requests)}}  # fmt: skip
    write_json_atomic(settings.output_dir / SUMMARY_FILE, summary)
    return summary
