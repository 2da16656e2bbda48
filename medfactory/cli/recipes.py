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
) -> None:
    """Parse every recipe with LLaMA-Factory's own parser and check it against the paper values."""
    from medfactory.recipes.check import check_recipes
    from medfactory.recipes.recipe_file import default_recipe_paths, read_header

    results = check_recipes(paths or default_recipe_paths(), registry)
    for path, problems in results.items():
        for problem in problems:
            typer.secho(str(problem), fg=typer.colors.RED, err=True)
        if not problems:
            typer.echo(f"{path}: ok (version {read_header(path).get('version')})")
    failed = sum(1 for problems in results.values() if problems)
    if failed:
        typer.secho(f"{failed} of {len(results)} recipes have problems.", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


@recipes_app.command("lock")
def recipes_lock(
    paths: Annotated[list[Path] | None, typer.Argument(help="Recipe files; default: recipes/*.yaml")] = None,
) -> None:
    """Record the values hash of each recipe's current version (after a version bump)."""
    from medfactory.recipes.lock import lock_recipes
    from medfactory.recipes.recipe_file import default_recipe_paths

    for line in lock_recipes(paths or default_recipe_paths()):
        typer.echo(line)
