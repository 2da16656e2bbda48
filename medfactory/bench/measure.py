"""``medfactory bench RECIPE``: throughput, memory and MFU of a training recipe, run through LLaMA-Factory.

A model with random weights and the exact configuration of the recipe's base model
(``medfactory/model_configs/``), a synthetic token stream that fills the recipe's context length,
and the recipe itself with only what a benchmark must change (model path, dataset, step count,
no checkpoints or evaluation) are run by LLaMA-Factory's own ``run_exp`` in a child process
(``medfactory/bench/worker.py``). It prints tokens/s per GPU, step time, peak memory, model FLOPs
utilisation and the projected hours and cost of the Clinical-BR workload. Without a GPU it runs the
same path on a tiny configuration. ``--sweep`` measures the speed settings that leave the training
the same. See docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import random
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medfactory.base import tables
from medfactory.base.atomic import atomic_write
from medfactory.bench.models import (
    BASE_MODELS,
    base_config_path,
    build_adapter,
    build_bench_model,
    shrink,
)
from medfactory.bench.perf_model import (
    PEAK_BF16_TFLOPS,
    FlopsPerToken,
    MemoryEstimate,
    estimate_memory,
    load_config,
    lora_params,
    mfu,
    model_shape,
    peak_bf16_tflops,
    training_flops_per_token,
)
from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.recipes.recipe_file import load_recipe, read_header
from medfactory.run.launch import run_with_progress

# The paper's run (Clinical-BR, Pinto et al. 2024): 309,151,121 tokens x 2 epochs on one A100.
PAPER_TOKENS = 309_151_121
PAPER_EPOCHS = 2
PAPER_SECONDS = 47 * 3600 + 56 * 60
PAPER_COST_BRL = 1250.0
PAPER_PRICE_PER_GPU_HOUR = PAPER_COST_BRL / (PAPER_SECONDS / 3600)  # R$ 26.08
TINY_CONTEXT = 256
BENCH_DATASET = "bench_synthetic"

# Keys a benchmark drops from the recipe: checkpoints, evaluation, cached tokenization and data mixing
# of the real corpora. None of them changes what one training step computes.
DROPPED_KEYS = (
    "tokenized_path", "val_size", "eval_strategy", "eval_steps", "per_device_eval_batch_size", "eval_dataset", "do_eval",
    "save_steps", "save_total_limit", "mix_strategy", "interleave_probs", "resume_from_checkpoint", "max_samples",
    "load_best_model_at_end", "metric_for_best_model", "num_train_epochs",
)  # fmt: skip

# Settings that change speed and memory but not the training (what is computed, on what, with which values).
SPEED_ONLY_KEYS = {
    "flash_attn", "enable_liger_kernel", "disable_gradient_checkpointing", "use_reentrant_gc", "torch_compile",
    "dataloader_num_workers", "preprocessing_num_workers", "dataloader_pin_memory",
}  # fmt: skip
EQUIVALENT_OPTIMIZERS = {frozenset({"adamw_torch", "adamw_torch_fused"})}  # the same AdamW update, one fused kernel


@dataclass
class BenchResult:
    """One measured run: what ran, and what it measured."""

    recipe: str
    variant: str
    settings: dict[str, Any]
    ok: bool
    error: str | None = None
    device: str = "cpu"
    tiny: bool = False
    context: int = 0
    sequence_length: int = 0  # tokens per trained sequence (LLaMA-Factory packs `packing: true` data in cutoff_len - 1 blocks)
    warmup_steps: int = 0
    measured_steps: int = 0
    step_seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    tokens_per_second: float = 0.0
    images_per_second: float = 0.0
    trainable_params: int = 0
    peak_memory_gib: float | None = None
    peak_allocated_gib: float | None = None
    peak_rss_gib: float | None = None
    estimated_memory_gib: float = 0.0
    flops_per_token: float = 0.0
    flops_per_image: float = 0.0
    peak_tflops: float | None = None
    mfu: float | None = None
    workload_tokens: int = PAPER_TOKENS * PAPER_EPOCHS
    workload_hours: float | None = None
    workload_cost: float | None = None
    price_per_gpu_hour: float = PAPER_PRICE_PER_GPU_HOUR
    same_training: list[str] = field(default_factory=list)  # training-defining keys this variant changes (empty: identical)

    @property
    def mean_step_seconds(self) -> float:
        return statistics.fmean(self.step_seconds) if self.step_seconds else 0.0


def training_differences(recipe: dict[str, Any], variant: dict[str, Any]) -> list[str]:
    """Keys on which ``variant`` trains differently from ``recipe`` (empty: the same training).

    Speed-only keys never count; micro-batch and accumulation count only if their product (the
    effective batch, hence tokens per optimizer step) changes; AdamW and fused AdamW are one update.
    """
    changed = []
    for key in sorted(set(recipe) | set(variant)):
        before, after = recipe.get(key), variant.get(key)
        if before == after or key in SPEED_ONLY_KEYS:
            continue
        if key == "optim" and frozenset({before, after}) in EQUIVALENT_OPTIMIZERS:
            continue
        if key in ("per_device_train_batch_size", "gradient_accumulation_steps"):
            continue
        changed.append(f"{key}: {before} -> {after}")

    def effective(values: dict[str, Any]) -> int:
        return int(values.get("per_device_train_batch_size", 1)) * int(values.get("gradient_accumulation_steps", 1))

    if effective(recipe) != effective(variant):
        changed.append(f"effective batch: {effective(recipe)} -> {effective(variant)} sequences per step")
    return changed


def _missing(module: str, package: str) -> str | None:
    """Why a variant that needs ``module`` is skipped, or None when it is installed."""
    return None if importlib.util.find_spec(module) else f"{package} not installed"


def _batch_variant(micro: int, accumulation: int) -> tuple[str, dict[str, Any], str | None]:
    """Micro-batch x accumulation of the same product: the same effective batch, another split."""
    overrides = {"per_device_train_batch_size": micro, "gradient_accumulation_steps": accumulation}
    return f"micro-batch {micro} x accumulation {accumulation}", overrides, None


def sweep_variants(recipe: dict[str, Any], on_gpu: bool) -> list[tuple[str, dict[str, Any], str | None]]:
    """(name, overrides, reason to skip or None) for each speed setting worth measuring on this recipe."""
    cuda_only = None if on_gpu else "needs a GPU"
    variants: list[tuple[str, dict[str, Any], str | None]] = [("as written", {}, None), ("attention: sdpa", {"flash_attn": "sdpa"}, None)]
    variants.append(("attention: fa2", {"flash_attn": "fa2"}, cuda_only or _missing("flash_attn", "flash-attn")))
    variants.append(("Liger kernels", {"enable_liger_kernel": True}, cuda_only or _missing("liger_kernel", "liger-kernel")))
    if recipe.get("optim", "adamw_torch") == "adamw_torch":
        variants.append(("fused AdamW", {"optim": "adamw_torch_fused"}, None))
    micro, accumulation = int(recipe.get("per_device_train_batch_size", 1)), int(recipe.get("gradient_accumulation_steps", 1))
    if accumulation % 2 == 0:
        variants.append(_batch_variant(micro * 2, accumulation // 2))
    if micro % 2 == 0:
        variants.append(_batch_variant(micro // 2, accumulation * 2))
    if not recipe.get("disable_gradient_checkpointing", False):
        variants.append(("no gradient checkpointing", {"disable_gradient_checkpointing": True}, None))
    variants.append(("torch.compile", {"torch_compile": True}, cuda_only))
    return variants


def _producer_lora(recipe_path: Path, adapter: str) -> dict[str, Any]:
    """LoRA settings of the recipe whose output_dir is ``adapter`` (the SFT run a DPO recipe continues)."""
    for candidate in sorted(recipe_path.parent.glob("*.yaml")):
        values = load_recipe(candidate)
        if str(values.get("output_dir", "")).rstrip("/") == adapter.rstrip("/"):
            return {key: values[key] for key in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target") if key in values}
    raise SystemExit(
        f"{recipe_path}: continues adapter {adapter!r}, but no recipe in {recipe_path.parent} writes it (output_dir). "
        "The benchmark builds a random adapter with that recipe's LoRA settings; add the recipe or drop adapter_name_or_path."
    )


def _words_text(rng: random.Random, words: list[str], count: int) -> str:
    return " ".join(rng.choice(words) for _ in range(count))


def write_synthetic_dataset(
    directory: Path, stage: str, vision_image_size: int | None, sequences: int, context: int, tokens_per_word: float, seed: int = 0
) -> dict[str, Any]:
    """Synthetic pt-BR clinical words, long enough that every sequence fills ``context`` tokens.

    pt: documents packed into blocks; sft: a prompt of a quarter context and a longer response (the
    template truncates the pair to exactly ``context``); dpo: the same with chosen and rejected; a
    vision recipe gets one 896 px noise image per example. Returns the dataset_info entry.
    """
    rng = random.Random(seed)
    words = sorted({word for note in generate_notes(200, seed=seed) for word in note.split()})

    def words_for(tokens: int) -> int:
        return int(tokens / tokens_per_word * 1.2) + 8  # 20 % margin for the tokenizer's variance

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bench.jsonl"
    with atomic_write(path) as handle:
        if stage == "pt":
            for _ in range(sequences + 1):
                handle.write(json.dumps({"text": _words_text(rng, words, words_for(context))}) + "\n")
            return {"file_name": str(path), "columns": {"prompt": "text"}}
        image = None
        if vision_image_size:
            image = directory / "noise.png"
            _write_noise_image(image, vision_image_size, seed)
        for _ in range(sequences + 2):
            prompt, answer = _words_text(rng, words, words_for(context // 4)), _words_text(rng, words, words_for(context))
            if stage == "dpo":
                record = {"instruction": prompt, "chosen": answer, "rejected": _words_text(rng, words, words_for(context))}
            elif image is not None:
                record = {
                    "messages": [{"role": "user", "content": "<image>" + prompt}, {"role": "assistant", "content": answer}],
                    "images": [str(image)],
                }
            else:
                record = {"instruction": prompt, "output": answer}
            handle.write(json.dumps(record) + "\n")
    if stage == "dpo":
        return {"file_name": str(path), "ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}
    if image is not None:
        tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
        return {"file_name": str(path), "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"}, "tags": tags}
    return {"file_name": str(path), "columns": {"prompt": "instruction", "response": "output"}}


def _write_noise_image(path: Path, size: int, seed: int) -> None:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)


@dataclass(frozen=True)
class BenchSetup:
    """Everything one benchmark of one recipe shares across its variants."""

    recipe_path: Path
    recipe: dict[str, Any]
    config_path: Path
    model_dir: Path
    workdir: Path
    tiny: bool
    on_gpu: bool
    context: int
    warmup: int
    steps: int
    base_overrides: dict[str, Any]
    lora: dict[str, Any]  # the LoRA settings trained: the recipe's, or those of the adapter it continues


def prepare_bench(
    recipe_path: Path,
    workdir: Path,
    warmup: int,
    steps: int,
    tiny: bool | None = None,
    context: int | None = None,
    model_config: Path | None = None,
) -> BenchSetup:
    """Check the recipe, build (or reuse) the random-weight model and the benchmark's fixed overrides."""
    import torch

    recipe = load_recipe(recipe_path)
    if not recipe.get("do_train"):
        raise SystemExit(f"{recipe_path}: not a training recipe (no do_train: true). `medfactory bench` measures training recipes.")
    if warmup < 1 or steps < 1:
        raise SystemExit("--warmup and --steps must be at least 1 (the first step compiles kernels and fills caches).")
    on_gpu = torch.cuda.is_available()
    tiny = (not on_gpu) if tiny is None else tiny
    config_path = model_config or base_config_path(str(recipe["model_name_or_path"]))
    values = json.loads(Path(config_path).read_text(encoding="utf-8"))
    if tiny:
        values = shrink(values)
    context = context or (min(int(recipe["cutoff_len"]), TINY_CONTEXT) if tiny else int(recipe["cutoff_len"]))
    print(f"[1/3] Building (or reusing) a random-weight model: {Path(config_path).name}{' (tiny)' if tiny else ''}")
    model_dir = build_bench_model(values, list(generate_notes(200, seed=1)), device="cuda" if on_gpu else "cpu")

    workdir = _fresh_scratch(workdir.resolve())
    overrides: dict[str, Any] = {
        "model_name_or_path": str(model_dir),
        "dataset": BENCH_DATASET,
        "dataset_dir": str(workdir / "data"),
        "max_steps": warmup + steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "plot_loss": False,
        "report_to": "none",
        "overwrite_output_dir": True,  # the benchmark's own scratch folder, never a recipe's saves/
        "overwrite_cache": True,
        # The trainer counts the tokens it trains on. Packed pt blocks have no padding, and their pad id is the
        # end-of-document id, so "non_padding" would miss one token per document there.
        "include_num_input_tokens_seen": "all" if recipe.get("stage") == "pt" else "non_padding",
        "cutoff_len": context,
        "preprocessing_num_workers": min(int(recipe.get("preprocessing_num_workers", 1)), os.cpu_count() or 1),
    }
    if not on_gpu:
        overrides.update(bf16=False, dataloader_num_workers=0)  # CPUs have no bf16 training path
    lora = {key: recipe[key] for key in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target") if key in recipe}
    adapter = recipe.get("adapter_name_or_path")
    if adapter:
        lora = _producer_lora(recipe_path, str(adapter))
        built = build_adapter(model_dir, lora, workdir / "adapter")
        overrides["adapter_name_or_path"] = str(built)
        if recipe.get("ref_model_adapters"):
            overrides["ref_model_adapters"] = str(built)
    if recipe.get("ref_model"):
        overrides["ref_model"] = str(model_dir)
    return BenchSetup(recipe_path, recipe, Path(config_path), model_dir, workdir, tiny, on_gpu, context, warmup, steps, overrides, lora)


def run_variant(
    setup: BenchSetup,
    name: str,
    variant: dict[str, Any],
    peak_tflops: float | None = None,
    price_per_gpu_hour: float = PAPER_PRICE_PER_GPU_HOUR,
    workload_tokens: int = PAPER_TOKENS * PAPER_EPOCHS,
) -> BenchResult:
    """Run the recipe with ``variant`` on top in a fresh worker process and compute its numbers."""
    recipe = setup.recipe
    args = {key: value for key, value in recipe.items() if key not in DROPPED_KEYS}
    args.update(setup.base_overrides)
    args.update(variant)
    run_dir = setup.workdir / _slug(name)
    args["output_dir"] = str(run_dir / "output")
    sequences_per_step = int(args.get("per_device_train_batch_size", 1)) * int(args.get("gradient_accumulation_steps", 1))
    total_sequences = sequences_per_step * (setup.warmup + setup.steps)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    sample = " ".join(generate_notes(5, seed=2))
    tokens_per_word = len(tokenizer(sample)["input_ids"]) / len(sample.split())
    config = load_config(setup.model_dir)
    vision = getattr(config, "vision_config", None)
    entry = write_synthetic_dataset(
        Path(args["dataset_dir"]), str(recipe["stage"]), vision.image_size if vision is not None else None, total_sequences, setup.context, tokens_per_word
    )
    (Path(args["dataset_dir"]) / "dataset_info.json").write_text(json.dumps({BENCH_DATASET: entry}, indent=2), encoding="utf-8")

    run_dir.mkdir(parents=True, exist_ok=True)
    args_path, result_path = run_dir / "args.json", run_dir / "result.json"
    args_path.write_text(json.dumps(args, indent=2), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if setup.on_gpu:
        # One process on one GPU: with several visible, the HF Trainer would wrap the model in DataParallel.
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    console_log = run_dir / "llamafactory.log"
    command = [sys.executable, "-m", "medfactory.bench.worker", str(args_path), str(result_path)]
    run_with_progress(command, env, console_log, Path(args["output_dir"]) / "trainer_log.jsonl", setup.warmup + setup.steps, desc=name)
    if not result_path.is_file():
        tail = "\n".join(console_log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        raise SystemExit(f"benchmark worker crashed before writing its result; last lines of {console_log}:\n{tail}")
    raw = json.loads(result_path.read_text(encoding="utf-8"))
    result = BenchResult(
        recipe=str(setup.recipe_path), variant=name, settings=variant, ok=bool(raw["ok"]), error=raw.get("error"),
        device=str(raw["device"]), tiny=setup.tiny, context=setup.context, sequence_length=trained_length(args), warmup_steps=setup.warmup,
        trainable_params=int(raw["trainable_params"]), peak_rss_gib=raw.get("peak_rss_gib"),
        peak_memory_gib=raw.get("peak_reserved_gib"), peak_allocated_gib=raw.get("peak_allocated_gib"),
        price_per_gpu_hour=price_per_gpu_hour, workload_tokens=workload_tokens,
        same_training=training_differences(recipe, {**recipe, **variant}),
    )  # fmt: skip
    if not result.ok:
        return result
    steps = raw["steps"]
    measured = steps[setup.warmup - 1 :]
    seconds = measured[-1]["time"] - measured[0]["time"]
    result.measured_steps = len(measured) - 1
    result.step_seconds = [later["time"] - earlier["time"] for earlier, later in itertools.pairwise(measured)]
    result.tokens = int(measured[-1]["tokens"] - measured[0]["tokens"])
    gpus = 1  # one worker process: tokens/s is per GPU
    result.tokens_per_second = result.tokens / seconds / gpus
    stage = str(recipe["stage"])
    sequences = sequences_per_step * (2 if stage == "dpo" else 1)  # DPO trains chosen and rejected together
    result.images_per_second = (sequences / result.mean_step_seconds) if vision is not None else 0.0
    flops, memory = recipe_costs(args, config, result.trainable_params)
    result.flops_per_token, result.flops_per_image = flops.total, flops.per_image
    result.peak_tflops = peak_tflops or peak_bf16_tflops(result.device)
    if result.peak_tflops:
        result.mfu = mfu(result.tokens_per_second, result.images_per_second, flops, result.peak_tflops)
    result.workload_hours = workload_tokens / result.tokens_per_second / 3600
    result.workload_cost = result.workload_hours * price_per_gpu_hour
    result.estimated_memory_gib = memory.total
    return result


def trained_length(args: dict[str, Any]) -> int:
    """Tokens per trained sequence: ``cutoff_len``, less one when the recipe sets ``packing: true`` or
    ``neat_packing``, which LLaMA-Factory 0.9.5 subtracts (DataArguments.__post_init__)."""
    return int(args["cutoff_len"]) - (1 if args.get("packing") or args.get("neat_packing") else 0)


def recipe_costs(args: dict[str, Any], config, trainable: int) -> tuple[FlopsPerToken, MemoryEstimate]:
    """Model FLOPs per token and the memory estimate of one training run with ``args`` on ``config``'s model:
    the one place both the measured run and ``--estimate`` take them from."""
    shape = model_shape(config)
    length = trained_length(args)
    dpo = args.get("stage") == "dpo"
    flops = training_flops_per_token(
        shape, length, "full" if args.get("finetuning_type", "lora") == "full" else "lora", trainable, with_reference_model=dpo,
        reference_adapter_params=trainable if args.get("ref_model_adapters") else 0,
        vision_trainable=not args.get("freeze_vision_tower", True),
    )  # fmt: skip
    sequences = int(args.get("per_device_train_batch_size", 1)) * (2 if dpo else 1)  # DPO: chosen and rejected
    memory = estimate_memory(
        shape, sequences, length, trainable, args.get("quantization_bit"), config.get_text_config().intermediate_size,
        gradient_checkpointing=not args.get("disable_gradient_checkpointing", False), reference_model=bool(args.get("ref_model")),
    )  # fmt: skip
    return flops, memory


SCRATCH_MARKER = ".medfactory-bench"


def _fresh_scratch(workdir: Path) -> Path:
    """Empty the benchmark's scratch folder; refuse any folder the benchmark did not create."""
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / SCRATCH_MARKER).is_file():
        raise SystemExit(f"{workdir}: exists and was not made by `medfactory bench`; choose an empty or new --workdir.")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / SCRATCH_MARKER).write_text("scratch folder of medfactory bench: emptied on every run\n", encoding="utf-8")
    return workdir


@dataclass(frozen=True)
class RecipeEstimate:
    """What a recipe costs per token and needs in memory at its real size, computed without a GPU."""

    recipe: str
    base: str
    sequence_length: int
    micro_batch: int
    trainable_params: int
    flops: FlopsPerToken
    flops_per_token_with_images: float  # one image per sequence for an image-text recipe
    memory_gib: float
    stage: str = "sft"
    paper_tokens_per_second: float = PAPER_TOKENS * PAPER_EPOCHS / PAPER_SECONDS

    def tokens_per_second_for_mfu(self, target: float, peak_tflops: float) -> float:
        return target * peak_tflops * 1e12 / self.flops_per_token_with_images


def estimate_recipe(recipe_path: Path, model_config: Path | None = None, overrides: dict[str, Any] | None = None) -> RecipeEstimate:
    """FLOPs per token and a memory estimate of ``recipe_path`` (with ``overrides``, as ``--set`` gives them) on its real base-model shapes."""
    recipe = {**load_recipe(recipe_path), **(overrides or {})}
    if not recipe.get("do_train"):
        raise SystemExit(f"{recipe_path}: not a training recipe (no do_train: true). `medfactory bench` measures training recipes.")
    config = load_config(model_config or base_config_path(str(recipe["model_name_or_path"])))
    lora = {key: recipe[key] for key in ("lora_rank", "lora_target") if key in recipe}
    if recipe.get("adapter_name_or_path"):
        lora = _producer_lora(recipe_path, str(recipe["adapter_name_or_path"]))
    full = recipe.get("finetuning_type", "lora") == "full"
    trainable = model_shape(config).total_params if full else lora_params(config, int(lora.get("lora_rank", 8)), str(lora.get("lora_target", "all")))
    length = trained_length(recipe)
    flops, memory = recipe_costs(recipe, config, trainable)
    return RecipeEstimate(
        str(recipe_path), str(recipe["model_name_or_path"]), length, int(recipe.get("per_device_train_batch_size", 1)), trainable,
        flops, flops.total + flops.per_image / length, memory.total, str(recipe.get("stage")),
    )  # fmt: skip


def format_estimate(estimate: RecipeEstimate) -> str:
    """One recipe's FLOPs, the throughput that 50 % MFU means on an H100 and an A100, and its memory."""
    f = estimate.flops
    h100, a100 = PEAK_BF16_TFLOPS["H100"], PEAK_BF16_TFLOPS["A100"]
    lines = [
        (
            f"{estimate.recipe}: {estimate.base}, {estimate.sequence_length} tokens per sequence, micro-batch {estimate.micro_batch}, "
            f"{estimate.trainable_params:,} trainable parameters"
        ),
        f"  model FLOPs per token  {f.total / 1e9:.1f} G (weights forward {f.weights_forward / 1e9:.1f}, backward {f.weights_backward / 1e9:.1f}, "
        f"attention {f.attention / 1e9:.1f}, reference model {f.reference_forward / 1e9:.1f})"
        + (f"; {f.per_image / 1e12:.2f} TFLOP per image" if f.per_image else ""),
        (
            f"  50 % MFU means         {estimate.tokens_per_second_for_mfu(0.5, h100):,.0f} tokens/s on an H100 SXM, "
            f"{estimate.tokens_per_second_for_mfu(0.5, a100):,.0f} on an A100"
        ),
        f"  memory (estimate)      {estimate.memory_gib:.1f} GiB: {fits(estimate.memory_gib)}",
    ]
    if estimate.stage == "pt":  # the Clinical-BR continued pretraining: the paper's run is its baseline
        hours = PAPER_TOKENS * PAPER_EPOCHS / estimate.tokens_per_second_for_mfu(0.5, h100) / 3600
        lines.append(
            f"  the paper's run        {estimate.paper_tokens_per_second:,.0f} tokens/s on one A100 = "
            f"{estimate.paper_tokens_per_second * estimate.flops_per_token_with_images / (a100 * 1e12):.1%} MFU with these FLOPs; "
            f"50 % MFU on an H100 would take {hours:.1f} h (paper: {PAPER_SECONDS / 3600:.1f} h)"
        )
    return "\n".join(lines)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "run"


def _model_line(setup: BenchSetup) -> str:
    model = str(setup.recipe["model_name_or_path"])
    source = BASE_MODELS.get(model, (None, str(setup.config_path)))[1]
    tiny = " (TINY CPU configuration: says nothing about a GPU)" if setup.tiny else ""
    return f"  model        {model}: {source}; random weights{tiny}"


def _settings_line(result: BenchResult, setup: BenchSetup) -> str:
    """Stage, context, batch, LoRA or full, quantization, attention and checkpointing of the run."""
    recipe = setup.recipe
    continued = " (continued adapter)" if recipe.get("adapter_name_or_path") else ""
    lora = "full"
    if recipe.get("finetuning_type") == "lora":
        lora = f"LoRA r={setup.lora.get('lora_rank', 8)} on {setup.lora.get('lora_target', 'all')}{continued}"
    quant = f", {recipe['quantization_bit']}-bit {recipe.get('quantization_type', '')}" if recipe.get("quantization_bit") else ""
    effective = {**recipe, **result.settings}
    return (
        f"  settings     stage {recipe['stage']}, context {result.context} ({result.sequence_length} trained tokens per sequence), "
        f"micro-batch {effective.get('per_device_train_batch_size', 1)} x accumulation {effective.get('gradient_accumulation_steps', 1)}, "
        f"{lora}{quant}, attention {effective.get('flash_attn', 'auto')}, "
        f"gradient checkpointing {'off' if effective.get('disable_gradient_checkpointing') else 'on'}"
    )


def _memory_line(result: BenchResult) -> str:
    if result.peak_memory_gib is None:
        return f"  peak memory  {result.peak_rss_gib:.2f} GiB process RSS (CPU); GPU estimate {result.estimated_memory_gib:.1f} GiB"
    return (
        f"  peak memory  {result.peak_memory_gib:.1f} GiB reserved, {result.peak_allocated_gib:.1f} GiB allocated; "
        f"estimate {result.estimated_memory_gib:.1f} GiB; {fits(result.peak_memory_gib)}"
    )


def _measurement_lines(result: BenchResult) -> list[str]:
    """Steps, throughput, step time, memory, FLOPs and MFU, and the projected workload of a run that succeeded."""
    spread = statistics.pstdev(result.step_seconds) if len(result.step_seconds) > 1 else 0.0
    parts = f"{result.flops_per_token / 1e9:.2f} GFLOP/token"
    if result.flops_per_image:
        parts += f" + {result.flops_per_image / 1e12:.2f} TFLOP/image"
    mfu_text = f"{result.mfu:.1%}" if result.mfu is not None else "n/a (unknown peak: pass --peak-tflops)"
    return [
        f"  steps        {result.warmup_steps} warm-up + {result.measured_steps} measured; {result.tokens:,} tokens trained in the measured steps",
        f"  throughput   {result.tokens_per_second:,.0f} tokens/s per GPU",
        f"  step time    {result.mean_step_seconds:.3f} s (sd {spread:.3f})",
        _memory_line(result),
        f"  model FLOPs  {parts}; MFU {mfu_text}",
        (
            f"  workload     {result.workload_tokens:,} tokens -> {result.workload_hours:,.1f} GPU-hours, "
            f"R$ {result.workload_cost:,.0f} at R$ {result.price_per_gpu_hour:.2f}/GPU-hour "
            f"(paper: {PAPER_SECONDS / 3600:.1f} h, R$ {PAPER_COST_BRL:,.0f} on one A100)"
        ),
    ]


def format_result(result: BenchResult, setup: BenchSetup) -> str:
    """The human-readable block ``medfactory bench`` prints for one run."""
    version = read_header(setup.recipe_path).get("version", "?")
    peak = f" (dense bf16 peak {result.peak_tflops:g} TFLOP/s)" if result.peak_tflops else ""
    lines = [
        f"medfactory bench: {setup.recipe_path} (version {version}), variant: {result.variant}",
        _model_line(setup),
        f"  device       {result.device}{peak}",
        _settings_line(result, setup),
    ]
    if not result.ok:
        lines.append(f"  FAILED       {result.error}")
        return "\n".join(lines)
    lines += _measurement_lines(result)
    if result.same_training:
        lines.append(f"  NOT the recipe's training: {'; '.join(result.same_training)}")
    return "\n".join(lines)


def fits(gib: float) -> str:
    """Which A100 a measured peak fits, with 1 GiB kept free for the CUDA context and fragmentation."""
    return ", ".join(f"A100 {size} GB: {'fits' if gib + 1 <= size * 1e9 / 1024**3 else 'does not fit'}" for size in (40, 80))


RESULTS_HEADER = ("variant", "same training", "device", "context", "tokens/s per GPU", "step s", "peak GiB", "MFU", "workload h")


def _result_row(r: BenchResult) -> list[str]:
    """One run as formatted cells; a failed run's error stands in its tokens/s cell."""
    same = "yes" if not r.same_training else "no"
    if not r.ok:
        return [r.variant, same, r.device, str(r.context), str(r.error), "", "", "", ""]
    memory = r.peak_memory_gib if r.peak_memory_gib is not None else r.peak_rss_gib
    mfu_text = f"{r.mfu:.1%}" if r.mfu is not None else "n/a"
    return [
        r.variant, same, r.device, str(r.context), f"{r.tokens_per_second:,.0f}", f"{r.mean_step_seconds:.3f}", f"{memory:.1f}",
        mfu_text, f"{r.workload_hours:,.1f}",
    ]  # fmt: skip


def markdown_table(results: list[BenchResult]) -> str:
    """The rows docs/benchmarks.md keeps, one per run."""
    return tables.markdown_table(RESULTS_HEADER, [_result_row(r) for r in results])


def bench_variants(setup: BenchSetup, user: dict[str, Any], sweep: bool) -> list[tuple[str, dict[str, Any], str | None]]:
    """What to run: the recipe with the user's ``--set`` values, or (``sweep``) every speed setting on top of them."""
    if sweep:
        return [(name, {**user, **values}, skip) for name, values, skip in sweep_variants(setup.recipe, setup.on_gpu)]
    return [("as written" if not user else ", ".join(f"{k}={v}" for k, v in user.items()), user, None)]


def run_variants(
    setup: BenchSetup,
    variants: list[tuple[str, dict[str, Any], str | None]],
    peak_tflops: float | None = None,
    price_per_gpu_hour: float = PAPER_PRICE_PER_GPU_HOUR,
    workload_tokens: int = PAPER_TOKENS * PAPER_EPOCHS,
) -> list[BenchResult]:
    """Run every variant not skipped, printing each skip and each result as it comes."""
    print(f"[2/3] Running {len(variants)} variant(s) through LLaMA-Factory: {setup.warmup} warm-up + {setup.steps} measured steps each")
    results: list[BenchResult] = []
    for name, values, skip in variants:
        if skip:
            print(f"      skipped {name}: {skip}")
            continue
        result = run_variant(setup, name, values, peak_tflops, price_per_gpu_hour, workload_tokens)
        results.append(result)
        print(format_result(result, setup))
    return results


def write_results(destination: Path, results: list[BenchResult]) -> None:
    """The results JSON: every field of every run, atomically."""
    with atomic_write(destination) as handle:
        json.dump([asdict(r) for r in results], handle, indent=2)


def fastest_summary(results: list[BenchResult]) -> str | None:
    """The fastest variant that keeps the training, and its gain over the recipe as written (the first result)."""
    identical = [r for r in results if r.ok and not r.same_training]
    if not identical:
        return None
    best, baseline = max(identical, key=lambda r: r.tokens_per_second), results[0]
    gain = f" ({best.tokens_per_second / baseline.tokens_per_second - 1:+.1%} over as written)" if baseline.ok else ""
    return f"Fastest with the same training: {best.variant}{gain}"
