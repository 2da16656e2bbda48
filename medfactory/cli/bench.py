"""``medfactory bench RECIPE``: the typer command over :mod:`medfactory.bench.measure`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.overrides import OverrideError, parse_overrides
from medfactory.bench.measure import (
    PAPER_EPOCHS,
    PAPER_PRICE_PER_GPU_HOUR,
    PAPER_TOKENS,
    bench_variants,
    estimate_recipe,
    fastest_summary,
    format_estimate,
    markdown_table,
    prepare_bench,
    run_variants,
    write_results,
)


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` options, typed the way ``llamafactory-cli`` types its overrides; later ones win."""
    values: dict[str, Any] = {}
    for item in items or []:
        # One at a time, so the message names the option that is not KEY=VALUE.
        try:
            values.update(parse_overrides([item], option="--set", example="flash_attn=fa2"))
        except OverrideError as error:
            key, sep, _ = item.partition("=")
            malformed = not sep or not key.strip()
            message = f"--set {item!r}: expected KEY=VALUE, e.g. --set flash_attn=fa2" if malformed else str(error)
            raise typer.BadParameter(message) from error
    return values


def bench_command(
    recipe: Annotated[Path, typer.Argument(help="A training recipe, e.g. recipes/clinical_br_mistral.yaml")],
    steps: Annotated[int, typer.Option(help="Measured optimizer steps")] = 10,
    warmup: Annotated[int, typer.Option(help="Optimizer steps run before measuring (kernel compilation, caches)")] = 3,
    tiny: Annotated[bool | None, typer.Option("--tiny/--full-size", help="Tiny configuration (default: tiny without a GPU)")] = None,
    context: Annotated[int | None, typer.Option(help="Tokens per sequence (default: the recipe's cutoff_len; 256 when tiny)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE on top of the recipe (repeat); reported if it changes the training")] = None,
    sweep: Annotated[bool, typer.Option(help="Measure every speed setting that keeps the training the same (see docs/benchmarks.md)")] = False,
    model_config: Annotated[Path | None, typer.Option(help="config.json of the base model, for a model with no shipped configuration")] = None,
    peak_tflops: Annotated[float | None, typer.Option(help="Dense bf16 peak of the GPU, when it is not in the table")] = None,
    price_per_gpu_hour: Annotated[float, typer.Option(help="Price of one GPU-hour (default: the paper's A100 rate, R$ 26.08)")] = PAPER_PRICE_PER_GPU_HOUR,
    workload_tokens: Annotated[int, typer.Option(help="Tokens to project (default: Clinical-BR, 309,151,121 x 2 epochs)")] = PAPER_TOKENS * PAPER_EPOCHS,
    estimate: Annotated[bool, typer.Option(help="Only compute FLOPs per token and memory at the real size; run nothing")] = False,
    workdir: Annotated[Path | None, typer.Option(help="Scratch folder (default: saves/bench/<recipe>)")] = None,
    output: Annotated[Path | None, typer.Option(help="Results JSON (default: reports/bench/<recipe>.json)")] = None,
) -> None:
    """Tokens/s per GPU, step time, peak memory, MFU and projected cost of a training recipe, through LLaMA-Factory."""
    user = parse_set_options(set_)
    if estimate:
        print(format_estimate(estimate_recipe(recipe, model_config, user)))
        return
    setup = prepare_bench(recipe, workdir or Path("saves/bench") / recipe.stem, warmup, steps, tiny, context, model_config)
    results = run_variants(setup, bench_variants(setup, user, sweep), peak_tflops, price_per_gpu_hour, workload_tokens)
    destination = output or Path("reports/bench") / f"{recipe.stem}{'-sweep' if sweep else ''}.json"
    write_results(destination, results)
    print(f"[3/3] Results: {destination}")
    print(markdown_table(results))
    fastest = fastest_summary(results) if sweep else None
    if fastest:
        print(fastest)
    if not all(r.ok for r in results) and not sweep:
        raise typer.Exit(code=1)
