"""The ``medfactory`` command: every command is registered here; each lives in a thin module of ``medfactory.cli``.

The work is in the stage packages (``medfactory.corpus``, ``recipes``, ``run``, ``bench``) and in
``medfactory.plugins`` / ``medfactory.eval``; these modules only parse options and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfactory.cli.bench import bench_command
from medfactory.cli.contamination import contamination_command
from medfactory.cli.demo import demo_command
from medfactory.cli.evaluate import eval_app
from medfactory.cli.prepare import prepare_app
from medfactory.cli.recipes import recipes_app
from medfactory.cli.run import card_command, merge_command

app = typer.Typer(help="Recipes, corpus plugins and evaluation for medical LMs in pt-BR and es.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")
app.add_typer(prepare_app, name="prepare")
app.add_typer(eval_app, name="eval")
likert_app = typer.Typer(help="The blind Likert study: completions, cards, ratings, report, LLM judge.", no_args_is_help=True)
app.add_typer(likert_app, name="likert")
app.command("contamination", help="Exact and near-duplicate overlap between two prepared sets (counts and ids only).")(contamination_command)
app.command("card", help="Provenance (recipe version and hashes, data manifests, versions, git) and a model card for saves/<run>; --push uploads.")(
    card_command
)
app.command("bench", help="Tokens/s, step time, peak memory, MFU and projected cost of a training recipe (tiny on CPU); --sweep for speed settings.")(
    bench_command
)
app.command("merge", help="TIES / DARE merge of models from a versioned recipe in recipes/merge/.")(merge_command)
app.command("demo")(demo_command)

STUDIES = Path("reports/likert")


def _parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: write overrides as key=value, e.g. bf16=false")
        overrides[key] = value
    return overrides


@likert_app.command("run")
def likert_run(
    heldout: Annotated[Path, typer.Option(help="Held-out notes (data/<corpus>/likert_heldout.jsonl)")],
    models: Annotated[Path, typer.Option(help="YAML: models: [{name, model_name_or_path, adapter_name_or_path}]")],
    study: Annotated[str, typer.Option(help="Study name: outputs go to reports/likert/<study>/")],
    raters: Annotated[str, typer.Option(help="Comma-separated rater names: one XLSX each")] = "r1,r2,r3",
    excerpt_sentences: Annotated[int, typer.Option(help="Excerpt = the note's first N sentences (at most half the note)")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the card order and ids")] = 0,
    override: Annotated[list[str] | None, typer.Option(help="key=value for llamafactory-cli (e.g. bf16=false on CPU)")] = None,
    force: Annotated[bool, typer.Option(help="Replace a study's cards and rater files even if raters have started")] = False,
) -> None:
    """Completions of every model (through llamafactory-cli), then the blind cards and rater files."""
    from medfactory.eval.likert.cards import write_study
    from medfactory.eval.likert.completions import ExcerptRule, generate_completions, load_models

    study_dir = STUDIES / study
    try:
        completions = generate_completions(
            heldout, load_models(models), study_dir, rule=ExcerptRule(sentences=excerpt_sentences), extra_overrides=_parse_overrides(override)
        )
        rater_names = [rater.strip() for rater in raters.split(",") if rater.strip()]
        summary = write_study(completions, study_dir, rater_names, seed=seed, force=force)
    except (ValueError, FileExistsError, RuntimeError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    typer.echo(f"completions: {completions}")
    typer.echo(f"cards and rater files in {study_dir}: {summary.get('cards', '?')} cards; give raters only the files under raters/")


@likert_app.command("judge")
def likert_judge(
    study: Annotated[str, typer.Option(help="Study name (reports/likert/<study>/)")],
    endpoint: Annotated[str, typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")],
    model: Annotated[str, typer.Option(help="Model name sent to the endpoint and used in the rater name judge:<model>")],
    retries: Annotated[int, typer.Option(help="Extra attempts when an answer does not parse")] = 2,
) -> None:
    """Score every card with an LLM judge; writes ratings/judge_<model>.csv."""
    import json

    from medfactory.eval.likert import CARDS_FILE
    from medfactory.eval.likert.judge import judge_cards, write_judge_ratings

    study_dir = STUDIES / study
    cards = [json.loads(line) for line in (study_dir / CARDS_FILE).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = judge_cards(cards, endpoint, model, retries=retries)
    safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in model)
    path = write_judge_ratings(rows, study_dir / "ratings" / f"judge_{safe}.csv")
    missing = sum(1 for row in rows if row["score"] is None)
    typer.echo(f"{len(rows)} judge ratings ({missing} missing) -> {path}")


@likert_app.command("report")
def likert_report(
    study: Annotated[str, typer.Option(help="Study name (reports/likert/<study>/)")],
    ratings: Annotated[list[Path], typer.Option(help="Filled rater XLSX, long CSV or Label Studio JSON export (repeat)")],
    allow_missing: Annotated[bool, typer.Option(help="Accept empty scores (a study in progress)")] = False,
) -> None:
    """Validate the ratings and write the report: Table 1, Table 2, Fig. 3, agreement, significance."""
    import pandas as pd

    from medfactory.eval.likert import CARDS_FILE, KEY_FILE
    from medfactory.eval.likert.ratings import RatingsError, read_ratings
    from medfactory.eval.likert.report import write_report

    study_dir = STUDIES / study
    try:
        table = read_ratings(ratings, study_dir / CARDS_FILE, study_dir / KEY_FILE, allow_missing=allow_missing)
    except RatingsError as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    report = write_report(table, pd.read_csv(study_dir / KEY_FILE, dtype=str), study_dir / "report", title=f"Likert study {study}")
    typer.echo(f"report: {report}")
