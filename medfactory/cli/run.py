"""The run tools' commands: `medfactory merge` and `medfactory card`.

Thin typer wrappers: the work and its errors live in ``medfactory.run.merge`` and ``medfactory.run.card``;
here the errors become a red message on stderr and exit code 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.run.card import PROVENANCE_NAME, CardError, push_card, write_card
from medfactory.run.merge import MANIFEST_NAME, MergeError, MergeRecipeError, run_merge


def merge_command(
    recipe: Annotated[Path, typer.Argument(help="A merge recipe, e.g. recipes/merge/spanish_medical_ties.yaml")],
    base_model: Annotated[str | None, typer.Option(help="Replace the recipe's base_model (hub id or folder)")] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Replace the models' paths, in the recipe's order (repeat once per model)"),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Replace the recipe's output folder")] = None,
) -> None:
    """TIES / DARE merge of fine-tuned models into their base (BioMistral-style), tensor by tensor."""
    overrides: dict[str, Any] = {"base_model": base_model, "output": output}
    if model:
        overrides["models"] = list(model)
    try:
        merged = run_merge(recipe, overrides)
    except (MergeRecipeError, MergeError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    typer.echo(f"merged checkpoint written to {merged} (manifest: {merged / MANIFEST_NAME})")


def _echo_overrides(provenance_path: Path) -> None:
    overridden = json.loads(provenance_path.read_text(encoding="utf-8")).get("overridden", {})
    for key, entry in overridden.items():
        recipe = entry["recipe"] if entry["recipe"] is not None else f"unset (default {entry.get('default')})"
        typer.echo(f"  the run differs from the recipe: {key}: {recipe} -> {entry['ran']} ({entry['from']})")


def card_command(
    run_dir: Annotated[Path, typer.Argument(help="The run folder, e.g. saves/clinical_br_mistral")],
    recipe: Annotated[
        Path | None,
        typer.Option(help="The recipe that produced the run; default: the recipe whose output_dir is RUN_DIR"),
    ] = None,
    reports: Annotated[
        list[Path] | None,
        typer.Option("--reports", help="Evaluation report folder (metrics.json, summary.csv, table1_summary.csv); repeatable"),
    ] = None,
    license: Annotated[
        str,
        typer.Option("--license", help="Licence id for the card; default `other`: the base model's licence applies"),
    ] = "other",
    push: Annotated[str | None, typer.Option("--push", help="Upload to this Hugging Face repo id (only when given)")] = None,
    private: Annotated[bool, typer.Option(help="Create the pushed repository as private")] = True,
) -> None:
    """Write the run's provenance.json and a Hugging Face model card (README.md) into the run folder.

    The card shows the values the run used (the Trainer's card, trainer_state.json, adapter_config.json),
    so a `key=value` given after the recipe on the command line is shown, tagged "override"."""
    try:
        for path in write_card(run_dir, recipe, reports, license):
            typer.echo(str(path))
            if path.name == PROVENANCE_NAME:
                _echo_overrides(path)
        if push:
            push_card(run_dir, push, private=private)
            typer.echo(f"pushed {run_dir} to https://huggingface.co/{push}")
    except (CardError, FileNotFoundError, OSError) as error:
        typer.secho(f"Error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from error
    except Exception as error:  # hub errors (auth, network) from --push
        if push and type(error).__module__.startswith(("huggingface_hub", "requests", "httpx")):
            typer.secho(f"Error: push to {push} failed: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from error
        raise
