"""``medfactory recipes check|lock``: the typer commands over :mod:`medfactory.recipes`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

recipes_app = typer.Typer(help="Check and lock the LLaMA-Factory recipes in recipes/.", no_args_is_help=True)


@recipes_app.command("check")
def recipes_check(
    paths: Annotated[list[Path] | None, typer.Argument(help="Recipe files; default: recipes/*.yaml")] = None,
    registry: Annotated[Path | None, typer.Option(help="Dataset registry; default: dataset_dir/dataset_info.json")] = None,
    prepared: Annotated[
        bool,
        typer.Option(
            "--prepared",
            help="Also fail on registered datasets whose files are missing, and on evaluation sets that overlap the "
            "training data (run on the GPU VM right before training).",
        ),
    ] = False,
) -> None:
    """Parse every recipe as LLaMA-Factory does at launch and check it against the paper values and the base-model table."""
    from medfactory.recipes.check import check_recipes
    from medfactory.recipes.recipe_file import default_recipe_paths, read_header

    results = check_recipes(paths or default_recipe_paths(), registry, prepared=prepared)
    for path, problems in results.items():
        problems += _overlap_problems(path, registry) if prepared else []
        for problem in problems:
            typer.secho(str(problem), fg=typer.colors.RED, err=True)
        if not problems:
            typer.echo(f"{path}: ok (version {read_header(path).get('version')})")
    failed = sum(1 for problems in results.values() if problems)
    if failed:
        typer.secho(f"{failed} of {len(results)} recipes have problems.", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


def _overlap_problems(path: Path, registry: Path | None) -> list:
    """With --prepared: a recipe whose evaluation sets share records with its training data (counts, never text)."""
    from medfactory.corpus.recipe_overlap import format_recipe_summary, recipe_overlap
    from medfactory.recipes.problems import RecipeProblem
    from medfactory.recipes.recipe_file import load_recipe

    values = load_recipe(path)
    dataset_dir = Path(str(values.get("dataset_dir") or "."))
    report = recipe_overlap(values, registry or dataset_dir / "dataset_info.json", dataset_dir)
    if not report["overlap"]:
        return []
    summary = "; ".join(format_recipe_summary(report))
    fix = f"run `medfactory contamination --recipe {path}` for the ids, then re-prepare or drop the copies"
    return [RecipeProblem(path, "eval_dataset", f"evaluation sets overlap the training data ({summary}).", f"{fix}.")]


@recipes_app.command("lock")
def recipes_lock(
    paths: Annotated[list[Path] | None, typer.Argument(help="Recipe files; default: recipes/*.yaml")] = None,
) -> None:
    """Record the values hash of each recipe's current version (after a version bump)."""
    from medfactory.recipes.lock import lock_recipes
    from medfactory.recipes.recipe_file import default_recipe_paths

    for line in lock_recipes(paths or default_recipe_paths()):
        typer.echo(line)
