"""``medfactory generate predict``: the typer command; the work is in medfactory.generate.served_predict."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from medfactory.base.errors import CorpusError, exit_on_corpus_error
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
    RetriesOption,
    TimeoutOption,
    client_settings,
    echo_client_summary,
)
from medfactory.generate.request_cache import request_cache_path
from medfactory.generate.served_predict import PREDICTIONS_FILE, PredictSettings, PromptCheck, serve_predict, settings_from_recipe


def predict_command(
    recipe: Annotated[Path | None, typer.Option("--recipe", help="A predict recipe: its eval_dataset, output_dir, max_new_tokens, temperature")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="The registered set to answer (default: the recipe's eval_dataset)")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Gets generated_predictions.jsonl (default: the recipe's output_dir)")] = None,
    dataset_dir: Annotated[Path, typer.Option("--dataset-dir", help="The folder of dataset_info.json (without --recipe)")] = Path("."),
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Most tokens per reply (default: recipe max_new_tokens, else 512)")] = None,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
    model: ModelNameOption = DEFAULT_MODEL,
    allow_remote_endpoint: AllowRemoteOption = False,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    retries: RetriesOption = DEFAULT_RETRIES,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    check_prompts: Annotated[
        Path | None,
        typer.Option("--check-prompts", help="The served model's tokenizer folder: stop unless the server builds each prompt as the recipe's template does"),
    ] = None,
) -> None:
    """Answer a registered predict set through a served model; write generated_predictions.jsonl as llamafactory-cli predict does."""
    endpoint_settings = client_settings(endpoint, model, allow_remote_endpoint, concurrency, retries, timeout)
    with exit_on_corpus_error():
        if recipe is not None:
            settings = settings_from_recipe(recipe, dataset, output_dir, max_tokens)
        elif dataset is None or output_dir is None:
            raise CorpusError("pass --recipe (a predict recipe), or --dataset and --output-dir.")
        else:
            settings = PredictSettings(dataset, dataset_dir, output_dir, max_tokens or 512)
        if settings.server_values:  # the server loads the model and builds the prompt: say how it must run before anything is sent
            values = ", ".join(f"{key}={shlex.quote(str(value))}" for key, value in settings.server_values)
            typer.secho(f"note: start the server with the recipe's {values} (the llamafactory-cli api arguments of those names; "
                        "vLLM: the same chat template and image size)", fg=typer.colors.YELLOW, err=True)  # fmt: skip
        cache = request_cache_path(Path("."), f"predict_{settings.dataset}")
        summary = serve_predict(settings, endpoint_settings, cache, prompt_check=_prompt_check(check_prompts, settings))
    typer.echo(f"{summary['records']} records of {settings.dataset} answered -> {settings.output_dir / PREDICTIONS_FILE}")
    if settings.not_sent:
        typer.secho(f"note: the recipe's {', '.join(settings.not_sent)} are not sent (set them on the server)", fg=typer.colors.YELLOW, err=True)
    echo_client_summary(summary["client"], cache)


def _prompt_check(tokenizer: Path | None, settings: PredictSettings) -> PromptCheck | None:
    """``--check-prompts``: the recipe's template and default system, counted with the served model's tokenizer."""
    if tokenizer is None:
        return None
    values = dict(settings.server_values)
    if not values.get("template"):
        raise CorpusError("--check-prompts needs the template the prompts are built with: pass --recipe (a predict recipe names its template).")
    return PromptCheck(str(tokenizer), str(values["template"]), values.get("default_system"))
