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
    output: Annotated[Path, typer.Option("--output", help="Where to write the CRF model (.crfsuite), or the model folder with --backend encoder; atomic.")],
    language: Annotated[str, typer.Option("--language", help="Language of the notes: es or pt.")] = "es",
    c1: Annotated[float, typer.Option("--c1", help="L1 regularisation (larger: fewer features, a smaller model).")] = 0.02,
    c2: Annotated[float, typer.Option("--c2", help="L2 regularisation.")] = 0.01,
    max_iterations: Annotated[int, typer.Option("--max-iterations", help="L-BFGS iterations.")] = 150,
    backend: Annotated[str, typer.Option("--backend", help="crf (CPU, the default) or encoder (fine-tune a transformers encoder; a GPU VM).")] = "crf",
    encoder: Annotated[Path | None, typer.Option("--encoder", help="With --backend encoder: the base encoder's local folder (a clinical RoBERTa ...).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="With --backend encoder: passes over the training windows.")] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="With --backend encoder: windows per step.")] = 16,
    learning_rate: Annotated[float, typer.Option("--learning-rate", help="With --backend encoder: AdamW peak learning rate.")] = 5e-5,
    device: Annotated[str, typer.Option("--device", help="With --backend encoder: auto (cuda when available), cuda, cuda:N or cpu.")] = "auto",
) -> None:
    """Train the CRF tagger (or, with --backend encoder, a transformers token classifier) on BRAT gold folders (MEDDOCAN's format)."""
    from medfactory.base.errors import CorpusError
    from medfactory.corpus.deid.brat import read_brat_folder
    from medfactory.corpus.deid.crf import CrfTagger
    from medfactory.corpus.deid.spans import LANGUAGES

    if language not in LANGUAGES:
        raise _train_fail(f"--language {language!r} is not one of {', '.join(LANGUAGES)}. Fix: pass --language es or --language pt.")
    if backend != "crf":
        return _train_encoder(gold, output, backend, encoder, epochs, batch_size, learning_rate, device)
    try:
        documents = [(document.text, document.spans) for folder in gold for document in read_brat_folder(folder)]
        counts = CrfTagger.train(documents, output, c1=c1, c2=c2, max_iterations=max_iterations, language=language)
    except (CorpusError, ValueError) as error:
        raise _train_fail(str(error)) from error
    except OSError as error:
        raise _train_fail(f"cannot write the model to {output}: {error.strerror or error}") from error
    size = output.stat().st_size / 1e6
    typer.echo(f"trained on {counts['documents']} documents ({counts['tokens']} tokens, {counts['spans']} spans); model written to {output} ({size:.2f} MB)")


def _train_encoder(gold: list[Path], output: Path, backend: str, encoder: Path | None, epochs: int, batch_size: int, learning_rate: float, device: str) -> None:
    """`deid train --backend encoder`: fine-tune --encoder on the gold folders; --output becomes a model folder."""
    from medfactory.base.errors import CorpusError
    from medfactory.corpus.deid.brat import read_brat_folder

    if backend != "encoder":
        raise _train_fail(f"--backend {backend!r} is not one of crf, encoder. Fix: pass --backend crf or --backend encoder.")
    if encoder is None:
        raise _train_fail("--backend encoder needs --encoder BASE_MODEL_DIR (a local folder with a transformers encoder). Fix: pass --encoder DIR.")
    from medfactory.corpus.deid.encoder import EncoderTagger  # lazily: torch and transformers load only for this backend

    try:
        documents = [(document.text, document.spans) for folder in gold for document in read_brat_folder(folder)]
        facts = EncoderTagger.train(documents, encoder, output, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, device=device)
    except (CorpusError, ValueError, FileNotFoundError) as error:
        raise _train_fail(str(error)) from error
    except OSError as error:
        raise _train_fail(f"cannot write the model to {output}: {error.strerror or error}") from error
    size = sum(path.stat().st_size for path in output.rglob("*") if path.is_file()) / 1e6
    typer.echo(f"trained on {facts['documents']} documents ({facts['windows']} windows of {facts['max_length']} tokens, {facts['spans']} spans), "
               f"{facts['steps']} steps on {facts['device']} in {facts['train_seconds']} s; model folder written to {output} ({size:.1f} MB)")  # fmt: skip

# --- deid apply (owner: the rules/surrogates helper) ----------------------------------------------------

APPLY_SUFFIXES = (".txt", ".jsonl")


def _apply_fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned Exit(1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _apply_inputs(input_dir: Path, output_dir: Path) -> list[Path]:
    """The .txt / .jsonl files directly in ``input_dir``; refuses an output folder that is, or is inside, or holds the input folder."""
    if not input_dir.is_dir():
        raise _apply_fail(f"--input {input_dir}: no such folder. Fix: pass the folder that holds the notes (.txt or .jsonl files).")
    source, target = input_dir.resolve(), output_dir.resolve()
    if source == target or source in target.parents or target in source.parents:
        raise _apply_fail(f"--output {output_dir} is --input {input_dir} (or one holds the other): the notes would be overwritten or read back. "
                          "Fix: pass a separate output folder, e.g. --output deid_out.")  # fmt: skip
    files = sorted(path for path in input_dir.iterdir() if path.is_file() and path.suffix.lower() in APPLY_SUFFIXES)
    if not files:
        raise _apply_fail(f"--input {input_dir}: no .txt or .jsonl file directly in it. Fix: pass the folder that holds the notes.")
    return files


def _apply_span_lines(document: str, spans: list, record: int | None = None) -> list[str]:
    from medfactory.base.jsonl import jsonl_line

    extra = {} if record is None else {"record": record}
    return [jsonl_line({"document": document, **extra, "start": span.start, "end": span.end, "category": span.category}) for span in spans]


def _read_note(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as handle:  # newline="": offsets index the file's own line breaks
            return handle.read()
    except UnicodeDecodeError as error:
        raise _apply_fail(f"{path}: not UTF-8 (byte {error.start}). Fix: convert the file to UTF-8 (e.g. iconv -f cp1252 -t utf-8).") from error


def _write_text_note(done, spans_out, counts) -> None:
    """A finished .txt note (payload: its path and target): the de-identified file, its findings."""
    from medfactory.base.atomic import atomic_write

    path, target = done.payload
    with atomic_write(target) as handle:
        handle.write(done.text)
    spans_out.writelines(_apply_span_lines(path.name, done.spans))
    counts.update(span.category for span in done.spans)


def _apply_jsonl(path: Path, target: Path, runner, text_field: str, patient_field: str, spans_out, counts) -> None:
    """A JSON Lines file: each record's ``text_field`` replaced; the patient key is ``patient_field``, else the record's id, else its line."""

    from medfactory.base.atomic import atomic_write
    from medfactory.base.jsonl import jsonl_line, text_record

    def write(finished) -> None:
        for done in finished:
            number, record = done.payload
            record[text_field] = done.text
            handle.write(jsonl_line(record))
            spans_out.writelines(_apply_span_lines(path.name, done.spans, record=number))
            counts.update(span.category for span in done.spans)

    with open(path, encoding="utf-8") as source, atomic_write(target) as handle:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            record = text_record(path, number, line, text_field)  # a CorpusError names the file and line
            patient = record.get(patient_field) or record.get("id") or f"{path.name}:{number}"
            write(runner.submit(record[text_field], str(patient), (number, record)))
        write(runner.finish())  # this file's last records, before its handle closes


def _apply_seed(seed: str | None) -> str:
    """The surrogate key: --seed, else $MEDFACTORY_DEID_SEED, else a random one for this run only (said so, never shown)."""
    import os
    import secrets

    chosen = seed or os.environ.get("MEDFACTORY_DEID_SEED")
    if chosen:
        return chosen
    typer.echo("note: no --seed (or MEDFACTORY_DEID_SEED): surrogates are consistent within this run only. Pass the same secret seed to keep them across runs.")
    return secrets.token_hex(16)


@deid_app.command("apply")
def apply_command(
    input_dir: Annotated[Path, typer.Option("--input", help="Folder of notes: each .txt is one note; each .jsonl line a record with a text field")],
    output_dir: Annotated[Path, typer.Option("--output", help="Folder for the de-identified files (same names) and spans.jsonl; not the input folder")],
    language: Annotated[str, typer.Option("--language", help="Language of the notes: es or pt")] = "es",
    mode: Annotated[str, typer.Option("--mode", help="surrogate (consistent fake values per patient) or placeholder ([NOMBRE], [DATA] ...)")] = "surrogate",
    model: Annotated[Path | None, typer.Option("--model", help="CRF model (.crfsuite) to use instead of the embedded one of the language")] = None,
    encoder: Annotated[Path | None, typer.Option("--encoder", help="Encoder model folder (`deid train --backend encoder`) to run instead of the CRF")] = None,
    seed: Annotated[str | None, typer.Option("--seed", help="Secret key of the surrogates: the same key gives the same surrogates across runs")] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="Field of a .jsonl record that holds the note")] = "text",
    patient_field: Annotated[str, typer.Option("--patient-field", help="Field of a .jsonl record with the patient id (surrogates per patient)")] = "patient_id",
    workers: Annotated[int, typer.Option("--workers", help="Processes that de-identify (1: this one); the output is the same for any number")] = 1,
) -> None:
    """De-identify a folder of notes: writes NAME.txt / NAME.jsonl de-identified and spans.jsonl (offsets in the original text)."""
    from collections import Counter

    from tqdm import tqdm

    from medfactory.base.atomic import atomic_write
    from medfactory.base.errors import CorpusError
    from medfactory.base.names import confined_path
    from medfactory.corpus.deid.deidentifier import Deidentifier
    from medfactory.corpus.deid.parallel import BatchedDeidentifier
    from medfactory.corpus.deid.spans import LANGUAGES
    from medfactory.corpus.deid.surrogates import MODES

    if language not in LANGUAGES:
        raise _apply_fail(f"--language {language!r} is not one of {', '.join(LANGUAGES)}. Fix: pass --language es or --language pt.")
    if mode not in MODES:
        raise _apply_fail(f"--mode {mode!r} is not one of {', '.join(MODES)}. Fix: pass --mode surrogate or --mode placeholder.")
    files = _apply_inputs(input_dir, output_dir)
    try:
        deidentifier = Deidentifier(language, model=model, encoder=encoder)
    except (FileNotFoundError, RuntimeError, ValueError) as error:  # ValueError: an encoder folder with other labels or a slow tokenizer
        raise _apply_fail(str(error)) from error
    key = _apply_seed(seed)
    typer.echo(f"de-identifying {len(files)} file(s) in {language} with {' + '.join(deidentifier.layers)}, mode {mode}")
    if workers < 1:
        raise _apply_fail(f"--workers {workers}: pass 1 (this process) or more, e.g. the machine's cores (nproc).")
    counts: Counter = Counter()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(output_dir / "spans.jsonl") as spans_out, BatchedDeidentifier(deidentifier, mode, key, workers) as runner:
            for path in tqdm(files, desc="deid", unit="file"):
                target = confined_path(output_dir, path.name, what="input file name", fix="Fix: rename the file (letters, digits, - and _).")
                if target.name == "spans.jsonl":
                    raise _apply_fail(f"{path}: an input named spans.jsonl would be overwritten by the findings. Fix: rename it.")
                if path.suffix.lower() == ".txt":
                    for done in runner.submit(_read_note(path), path.stem, (path, target)):  # the file name is the patient key
                        _write_text_note(done, spans_out, counts)
                else:
                    for done in runner.finish():  # the .txt notes still in flight, before this file's records
                        _write_text_note(done, spans_out, counts)
                    _apply_jsonl(path, target, runner, text_field, patient_field, spans_out, counts)
            for done in runner.finish():
                _write_text_note(done, spans_out, counts)
    except CorpusError as error:
        raise _apply_fail(str(error)) from error
    except OSError as error:
        raise _apply_fail(f"cannot write to {output_dir}: {error.strerror or error}") from error
    typer.echo(f"{sum(counts.values()):,} findings written to {output_dir / 'spans.jsonl'} (values never shown):")
    for category, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        typer.echo(f"  {category:<36} {count:>8,}")


# --- deid eval (owner: the BRAT/evaluation helper) -------------------------------------------------------


def _eval_fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned Exit(1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _eval_scores(gold: Path, predicted: Path | None, language: str | None, model: Path | None, encoder: Path | None = None) -> tuple[dict, list[str]]:
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

    extra = {"encoder": encoder} if encoder is not None else {}  # passed only when given: a stand-in Deidentifier(language, model) still fits
    deidentifier = Deidentifier(language, model=model, **extra)
    tagger = f"encoder `{encoder}`" if encoder is not None else f"model `{model or 'default'}`"
    header = [f"- gold: `{gold}`", f"- de-identifier: language {language}, {tagger}"]
    return score_finder(gold, deidentifier.find_many), header


@deid_app.command("eval")
def eval_command(
    gold: Annotated[Path, typer.Option("--gold", help="Folder of gold BRAT documents (NAME.txt + NAME.ann), e.g. MEDDOCAN dev")],
    predicted: Annotated[Path | None, typer.Option("--predicted", help="Folder of predicted NAME.ann (or `deid apply`'s spans.jsonl)")] = None,
    language: Annotated[str | None, typer.Option("--language", help="Run the de-identifier in this language (es or pt) on the gold texts")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Tagger model for --language (default: the embedded one)")] = None,
    encoder: Annotated[Path | None, typer.Option("--encoder", help="Encoder model folder for --language, run instead of the CRF")] = None,
    output: Annotated[Path, typer.Option("--output", help="Report folder: report.md, scores.json, category_scores.png")] = Path("reports/deid_eval"),
) -> None:
    """MEDDOCAN's measures (strict span P/R/F1 per category and overall, merged spans, leak) of predictions against gold."""
    from medfactory.corpus.deid.evaluate import score_tables, write_report

    try:
        scores, header = _eval_scores(gold, predicted, language, model, encoder)
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


# --- deid planted: the pt-BR evaluation set ------------------------------------------------------------


@deid_app.command("planted")
def planted_command(
    output: Annotated[Path, typer.Option(help="Folder that gets train/ and test/ (BRAT) and planted.json (counts)")],
    source: Annotated[Path | None, typer.Option(help="The Lopes 2019 folder (holding 'Texts SPN 1 Raw' ...): real text, planted PHI")] = None,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="A train part from the project's synthetic notes instead (no real text)")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the planted values")] = 15,
    documents: Annotated[int | None, typer.Option(help="How many cases (default: all; 600 with --synthetic)")] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of the cases in test/")] = 0.3,
) -> None:
    """Write the pt-BR evaluation set: Portuguese clinical cases with planted, annotated Brazilian-style PHI."""
    import json

    from medfactory.base.errors import CorpusError
    from medfactory.corpus.deid import planted

    try:
        if synthetic:
            facts = planted.write_synthetic_training_set(output, seed, documents or 600)
        elif source is None:
            raise CorpusError("pass --source with the Lopes 2019 folder, or --synthetic.")
        else:
            facts = planted.write_planted_set(source, output, seed, documents, test_fraction)
    except (CorpusError, OSError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    typer.echo(json.dumps({part: {key: value for key, value in counts.items() if key != "by_category"} for part, counts in facts["parts"].items()}))


# --- deid label-studio export|import|config: the annotation loop (Portuguese) ---------------------------

label_studio_app = typer.Typer(
    help="The annotation loop: export pre-annotated notes to Label Studio, import the corrected spans as BRAT gold for `deid train`.",
    no_args_is_help=True,
)
deid_app.add_typer(label_studio_app, name="label-studio")


def _ls_fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned Exit(1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _ls_counts(counts) -> None:  # counts: a Counter of categories; values are never shown
    for category, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        typer.echo(f"  {category:<36} {count:>8,}")


@label_studio_app.command("export")
def label_studio_export_command(
    input_dir: Annotated[Path, typer.Option("--input", help="Folder of notes, as `deid apply` reads: each .txt one document, each .jsonl line another")],
    output: Annotated[Path, typer.Option("--output", help="Label Studio tasks file (.json), outside --input; the config goes beside it (.label_config.xml)")],
    language: Annotated[str, typer.Option("--language", help="Language of the notes: pt or es")] = "pt",
    sample: Annotated[int | None, typer.Option("--sample", help="Export a simple random sample (not stratified) of this many documents (default: all)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample: the same folder, --sample and --seed give the same documents")] = 0,
    model: Annotated[Path | None, typer.Option("--model", help="CRF model (.crfsuite) to pre-annotate with instead of the embedded one")] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="Field of a .jsonl record that holds the note")] = "text",
) -> None:
    """Write Label Studio tasks pre-annotated with the de-identifier's spans (as predictions), and the labelling config."""
    from medfactory.base.errors import CorpusError
    from medfactory.corpus.deid.label_studio import export_notes
    from medfactory.corpus.deid.spans import LANGUAGES

    if language not in LANGUAGES:
        raise _ls_fail(f"--language {language!r} is not one of {', '.join(LANGUAGES)}. Fix: pass --language pt or --language es.")
    try:
        summary = export_notes(input_dir, output, language, sample=sample, seed=seed, model=model, text_field=text_field)
    except (CorpusError, FileNotFoundError, RuntimeError) as error:
        raise _ls_fail(str(error)) from error
    except OSError as error:
        raise _ls_fail(f"cannot write {output}: {error.strerror or error}") from error
    typer.echo(f"exported {summary.tasks:,} of {summary.documents_in_folder:,} documents (seed {seed}) pre-annotated with {' + '.join(summary.layers)}: "
               f"{sum(summary.predicted.values()):,} predicted spans (values never shown):")  # fmt: skip
    _ls_counts(summary.predicted)
    typer.echo(f"labelling config: {summary.config_path} (Label Studio: Settings > Labeling Interface > Code)")
    if summary.offset_risk:
        typer.echo(f"note: {summary.offset_risk:,} task(s) have CR line ends or emoji: should Label Studio count their offsets otherwise, import says where.")
    typer.echo(f"PATIENT TEXT: {summary.tasks_path} holds the full, not de-identified text of {summary.tasks:,} notes: keep it on the credentialed machine.")


@label_studio_app.command("import")
def label_studio_import_command(
    tasks: Annotated[Path, typer.Option("--tasks", help="Label Studio's JSON export of the project (Export > JSON)")],
    output: Annotated[Path, typer.Option("--output", help="New folder for the gold BRAT files (NAME.txt + NAME.ann), written in one step")],
    replace: Annotated[bool, typer.Option("--replace", help="Replace --output if it exists and is not empty")] = False,
) -> None:
    """Import the corrected spans (the latest non-cancelled annotation of each task) as BRAT gold for `deid train --gold`."""
    from medfactory.base.errors import CorpusError
    from medfactory.corpus.deid.label_studio import read_label_studio_export, write_gold_folder

    try:
        export = read_label_studio_export(tasks)
        write_gold_folder(export.documents, output, replace=replace, keep=tasks)
    except CorpusError as error:
        raise _ls_fail(str(error)) from error
    except OSError as error:
        raise _ls_fail(f"cannot write {output}: {error.strerror or error}") from error
    categories = export.categories()
    typer.echo(f"imported {len(export.documents):,} of {export.tasks:,} tasks into {output} ({sum(categories.values()):,} spans, values never shown); "
               f"skipped {export.unannotated:,} without annotation and {export.cancelled:,} cancelled")  # fmt: skip
    _ls_counts(categories)
    if export.several:
        typer.echo(f"note: {export.several:,} task(s) had several completed annotations: the latest of each was used.")
    typer.echo(f"PATIENT TEXT: {output} holds the notes' text: keep it on the credentialed machine. "
               f"Next: medfactory deid train --gold {output} --language pt --output MODEL.crfsuite")  # fmt: skip


@label_studio_app.command("config")
def label_studio_config_command() -> None:
    """Print the labelling config (XML) the exported tasks expect: paste it in the project's Labeling Interface > Code."""
    from medfactory.corpus.deid.label_studio import LABEL_STUDIO_CONFIG

    typer.echo(LABEL_STUDIO_CONFIG, nl=False)
