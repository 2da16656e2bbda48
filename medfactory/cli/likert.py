"""``medfactory likert``: the blind Likert study's commands (the work lives in ``medfactory.eval.likert``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from medfactory.generate.endpoint_options import EngineOption, RoundPredictionsOption, echo_round, predict_rounds

if TYPE_CHECKING:
    from medfactory.eval.likert.judge import JudgeRun

likert_app = typer.Typer(help="The blind Likert study: completions, cards, ratings, report, LLM judge.", no_args_is_help=True)

STUDIES = Path("reports/likert")
STUDY_FIX = "Fix: a study name is one folder name under reports/likert/ (letters, digits, - and _)."


def study_folder(study: str, must_exist: bool = True) -> Path:
    """``reports/likert/<study>``: one folder name (never a path out of reports/likert), and existing
    unless ``must_exist`` is False (``likert run`` creates it)."""
    from medfactory.base.errors import CorpusError
    from medfactory.base.names import confined_path

    study_dir = confined_path(STUDIES, study, what="--study", fix=STUDY_FIX)
    if must_exist and not study_dir.is_dir():
        raise CorpusError(
            f"no study {study!r}: {study_dir} does not exist. Run from the folder that holds reports/ "
            f"(the repository root), or create the study with `medfactory likert run --study {study} --heldout ... --models ...`."
        )
    return study_dir


def fail(error: BaseException) -> typer.Exit:
    """Print ``error: ...`` and return the exit to raise (status 1)."""
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def parse_override_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--override key=value`` options, typed as llamafactory-cli reads them; a bad pair is a usage error."""
    from medfactory.base.overrides import OverrideError, parse_overrides

    try:
        return parse_overrides(pairs, option="--override")
    except OverrideError as error:
        # Typer already says "Invalid value"; the message names the pair only, as it always has.
        raise typer.BadParameter(str(error).removeprefix("--override ")) from error


@likert_app.command("run")
def likert_run(
    heldout: Annotated[Path, typer.Option(help="Held-out notes (data/<corpus>/likert_heldout.jsonl)")],
    models: Annotated[Path, typer.Option(help="YAML: models: [{name, model_name_or_path, adapter_name_or_path, endpoint?}]")],
    study: Annotated[str, typer.Option(help="Study name: outputs go to reports/likert/<study>/")],
    raters: Annotated[str, typer.Option(help="Comma-separated rater names: one XLSX each")] = "r1,r2,r3",
    excerpt_sentences: Annotated[int, typer.Option(help="Excerpt = the note's first N sentences (at most half the note)")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the card order and ids")] = 0,
    override: Annotated[list[str] | None, typer.Option(help="key=value for llamafactory-cli (e.g. bf16=false on CPU)")] = None,
    force: Annotated[bool, typer.Option(help="Replace a study's cards and rater files even if raters have started")] = False,
    allow_remote_endpoint: Annotated[
        bool, typer.Option("--allow-remote-endpoint", help="Let a model's `endpoint` be a non-loopback host (the excerpts are sent there)")
    ] = False,
) -> None:
    """Completions of every model (a predict run, or the served engine a model's `endpoint` names), then the blind cards and rater files."""
    from medfactory.eval.likert.cards import write_study
    from medfactory.eval.likert.completions import ExcerptRule, generate_completions, load_models

    try:
        study_dir = study_folder(study, must_exist=False)
        # The models file is read before the overrides are parsed: its errors come first, as they always did.
        model_specs = load_models(models)
        extra_overrides = parse_override_options(override)
        completions = generate_completions(heldout, model_specs, study_dir, rule=ExcerptRule(sentences=excerpt_sentences), extra_overrides=extra_overrides,
                                           allow_remote=allow_remote_endpoint)  # fmt: skip
        rater_names = [rater.strip() for rater in raters.split(",") if rater.strip()]
        summary = write_study(completions, study_dir, rater_names, seed=seed, force=force)
    except (ValueError, OSError, RuntimeError) as error:
        raise fail(error) from None
    typer.echo(f"completions: {completions}")
    typer.echo(f"cards and rater files in {study_dir}: {summary.get('cards', '?')} cards; give raters only the files under raters/")


@likert_app.command("judge")
def likert_judge(
    study: Annotated[str, typer.Option(help="Study name (reports/likert/<study>/)")],
    model: Annotated[str, typer.Option(help="Model name sent to the endpoint and used in the rater name judge:<model>")],
    endpoint: Annotated[str, typer.Option(help="OpenAI-compatible base URL (loopback only, see --allow-remote-endpoint)")] = "http://127.0.0.1:8000/v1",
    retries: Annotated[int, typer.Option(min=0, help="Extra attempts when an answer does not parse or a request fails")] = 2,
    allow_remote_endpoint: Annotated[
        bool, typer.Option("--allow-remote-endpoint", help="Send card text (clinical text) to a non-loopback endpoint, via the environment's proxies if set")
    ] = False,
    engine: EngineOption = "served",
    predictions: RoundPredictionsOption = None,
) -> None:
    """Score the cards with an LLM judge into ratings/judge_<model>.csv; cards already scored there are kept."""
    from medfactory.eval.likert import CARDS_FILE
    from medfactory.eval.likert.judge import MAX_FAILED_IN_A_ROW, endpoint_opener, judge_ratings_path, judge_study, load_cards

    rounds = predict_rounds(engine, predictions)
    try:
        if not rounds:
            endpoint_opener(endpoint, allow_remote_endpoint)  # a refused endpoint is reported before the study
        study_dir = study_folder(study)
        cards = load_cards(study_dir / CARDS_FILE)
        path = judge_ratings_path(study_dir, model)
        if rounds:
            run, written = _judge_in_rounds(cards, path, study, model, retries, predictions)
        else:
            run, written = judge_study(cards, path, endpoint, model, retries=retries, allow_remote=allow_remote_endpoint), None
    except (ValueError, OSError) as error:
        raise fail(error) from None
    typer.echo(f"{run.cards} cards: {run.kept} scored by an earlier run (kept), {run.judged} scored now, {run.missing} missing -> {run.path}")
    if written is not None:
        echo_round(written, f"medfactory likert judge --study {study} --model {model}")
        return
    if run.missing:
        stopped = f"; {run.not_tried} not tried: the endpoint failed on {MAX_FAILED_IN_A_ROW} cards in a row" if run.not_tried else ""
        raise fail(
            f"{run.missing} of {run.cards} cards could not be judged ({run.failed} after {retries + 1} attempts each{stopped}); last: {run.reason}. "
            "Scores already in the file were kept. Run the same command again to judge only the missing cards."
        )


def _judge_in_rounds(
    cards: list[dict[str, str]], path: Path, study: str, model: str, retries: int, predictions: Path | None
) -> tuple[JudgeRun, dict[str, Any] | None]:
    """``likert judge --engine predict``: the judge's answers from predict rounds; (the run, the round written or None)."""
    from medfactory.eval.likert.judge import judge_study
    from medfactory.generate.predict_rounds import RoundsClient, store_round, write_round

    name, cache = f"likert_judge_{study}", path.with_suffix(".requests.jsonl")
    if predictions is not None:
        store_round(Path("."), name, predictions, cache)
    client = RoundsClient(cache, model)
    try:
        run = judge_study(cards, path, "", model, retries=retries, rounds=client)
    finally:
        client.close()
    return run, (write_round(Path("."), name, "likert", client.pending, path.parent.parent) if client.pending else None)


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

    try:
        study_dir = study_folder(study)
        table = read_ratings(ratings, study_dir / CARDS_FILE, study_dir / KEY_FILE, allow_missing=allow_missing)
        report = write_report(table, pd.read_csv(study_dir / KEY_FILE, dtype=str), study_dir / "report", title=f"Likert study {study}")
    except RatingsError as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    except (ValueError, OSError) as error:
        raise fail(error) from None
    typer.echo(f"report: {report}")
