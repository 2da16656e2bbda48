"""``medfactory tokens RECIPE``: the typer command over :mod:`medfactory.recipes.tokens`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medfactory.base.overrides import OverrideError, parse_overrides


def tokens_command(
    recipe: Annotated[Path, typer.Argument(help="A stage-pt recipe, e.g. recipes/clinical_br_mistral.yaml")],
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Tokenizer folder, SentencePiece .model, mistral-common .whl, 'mistral-common' or a Hub id (default: from the recipe's model)"),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE on top of the recipe, as llamafactory-cli takes it (repeat)")] = None,
    min_fraction: Annotated[float, typer.Option(help="Fail below this share of corpus tokens trained")] = 0.99,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    cache: Annotated[bool, typer.Option(help="Reuse token counts cached by dataset file and tokenizer")] = True,
) -> None:
    """Tokens in a pt recipe's prepared datasets versus tokens that reach its training blocks (LLaMA-Factory 0.9.5 packing)."""
    from medfactory.recipes.tokens import TokenReportError, format_report, token_report

    try:
        overrides = parse_overrides(set_, option="--set", example="preprocessing_batch_size=100000")
    except OverrideError as error:
        raise typer.BadParameter(str(error)) from error
    try:
        report = token_report(recipe, overrides, tokenizer, min_fraction=min_fraction, use_cache=cache)
    except (TokenReportError, FileNotFoundError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from error
    typer.echo(json.dumps(report.as_dict(), indent=2) if as_json else format_report(report))
    for problem in report.problems:
        typer.secho(problem, fg=typer.colors.RED, err=True)
    if report.problems:
        raise typer.Exit(1)
