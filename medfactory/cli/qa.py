"""``medfactory generate qa``: the typer command over :mod:`medfactory.generate.qa` (it parses options and prints counts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfactory.base.errors import exit_on_corpus_error
from medfactory.base.registry import REGISTRY_NAME
from medfactory.corpus.dedup import DEFAULT_THRESHOLD
from medfactory.generate.endpoint_options import (
    DEFAULT_CONCURRENCY,
    DEFAULT_ENDPOINT,
    DEFAULT_MODEL,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    AllowRemoteOption,
    ConcurrencyOption,
    EndpointOption,
    EngineOption,
    ModelNameOption,
    PriceInputOption,
    PriceOutputOption,
    RetriesOption,
    RoundPredictionsOption,
    TimeoutOption,
    client_settings,
    echo_client_summary,
    echo_round,
    predict_rounds,
)
from medfactory.generate.grounding import DEFAULT_MIN_OVERLAP
from medfactory.generate.qa import CHUNK_GATES, DEFAULT_MAX_TOKENS, DEFAULT_QUESTIONS, DEFAULT_SEED, PAIR_GATES, QaOptions, generate_qa
from medfactory.generate.request_cache import request_cache_path
from medfactory.plugins import ReplaceOption


def qa_command(
    source: Annotated[Path, typer.Option(help="chunks.jsonl written by `medfactory prepare documents` (data/<documents>/chunks.jsonl)")],
    name: Annotated[str, typer.Option(help="Dataset name: data/<name>/sft.json, registered as <name> (sft, alpaca)")],
    mcq: Annotated[bool, typer.Option("--mcq", help="MCQ items (answer + 3 distractors): also writes items.jsonl in the MCQ format")] = False,
    questions_per_chunk: Annotated[int, typer.Option(help="Questions asked for per chunk (1-10)")] = DEFAULT_QUESTIONS,
    language: Annotated[str | None, typer.Option(help="es or pt: every chunk must be in it (default: each chunk's own language)")] = None,
    eval_sets: Annotated[
        list[Path] | None, typer.Option("--eval-sets", help="One more MCQ .jsonl eval set to keep out (repeat the flag); data/'s MCQ sets are always checked")
    ] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Ask the model whether each passage supports its answer, and keep only yeses")] = True,
    min_overlap: Annotated[float, typer.Option(help="Least share of the answer's content words found in the chunk")] = DEFAULT_MIN_OVERLAP,
    near_threshold: Annotated[float, typer.Option(help="Estimated Jaccard (word 3-gram shingles) from which questions are near copies")] = DEFAULT_THRESHOLD,
    seed: Annotated[int, typer.Option(help="Seed of the right answer's position in MCQ items (with the item id)")] = DEFAULT_SEED,
    max_tokens: Annotated[int, typer.Option(help="Most tokens of one generation reply (a cut reply is counted as truncated)")] = DEFAULT_MAX_TOKENS,
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/<name>/, dataset_info.json and .medfactory_cache/")] = Path("."),
    replace: ReplaceOption = False,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
    model: ModelNameOption = DEFAULT_MODEL,
    allow_remote_endpoint: AllowRemoteOption = False,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    retries: RetriesOption = DEFAULT_RETRIES,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    price_input: PriceInputOption = None,
    price_output: PriceOutputOption = None,
    engine: EngineOption = "served",
    predictions: RoundPredictionsOption = None,
) -> None:
    """Generate questions with answers (or MCQ items) from document chunks; schema, grounding, contamination and duplicate gates."""
    settings = client_settings(endpoint, model, allow_remote_endpoint, concurrency, retries, timeout, price_input, price_output)
    options = QaOptions(
        name=name, mcq=mcq, questions_per_chunk=questions_per_chunk, language=language, eval_sets=tuple(eval_sets or ()), verify=verify,
        min_overlap=min_overlap, near_threshold=near_threshold, seed=seed, max_tokens=max_tokens, output_root=output_root, replace=replace,
    )  # fmt: skip
    rounds = predict_rounds(engine, predictions)
    with exit_on_corpus_error():
        manifest = generate_qa(source, options, settings, rounds=rounds, predictions=predictions)
    if "round" in manifest:
        echo_round(manifest["round"], f"medfactory generate qa --source {source} --name {name} (the same options)")
        return
    gates = manifest["gates"]
    removed = ", ".join(f"{gate} {manifest['dropped'][gate]}" for gate in (*CHUNK_GATES, *PAIR_GATES) if manifest["dropped"][gate])
    typer.echo(f"{gates['chunks']['sent']} chunks, {gates['pairs']['parsed']} pairs parsed, {manifest['kept']} kept; removed: {removed or 'none'}")
    contaminated = ", ".join(f"{name} {count}" for name, count in gates["contaminated"].items())
    evals = len(manifest["contamination"]["eval_sets"])
    typer.echo(f"contamination: {evals} evaluation set(s) checked; matched: {contaminated or 'none'}")
    echo_client_summary(manifest["client"], request_cache_path(output_root, name))
    typer.echo(f"wrote {Path(output_root) / 'data' / name}; registered '{name}' in {Path(output_root) / REGISTRY_NAME}")
