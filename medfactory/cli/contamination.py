"""``medfactory contamination A B``: the typer command over :mod:`medfactory.corpus.contamination`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfactory.base.atomic import write_json_atomic
from medfactory.corpus.contamination import (
    DEFAULT_MAX_EXAMPLES,
    DEFAULT_NUM_PERM,
    DEFAULT_THRESHOLD,
    contamination_report,
    format_summary,
)


def contamination_command(
    a: Annotated[Path, typer.Argument(help="Set checked for leaks (e.g. test): a .jsonl file or a prepared dataset folder")],
    b: Annotated[Path, typer.Argument(help="Reference set (e.g. train): a .jsonl file or a prepared dataset folder")],
    threshold: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Estimated Jaccard (word 5-gram shingles) from which a note is a near duplicate"),
    ] = DEFAULT_THRESHOLD,
    output: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    max_examples: Annotated[
        int, typer.Option(min=0, help="Example pairs (ids only) in the summary and the report")
    ] = DEFAULT_MAX_EXAMPLES,
    num_perm: Annotated[
        int, typer.Option(min=16, help="MinHash permutations (more: finer estimate, more memory)")
    ] = DEFAULT_NUM_PERM,
    fail_on_overlap: Annotated[
        bool, typer.Option("--fail-on-overlap", help="Exit with code 2 if any exact or near overlap is found (CI)")
    ] = False,
) -> None:
    """Count notes of A that are exact or near copies (copy-forward) of notes of B; ids only, never text."""
    try:
        report = contamination_report(a, b, threshold=threshold, num_perm=num_perm, max_examples=max_examples)
    except ValueError as error:  # CorpusError (bad input) or a bad setting
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    for line in format_summary(report):
        typer.echo(line)
    if output is not None:
        try:
            write_json_atomic(output, report)
        except OSError as error:
            reason = error.strerror or error
            typer.secho(f"error: cannot write the report to {output}: {reason}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from error
        typer.echo(f"report written to {output}")
    if fail_on_overlap and report["counts"]["a_contaminated"]:
        typer.secho(
            f"{report['counts']['a_contaminated']:,} records of A overlap B (--fail-on-overlap).",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
