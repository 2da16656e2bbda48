"""The ``llamafactory-cli`` predict engine for steps whose later requests are built from earlier replies.

``generate qa`` verifies each generated pair with a second request built from the first reply, and the
judges retry an unreadable answer; a predict run cannot answer those before the first round is back. So
the request cache is the join, and a step runs in rounds:

1. ``--engine predict``: the step runs as usual against :class:`RoundsClient`, which answers what the
   cache holds and records every other request as pending. A step that has pending requests publishes
   nothing; it raises :class:`PredictRoundNeeded`, and :func:`write_round` writes the pending requests
   as a registered sharegpt set ``data/<name>_round/`` (the turns, the system prompt, an empty response),
   with the cache key of each row in ``keys.json``.
2. ``llamafactory-cli train <a predict recipe> eval_dataset=<name>_round output_dir=...`` answers them.
3. ``--engine predict --predictions .../generated_predictions.jsonl``: :func:`store_round` joins the rows to
   ``keys.json`` by position (each prediction's prompt must hold its request's last turn) and writes each
   reply into the request cache under its request's key; then the step runs again from step 1. When no
   request is left pending, it publishes exactly what the served engine would have from the same replies.

The cache key holds the step's model name, temperature and max_tokens, as for the served engine, so a
change of options asks for a new round instead of reusing replies to other requests. The decoding of a
round is the predict recipe's: ``write_round`` reports the temperature and the longest max_tokens the
step asked for. Nothing here logs or raises with a prompt or a reply.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfactory.base.atomic import write_json_atomic
from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import write_jsonl
from medfactory.base.manifest import dataset_records, manifest_header, output_facts
from medfactory.base.publish import publish_datasets
from medfactory.generate.client import ChatRequest, ClientSettings, Completion
from medfactory.generate.predictions import comparable, read_predictions
from medfactory.generate.request_cache import RequestCache

ENGINE = "llamafactory-cli predict (rounds)"
ROUND_SUFFIX = "_round"  # data/<name>_round/: the pending requests of a step's current round
REQUESTS_FILE = "requests.jsonl"
KEYS_FILE = "keys.json"
PENDING = "awaiting a llamafactory-cli predict round"
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}


def round_name(name: str) -> str:
    """The registered set of a step's pending requests."""
    return f"{name}{ROUND_SUFFIX}"


class PredictRoundNeeded(Exception):
    """A step in rounds has requests no predict run answered yet (not an error: the next round is to run)."""

    def __init__(self, requests: list[tuple[str, ChatRequest]]) -> None:
        super().__init__(f"{len(requests)} requests await a predict round")
        self.requests = requests


@dataclass
class RoundsSummary:
    """What a manifest records of the rounds engine (the keys of the HTTP client's ``record``)."""

    items: int = 0
    cached: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return f"{self.items} replies read from the cache of {ENGINE} runs (nothing sent)"

    def record(self) -> dict[str, Any]:
        return {"engine": ENGINE, "requests": self.items, "from_cache": self.cached, "sent": 0, "failed": 0, "seconds": round(self.seconds, 3),
                "prompt_tokens": 0, "completion_tokens": 0, "line": self.line()}  # fmt: skip


@dataclass
class RoundsClient:
    """Answers requests from the request cache; records the others as pending (answered as failed, so the step can go on counting)."""

    cache_path: Path
    model: str
    pending: list[tuple[str, ChatRequest]] = field(default_factory=list)
    summary: RoundsSummary = field(default_factory=RoundsSummary)

    def __post_init__(self) -> None:
        self.cache_path = Path(self.cache_path)
        self.cache = RequestCache(self.cache_path)
        self.settings = ClientSettings(endpoint=ENGINE, model=self.model)

    def complete(self, requests: Iterable[ChatRequest], desc: str = "") -> Iterator[Completion]:
        started = time.perf_counter()
        for request in requests:
            key = request.cache_key(self.model)
            record = self.cache.get(key)
            self.summary.items += 1
            if record is None:
                self.pending.append((key, request))
                yield Completion(request.row_id, None, None, 0, 0, False, PENDING)
                continue
            self.summary.cached += 1
            yield Completion(request.row_id, record["text"], record["finish_reason"], record["prompt_tokens"], record["completion_tokens"], True, None)
        self.summary.seconds += time.perf_counter() - started

    def raise_if_pending(self) -> None:
        """Stop the step (before it publishes) when a request is still to be predicted."""
        if self.pending:
            raise PredictRoundNeeded(list(self.pending))

    def close(self) -> None:
        self.cache.close()


def _sharegpt_row(request: ChatRequest) -> dict[str, Any]:
    """One pending request as a sharegpt record: its turns, then an empty response for predict to fill."""
    if request.images:
        raise CorpusError(f"request {request.row_id}: a request with images cannot be written as a predict round (use the served engine).")
    system = [m["content"] for m in request.messages if m["role"] == "system"]
    turns = [{"role": m["role"], "content": m["content"]} for m in request.messages if m["role"] != "system"]
    if len(system) > 1 or not turns or turns[-1]["role"] != "user":
        raise CorpusError(f"request {request.row_id}: not one system prompt and turns ending with the user's; it cannot be a predict round.")
    return {"system": system[0] if system else "", "messages": [*turns, {"role": "assistant", "content": ""}]}


def write_round(output_root: Path, name: str, owner: str, pending: list[tuple[str, ChatRequest]], source: Path) -> dict[str, Any]:
    """``data/<name>_round/``: the pending requests as a registered sharegpt set, their cache keys, a manifest; returns the manifest."""
    registered = round_name(name)
    folder = Path("data") / registered
    entry = {registered: {"file_name": f"{folder.as_posix()}/{REQUESTS_FILE}", "formatting": "sharegpt",
                          "columns": {"messages": "messages", "system": "system"}, "tags": dict(SHAREGPT_TAGS)}}  # fmt: skip
    unique = list(dict((key, request) for key, request in pending).items())  # a request asked twice is predicted once
    with publish_datasets(output_root, folder, entry, owner) as publication:  # its own earlier round is replaced; another owner's folder is refused
        write_jsonl(publication.staging / REQUESTS_FILE, (_sharegpt_row(request) for _, request in unique))
        write_json_atomic(publication.staging / KEYS_FILE, [key for key, _ in unique])
        manifest = {
            **manifest_header(owner, source, {"for": name}),
            "name": registered, "for": name, "requests": len(unique), "engine": ENGINE, "records": len(unique), "dropped": {},
            "decoding_asked": {"temperature": sorted({request.temperature for _, request in unique}),
                               "max_tokens": max(request.max_tokens for _, request in unique)},
            "datasets": dataset_records(publication.staging, entry, folder), "registered": registered,
            "outputs": output_facts([publication.staging / REQUESTS_FILE, publication.staging / KEYS_FILE]),
        }  # fmt: skip
        publication.write_manifest(manifest)
    return manifest


def store_round(output_root: Path, name: str, predictions: Path, cache_path: Path) -> int:
    """Write a predict run's replies to the round's requests into the request cache; the number stored."""
    folder = Path(output_root) / "data" / round_name(name)
    try:
        keys = json.loads((folder / KEYS_FILE).read_text(encoding="utf-8"))
        requests = [json.loads(line) for line in (folder / REQUESTS_FILE).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as error:
        raise CorpusError(f"{folder}: no readable predict round ({type(error).__name__}). Run the step with --engine predict first.") from None
    rows = read_predictions(Path(predictions))
    if not isinstance(keys, list) or len(keys) != len(requests) or len(rows) != len(keys):
        raise CorpusError(
            f"{predictions} has {len(rows)} rows for the {len(keys)} requests of {folder}: predict on {round_name(name)} (and let the run finish)."
        )
    cache = RequestCache(Path(cache_path))
    try:
        for (number, row), key, request in zip(rows, keys, requests, strict=True):
            if comparable(request["messages"][-2]["content"]) not in comparable(row["prompt"]):
                raise CorpusError(f"{predictions}, line {number}: its prompt does not hold request {number} of {folder / REQUESTS_FILE}: the "
                                  "predictions are of another round or set, or cutoff_len cut the prompt. Predict on this round's set.")  # fmt: skip
            if key not in cache:
                cache.put(key, {"text": row["predict"], "finish_reason": None, "prompt_tokens": 0, "completion_tokens": 0})
    finally:
        cache.close()
    return len(keys)


def round_message(manifest: dict[str, Any], command: str, predictions_flag: str = "--predictions") -> str:
    """What to run next, after a round was written (names and counts only)."""
    asked = manifest["decoding_asked"]
    return (f"{manifest['requests']} requests await a predict run: registered {manifest['name']} (data/{manifest['name']}/{REQUESTS_FILE}). Run "
            f"`llamafactory-cli train <predict recipe> eval_dataset={manifest['name']} output_dir=saves/{manifest['name']}` "
            f"(temperature {', '.join(str(t) for t in asked['temperature'])} as asked, max_new_tokens >= {asked['max_tokens']}), then "
            f"`{command} --engine predict {predictions_flag} saves/{manifest['name']}/generated_predictions.jsonl`.")  # fmt: skip
