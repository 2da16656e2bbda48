"""``medfactory deid train|apply|eval``: the typer commands over :mod:`medfactory.corpus.deid`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

deid_app = typer.Typer(help="De-identify clinical notes (pt, es): train the tagger, apply it, measure it against gold annotations.", no_args_is_help=True)

# --- deid train (owner: the CRF helper) ---------------------------------------------------------------


def _train_fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned Exit(1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@deid_app.command("train")
def train_command(
    gold: Annotated[list[Path], typer.Option("--gold", help="BRAT folder of .txt + .ann gold files (repeat for several, e.g. train and dev).")],
    output: Annotated[Path, typer.Option("--output", help="Where to write the CRF model (.crfsuite); written atomically.")],
    language: Annotated[str, typer.Option("--language", help="Language of the notes: es or pt.")] = "es",
    c1: Annotated[float, typer.Option("--c1", help="L1 regularisation (larger: fewer features, a smaller model).")] = 0.05,
    c2: Annotated[float, typer.Option("--c2", help="L2 regularisation.")] = 0.01,
    max_iterations: Annotated[int, typer.Option("--max-iterations", help="L-BFGS iterations.")] = 150,
) -> None:
    """Train the CRF tagger on BRAT gold folders (MEDDOCAN's format) and write the model."""
    from medfactory.base.errors import CorpusError
    from medfactory.corpus.deid.brat import read_brat_folder
    from medfactory.corpus.deid.crf import CrfTagger
    from medfactory.corpus.deid.spans import LANGUAGES

    if language not in LANGUAGES:
        raise _train_fail(f"--language {language!r} is not one of {', '.join(LANGUAGES)}. Fix: pass --language es or --language pt.")
    try:
        documents = [(document.text, document.spans) for folder in gold for document in read_brat_folder(folder)]
        counts = CrfTagger.train(documents, output, c1=c1, c2=c2, max_iterations=max_iterations, language=language)
    except (CorpusError, ValueError) as error:
        raise _train_fail(str(error)) from error
    except OSError as error:
        raise _train_fail(f"cannot write the model to {output}: {error.strerror or error}") from error
    size = output.stat().st_size / 1e6
    typer.echo(f"trained on {counts['documents']} documents ({counts['tokens']} tokens, {counts['spans']} spans); model written to {output} ({size:.2f} MB)")

# --- deid apply (owner: the rules/surrogates helper) ----------------------------------------------------

# --- deid eval (owner: the BRAT/evaluation helper) -------------------------------------------------------


def _eval_fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned Exit(1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _eval_scores(gold: Path, predicted: Path | None, language: str | None, model: Path | None) -> tuple[dict, list[str]]:
    """The scores and the report's header lines, for predictions read from a folder or made by the de-identifier."""
    from medfactory.corpus.deid.evaluate import compare_folders, score_finder

    if (predicted is None) == (language is None):
        raise _eval_fail("pass exactly one of --predicted DIR (compare two folders) and --language es|pt (run the de-identifier).")
    if predicted is not None:
        return compare_folders(gold, predicted), [f"- gold: `{gold}`", f"- predicted: `{predicted}`"]
    if language not in ("es", "pt"):
        raise _eval_fail(f"--language must be es or pt, not {language!r}.")
    try:
        from medfactory.corpus.deid.deidentifier import Deidentifier  # lazily: the tagger loads only for this branch
    except ModuleNotFoundError as error:
        if error.name != "medfactory.corpus.deid.deidentifier":
            raise
        raise _eval_fail("this build has no de-identifier (medfactory.corpus.deid.deidentifier). Fix: compare folders with --predicted DIR.") from error

    deidentifier = Deidentifier(language, model=model)
    header = [f"- gold: `{gold}`", f"- de-identifier: language {language}, model `{model or 'default'}`"]
    return score_finder(gold, deidentifier.find), header


@deid_app.command("eval")
def eval_command(
    gold: Annotated[Path, typer.Option("--gold", help="Folder of gold BRAT documents (NAME.txt + NAME.ann), e.g. MEDDOCAN dev")],
    predicted: Annotated[Path | None, typer.Option("--predicted", help="Folder of predicted NAME.ann (or `deid apply`'s spans.jsonl)")] = None,
    language: Annotated[str | None, typer.Option("--language", help="Run the de-identifier in this language (es or pt) on the gold texts")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Tagger model for --language (default: the embedded one)")] = None,
    output: Annotated[Path, typer.Option("--output", help="Report folder: report.md, scores.json, category_scores.png")] = Path("reports/deid_eval"),
) -> None:
    """MEDDOCAN's measures (strict span P/R/F1 per category and overall, merged spans, leak) of predictions against gold."""
    from medfactory.corpus.deid.evaluate import score_tables, write_report

    try:
        scores, header = _eval_scores(gold, predicted, language, model)
    except (FileNotFoundError, ValueError) as error:  # CorpusError (a bad gold or predicted file), a missing or bad model
        raise _eval_fail(str(error)) from error
    missing, unmatched = scores["documents_without_prediction"], scores["predictions_without_gold"]
    header = [*header, f"- documents: {scores['documents']:,}; gold documents without predictions (scored as nothing found): {missing:,}; "
              f"predicted documents without gold (ignored): {unmatched:,}"]  # fmt: skip
    typer.echo("\n".join(header))
    typer.echo(score_tables(scores))
    try:
        paths = write_report(scores, output, header)
    except OSError as error:
        raise _eval_fail(f"cannot write the report to {output}: {error.strerror or error}") from error
    typer.echo(f"report written to {', '.join(str(path) for path in paths)}")
