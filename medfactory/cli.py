"""The ``medfactory`` command: thin wrappers; the work lives in the modules it calls."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfactory.contamination import contamination_command
from medfactory.plugins import discover_plugins

app = typer.Typer(help="Recipes, corpus plugins and evaluation for medical LMs in pt-BR and es.", no_args_is_help=True)
recipes_app = typer.Typer(help="Check and lock the LLaMA-Factory recipes in recipes/.", no_args_is_help=True)
prepare_app = typer.Typer(help="Prepare a corpus into data/ and register it in dataset_info.json.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")
app.add_typer(prepare_app, name="prepare")

for _plugin in discover_plugins().values():
    prepare_app.command(name=_plugin.name, help=_plugin.summary)(_plugin.command)


@recipes_app.command("check")
def recipes_check(
    paths: Annotated[list[Path] | None, typer.Argument(help="Recipe files; default: recipes/*.yaml")] = None,
    registry: Annotated[Path | None, typer.Option(help="Dataset registry; default: dataset_dir/dataset_info.json")] = None,
) -> None:
    """Parse every recipe with LLaMA-Factory's own parser and check it against the paper values."""
    from medfactory.recipes import check_recipes, default_recipe_paths, read_header

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
    from medfactory.recipes import default_recipe_paths, lock_recipes

    for line in lock_recipes(paths or default_recipe_paths()):
        typer.echo(line)


app.command("contamination", help="Exact and near-duplicate overlap between two prepared sets (counts and ids only).")(
    contamination_command
)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes data/ and saves/")] = Path("."),
    max_steps: Annotated[int, typer.Option(help="Training steps of the tiny CPU run")] = 800,
) -> None:
    """Offline CPU demo: tiny Mistral + synthetic pt-BR notes through the real Clinical-BR recipe."""
    from medfactory.demo import run_demo

    run_demo(workdir=workdir, max_steps=max_steps)


if __name__ == "__main__":
    app()
