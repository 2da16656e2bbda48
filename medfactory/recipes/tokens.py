"""Token accounting for stage-pt recipes: tokens in the corpus versus tokens that reach training blocks.

LLaMA-Factory 0.9.5 packs stage-pt data in ``data/processor/pretrain.py``, run by ``datasets.map``
(``data/loader.py``): the training set is cut into ``preprocessing_num_workers`` contiguous shards,
each shard into batches of ``preprocessing_batch_size`` notes; each batch is tokenized (note + EOS,
no special tokens), concatenated and cut into blocks of ``cutoff_len`` tokens (``cutoff_len - 1``
when ``packing: true`` is written explicitly, ``hparams/data_args.py``). The remainder of every batch
is dropped, and when the tokenizer adds a BOS the first token of every block is overwritten with it
(a real token lost per block).

Nothing here re-implements that. Each note is tokenized once by LLaMA-Factory's own
``PretrainDatasetProcessor`` (through a tokenizer that records how long each note became), then the
same processor function groups every batch of the exact sharding again, fed token ids of the recorded
lengths. The lengths are cached (``$MEDFACTORY_CACHE/token_lengths``) by dataset file and tokenizer,
so asking "what if" of other packing settings costs seconds. See docs/corpora.md ("Tokens").

Counts only: no note text is logged, printed or cached.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.metadata
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medfactory.base.atomic import atomic_write, sha256_file
from medfactory.base.jsonl import iter_jsonl
from medfactory.recipes.recipe_file import load_recipe

MIN_TRAINED_FRACTION = 0.99
# Notes tokenized per call while recording lengths: bounds memory, changes no count (a note's tokens
# do not depend on its batch).
TOKENIZE_CHUNK = 10_000
MISTRAL_COMMON = "mistral-common"
MISTRAL_V1_MEMBER = "mistral_common/data/tokenizer.model.v1"
# The 493,443-byte model: the same bytes in mistral-common 1.9.1 and 1.13.1, and the sha256 the Hub's
# Mistral / Mixtral ``tokenizer.model`` files carry.
MISTRAL_V1_SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"
# A mistral-common wheel (`pip download --no-deps mistral-common==1.9.1`): the tokenizer without installing it.
WHEEL_VARIABLE = "MEDFACTORY_MISTRAL_COMMON_WHEEL"
# Base models whose tokenizer is Mistral's v1 SentencePiece model (32,000 pieces), the one the
# mistral-common wheel ships: Mistral-7B v0.1 / v0.2 and the instruct and domain models built on them.
MISTRAL_V1_MODELS = frozenset(
    {
        "mistral-community/Mistral-7B-v0.2",
        "mistralai/Mistral-7B-v0.1",
        "mistralai/Mistral-7B-Instruct-v0.1",
        "mistralai/Mistral-7B-Instruct-v0.2",
        "BioMistral/BioMistral-7B",
    }
)
# What transformers 5 needs to load a bare SentencePiece model as the LLaMA / Mistral tokenizer: the
# class named explicitly (without it, a model_type "mistral" maps to mistral-common's backend when that
# package is importable), BOS added, EOS not.
SENTENCEPIECE_TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "add_bos_token": True,
    "add_eos_token": False,
}
TOKENIZER_HELP = (
    "pass --tokenizer with the model's tokenizer folder or a SentencePiece .model file; for the Mistral-7B "
    "v0.x family, a mistral-common wheel (`pip download --no-deps mistral-common==1.9.1 -d DIR`, then "
    f"--tokenizer DIR/mistral_common-1.9.1-py3-none-any.whl or {WHEEL_VARIABLE}=that path)"
)


class TokenReportError(ValueError):
    """Input the token report cannot account for; the message names recipe, key or dataset, and the fix."""


# --- Tokenizers -------------------------------------------------------------------------------------


def mistral_v1_sentencepiece(wheel: Path | None = None) -> bytes:
    """Mistral-7B v0.1/v0.2's SentencePiece model, from a mistral-common wheel (``wheel``, else
    ``$MEDFACTORY_MISTRAL_COMMON_WHEEL``) or from an installed mistral-common's files.

    Never imports ``mistral_common`` and never needs it installed (docs/corpora.md, "Tokens", says why);
    the bytes are checked against the model's sha256.
    """
    wheel = wheel or (Path(os.environ[WHEEL_VARIABLE]) if os.environ.get(WHEEL_VARIABLE) else None)
    if wheel is not None:
        try:
            with zipfile.ZipFile(wheel) as archive:
                model = archive.read(MISTRAL_V1_MEMBER)
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            raise TokenReportError(f"{wheel}: not a mistral-common wheel holding {MISTRAL_V1_MEMBER} ({error}). Fix: {TOKENIZER_HELP}.") from error
        where = str(wheel)
    else:
        try:
            located = Path(str(importlib.metadata.distribution(MISTRAL_COMMON).locate_file(MISTRAL_V1_MEMBER)))
        except importlib.metadata.PackageNotFoundError as error:
            raise TokenReportError(f"no mistral-common wheel given and none installed. Fix: {TOKENIZER_HELP}.") from error
        if not located.is_file():
            raise TokenReportError(f"{located}: missing from the installed {MISTRAL_COMMON}. Fix: {TOKENIZER_HELP}.")
        model, where = located.read_bytes(), str(located)
    if hashlib.sha256(model).hexdigest() != MISTRAL_V1_SHA256:
        raise TokenReportError(f"{where}: {MISTRAL_V1_MEMBER} is not Mistral's v1 model (sha256 differs). Fix: {TOKENIZER_HELP}.")
    return model


def _llamafactory_tokenizer(name_or_path: str, values: Mapping[str, Any]) -> Any:
    """The tokenizer exactly as LLaMA-Factory's ``load_tokenizer`` gives it to training (the recipe's
    model arguments apply: ``use_fast_tokenizer``, ``split_special_tokens``, ``add_tokens`` ...)."""
    from llamafactory.hparams import ModelArguments
    from llamafactory.model import load_tokenizer as llamafactory_load_tokenizer
    from transformers import HfArgumentParser

    (model_args,) = HfArgumentParser(ModelArguments).parse_dict({**values, "model_name_or_path": name_or_path}, allow_extra_keys=True)
    try:
        return llamafactory_load_tokenizer(model_args)["tokenizer"]
    except (OSError, ValueError) as error:
        cause = f"{error}: {error.__cause__}" if error.__cause__ else str(error)
        raise TokenReportError(f"no tokenizer for {name_or_path!r} here ({cause}). Fix: {TOKENIZER_HELP}.") from error


def tokenizer_from_sentencepiece(model: bytes, values: Mapping[str, Any] | None = None) -> Any:
    """A tokenizer for a LLaMA / Mistral SentencePiece model (BOS added, as the checkpoints' configs say)."""
    with tempfile.TemporaryDirectory(prefix="medfactory-tokenizer-") as folder:
        (Path(folder) / "tokenizer.model").write_bytes(model)
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps(SENTENCEPIECE_TOKENIZER_CONFIG), encoding="utf-8")
        return _llamafactory_tokenizer(folder, values or {})


def load_tokenizer(spec: str | Path | None, values: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(tokenizer, what it is) for ``--tokenizer`` or, without it, for the recipe's model.

    ``spec``: a tokenizer folder, a SentencePiece ``.model`` file, a mistral-common ``.whl``, the word
    ``mistral-common`` (the installed package's files) or a Hub id. Without it: the model folder when
    ``model_name_or_path`` is local, Mistral's v1 model for the Mistral-7B v0.x family, else the Hub
    (or its local cache). Loaded by LLaMA-Factory's own ``load_tokenizer`` with the recipe's values.
    """
    values = dict(values or {})
    model = values.get("model_name_or_path")
    if spec is None:
        if not model:
            raise TokenReportError(f"the recipe names no model_name_or_path. Fix: {TOKENIZER_HELP}.")
        spec = MISTRAL_COMMON if model in MISTRAL_V1_MODELS and not Path(model).is_dir() else model
    spec, path = str(spec), Path(str(spec))
    if spec == MISTRAL_COMMON:
        where = os.environ.get(WHEEL_VARIABLE) or f"the installed {MISTRAL_COMMON}"
        return tokenizer_from_sentencepiece(mistral_v1_sentencepiece(), values), f"{MISTRAL_V1_MEMBER} in {where}"
    if path.suffix == ".whl" and path.is_file():
        return tokenizer_from_sentencepiece(mistral_v1_sentencepiece(path), values), f"{MISTRAL_V1_MEMBER} in {path.name}"
    if path.suffix == ".model" and path.is_file():
        return tokenizer_from_sentencepiece(path.read_bytes(), values), f"SentencePiece model {path}"
    return _llamafactory_tokenizer(spec, values), spec


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What identifies a tokenizer's ids: its full serialized form when it has one."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode("utf-8"))
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    digest.update(repr((tokenizer.eos_token, tokenizer.bos_token, getattr(tokenizer, "add_bos_token", False))).encode("utf-8"))
    return digest.hexdigest()


# --- LLaMA-Factory's processor, fed what it needs -------------------------------------------------------


class _RecordingTokenizer:
    """The real tokenizer as LLaMA-Factory calls it, recording how many tokens each note became."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.lengths: list[int] = []

    def __call__(self, texts: list[str], **kwargs: Any) -> Any:
        encoded = self._tokenizer(texts, **kwargs)
        self.lengths.extend(len(ids) for ids in encoded["input_ids"])
        return encoded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


class _ReplayingTokenizer:
    """Stands in for the tokenizer on a batch already tokenized: token ids of the recorded lengths."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.lengths: list[int] = []

    def __call__(self, texts: list[str], **kwargs: Any) -> dict[str, list[list[int]]]:
        if len(texts) != len(self.lengths):
            raise AssertionError(f"replay of {len(self.lengths)} notes given {len(texts)}")
        return {"input_ids": [[0] * length for length in self.lengths]}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def pretrain_processor(tokenizer: Any, data_args: Any) -> Any:
    """LLaMA-Factory's stage-pt processor (it reads only the tokenizer and the data arguments)."""
    from llamafactory.data.processor import PretrainDatasetProcessor

    return PretrainDatasetProcessor(template=None, tokenizer=tokenizer, processor=None, data_args=data_args)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    # Millions of small lists, none cyclic: the cyclic collector only slows the packing (6x here).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _prompts(contents: list[str]) -> dict[str, list[Any]]:
    # The columns LLaMA-Factory's converter gives a stage-pt batch; the processor reads only _prompt.
    return {"_prompt": [[{"role": "user", "content": content}] for content in contents]}


def note_lengths(contents: Iterable[str], tokenizer: Any, data_args: Any) -> list[int]:
    """Tokens of each note as LLaMA-Factory's processor tokenizes it (note + EOS, no special tokens)."""
    recorder = _RecordingTokenizer(tokenizer)
    processor = pretrain_processor(recorder, data_args)
    chunk: list[str] = []
    with _collector_paused():
        for content in contents:
            chunk.append(content)
            if len(chunk) == TOKENIZE_CHUNK:
                processor.preprocess_dataset(_prompts(chunk))
                chunk = []
        if chunk:
            processor.preprocess_dataset(_prompts(chunk))
    return recorder.lengths


@dataclass
class PackingResult:
    """What LLaMA-Factory's pt packing makes of a set of notes."""

    notes: int = 0
    corpus_tokens: int = 0
    block_size: int = 0
    shards: int = 0
    batches: int = 0
    blocks: int = 0
    block_tokens: int = 0
    bos_overwritten: int = 0

    @property
    def trained_tokens(self) -> int:
        """Corpus tokens that reach a training block (a BOS written over a token does not count)."""
        return self.block_tokens - self.bos_overwritten

    @property
    def dropped_tokens(self) -> int:
        """Batch remainders LLaMA-Factory drops."""
        return self.corpus_tokens - self.block_tokens

    @property
    def trained_fraction(self) -> float:
        return self.trained_tokens / self.corpus_tokens if self.corpus_tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trained_tokens": self.trained_tokens, "dropped_tokens": self.dropped_tokens, "trained_fraction": self.trained_fraction}


def shard_bounds(count: int, num_proc: int | None) -> list[tuple[int, int]]:
    """The contiguous shards ``datasets.Dataset.map(num_proc=...)`` processes (datasets 4.0 ``shard``)."""
    shards = num_proc or 1
    if shards > count:  # datasets lowers num_proc to the dataset's size
        shards = max(count, 1)
    div, mod = divmod(count, shards)
    bounds = []
    for index in range(shards):
        start = div * index + min(index, mod)
        bounds.append((start, start + div + (1 if index < mod else 0)))
    return bounds


def pack_lengths(lengths: list[int], tokenizer: Any, data_args: Any) -> PackingResult:
    """Run LLaMA-Factory's pt grouping on every batch of the sharding ``datasets.map`` would use."""
    replay = _ReplayingTokenizer(tokenizer)
    processor = pretrain_processor(replay, data_args)
    batch_size = data_args.preprocessing_batch_size
    overwrites_bos = bool(getattr(tokenizer, "add_bos_token", False))
    result = PackingResult(notes=len(lengths), corpus_tokens=sum(lengths), block_size=data_args.cutoff_len)
    with _collector_paused():
        for start, end in shard_bounds(len(lengths), data_args.preprocessing_num_workers):
            result.shards += 1
            for batch_start in range(start, end, batch_size):
                replay.lengths = lengths[batch_start : min(batch_start + batch_size, end)]
                blocks = processor.preprocess_dataset(_prompts([""] * len(replay.lengths)))["input_ids"]
                result.batches += 1
                result.blocks += len(blocks)
                result.block_tokens += sum(len(block) for block in blocks)
                result.bos_overwritten += len(blocks) if overwrites_bos else 0
    return result


# --- Recipes and their datasets ---------------------------------------------------------------------------


def recipe_data_arguments(values: Mapping[str, Any], recipe: Path) -> Any:
    """The recipe's ``DataArguments`` as LLaMA-Factory builds them (``__post_init__`` included, so an
    explicit ``packing: true`` shortens ``cutoff_len`` by one), with stage pt's packing default."""
    from llamafactory.hparams import DataArguments
    from transformers import HfArgumentParser

    try:
        (data_args,) = HfArgumentParser(DataArguments).parse_dict(dict(values), allow_extra_keys=True)
    except (ValueError, TypeError) as error:
        raise TokenReportError(f"{recipe}: LLaMA-Factory rejects its data arguments: {error}") from error
    if data_args.packing is None:  # hparams/parser.py: packing defaults to True for stage pt, no -1
        data_args.packing = values.get("stage", "sft") == "pt"
    unsupported = {
        "stage": values.get("stage", "sft") != "pt",
        "packing": not data_args.packing,
        "streaming": data_args.streaming,
        "mix_strategy": data_args.mix_strategy != "concat",
    }
    for key, bad in unsupported.items():
        if bad:
            raise TokenReportError(
                f"{recipe}: `{key}: {values.get(key, getattr(data_args, key, None))}`: the token report accounts for "
                "stage pt with packing, concatenated datasets and no streaming. Fix: run it on a pt recipe."
            )
    return data_args


@dataclass(frozen=True)
class DatasetSource:
    """One registered dataset as LLaMA-Factory reads it for stage pt (alpaca columns, a local file)."""

    name: str
    path: Path
    prompt: str
    query: str | None


def _prepare_hint(path: Path) -> str:
    parts = path.parts
    corpus = parts[parts.index("data") + 1] if "data" in parts[:-1] else path.stem
    return f"prepare it (`medfactory prepare {corpus} --source ...`, see docs/corpora.md)"


def dataset_sources(names: list[str], dataset_dir: Path, key: str) -> list[DatasetSource]:
    """The files behind ``names``, resolved through LLaMA-Factory's own registry parser."""
    from llamafactory.data.parser import get_dataset_list

    try:
        attributes = get_dataset_list(names, str(dataset_dir))
    except ValueError as error:
        raise TokenReportError(f"`{key}`: {error} Fix: prepare the dataset (which registers it) or correct the name.") from error
    sources = []
    for name, attr in zip(names, attributes, strict=True):
        where = f"`{key}`: dataset `{name}`"
        if attr.load_from != "file" or attr.formatting != "alpaca":
            raise TokenReportError(f"{where} is {attr.load_from}/{attr.formatting}; the token report reads local alpaca files. Fix: prepare it locally.")
        if attr.num_samples is not None:
            raise TokenReportError(f"{where} sets num_samples (a random resample the report does not replay). Fix: remove num_samples.")
        path = Path(dataset_dir) / attr.dataset_name
        if not path.is_file():
            raise TokenReportError(f"{where}: {path} does not exist (registered but not prepared). Fix: {_prepare_hint(path)}.")
        sources.append(DatasetSource(name, path, attr.prompt or "instruction", attr.query))
    return sources


def read_contents(source: DatasetSource, max_samples: int | None = None) -> Iterator[str]:
    """Each record's text as LLaMA-Factory's alpaca converter builds it ("prompt\\nquery")."""
    records: Iterable[tuple[int, dict[str, Any]]]
    if source.path.suffix == ".json":
        loaded = json.loads(source.path.read_text(encoding="utf-8"))
        if not isinstance(loaded, list):
            raise TokenReportError(f"{source.path}: expected a JSON list of records, got {type(loaded).__name__}.")
        records = enumerate(loaded, start=1)
    else:
        records = iter_jsonl(source.path)
    for count, (number, record) in enumerate(records):
        if max_samples is not None and count >= max_samples:
            return
        parts = [record.get(source.prompt), record.get(source.query) if source.query else None]
        if parts[0] is not None and not isinstance(parts[0], str):
            raise TokenReportError(f"{source.path}, record {number}: `{source.prompt}` is {type(parts[0]).__name__}, not text. Fix: re-prepare the dataset.")
        yield "\n".join(part for part in parts if part)


def _cache_dir() -> Path:
    # The same root as the tiny-model cache (medfactory.run.tiny_model.cache_root).
    return Path(os.environ.get("MEDFACTORY_CACHE", Path.home() / ".cache" / "medfactory")) / "token_lengths"


def dataset_lengths(source: DatasetSource, tokenizer: Any, data_args: Any, fingerprint: str, use_cache: bool = True) -> list[int]:
    """Tokens per note of one dataset file (cached by file content, columns, tokenizer and EOS rule)."""
    key = hashlib.sha256(
        json.dumps([sha256_file(source.path), source.prompt, source.query, fingerprint, data_args.template == "llama3", data_args.max_samples]).encode()
    ).hexdigest()[:32]
    cached = _cache_dir() / f"{key}.json"
    if use_cache and cached.is_file():
        with contextlib.suppress(ValueError):
            return [int(length) for length in json.loads(cached.read_text(encoding="utf-8"))]
    lengths = note_lengths(read_contents(source, data_args.max_samples), tokenizer, data_args)
    if use_cache:
        with atomic_write(cached) as handle:
            json.dump(lengths, handle, separators=(",", ":"))
    return lengths


@dataclass
class TokenReport:
    """Tokens in a recipe's corpus versus tokens in its training blocks, and what its eval set makes."""

    recipe: str
    tokenizer: str
    block_size: int
    cutoff_len: int
    preprocessing_batch_size: int
    preprocessing_num_workers: int | None
    datasets: dict[str, dict[str, int]]
    train: PackingResult
    evaluation: dict[str, PackingResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    min_fraction: float = MIN_TRAINED_FRACTION

    @property
    def problems(self) -> list[str]:
        """Why this recipe must not train as it is (empty when it may)."""
        problems = []
        if self.train.trained_fraction < self.min_fraction:
            problems.append(
                f"{self.recipe}: trains {self.train.trained_fraction:.2%} of its corpus tokens, below {self.min_fraction:.0%} "
                f"({self.train.dropped_tokens:,} tokens in dropped batch remainders over {self.train.batches} batches, "
                f"{self.train.bos_overwritten:,} overwritten by BOS). Fix: raise `preprocessing_batch_size` "
                "(fewer batches, fewer remainders) and lower `preprocessing_num_workers` (each worker's shard drops its own), "
                "or add data: a corpus of a few blocks loses up to one block."
            )
        for name, result in self.evaluation.items():
            if result.blocks == 0:
                where = "`val_size`" if name == "val_size" else f"`eval_dataset` {name}"
                problems.append(
                    f"{self.recipe}: {where}: {result.corpus_tokens:,} tokens make no block of {result.block_size:,}; "
                    "LLaMA-Factory stops with 'Cannot find sufficient samples'. Fix: a larger validation split or a smaller cutoff_len."
                )
        return problems

    def as_dict(self) -> dict[str, Any]:
        record = {key: value for key, value in asdict(self).items() if key not in ("train", "evaluation")}
        return {**record, "train": self.train.as_dict(), "evaluation": {k: v.as_dict() for k, v in self.evaluation.items()}, "problems": self.problems}


def _merged_lengths(
    sources: list[DatasetSource], tokenizer: Any, data_args: Any, fingerprint: str, use_cache: bool
) -> tuple[list[int], dict[str, dict[str, int]]]:
    merged: list[int] = []
    per_dataset = {}
    for source in sources:
        lengths = dataset_lengths(source, tokenizer, data_args, fingerprint, use_cache)
        per_dataset[source.name] = {"notes": len(lengths), "tokens": sum(lengths)}
        merged += lengths  # mix_strategy concat: datasets in the order listed
    return merged, per_dataset


def _val_size_split(lengths: list[int], val_size: float, seed: int) -> tuple[list[int], list[int]]:
    """``val_size`` as LLaMA-Factory applies it: datasets' train_test_split of the notes, before packing."""
    from datasets import Dataset

    split = Dataset.from_dict({"i": list(range(len(lengths)))}).train_test_split(test_size=int(val_size) if val_size > 1 else val_size, seed=seed)
    return [lengths[i] for i in split["train"]["i"]], [lengths[i] for i in split["test"]["i"]]


def token_report(
    recipe: Path,
    overrides: Mapping[str, Any] | None = None,
    tokenizer_spec: str | Path | None = None,
    root: Path = Path("."),
    min_fraction: float = MIN_TRAINED_FRACTION,
    use_cache: bool = True,
) -> TokenReport:
    """Account for every token of a stage-pt recipe's datasets, as LLaMA-Factory 0.9.5 would pack them."""
    from llamafactory.data.template import get_template_and_fix_tokenizer

    recipe = Path(recipe)
    values = {**load_recipe(recipe), **(overrides or {})}
    data_args = recipe_data_arguments(values, recipe)
    tokenizer, tokenizer_name = load_tokenizer(tokenizer_spec, values)
    get_template_and_fix_tokenizer(tokenizer, data_args)  # as run_pt does before packing (EOS / pad fixes)
    fingerprint = tokenizer_fingerprint(tokenizer)
    dataset_dir = Path(root) / data_args.dataset_dir
    train_sources = dataset_sources(list(data_args.dataset or []), dataset_dir, "dataset")
    if not train_sources:
        raise TokenReportError(f"{recipe}: `dataset` is empty. Fix: name the pt datasets to train on.")
    train_lengths, per_dataset = _merged_lengths(train_sources, tokenizer, data_args, fingerprint, use_cache)
    evaluation: dict[str, list[int]] = {}
    if data_args.val_size > 1e-6:
        train_lengths, evaluation["val_size"] = _val_size_split(train_lengths, data_args.val_size, int(values.get("seed", 42)))
    elif data_args.eval_dataset:
        eval_sources = dataset_sources(list(data_args.eval_dataset), dataset_dir, "eval_dataset")
        groups = [[source] for source in eval_sources] if data_args.eval_on_each_dataset else [eval_sources]
        for group in groups:
            lengths, eval_counts = _merged_lengths(group, tokenizer, data_args, fingerprint, use_cache)
            evaluation[",".join(source.name for source in group)] = lengths
            per_dataset.update({f"{name} (eval)": counts for name, counts in eval_counts.items()})
    notes = []
    if data_args.tokenized_path and (Path(root) / data_args.tokenized_path).exists():
        notes.append(
            f"tokenized_path {data_args.tokenized_path} exists: LLaMA-Factory loads it and ignores the datasets and packing "
            "settings above. Delete it after changing either."
        )
    return TokenReport(
        recipe=str(recipe),
        tokenizer=tokenizer_name,
        block_size=data_args.cutoff_len,
        cutoff_len=int(values.get("cutoff_len", 2048)),
        preprocessing_batch_size=data_args.preprocessing_batch_size,
        preprocessing_num_workers=data_args.preprocessing_num_workers,
        datasets=per_dataset,
        train=pack_lengths(train_lengths, tokenizer, data_args),
        evaluation={name: pack_lengths(lengths, tokenizer, data_args) for name, lengths in evaluation.items()},
        notes=notes,
        min_fraction=min_fraction,
    )


def format_report(report: TokenReport) -> str:
    """The report as a person reads it: per dataset, then what packing keeps."""
    from medfactory.base.tables import markdown_table

    lines = [
        f"{report.recipe}: tokenizer {report.tokenizer}",
        f"blocks of {report.block_size:,} tokens (cutoff_len {report.cutoff_len:,}"
        + (", minus 1 for an explicit `packing: true`)" if report.block_size != report.cutoff_len else ")")
        + f"; preprocessing_batch_size {report.preprocessing_batch_size:,}; preprocessing_num_workers {report.preprocessing_num_workers}",
        "",
        markdown_table(["dataset", "notes", "tokens"], [[name, f"{c['notes']:,}", f"{c['tokens']:,}"] for name, c in report.datasets.items()]),
        "",
    ]
    rows = [("train", report.train), *((f"eval {name}", result) for name, result in report.evaluation.items())]
    header = ["set", "tokens", "shards", "batches", "blocks", "dropped remainders", "BOS overwrites", "trained tokens", "trained"]
    table_rows = [
        [name, f"{r.corpus_tokens:,}", r.shards, r.batches, f"{r.blocks:,}", f"{r.dropped_tokens:,}"]
        + [f"{r.bos_overwritten:,}", f"{r.trained_tokens:,}", f"{r.trained_fraction:.2%}"]
        for name, r in rows
    ]
    lines.append(markdown_table(header, table_rows))
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)
