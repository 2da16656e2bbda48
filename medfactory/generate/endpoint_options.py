"""The options every generation command takes for its LLM endpoint, and the settings built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.generate.client import REMOTE_FLAG, ClientSettings, GenerationError, endpoint_host

# Defaults for the signatures (typer takes an Annotated option's default from the parameter):
#     endpoint: EndpointOption = DEFAULT_ENDPOINT, model: ModelNameOption = DEFAULT_MODEL, ...
DEFAULT_ENDPOINT = ClientSettings.endpoint
DEFAULT_MODEL = ClientSettings.model
DEFAULT_CONCURRENCY = ClientSettings.concurrency
DEFAULT_RETRIES = ClientSettings.retries
DEFAULT_TIMEOUT = ClientSettings.timeout

EndpointOption = Annotated[
    str, typer.Option("--endpoint", help="OpenAI-compatible base URL (vLLM or `llamafactory-cli api`); loopback only unless " + REMOTE_FLAG)
]
ModelNameOption = Annotated[str, typer.Option("--model", help="The served model's name (vLLM: its --served-model-name; llamafactory-cli api accepts any)")]
AllowRemoteOption = Annotated[bool, typer.Option(REMOTE_FLAG, help="Send source text to a non-loopback endpoint (through the environment's proxies, if set)")]
ConcurrencyOption = Annotated[int, typer.Option("--concurrency", help="Requests in flight at once (1-64)")]
RetriesOption = Annotated[int, typer.Option("--retries", help="Extra attempts of a failed request, after a back-off of 1, 2, 4 ... (at most 10) s")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait for one answer")]
PriceInputOption = Annotated[float | None, typer.Option("--price-input", help="USD per million prompt tokens, for the cost line (default: not priced)")]
PriceOutputOption = Annotated[float | None, typer.Option("--price-output", help="USD per million completion tokens, for the cost line")]

EngineOption = Annotated[
    str, typer.Option("--engine", help="served: send to --endpoint; predict: answer through llamafactory-cli predict runs, in rounds (docs/generation.md)")
]
RoundPredictionsOption = Annotated[
    Path | None, typer.Option("--predictions", help="With --engine predict: the generated_predictions.jsonl of the last round's predict run")
]
ENGINES = ("served", "predict")

MAX_CONCURRENCY = 64
MAX_RETRIES = 10


def client_settings(
    endpoint: str = DEFAULT_ENDPOINT,
    model: str = DEFAULT_MODEL,
    allow_remote: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    retries: int = DEFAULT_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
    price_input: float | None = None,
    price_output: float | None = None,
) -> ClientSettings:
    """:class:`ClientSettings` from the flags; :class:`typer.BadParameter` naming the flag for a value out of range.

    The endpoint's URL is checked here; whether it is loopback is checked by the client, before anything is sent.
    """
    try:
        endpoint_host(endpoint)
    except GenerationError as error:
        raise typer.BadParameter(str(error).removeprefix("--endpoint "), param_hint="--endpoint") from None
    checks = [
        (bool(model.strip()), "--model", "the served model's name cannot be empty"),
        (1 <= concurrency <= MAX_CONCURRENCY, "--concurrency", f"{concurrency} is not between 1 and {MAX_CONCURRENCY}"),
        (0 <= retries <= MAX_RETRIES, "--retries", f"{retries} is not between 0 and {MAX_RETRIES}"),
        (timeout > 0, "--timeout", f"{timeout} is not a positive number of seconds"),
        (price_input is None or price_input >= 0, "--price-input", "a price cannot be negative"),
        (price_output is None or price_output >= 0, "--price-output", "a price cannot be negative"),
    ]
    for ok, flag, problem in checks:
        if not ok:
            raise typer.BadParameter(problem, param_hint=flag)
    return ClientSettings(
        endpoint=endpoint.strip(), model=model.strip(), allow_remote=allow_remote, concurrency=concurrency, retries=retries, timeout=timeout,
        price_input_per_million=price_input, price_output_per_million=price_output,
    )  # fmt: skip


def echo_client_summary(client_record: dict[str, Any], cache_path: Path) -> None:
    """The throughput and cost line of a generation command (its manifest's ``client`` record), and where its cache is."""
    typer.echo(f"client: {client_record['line']}; cache {cache_path} (a rerun sends only what is not in it)")


def predict_rounds(engine: str, predictions: Path | None, predictions_flag: str = "--predictions") -> bool:
    """Whether ``--engine`` asks for predict rounds; :class:`typer.BadParameter` naming the flag for anything else."""
    if engine not in ENGINES:
        raise typer.BadParameter(f"{engine!r} is not one of {', '.join(ENGINES)}", param_hint="--engine")
    if predictions is not None and engine != "predict":
        raise typer.BadParameter("the replies of a predict round are read with --engine predict", param_hint=predictions_flag)
    return engine == "predict"


def echo_round(round_manifest: dict[str, Any], command: str, predictions_flag: str = "--predictions") -> None:
    """What a step in predict rounds prints when a round is written instead of outputs (counts and names, no text)."""
    from medfactory.generate.predict_rounds import round_message

    typer.secho(f"not finished: {round_message(round_manifest, command, predictions_flag)}", fg=typer.colors.YELLOW)
