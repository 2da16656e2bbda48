"""``medfactory generate translate``: the typer command; the work is in medfactory.generate.translate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfactory.base.errors import exit_on_corpus_error
from medfactory.base.registry import REGISTRY_NAME
from medfactory.generate.endpoint_options import (
    DEFAULT_CONCURRENCY,
    DEFAULT_ENDPOINT,
    DEFAULT_MODEL,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    AllowRemoteOption,
    ConcurrencyOption,
    EndpointOption,
    ModelNameOption,
    PriceInputOption,
    PriceOutputOption,
    RetriesOption,
    TimeoutOption,
    client_settings,
    echo_client_summary,
)
from medfactory.generate.gates import DEFAULT_MIN_CHRF
from medfactory.generate.request_cache import request_cache_path
from medfactory.generate.translate import DEFAULT_CHUNK_CHARACTERS, DEFAULT_MAX_TOKENS, TranslateOptions, translate_dataset
from medfactory.plugins import ReplaceOption


def translate_command(
    kind: Annotated[str, typer.Option(help="mcq (MCQ JSONL), qa (alpaca JSON/JSONL) or documents (JSONL of {id, text})")],
    source: Annotated[Path, typer.Option(help="The file to translate")],
    name: Annotated[str, typer.Option(help="The dataset: data/NAME/ and the registry key NAME")],
    target_language: Annotated[str, typer.Option(help="es or pt")] = "es",
    source_language: Annotated[str, typer.Option(help="The source's language (en; es or pt for a set in the other one)")] = "en",
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
    model: ModelNameOption = DEFAULT_MODEL,
    allow_remote_endpoint: AllowRemoteOption = False,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    retries: RetriesOption = DEFAULT_RETRIES,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    price_input: PriceInputOption = None,
    price_output: PriceOutputOption = None,
    back_translate: Annotated[bool, typer.Option(help="Translate each kept reply back; keep it when chrF(source, back-translation) >= --min-chrf")] = False,
    min_chrf: Annotated[float, typer.Option(help="Least back-translation chrF (0-100) with --back-translate")] = DEFAULT_MIN_CHRF,
    max_tokens: Annotated[int, typer.Option(help="Most tokens of one reply (a reply cut there is 'truncated')")] = DEFAULT_MAX_TOKENS,
    chunk_characters: Annotated[int, typer.Option(help="documents: most characters of one request (whole sentences)")] = DEFAULT_CHUNK_CHARACTERS,
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/NAME/, dataset_info.json and the request cache")] = Path("."),
    replace: ReplaceOption = False,
    requests_only: Annotated[
        bool, typer.Option("--requests-only", help="Write data/NAME_requests/ (registered NAME_requests) for a llamafactory-cli predict run; send nothing")
    ] = False,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="generated_predictions.jsonl of the predict run on NAME_requests: its replies instead of --endpoint")
    ] = None,
) -> None:
    """Translate an MCQ set, Q&A pairs or documents; gate every reply; register NAME."""
    settings = client_settings(endpoint, model, allow_remote_endpoint, concurrency, retries, timeout, price_input, price_output)
    options = TranslateOptions(
        kind=kind, source=source, name=name, source_language=source_language, target_language=target_language, output_root=output_root,
        back_translate=back_translate, min_chrf=min_chrf, max_tokens=max_tokens, chunk_characters=chunk_characters, replace=replace,
        requests_only=requests_only, predictions=predictions,
    )  # fmt: skip
    with exit_on_corpus_error():
        manifest = translate_dataset(options, settings)
    if requests_only:
        typer.echo(f"wrote {manifest['requests']} requests of {manifest['records']} records to {Path(output_root) / 'data' / manifest['name']}; "
                   f"registered '{manifest['name']}': predict on it (docs/translation.md, 'Predict instead of serve'), then pass --predictions")  # fmt: skip
        return
    removed = ", ".join(f"{gate} {count}" for gate, count in manifest["gates"].items() if count) or "none"
    typer.echo(f"{kind}: kept {manifest['kept']} of {manifest['total']} records; removed by gate: {removed}")
    parts = manifest["parts"]
    typer.echo(f"requests: {parts['kept']} of {parts['total']} passed")
    if predictions is None:
        echo_client_summary(manifest["client"], request_cache_path(output_root, name))
    else:
        typer.echo(f"engine: {manifest['client']['line']}")
    if manifest["gates"].get("request_failed"):
        typer.secho("warning: some requests failed; run the same command again to retry only those.", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {Path(output_root) / 'data' / name}; registered '{name}' in {Path(output_root) / REGISTRY_NAME}")
