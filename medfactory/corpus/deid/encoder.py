"""The transformers backend of de-identification: a token-classification encoder fine-tuned on gold spans.

For GPU VMs with a Portuguese or Spanish clinical encoder (for example
``PlanTL-GOB-ES/roberta-base-biomedical-clinical-es`` for Spanish, a BERTimbau for Portuguese),
downloaded to a local folder. :meth:`EncoderTagger.train` fine-tunes
``AutoModelForTokenClassification`` on (text, gold :class:`~.spans.PhiSpan`) pairs and writes a model
folder; ``EncoderTagger(folder).find(text)`` tags a note, as the CRF does (:mod:`.crf`).

- **Labels**: ``O`` plus ``B-``/``I-`` of every category of :data:`~.spans.CATEGORIES` (:data:`LABELS`),
  saved in the model config's ``id2label`` / ``label2id``; a folder with other labels is refused.
- **Alignment**: a fast tokenizer's ``offset_mapping`` gives each subword token its characters.
  *Every* subword is labelled (``B-X`` on the token holding the span's first character, ``I-X`` on
  the others it overlaps), not only the first of a word: MEDDOCAN spans end inside what a
  tokenizer calls one word ("28036Madrid"), and a span's character offsets are read back from the
  run of tagged tokens. Special tokens get -100 (no loss).
- **Windows**: notes exceed 512 tokens, so each note is cut into windows of ``max_length`` tokens,
  consecutive windows sharing ``stride`` tokens (the tokenizer's own overflow, so every token is in
  some window and no text is dropped). A token seen by two windows takes the label of the window
  where it has more context on both sides.
- torch and transformers are imported inside the functions: the rules and CRF path never pay for them.

Errors name the folder and say how to fix it; nothing here logs or returns a note's text.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfactory.base.atomic import atomic_directory, write_json_atomic
from medfactory.corpus.deid.spans import CATEGORIES, PhiSpan, resolve_overlaps

SOURCE = "encoder"
LABELS: tuple[str, ...] = ("O", *(f"{tag}-{category}" for category in CATEGORIES for tag in ("B", "I")))
FACTS_FILE = "medfactory_deid.json"  # training facts (counts and settings, never a value); marks a folder this module wrote
DEFAULT_MAX_LENGTH = 512
DEFAULT_STRIDE = 128  # tokens shared by consecutive windows
DEFAULT_EPOCHS = 4
DEFAULT_BATCH_SIZE = 16
DEFAULT_LEARNING_RATE = 5e-5
DEFAULT_INFERENCE_BATCH = 32
IGNORE = -100  # the label torch's cross-entropy skips
_TRAIN_FIX = "Fix: train one with `medfactory deid train --backend encoder --encoder BASE_MODEL_DIR --gold DIR --output MODEL_DIR`."


@dataclass(frozen=True, slots=True)
class Window:
    """A slice of one text as the model sees it: token ids with special tokens, and each position's characters (None: special)."""

    document: int
    input_ids: list[int]
    offsets: list[tuple[int, int] | None]

    @property
    def char_range(self) -> tuple[int, int]:
        """(first character, one past the last) of the text this window holds."""
        spans = [offset for offset in self.offsets if offset is not None]
        return spans[0][0], spans[-1][1]


def resolve_device(device: str | None) -> str:
    """``device``, or ``cuda`` when one is visible and ``cpu`` otherwise (None or ``auto``)."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is visible (torch.cuda.is_available() is False). Fix: pass --device cpu, or run on a GPU VM.")
    return device


def load_fast_tokenizer(folder: Path | str) -> Any:
    """The folder's tokenizer; refused unless it is a fast one (only those give character offsets)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"{folder}: no loadable tokenizer ({type(error).__name__}): not a model folder with its tokenizer files, nor a hub id in the local cache. "
            "Fix: pass the local folder the encoder was downloaded or saved to."
        ) from error
    if not tokenizer.is_fast:
        raise ValueError(
            f"{folder}: its tokenizer ({type(tokenizer).__name__}) is not a fast (Rust) tokenizer, so it gives no character offsets to align "
            "spans with. Fix: use an encoder that ships tokenizer.json (or whose vocabulary transformers converts to a fast tokenizer)."
        )
    return tokenizer


def window_length(config: Any, tokenizer: Any, requested: int | None = None) -> int:
    """Tokens per window: ``requested``, else what the model's positions allow, at most :data:`DEFAULT_MAX_LENGTH`."""
    positions = getattr(config, "max_position_embeddings", DEFAULT_MAX_LENGTH)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        positions -= 2  # these count positions from padding_idx + 1
    limit = min(positions, tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else positions)
    if requested is not None:
        if requested > limit:
            raise ValueError(f"max_length {requested} exceeds the model's {limit} positions. Fix: pass a max_length of at most {limit}.")
        return requested
    return min(limit, DEFAULT_MAX_LENGTH)


def windows(tokenizer: Any, texts: Sequence[str], max_length: int, stride: int) -> list[Window]:
    """Windows of ``max_length`` tokens (special ones included) over each text, consecutive ones sharing ``stride`` tokens."""
    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if not 0 <= stride < room:
        raise ValueError(f"stride {stride}: must be at least 0 and below the {room} text tokens of a {max_length}-token window. Fix: pass a smaller stride.")
    if not texts:
        return []
    encoded = tokenizer(
        list(texts), truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True,
        return_offsets_mapping=True, return_attention_mask=False, return_token_type_ids=False,
    )  # fmt: skip
    result = []
    for index, ids in enumerate(encoded["input_ids"]):
        sequence = encoded.sequence_ids(index)  # None at the special tokens the tokenizer added
        offsets = [
            (start, end) if part is not None and end > start else None
            for (start, end), part in zip(encoded["offset_mapping"][index], sequence, strict=True)
        ]
        if any(offset is not None for offset in offsets):
            result.append(Window(encoded["overflow_to_sample_mapping"][index], list(ids), offsets))
    return result


def window_labels(window: Window, spans: Sequence[PhiSpan]) -> list[int]:
    """Label ids of a window's positions against ``spans`` (sorted, non-overlapping): B/I on every overlapping subword, -100 on specials."""
    label_ids = {label: index for index, label in enumerate(LABELS)}
    ends = [span.end for span in spans]
    result = []
    for offset in window.offsets:
        if offset is None:
            result.append(IGNORE)
            continue
        start, end = offset
        index = bisect.bisect_right(ends, start)  # the first span ending after the token starts
        if index < len(spans) and spans[index].start < end:
            span = spans[index]
            result.append(label_ids[f"{'B' if start <= span.start else 'I'}-{span.category}"])
        else:
            result.append(0)
    return result


def merge_window_labels(window_list: Sequence[Window], predicted: Sequence[Sequence[int]], documents: int) -> list[list[tuple[int, int, int]]]:
    """(start, end, label id) per token of each document, in text order: of the windows that hold a token, the one giving it most context wins."""
    best: list[dict[tuple[int, int], tuple[int, int]]] = [{} for _ in range(documents)]
    for window, labels in zip(window_list, predicted, strict=True):
        content = [position for position, offset in enumerate(window.offsets) if offset is not None]
        for rank, position in enumerate(content):
            context = min(rank, len(content) - 1 - rank)  # tokens of the same window before and after it, the fewer side
            key = window.offsets[position]
            kept = best[window.document].get(key)  # type: ignore[arg-type]
            if kept is None or context > kept[0]:
                best[window.document][key] = (context, labels[position])  # type: ignore[index]
    return [sorted((start, end, label) for (start, end), (_, label) in tokens.items()) for tokens in best]


def spans_from_token_labels(text: str, tokens: Iterable[tuple[int, int, str]]) -> list[PhiSpan]:
    """Runs of ``B-X I-X ...`` tokens as spans of ``text`` (an ``I-X`` after ``O`` or another category starts one too), edges without spaces."""
    spans: list[PhiSpan] = []
    start = end = -1
    category = ""

    def close() -> None:
        left, right = start, end
        while left < right and text[left].isspace():
            left += 1
        while right > left and text[right - 1].isspace():
            right -= 1
        if right > left:
            spans.append(PhiSpan(left, right, category, SOURCE))

    for token_start, token_end, label in tokens:
        tag, _, label_category = label.partition("-")
        if tag == "I" and category and label_category == category:
            end = token_end
            continue
        if category:
            close()
        category = label_category if tag in ("B", "I") and label_category in CATEGORIES else ""
        start, end = token_start, token_end
    if category:
        close()
    return spans


def _check_labels(folder: Path, config: Any) -> None:
    """Refuse a model whose labels are not :data:`LABELS`' (a base encoder, a model of another task)."""
    labels = [str(label) for label in (getattr(config, "id2label", None) or {}).values()]
    unknown = [label for label in labels if label not in LABELS]
    if not labels or unknown or "O" not in labels:
        example = f", e.g. {unknown[0]!r}" if unknown else ""
        raise ValueError(
            f"{folder}: its labels are not de-identification categories ({len(unknown)} of {len(labels)} unknown{example}): "
            f"a base encoder or a model of another task. {_TRAIN_FIX}"
        )


def _read_facts(folder: Path) -> dict[str, Any]:
    path = folder / FACTS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}  # the facts only supply window defaults; the model itself is what must load


class EncoderTagger:
    """A fine-tuned token-classification model: ``EncoderTagger(folder).find(text)`` lists the PHI spans it tags."""

    def __init__(
        self, model_dir: Path | str, device: str | None = None, batch_size: int = DEFAULT_INFERENCE_BATCH,
        max_length: int | None = None, stride: int | None = None,
    ) -> None:  # fmt: skip
        from transformers import AutoConfig, AutoModelForTokenClassification

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_dir}: no token-classification model there (no config.json). {_TRAIN_FIX}")
        config = AutoConfig.from_pretrained(str(self.model_dir))
        _check_labels(self.model_dir, config)
        self.tokenizer = load_fast_tokenizer(self.model_dir)
        facts = _read_facts(self.model_dir)
        self.max_length = window_length(config, self.tokenizer, max_length or facts.get("max_length"))
        self.stride = stride if stride is not None else min(int(facts.get("stride", DEFAULT_STRIDE)), self.max_length // 4)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        try:
            self.model = AutoModelForTokenClassification.from_pretrained(str(self.model_dir)).to(self.device).eval()
        except OSError as error:
            raise FileNotFoundError(f"{self.model_dir}: the model weights do not load ({error}). {_TRAIN_FIX}") from error
        self.labels = [self.model.config.id2label[index] for index in range(self.model.config.num_labels)]

    def __repr__(self) -> str:
        return f"EncoderTagger({str(self.model_dir)!r}, device={self.device!r}, max_length={self.max_length}, stride={self.stride})"

    def find(self, text: str) -> list[PhiSpan]:
        """PHI spans of ``text`` (source ``encoder``), offsets into ``text``, in text order."""
        return self.find_many([text])[0]

    def find_many(self, texts: Sequence[str], rule_spans: Sequence[Sequence[PhiSpan]] | None = None) -> list[list[PhiSpan]]:
        """:meth:`find` of each text, with the windows of all of them batched together (faster on a GPU).

        ``rule_spans`` is accepted for the CRF's calling convention (:meth:`.crf.CrfTagger.find_many`) and unused: the encoder has no rule features.
        """
        import torch

        window_list = windows(self.tokenizer, texts, self.max_length, self.stride)
        predicted: list[list[int]] = []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.inference_mode():
            for begin in range(0, len(window_list), self.batch_size):
                batch = _collate([(window.input_ids, None) for window in window_list[begin : begin + self.batch_size]], pad, self.device)
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                predicted.extend(logits.argmax(-1).tolist())
        merged = merge_window_labels(window_list, predicted, len(texts))
        return [
            spans_from_token_labels(text, ((start, end, self.labels[label]) for start, end, label in tokens))
            for text, tokens in zip(texts, merged, strict=True)
        ]

    @staticmethod
    def train(
        documents: Iterable[tuple[str, Sequence[PhiSpan]]], base_model: Path | str, output_dir: Path | str, *,
        epochs: int = DEFAULT_EPOCHS, batch_size: int = DEFAULT_BATCH_SIZE, learning_rate: float = DEFAULT_LEARNING_RATE,
        device: str | None = None, max_length: int | None = None, stride: int = DEFAULT_STRIDE, max_steps: int | None = None,
        seed: int = 0, progress: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        """Fine-tune ``base_model`` (a local folder, or a hub id where the hub is reachable) on (text, gold spans) pairs.

        The model folder is written to a staging folder beside ``output_dir`` and renamed into place
        (a killed run leaves the old one). Returns the training facts (also in ``FACTS_FILE``): counts, settings, loss.
        """
        import torch
        from transformers import AutoConfig, AutoModelForTokenClassification

        output_dir, base = Path(output_dir), _resolve_base(base_model)
        _check_output(output_dir, base)
        tokenizer = load_fast_tokenizer(base)
        length = window_length(AutoConfig.from_pretrained(base), tokenizer, max_length)
        examples, counts = _training_examples(tokenizer, documents, length, stride)
        device = resolve_device(device)
        torch.manual_seed(seed)
        model = AutoModelForTokenClassification.from_pretrained(
            base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={label: index for index, label in enumerate(LABELS)},
            ignore_mismatched_sizes=True,  # a base that already has a classification head of another size gets a new one
        )  # fmt: skip
        started = time.perf_counter()
        fit = _fit(model, examples, tokenizer.pad_token_id or 0, epochs, batch_size, learning_rate, device, max_steps, seed, progress)
        facts = {
            "backend": SOURCE, "base_model": str(base_model), **counts, **fit, "epochs": epochs, "batch_size": batch_size,
            "learning_rate": learning_rate, "max_length": length, "stride": stride, "seed": seed, "device": device,
            "train_seconds": round(time.perf_counter() - started, 1), "labels": len(LABELS), "label_alignment": "every subword",
        }  # fmt: skip
        with atomic_directory(output_dir) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            write_json_atomic(staging / FACTS_FILE, facts)
        return facts


def _resolve_base(base_model: Path | str) -> str:
    """A local model folder (must hold config.json) or, when no such path exists, a hub id ``org/name``."""
    path = Path(base_model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--encoder {path}: no config.json in it, so no model. Fix: pass the folder a model was downloaded or saved to.")
        return str(path)
    text = str(base_model)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"--encoder {text}: no such model folder. Fix: download the encoder on a machine with hub access "
            "(`hf download ORG/NAME --local-dir DIR`) and pass DIR."
        )
    return text  # a hub id: from_pretrained resolves it (offline, only when it is in the local cache)


def _check_output(output_dir: Path, base: str) -> None:
    """Refuse an output that is a file, the base model itself, or a non-empty folder this module did not write (it would be replaced)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output {output_dir} is a file; the encoder backend writes a model folder. Fix: pass a folder path, e.g. models/deid_encoder.")
    if Path(base).exists() and Path(base).resolve() == output_dir.resolve():
        raise ValueError(f"--output {output_dir} is the base model's folder, which would be replaced. Fix: pass another folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / FACTS_FILE).is_file():
        raise ValueError(
            f"--output {output_dir} is a non-empty folder without {FACTS_FILE} (not a model this command wrote); it would be replaced. "
            "Fix: pass a new or empty folder."
        )


def _training_examples(tokenizer: Any, documents: Iterable[tuple[str, Sequence[PhiSpan]]], max_length: int, stride: int) -> tuple[list, dict[str, int]]:
    """(input ids, label ids) per window of every document, and the counts."""
    texts, gold = [], []
    for text, spans in documents:
        if text.strip():
            texts.append(text)
            gold.append(resolve_overlaps(spans))
    window_list = windows(tokenizer, texts, max_length, stride)
    if not window_list:
        raise ValueError("no training document has any token. Fix: pass gold folders holding .txt files with text.")
    examples = [(window.input_ids, window_labels(window, gold[window.document])) for window in window_list]
    tagged = sum(label > 0 for _, labels in examples for label in labels)
    return examples, {"documents": len(texts), "windows": len(window_list), "spans": sum(map(len, gold)), "tagged_tokens": tagged}


def _collate(items: Sequence[tuple[list[int], list[int] | None]], pad: int, device: str) -> dict[str, Any]:
    """Right-padded input_ids, attention_mask and (when the items have them) labels, as tensors on ``device``."""
    import torch

    width = max(len(ids) for ids, _ in items)
    batch = {
        "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in items]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in items]),
    }
    if items[0][1] is not None:
        batch["labels"] = torch.tensor([labels + [IGNORE] * (width - len(labels)) for _, labels in items])  # type: ignore[operator]
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _optimizer(model: Any, learning_rate: float, total_steps: int) -> tuple[Any, Any]:
    """AdamW (no weight decay on biases and norms) with linear warm-up over 10 % of the steps, then linear decay."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    decay = [parameter for name, parameter in model.named_parameters() if not (name.endswith("bias") or "norm" in name.lower())]
    rest = [parameter for name, parameter in model.named_parameters() if name.endswith("bias") or "norm" in name.lower()]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=learning_rate)
    return optimizer, get_linear_schedule_with_warmup(optimizer, math.ceil(total_steps * 0.1), total_steps)


def _fit(
    model: Any, examples: list, pad: int, epochs: int, batch_size: int, learning_rate: float, device: str, max_steps: int | None, seed: int, progress: bool
) -> dict[str, Any]:
    """A plain torch loop over shuffled window batches; returns the steps run and the mean loss of the last 20."""
    import torch
    from tqdm import tqdm

    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError(f"epochs {epochs}, batch size {batch_size}, learning rate {learning_rate}: each must be positive. Fix: pass positive values.")
    total = math.ceil(len(examples) / batch_size) * epochs
    total = min(total, max_steps) if max_steps else total
    optimizer, scheduler = _optimizer(model, learning_rate, total)
    model.to(device).train()
    rng, losses, step = random.Random(seed), [], 0
    with tqdm(total=total, desc="encoder training", unit="step", disable=not progress) as bar:
        while step < total:
            order = list(range(len(examples)))
            rng.shuffle(order)
            for begin in range(0, len(order), batch_size):
                loss = model(**_collate([examples[index] for index in order[begin : begin + batch_size]], pad, device)).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                step += 1
                bar.update()
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
                if step >= total:
                    break
    model.eval()
    return {"steps": step, "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 5)}
