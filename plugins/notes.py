"""Users' own clinical notes: a folder of .txt files, or CSV/TSV, JSONL or Parquet exports.

``medfactory prepare notes --source EXPORT --name hc_notes --text-column evolucao
--patient-column prontuario`` writes ``data/hc_notes/{train,validation,test,likert_heldout}.jsonl``
with a manifest, and registers ``hc_notes``, ``hc_notes_validation``, ``hc_notes_test`` and
``hc_notes_likert`` in ``dataset_info.json``. Every option is in ``make_prepare_command``, which the
corpus plugins (``semclinbr``, ``brateca``) share with their own default column names.
"""


from pathlib import Path
from typing import Annotated

import typer

from medfactory.base.errors import CorpusError
from medfactory.corpus.pipeline import PrepareOptions, prepare_corpus
from medfactory.corpus.readers import FIELDS, ColumnMapping
from medfactory.corpus.splits import SplitPlan
from medfactory.plugins import CorpusPlugin, ReplaceOption

GENERIC_MAPPING = ColumnMapping(
    text=("text", "texto", "note", "nota", "note_text", "evolucao", "evolução", "descricao"),
    note_id=("note_id", "id", "id_nota", "id_evolucao"),
    patient_id=("patient_id", "id_paciente", "paciente_id", "subject_id", "prontuario"),
    admission_id=("admission_id", "id_atendimento", "atendimento", "id_internacao", "hadm_id", "encounter_id"),
    date=("date", "data", "dt_evolucao", "note_date", "charttime"),
)


# A tab is hard to type as an argument: --delimiter tab (or a literal backslash-t) means one.
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t"}


DEID_HELP = "De-identify names, dates, places, ids: surrogate (consistent fake values per patient), placeholder ([NOME], [DATA] ...) or none"


def mapping_with_overrides(defaults: ColumnMapping, **columns: str | None) -> ColumnMapping:
    """The defaults, with each column the user named replacing its candidates (and then required)."""
    chosen = {name: (columns[name],) if columns.get(name) else getattr(defaults, name) for name in FIELDS}
    required = {"text"} | {name for name in FIELDS if columns.get(name)}
    return ColumnMapping(**chosen, required=frozenset(required))


def make_prepare_command(plugin: str, defaults: ColumnMapping, dataset_name: str | None, locales: str = "br"):
    """A typer command preparing notes with ``defaults`` (overridable column by column)."""

    def command(
        source: Annotated[list[Path], typer.Option(help="A file or folder of notes (repeat for several)")],
        name: Annotated[str, typer.Option(help="Dataset name in dataset_info.json")] = dataset_name or "",
        text_column: Annotated[str | None, typer.Option(help=f"Note text column (default: first of {', '.join(defaults.text)})")] = None,
        id_column: Annotated[str | None, typer.Option(help=f"Note id column (default: first of {', '.join(defaults.note_id)})")] = None,
        patient_column: Annotated[str | None, typer.Option(help=f"Patient id column (default: first of {', '.join(defaults.patient_id)})")] = None,
        admission_column: Annotated[str | None, typer.Option(help=f"Admission id column (default: first of {', '.join(defaults.admission_id)})")] = None,
        date_column: Annotated[str | None, typer.Option(help=f"Note date column (default: first of {', '.join(defaults.date)})")] = None,
        encoding: Annotated[str, typer.Option(help="auto (UTF-8, then cp1252, per line), or a codec name such as latin-1")] = "auto",
        delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: tab for .tsv, comma otherwise)")] = None,
        identifiers: Annotated[str, typer.Option(help="Identifier locales to scan for: br, es or br,es")] = locales,
        identifier_mode: Annotated[str, typer.Option(help="report (count only), mask (replace with placeholders) or refuse (fail)")] = "mask",
        near_duplicates: Annotated[float | None, typer.Option(help="Drop near duplicates (copy-forward notes) at this Jaccard similarity, e.g. 0.85")] = None,
        validation_fraction: Annotated[float, typer.Option(help="Share of patients in the validation split")] = 0.01,
        test_fraction: Annotated[float, typer.Option(help="Share of patients in the test split")] = 0.01,
        likert_notes: Annotated[int, typer.Option(help="Held-out notes for the Likert study, drawn from the test patients")] = 100,
        likert_min_characters: Annotated[int, typer.Option(help="Only notes at least this long are drawn for the Likert study")] = 200,
        seed: Annotated[int, typer.Option(help="Seed of the patient split")] = SplitPlan.seed,
        min_characters: Annotated[int, typer.Option(help="Drop notes shorter than this after clean-up")] = 20,
        on_error: Annotated[str, typer.Option(help="fail on the first bad record, or skip and count it")] = "fail",
        tokenizer: Annotated[str | None, typer.Option(help="Count tokens exactly with this tokenizer (path or hub name)")] = None,
        output_root: Annotated[Path, typer.Option(help="Repository root: gets data/<name>/ and dataset_info.json")] = Path("."),
        replace: ReplaceOption = False,
        deid: Annotated[str, typer.Option(help=DEID_HELP)] = "surrogate",
        deid_model: Annotated[str | None, typer.Option(help="A .crfsuite tagger from `medfactory deid train` (default: the language's embedded one)")] = None,
        deid_seed: Annotated[str | None, typer.Option(help="Secret key of the surrogates, the same across runs (default: $MEDFACTORY_DEID_SEED)")] = None,
        workers: Annotated[int, typer.Option(help="De-identifying processes, near-duplicate hashing threads; same output for any number, e.g. $(nproc)")] = 1,
        canaries: Annotated[int, typer.Option(help="Canary notes with random secrets for `medfactory audit memorization`, in train only")] = 0,
        canary_repetitions: Annotated[str, typer.Option(help="Copies of each canary, cycled over the canaries")] = "1,2,4,8,16",
        canary_file: Annotated[str | None, typer.Option(help="Where the secrets go (default canaries/<name>.json; never under data/)")] = None,
    ) -> None:
        from medfactory.corpus.identifiers import parse_locales

        try:
            PrepareOptions.check_fractions(validation_fraction, test_fraction)  # before SplitPlan, to name the option
            options = PrepareOptions(
                name=name,
                plugin=plugin,
                mapping=mapping_with_overrides(
                    defaults, text=text_column, note_id=id_column, patient_id=patient_column,
                    admission_id=admission_column, date=date_column,
                ),  # fmt: skip
                encoding=encoding,
                delimiter=DELIMITER_NAMES.get(delimiter or "", delimiter),
                identifier_locales=parse_locales(identifiers),
                identifier_mode=identifier_mode,
                near_duplicate_threshold=near_duplicates,
                split=SplitPlan(validation_fraction, test_fraction, seed),
                likert_notes=likert_notes,
                likert_min_characters=likert_min_characters,
                min_characters=min_characters,
                on_error=on_error,
                tokenizer=tokenizer,
                replace=replace,
                deid=deid,
                deid_model=deid_model,
                deid_seed=deid_seed,
                workers=workers,
                canaries=canaries,
                canary_repetitions=parse_repetitions(canary_repetitions),
                canary_file=canary_file,
            )
            manifest = prepare_corpus(source, options, output_root)
        except (CorpusError, ValueError) as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from error
        print_summary(manifest, output_root)

    command.__doc__ = f"Prepare {plugin} notes into data/<name>/ (train, validation, test, Likert held-out) and register them."
    return command


def parse_repetitions(value: str) -> tuple[int, ...]:
    """``1,2,4,8,16`` -> (1, 2, 4, 8, 16); anything else is refused naming the option."""
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError as error:
        raise CorpusError(f"--canary-repetitions {value!r}: whole numbers separated by commas, e.g. 1,2,4,8,16.") from error


def print_summary(manifest: dict, output_root: Path) -> None:
    """Counts only: never note text."""
    sources = manifest["sources"]
    typer.echo(f"read {sources['records']:,} records from {sources['files']} files ({sources['bytes'] / 2**20:,.1f} MiB; encodings {sources['encodings']})")
    for split, stats in manifest["splits"].items():
        tokens = f"{stats['tokens']:,} tokens" if stats.get("tokens") is not None else f"~{stats['estimated_tokens']:,} tokens"
        typer.echo(f"  {split:<10} {stats['documents']:>10,} notes {stats['characters']:>14,} characters  {tokens}")
    typer.echo(f"dropped: {', '.join(f'{k} {v:,}' for k, v in manifest['dropped'].items()) or 'none'}")
    if manifest.get("repeated_note_ids"):
        typer.secho(
            f"warning: {manifest['repeated_note_ids']:,} records had the note id of an earlier record; the first of each "
            "was kept (dropped as repeated_note_id). Check --id-column and the export",
            fg=typer.colors.YELLOW,
        )
    for caveat in manifest.get("likert_caveats", []):
        typer.secho(f"warning: {caveat}", fg=typer.colors.YELLOW)
    for caveat in manifest.get("split_caveats", []):
        typer.secho(f"warning: {caveat}; pass --patient-column if the export has patient ids", fg=typer.colors.YELLOW)
    deid = manifest["deid"]
    if deid["mode"] == "none":
        typer.secho("warning: de-identification is off (--deid none): names, dates and places are written as they are", fg=typer.colors.YELLOW)
    else:
        layers = "+".join(deid["layers"])
        found = deid["findings_by_category"] or "none found"
        typer.echo(f"de-identified ({deid['mode']}, {deid['language']}, {layers}): {deid['notes_with_findings']:,} notes; {found}")
    canaries = manifest.get("canaries") or {}
    if canaries.get("count"):
        typer.echo(f"canaries: {canaries['count']} ({canaries['copies_in_train']:,} copies in train only); secrets in {canaries['file']}: "
                   "keep that file away from training data and from anyone training on this corpus")  # fmt: skip
    ids = manifest["identifiers"]
    typer.echo(f"identifiers ({ids['mode']}): {ids['notes_with_findings']:,} notes; {ids['findings_by_type'] or 'none found'}")
    if manifest.get("stale_staging_removed"):
        typer.echo(f"removed {manifest['stale_staging_removed']} staging folder(s) left by an earlier run that was killed")
    typer.echo(f"wrote {Path(output_root) / 'data' / manifest['dataset']}/ and registered it in {Path(output_root) / 'dataset_info.json'}")


PLUGIN = CorpusPlugin(
    name="notes",
    summary="Your own clinical notes: .txt folder, CSV/TSV, JSONL or Parquet (columns configurable)",
    command=make_prepare_command("notes", GENERIC_MAPPING, dataset_name=None),
)
