"""Values LLaMA-Factory and transformers accept and then silently do not act on.

Each rule names the source line that ignores the value (LLaMA-Factory 0.9.5, transformers 5.x);
docs/recipes_check.md lists them. A rule fires only on keys the recipe itself writes, never on
defaults: a value nobody wrote cannot mislead anyone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from medfactory.recipes.problems import ParsedArgs, RecipeProblem, yaml_value

SCHEDULERS_WITHOUT_WARMUP = ("constant", "reduce_lr_on_plateau", "greedy")
GENERATION_KEYS = ("do_sample", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens", "max_length", "repetition_penalty", "length_penalty")


@dataclasses.dataclass(frozen=True)
class IgnoredRule:
    """Keys whose written values are ignored when ``ignored`` holds (the first written one is reported)."""

    keys: tuple[str, ...]
    ignored: Callable[[ParsedArgs], bool]
    because: str
    fix: str
    context: tuple[str, ...] = ()  # keys shown beside the ignored one, as written or as their default
    each: bool = False  # report every written key on its own (a group of keys, each ignored alike)


def _scheduler(args: ParsedArgs) -> str:
    return str(yaml_value(args.training.lr_scheduler_type))


def _warmup_ignored(args: ParsedArgs) -> bool:
    return _scheduler(args) in SCHEDULERS_WITHOUT_WARMUP and float(args.training.warmup_steps or 0) > 0


def _uses_reference(args: ParsedArgs) -> bool:
    return args.finetuning.stage in ("kto", "ppo") or (args.finetuning.stage == "dpo" and args.finetuning.use_ref_model)


def _strategy(args: ParsedArgs, key: str) -> str:
    return str(yaml_value(args.value(key)))


def _held_out_unused(args: ParsedArgs) -> bool:
    held_out = args.data.val_size > 1e-6 or args.data.eval_dataset is not None
    return held_out and args.training.do_train and not (args.training.do_eval or args.training.do_predict)


def _bnb_4bit(args: ParsedArgs) -> bool:
    return str(yaml_value(args.model.quantization_method)) == "bnb" and args.model.quantization_bit == 4


IGNORED_RULES: tuple[IgnoredRule, ...] = (
    IgnoredRule(("lr_scheduler_type", "warmup_steps", "warmup_ratio"), lambda a: _warmup_ignored(a) and _scheduler(a) == "constant",
                "transformers' get_scheduler builds SchedulerType.CONSTANT without any warm-up (optimization.py: "
                "`if name == SchedulerType.CONSTANT: return schedule_func(optimizer)`), so the learning rate is constant from step 0.",
                "use `lr_scheduler_type: constant_with_warmup` (constant after the warm-up), or remove the warm-up."),
    IgnoredRule(("lr_scheduler_type", "warmup_steps", "warmup_ratio"), lambda a: _warmup_ignored(a) and _scheduler(a) != "constant",
                "transformers' get_scheduler passes no warm-up to reduce_lr_on_plateau or greedy (optimization.py).",
                "remove the warm-up, or use a scheduler with one (`cosine`, `linear`, `constant_with_warmup`)."),
    IgnoredRule(("lr_scheduler_kwargs",), lambda a: _scheduler(a) == "constant" and bool(a.training.lr_scheduler_kwargs),
                "transformers' get_scheduler calls the constant schedule with the optimizer only (optimization.py).",
                "remove `lr_scheduler_kwargs`, or use the scheduler they belong to.", context=("lr_scheduler_type",)),
    IgnoredRule(("quantization_method", "quantization_type", "double_quantization", "quantization_device_map"),
                lambda a: a.model.quantization_bit is None,
                "without `quantization_bit` nothing is quantized (model/model_utils/quantization.py reads these only when it is set).",
                "add `quantization_bit: 4` (QLoRA), or remove the key.", context=("quantization_bit",), each=True),
    IgnoredRule(("quantization_type", "double_quantization"), lambda a: a.model.quantization_bit is not None and not _bnb_4bit(a),
                "only bitsandbytes 4-bit reads them (model/model_utils/quantization.py builds BitsAndBytesConfig(load_in_8bit=True) for 8-bit).",
                "remove the key, or use `quantization_bit: 4` with `quantization_method: bnb`.",
                context=("quantization_bit", "quantization_method"), each=True),
    IgnoredRule(("ref_model_adapters", "ref_model_quantization_bit"), lambda a: a.finetuning.ref_model is None,
                "create_ref_model (train/trainer_utils.py) reads them only with `ref_model`; without it the reference is "
                "the base model without any adapter (LoRA) or a copy of the model.",
                "add `ref_model: <the base of the adapter>`, or remove the key.", context=("ref_model",), each=True),
    IgnoredRule(("ref_model", "ref_model_adapters", "ref_model_quantization_bit"), lambda a: not _uses_reference(a),
                "only stages dpo (not with pref_loss orpo / simpo: use_ref_model is false), kto and ppo use a reference model.",
                "remove the key.", context=("stage",), each=True),
    IgnoredRule(("pref_beta", "pref_ftx", "pref_bco_weight", "pref_loss", "dpo_label_smoothing", "simpo_gamma", "kto_chosen_weight",
                 "kto_rejected_weight"), lambda a: a.finetuning.stage not in ("dpo", "kto"),
                "preference-loss settings are read by the dpo and kto trainers only.", "remove the key, or use `stage: dpo`.",
                context=("stage",), each=True),
    IgnoredRule(("lora_rank", "lora_alpha", "lora_dropout", "loraplus_lr_embedding", "pissa_iter", "pissa_convert"),
                lambda a: a.finetuning.finetuning_type != "lora",
                "model/adapter.py reads LoRA settings only with `finetuning_type: lora`.", "remove the key, or use `finetuning_type: lora`.",
                context=("finetuning_type",), each=True),
    IgnoredRule(("lora_target",), lambda a: a.finetuning.finetuning_type in ("full", "freeze"),
                "model/adapter.py reads `lora_target` only for LoRA and OFT.", "remove the key, or use `finetuning_type: lora`.",
                context=("finetuning_type",)),
    IgnoredRule(("oft_target",), lambda a: True,
                "LLaMA-Factory 0.9.5 never reads it: OFT adapts the modules of `lora_target` (model/adapter.py).",
                "write the modules as `lora_target`, and remove `oft_target`."),
    IgnoredRule(("oft_rank", "oft_block_size", "module_dropout"), lambda a: a.finetuning.finetuning_type != "oft",
                "model/adapter.py reads OFT settings only with `finetuning_type: oft`.", "remove the key.", context=("finetuning_type",), each=True),
    IgnoredRule(("freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules"),
                lambda a: a.finetuning.finetuning_type != "freeze" and not a.finetuning.use_llama_pro,
                "model/adapter.py reads them only with `finetuning_type: freeze` (or use_llama_pro).", "remove the key.",
                context=("finetuning_type",), each=True),
    IgnoredRule(("eval_steps",), lambda a: _strategy(a, "eval_strategy") != "steps",
                "transformers evaluates every `eval_steps` only with `eval_strategy: steps`.", "set `eval_strategy: steps`, or remove `eval_steps`.",
                context=("eval_strategy",)),
    IgnoredRule(("save_steps",), lambda a: _strategy(a, "save_strategy") != "steps",
                "transformers saves every `save_steps` only with `save_strategy: steps`.", "set `save_strategy: steps`, or remove `save_steps`.",
                context=("save_strategy",)),
    IgnoredRule(("save_total_limit",), lambda a: _strategy(a, "save_strategy") == "no",
                "nothing is saved with `save_strategy: no`, so there is nothing to limit.", "set `save_strategy: steps`, or remove the key.",
                context=("save_strategy",)),
    IgnoredRule(("logging_steps",), lambda a: _strategy(a, "logging_strategy") != "steps",
                "transformers logs every `logging_steps` only with `logging_strategy: steps`.",
                "set `logging_strategy: steps`, or remove `logging_steps`.", context=("logging_strategy",)),
    IgnoredRule(("val_size", "eval_dataset"), _held_out_unused,
                "the held-out set is built but never evaluated (`eval_strategy: no`, no do_eval / do_predict); a `val_size` split is "
                "also taken out of the training data (data/data_utils.py split_dataset).",
                "set `eval_strategy: steps` (or epoch), or remove the held-out set.", context=("eval_strategy",)),
    IgnoredRule(("max_length",), lambda a: (a.generating.max_new_tokens or 0) > 0,
                "GeneratingArguments.to_dict drops `max_length` whenever `max_new_tokens` > 0 (its default is 1024).",
                "set the limit with `max_new_tokens`, and remove `max_length`.", context=("max_new_tokens",)),
    IgnoredRule(("generation_max_length",), lambda a: (a.generating.max_new_tokens or 0) > 0,
                "Seq2SeqTrainer uses it only when no max_new_tokens is passed, and LLaMA-Factory always passes one (default 1024).",
                "set the limit with `max_new_tokens`, and remove `generation_max_length`.", context=("max_new_tokens",)),
    IgnoredRule(("temperature", "top_p", "top_k"), lambda a: not a.generating.do_sample,
                "transformers' generate uses them only when sampling (GenerationConfig.validate: they are "
                "'only used in sample-based generation modes').",
                "set `do_sample: true`, or remove the key.", context=("do_sample",), each=True),
    IgnoredRule(GENERATION_KEYS, lambda a: not a.training.predict_with_generate,
                "LLaMA-Factory generates (and reads decoding settings) only with `predict_with_generate: true`.", "remove the key.",
                context=("predict_with_generate",), each=True),
    IgnoredRule(("mix_strategy", "interleave_probs"), lambda a: len(a.data.dataset or []) == 1 and a.data.mix_strategy != "concat",
                "merge_dataset (data/data_utils.py) returns a single dataset as it is: there is nothing to mix.", "remove the key, or add datasets.",
                context=("dataset",)),
)  # fmt: skip


def ignored_problems(path: Path, args: ParsedArgs) -> list[RecipeProblem]:
    """Every written value that LLaMA-Factory or transformers would silently not act on."""
    problems = []
    for rule in IGNORED_RULES:
        written = [key for key in rule.keys if args.written(key)]
        if not written or not rule.ignored(args):
            continue
        for reported in written if rule.each else [written[0]]:
            shown = [reported] + ([] if rule.each else written[1:]) + [key for key in rule.context if key not in written]
            combination = " with ".join(args.show(key) for key in shown)
            problems.append(RecipeProblem(path, reported, f"{combination} is silently ignored: {rule.because}", rule.fix))
    return problems
