"""``medfactory contamination A B`` and ``medfactory contamination --recipe recipes/X.yaml``: typer
commands over :mod:`medfactory.corpus.contamination` and :mod:`medfactory.corpus.recipe_overlap`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.atomic import write_json_atomic
from medfactory.corpus.contamination import (
    DEFAULT_MAX_EXAMPLES,
    DEFAULT_NUM_PERM,
    DEFAULT_THRESHOLD,
    contamination_report,
    format_summary,
)

OVERLAP_EXIT = 2


def _fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned Exit(1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _write_report(output: Path, report: dict[str, Any]) -> None:
    try:
        write_json_atomic(output, report)
    except OSError as error:
        raise _fail(f"cannot write the report to {output}: {error.strerror or error}") from error
    typer.echo(f"report written to {output}")


def _recipe_report(recipe: Path, threshold: float, num_perm: int, max_examples: int) -> dict[str, Any]:
    """The recipe's evaluation sets against all its training datasets; dataset_dir as LLaMA-Factory reads it."""
    from medfactory.base.registry import REGISTRY_NAME
    from medfactory.corpus.recipe_overlap import recipe_overlap
    from medfactory.recipes.recipe_file import load_recipe

    try:
        values = load_recipe(recipe)
    except FileNotFoundError as error:
        raise _fail(f"{recipe}: no such recipe file. Fix: pass a path such as recipes/clinical_br_mistral.yaml.") from error
    except ValueError as error:
        raise _fail(str(error)) from error
    dataset_dir = Path(str(values.get("dataset_dir", "data")))  # LLaMA-Factory's default dataset_dir
    try:
        registry = dataset_dir / REGISTRY_NAME
        return recipe_overlap(values, registry, dataset_dir, threshold=threshold, num_perm=num_perm, max_examples=max_examples, progress=True)
    except (FileNotFoundError, ValueError) as error:  # no registry, CorpusError (a bad file) or a bad setting
        raise _fail(f"{recipe}: {error}") from error


def _recipe_command(recipe: Path, threshold: float, num_perm: int, max_examples: int, output: Path | None) -> None:
    from medfactory.corpus.recipe_overlap import format_recipe_summary

    report = _recipe_report(recipe, threshold, num_perm, max_examples)
    report["recipe"] = str(recipe)
    typer.echo(f"recipe {recipe}: evaluation sets against all training datasets (ids only)")
    for line in format_recipe_summary(report):
        typer.echo(line)
    if output is not None:
        _write_report(output, report)
    if report["overlap"]:
        count = report["counts"]["contaminated"]
        typer.secho(f"{recipe}: {count:,} evaluation records are in the recipe's training data. Fix: drop them from the "
                    "evaluation sets (or the training corpora) and prepare again.", fg=typer.colors.RED, err=True)  # fmt: skip
        raise typer.Exit(OVERLAP_EXIT)
    if report["unavailable"]:
        names = ", ".join(item["dataset"] for item in report["unavailable"])
        raise _fail(f"{recipe}: {names} could not be checked (see 'not checked' above).")


def contamination_command(
    a: Annotated[Path | None, typer.Argument(help="Set checked for leaks (e.g. test): a .jsonl file or a prepared dataset folder")] = None,
    b: Annotated[Path | None, typer.Argument(help="Reference set (e.g. train): a .jsonl file or a prepared dataset folder")] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(help="Instead of A and B: check every evaluation set of this recipe against all its training datasets (exit 2 on overlap)"),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Estimated Jaccard (word 5-gram shingles) from which a note is a near duplicate"),
    ] = DEFAULT_THRESHOLD,
    output: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    max_examples: Annotated[int, typer.Option(min=0, help="Example pairs (ids only) in the summary and the report")] = DEFAULT_MAX_EXAMPLES,
    num_perm: Annotated[int, typer.Option(min=16, help="MinHash permutations (more: finer estimate, more memory)")] = DEFAULT_NUM_PERM,
    fail_on_overlap: Annotated[
        bool, typer.Option("--fail-on-overlap", help="Exit with code 2 if any exact or near overlap is found (CI; always on with --recipe)")
    ] = False,
) -> None:
    """Count notes of A that are exact or near copies (copy-forward) of notes of B; ids only, never text."""
    if recipe is not None:
        if a is not None or b is not None:
            raise _fail("pass either A and B, or --recipe, not both.")
        _recipe_command(recipe, threshold, num_perm, max_examples, output)
        return
    if a is None or b is None:
        raise _fail("pass two sets, A (checked, e.g. test) and B (reference, e.g. train), or --recipe recipes/<name>.yaml.")
    try:
        report = contamination_report(a, b, threshold=threshold, num_perm=num_perm, max_examples=max_examples)
    except ValueError as error:  # CorpusError (bad input) or a bad setting
        raise _fail(str(error)) from error
    for line in format_summary(report):
        typer.echo(line)
    if output is not None:
        _write_report(output, report)
    if fail_on_overlap and report["counts"]["a_contaminated"]:
        typer.secho(
            f"{report['counts']['a_contaminated']:,} records of A overlap B (--fail-on-overlap).",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(OVERLAP_EXIT)
