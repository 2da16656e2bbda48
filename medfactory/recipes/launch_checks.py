"""What stops ``llamafactory-cli train`` at launch, checked offline: types, the parser, the launch rules.

``llamafactory-cli train recipe.yaml`` passes the YAML values to its argument dataclasses without
converting them (``learning_rate: "fast"`` parses), then ``get_train_args`` and
``_verify_model_args`` (``llamafactory/hparams/parser.py``) refuse argument combinations, the
model loader refuses some quantization settings and transformers' ``Trainer`` a few more, each
after minutes of start-up. Here every such check runs on the parsed dataclasses, without loading
a model, a tokenizer or a dataset: :data:`LAUNCH_RULES` holds each with LLaMA-Factory's own words
(``tests/test_recipes_check.py`` fails when LLaMA-Factory gains a check this table lacks), and
:data:`ENVIRONMENT_CHECKS` names the few that depend on how the job is launched, not on the recipe.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medfactory.recipes.problems import ParsedArgs, RecipeProblem, yaml_value


@functools.cache
def field_types() -> dict[str, tuple[Any, Any]]:
    """Every LLaMA-Factory argument: ``name -> (resolved type, default)``."""
    from llamafactory.hparams.parser import _TRAIN_ARGS

    found = {}
    for cls in _TRAIN_ARGS:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            found.setdefault(field.name, (hints.get(field.name, field.type), field.default))
    return found


# ----------------------------------------------------------------------------------------------
# Types: the YAML path does not convert, so a wrong type passes the parser and fails much later.
# ----------------------------------------------------------------------------------------------


def _accepts(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str or origin is typing.Literal or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return isinstance(value, str)  # a Literal's or an Enum's values are checked with their choices
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True  # torch.dtype, paths, GenerationConfig, ...: nothing a YAML file sets by mistake


TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping", list: "a list"}


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in typing.get_args(hint) if arg is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if typing.get_origin(hint) is typing.Literal or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return "a string"
    return TYPE_NAMES.get(typing.get_origin(hint) or hint, getattr(hint, "__name__", str(hint)))


def type_problems(path: Path, values: dict[str, Any]) -> list[RecipeProblem]:
    """A value of the wrong type for its LLaMA-Factory field (``learning_rate: fast``, ``lora_rank: 8.5``)."""
    fields = field_types()
    problems = []
    for key, value in values.items():
        if key not in fields or value is None or _accepts(fields[key][0], value):
            continue
        hint, default = fields[key]
        message = (
            f"is {value!r} ({type(value).__name__}) but LLaMA-Factory expects {_type_name(hint)}. Its YAML loader does not "
            "convert values, so the parser accepts this and the run fails after model loading and tokenization."
        )
        if isinstance(value, bool) and _accepts(hint, "text"):
            word = "no" if value is False else "yes"
            message += " YAML reads a bare no / yes / off / on as a boolean."
            fix = f'quote the word: `{key}: "{word}"`.'
        else:
            example = f", e.g. `{key}: {yaml_scalar(default)}` (its default)" if default not in (None, dataclasses.MISSING) else ""
            fix = f"write {_type_name(hint)}{example}."
        problems.append(RecipeProblem(path, key, message, fix))
    return problems


def yaml_scalar(value: Any) -> str:
    """A value as it must be written in YAML: quoted when YAML would read the bare word as something else (``"no"``)."""
    import yaml

    text = yaml_value(value)
    return f'"{text}"' if isinstance(value, (str, enum.Enum)) and not isinstance(yaml.safe_load(text), str) else text


# ----------------------------------------------------------------------------------------------
# LLaMA-Factory's parser itself (dataclass __post_init__ checks), errors mapped to the key they name.
# ----------------------------------------------------------------------------------------------

PARSER_FIXES = {
    "Cannot specify `val_size` if `eval_dataset`": "remove `val_size`: the `eval_dataset` is the held-out set (LLaMA-Factory takes one or "
    "the other; a prepared `<name>_validation` set is patient-disjoint, a `val_size` split of packed blocks is not).",
    "`interleave_probs` is only valid for interleaved mixing": "set `mix_strategy: interleave_under` (or interleave_over), or remove `interleave_probs`.",
    "The length of dataset and interleave probs": "give `interleave_probs` one probability per dataset, in the same order.",
}


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _parser_problem(path: Path, values: dict[str, Any], error: Exception) -> RecipeProblem:
    text = str(error) or type(error).__name__
    named = re.findall(r"`([A-Za-z0-9_]+)`", text)
    key = next((name for name in named if name in values), named[0] if named else None)
    fix = next((fix for start, fix in PARSER_FIXES.items() if start in text), None)
    if fix is None:
        fix = f"change {', '.join(f'`{name}`' for name in dict.fromkeys(named))} as the message says." if named else "correct the value it names."
    return RecipeProblem(path, key, f"LLaMA-Factory's parser rejects the recipe: {text}", fix)


def parse_recipe(path: Path, values: dict[str, Any]) -> tuple[ParsedArgs | None, list[RecipeProblem]]:
    """The recipe parsed by LLaMA-Factory's own parser (None when it refuses), and its errors and deprecations."""
    import torch
    from llamafactory.hparams.parser import _parse_train_args

    parse_values = dict(values)
    if not torch.cuda.is_available():
        # Only for parsing here: transformers refuses bf16 without a GPU unless use_cpu is set.
        parse_values["use_cpu"] = True
    collector = _WarningCollector()
    watched = [logging.getLogger("transformers"), logging.getLogger("llamafactory")]
    for logger in watched:
        logger.addHandler(collector)
    try:
        parsed = _parse_train_args(parse_values)
    except (ValueError, TypeError, AssertionError) as error:
        return None, [_parser_problem(path, values, error)]
    finally:
        for logger in watched:
            logger.removeHandler(collector)
    deprecated = [
        RecipeProblem(path, None, f"deprecated: {message}", "use the replacement the message names.")
        for message in collector.messages
        if "deprecated" in message.lower()
    ]
    return ParsedArgs(values, *parsed), deprecated


# ----------------------------------------------------------------------------------------------
# The launch rules: each check of get_train_args / _verify_model_args / the model loader / Trainer
# that depends on the recipe alone, with the words LLaMA-Factory (or transformers) stops with.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LaunchRule:
    """One argument combination refused at launch: the keys involved (the first is reported), when, the words, the fix."""

    keys: tuple[str, ...]
    refused: Callable[[ParsedArgs], bool]
    says: str
    fix: str
    where: str = "get_train_args"


WHERE = {
    "get_train_args": "LLaMA-Factory's get_train_args refuses it at launch",
    "_verify_model_args": "LLaMA-Factory's _verify_model_args refuses it at launch",
    "loader": "LLaMA-Factory's model loader refuses it after tokenization, when it quantizes the model",
    "Trainer": "transformers' Trainer refuses it after the model is loaded",
}


def zero3_enabled(args: ParsedArgs, root: Path | None = None) -> bool:
    """Whether the recipe's ``deepspeed`` configuration is ZeRO stage 3 (read from the dict or the JSON file)."""
    config = args.value("deepspeed")
    if isinstance(config, (str, Path)):
        candidates = [Path(config), *([Path(root) / config] if root else [])]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        config = json.loads(found.read_text(encoding="utf-8")) if found else {}
    stage = (config or {}).get("zero_optimization", {}).get("stage")
    return str(stage) == "3"


def _not_sft(args: ParsedArgs) -> bool:
    return args.finetuning.stage != "sft"


def _no_eval_set(args: ParsedArgs) -> bool:
    return args.data.eval_dataset is None and args.data.val_size < 1e-6


def _quantized(args: ParsedArgs) -> bool:
    return args.model.quantization_bit is not None


def _bnb(args: ParsedArgs) -> bool:
    return _quantized(args) and str(yaml_value(args.model.quantization_method)) == "bnb"


def _method(args: ParsedArgs, name: str) -> bool:
    return _quantized(args) and str(yaml_value(args.model.quantization_method)) == name


LAUNCH_RULES: tuple[LaunchRule, ...] = (
    LaunchRule(("predict_with_generate", "stage"), lambda a: _not_sft(a) and a.training.predict_with_generate,
               "`predict_with_generate` cannot be set as True except SFT.",
               "generate with `stage: sft` (prediction trains nothing, any model works), or remove `predict_with_generate`."),
    LaunchRule(("neat_packing", "stage"), lambda a: _not_sft(a) and a.data.neat_packing,
               "`neat_packing` cannot be set as True except SFT.", "remove `neat_packing` (stage pt packs with `packing`)."),
    LaunchRule(("train_on_prompt", "mask_history", "stage"), lambda a: _not_sft(a) and (a.data.train_on_prompt or a.data.mask_history),
               "`train_on_prompt` or `mask_history` cannot be set as True except SFT.", "remove `train_on_prompt` / `mask_history`."),
    LaunchRule(("do_predict", "predict_with_generate"),
               lambda a: a.finetuning.stage == "sft" and a.training.do_predict and not a.training.predict_with_generate,
               "Please enable `predict_with_generate` to save model predictions.", "add `predict_with_generate: true`."),
    LaunchRule(("load_best_model_at_end", "stage"), lambda a: a.finetuning.stage in ("rm", "ppo") and a.training.load_best_model_at_end,
               "RM and PPO stages do not support `load_best_model_at_end`.", "remove `load_best_model_at_end`."),
    LaunchRule(("do_train", "stage"), lambda a: a.finetuning.stage == "ppo" and not a.training.do_train,
               "PPO training does not support evaluation, use the SFT stage to evaluate models.", "set `do_train: true`, or evaluate with `stage: sft`."),
    LaunchRule(("shift_attn", "stage"), lambda a: a.finetuning.stage == "ppo" and a.model.shift_attn,
               "PPO training is incompatible with S^2-Attn.", "remove `shift_attn`."),
    LaunchRule(("use_kt", "reward_model_type"), lambda a: a.finetuning.stage == "ppo" and a.finetuning.reward_model_type == "lora" and a.model.use_kt,
               "KTransformers does not support lora reward model.", "use `reward_model_type: full`, or remove `use_kt`."),
    LaunchRule(("use_unsloth", "reward_model_type"),
               lambda a: a.finetuning.stage == "ppo" and a.finetuning.reward_model_type == "lora" and a.model.use_unsloth,
               "Unsloth does not support lora reward model.", "use `reward_model_type: full`, or remove `use_unsloth`."),
    LaunchRule(("report_to", "stage"),
               lambda a: a.finetuning.stage == "ppo" and any(r not in ("wandb", "tensorboard", "trackio", "none") for r in a.training.report_to or []),
               "PPO only accepts wandb, tensorboard, or trackio logger.", "set `report_to: none`."),
    LaunchRule(("streaming", "max_steps"), lambda a: a.training.max_steps == -1 and a.data.streaming,
               "Please specify `max_steps` in streaming mode.", "add `max_steps: N` (a stream has no length to count epochs by)."),
    LaunchRule(("do_train", "dataset"), lambda a: a.training.do_train and a.data.dataset is None,
               "Please specify dataset for training.", "add `dataset: <name>` (a dataset registered in dataset_info.json)."),
    LaunchRule(("eval_strategy", "do_eval", "do_predict", "val_size", "eval_dataset"),
               lambda a: (a.training.do_eval or a.training.do_predict or a.training.predict_with_generate) and _no_eval_set(a),
               "Please make sure eval_dataset be provided or val_size >1e-6",
               "add `eval_dataset: <name>_validation` (prepare writes patient-disjoint validation sets), or `eval_strategy: no`."),
    LaunchRule(("predict_with_generate", "deepspeed"), lambda a: a.training.predict_with_generate and zero3_enabled(a),
               "`predict_with_generate` is incompatible with DeepSpeed ZeRO-3.", "predict without DeepSpeed, or with ZeRO-2."),
    LaunchRule(("compute_accuracy", "predict_with_generate"), lambda a: a.training.predict_with_generate and a.finetuning.compute_accuracy,
               "Cannot use `predict_with_generate` and `compute_accuracy` together.", "remove `compute_accuracy`."),
    LaunchRule(("quantization_device_map", "do_train"), lambda a: a.training.do_train and a.model.quantization_device_map == "auto",
               "Cannot use device map for quantized models in training.", "remove `quantization_device_map` (it is for inference)."),
    LaunchRule(("pissa_init", "deepspeed"), lambda a: a.finetuning.pissa_init and zero3_enabled(a),
               "Please use scripts/pissa_init.py to initialize PiSSA in DeepSpeed ZeRO-3.", "remove `pissa_init`, or use ZeRO-2."),
    LaunchRule(("pure_bf16", "deepspeed"), lambda a: a.finetuning.pure_bf16 and zero3_enabled(a),
               "`pure_bf16` is incompatible with DeepSpeed ZeRO-3.", "use `bf16: true` instead of `pure_bf16`."),
    LaunchRule(("deepspeed", "use_galore", "use_apollo"),
               lambda a: a.training.deepspeed is not None and (a.finetuning.use_galore or a.finetuning.use_apollo),
               "GaLore and APOLLO are incompatible with DeepSpeed yet.", "remove `deepspeed`, or GaLore / APOLLO."),
    LaunchRule(("fp8", "quantization_bit"), lambda a: a.training.fp8 and _quantized(a),
               "FP8 training is not compatible with quantization. Please disable one of them.", "remove `fp8` or `quantization_bit`."),
    LaunchRule(("infer_backend",), lambda a: str(yaml_value(a.model.infer_backend)) != "huggingface",
               "vLLM/SGLang backend is only available for API, CLI and Web.", "remove `infer_backend` (training and prediction use huggingface)."),
    LaunchRule(("use_unsloth", "deepspeed"), lambda a: a.model.use_unsloth and zero3_enabled(a),
               "Unsloth is incompatible with DeepSpeed ZeRO-3.", "remove `use_unsloth`, or use ZeRO-2."),
    LaunchRule(("use_kt", "deepspeed"), lambda a: a.model.use_kt and zero3_enabled(a),
               "KTransformers is incompatible with DeepSpeed ZeRO-3.", "remove `use_kt`, or use ZeRO-2."),
    LaunchRule(("adapter_name_or_path", "finetuning_type"),
               lambda a: a.model.adapter_name_or_path is not None and a.finetuning.finetuning_type != "lora",
               "Adapter is only valid for the LoRA method.", "set `finetuning_type: lora`, or remove `adapter_name_or_path`.", "_verify_model_args"),
    LaunchRule(("quantization_bit", "finetuning_type"), lambda a: _quantized(a) and a.finetuning.finetuning_type not in ("lora", "oft"),
               "Quantization is only compatible with the LoRA or OFT method.",
               "set `finetuning_type: lora` (QLoRA), or remove `quantization_bit` to train every weight in 16-bit.", "_verify_model_args"),
    LaunchRule(("pissa_init", "quantization_bit"), lambda a: _quantized(a) and a.finetuning.pissa_init,
               "Please use scripts/pissa_init.py to initialize PiSSA for a quantized model.", "remove `pissa_init`.", "_verify_model_args"),
    LaunchRule(("resize_vocab", "quantization_bit"), lambda a: _quantized(a) and a.model.resize_vocab,
               "Cannot resize embedding layers of a quantized model.", "remove `resize_vocab`, or `quantization_bit`.", "_verify_model_args"),
    LaunchRule(("create_new_adapter", "quantization_bit"),
               lambda a: _quantized(a) and a.model.adapter_name_or_path is not None and a.finetuning.create_new_adapter,
               "Cannot create new adapter upon a quantized model.", "remove `create_new_adapter` (training continues the adapter).", "_verify_model_args"),
    LaunchRule(("adapter_name_or_path", "quantization_bit"),
               lambda a: _quantized(a) and a.model.adapter_name_or_path is not None and len(a.model.adapter_name_or_path) != 1,
               "Quantized model only accepts a single adapter. Merge them first.", "merge the adapters first, then name one.", "_verify_model_args"),
    LaunchRule(("quantization_bit", "quantization_method"), lambda a: _bnb(a) and a.model.quantization_bit not in (4, 8),
               "Bitsandbytes only accepts 4-bit or 8-bit quantization.", "set `quantization_bit: 4` (QLoRA) or 8.", "loader"),
    LaunchRule(("quantization_bit", "quantization_method"), lambda a: _method(a, "hqq") and a.model.quantization_bit not in (8, 6, 5, 4, 3, 2, 1),
               "HQQ only accepts 1/2/3/4/5/6/8-bit quantization.", "set `quantization_bit` to one of 1-6 or 8.", "loader"),
    LaunchRule(("quantization_bit", "quantization_method"), lambda a: _method(a, "eetq") and a.model.quantization_bit != 8,
               "EETQ only accepts 8-bit quantization.", "set `quantization_bit: 8`.", "loader"),
    LaunchRule(("quantization_bit", "deepspeed"),
               lambda a: _bnb(a) and (zero3_enabled(a) or a.model.quantization_device_map == "auto") and a.model.quantization_bit != 4,
               "Only 4-bit quantized model can use fsdp+qlora or auto device map.", "set `quantization_bit: 4`.", "loader"),
    LaunchRule(("quantization_method", "deepspeed"), lambda a: (_method(a, "hqq") or _method(a, "eetq")) and zero3_enabled(a),
               "HQQ quantization is incompatible with DeepSpeed ZeRO-3 or FSDP.", "use `quantization_method: bnb`, or ZeRO-2.", "loader"),
    LaunchRule(("save_strategy", "metric_for_best_model"),
               lambda a: str(yaml_value(a.training.save_strategy)) == "best" and a.training.metric_for_best_model is None,
               "`args.metric_for_best_model` must be provided when using 'best' save_strategy or if `args.load_best_model_at_end` is set to `True`.",
               "add `metric_for_best_model: eval_loss`.", "Trainer"),
)  # fmt: skip

# get_train_args checks that depend on how and where the job is launched, not on the recipe.
ENVIRONMENT_CHECKS = {
    "Please launch distributed training with `llamafactory-cli` or `torchrun`.": "several GPUs without torchrun",
    "Please use `FORCE_TORCHRUN=1` to launch DeepSpeed training.": "DeepSpeed on one GPU needs FORCE_TORCHRUN=1 (docs/production.md)",
    "This device does not support `pure_bf16`.": "the GPU",
    "Distributed training does not support layer-wise GaLore.": "the number of GPUs",
    "Distributed training does not support layer-wise APOLLO.": "the number of GPUs",
    "Radio-based BAdam does not yet support distributed training, use layer-wise BAdam.": "the number of GPUs",
    "Layer-wise BAdam only supports DeepSpeed ZeRO-3 training.": "the number of GPUs",
    "Output directory already exists and is not empty. Please set `overwrite_output_dir`.": "what output_dir holds on disk",
}


def launch_problems(path: Path, args: ParsedArgs) -> list[RecipeProblem]:
    """Every launch rule the parsed recipe breaks."""
    problems = []
    for rule in LAUNCH_RULES:
        if not rule.refused(args):
            continue
        written = [key for key in rule.keys if args.written(key)] or list(rule.keys)
        combination = " with ".join(args.show(key) for key in written)
        problems.append(RecipeProblem(path, written[0], f"{combination}: {WHERE[rule.where]}: \"{rule.says}\"", rule.fix))
    return problems


# The packages LLaMA-Factory's _check_extra_dependencies (and its model loader) require when a key is on.
EXTRA_DEPENDENCIES: tuple[tuple[str, Callable[[ParsedArgs], bool], tuple[str, ...]], ...] = (
    ("plot_loss", lambda a: a.finetuning.plot_loss, ("matplotlib",)),
    ("predict_with_generate", lambda a: a.training.predict_with_generate, ("jieba", "nltk", "rouge_chinese")),
    ("deepspeed", lambda a: bool(a.training.deepspeed), ("deepspeed",)),
    ("use_unsloth", lambda a: a.model.use_unsloth, ("unsloth",)),
    ("enable_liger_kernel", lambda a: a.model.enable_liger_kernel, ("liger-kernel",)),
    ("mixture_of_depths", lambda a: a.model.mixture_of_depths is not None, ("mixture-of-depth>=1.1.6",)),
    ("use_galore", lambda a: a.finetuning.use_galore, ("galore_torch",)),
    ("use_apollo", lambda a: a.finetuning.use_apollo, ("apollo_torch",)),
    ("use_badam", lambda a: a.finetuning.use_badam, ("badam>=1.2.1",)),
    ("use_adam_mini", lambda a: a.finetuning.use_adam_mini, ("adam-mini",)),
    ("use_swanlab", lambda a: a.finetuning.use_swanlab, ("swanlab",)),
    ("use_kt", lambda a: a.model.use_kt, ("kt-kernel", "transformers-kt", "accelerate-kt")),
    ("quantization_bit", lambda a: _bnb(a) and a.model.quantization_bit == 4, ("bitsandbytes>=0.39.0",)),
    ("quantization_bit", lambda a: _method(a, "hqq"), ("hqq",)),
    ("quantization_bit", lambda a: _method(a, "eetq"), ("eetq",)),
)


def dependency_problems(path: Path, args: ParsedArgs) -> list[RecipeProblem]:
    """A package LLaMA-Factory requires for a key the recipe turns on, missing from this environment."""
    from llamafactory.extras.misc import check_version

    problems = []
    for key, needed, requirements in EXTRA_DEPENDENCIES:
        if not needed(args):
            continue
        for requirement in requirements:
            try:
                check_version(requirement, mandatory=True)
            except ImportError as error:
                message = f"{args.show(key)} needs `{requirement}`, which this environment lacks ({error})."
                problems.append(RecipeProblem(path, key, message, f"run `pip install '{requirement}'`."))
    return problems
