"""The ``llamafactory-cli`` predict engine for the generation steps: a predict run's replies, served like an endpoint's.

A generation step (``generate translate``) writes its requests as an alpaca set (``*_requests.jsonl``, with the
row ids in request order), ``llamafactory-cli train`` predicts on it (``do_predict``, one ``generated_predictions.jsonl``
row per request, in order), and :class:`PredictionsClient` answers the step's :class:`~medfactory.generate.client.ChatRequest`
objects from that file, so the same gates and outputs follow from either engine. The join is by position and is
checked twice: the step's row ids must equal the ids written with the requests (the same source and options), and
each prediction's prompt must contain its request's input (the same set, in the same order). The first row that does
not names both files and the line, never the text.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import iter_jsonl
from medfactory.generate.client import ChatRequest, Completion

ENGINE = "llamafactory-cli predict"


def comparable(text: str) -> str:
    """NFKC, case-folded, no whitespace: what a chat template and a tokenizer round trip leave comparable."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).casefold()


def read_predictions(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of LLaMA-Factory's ``generated_predictions.jsonl``; each row has string ``prompt`` and ``predict``."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file. Pass the generated_predictions.jsonl of the predict run on the requests set.")
    try:
        rows = list(iter_jsonl(path))
    except ValueError as error:
        raise CorpusError(f"{error}.") from error
    for number, row in rows:
        if not isinstance(row.get("predict"), str) or not isinstance(row.get("prompt"), str):
            raise CorpusError(f"{path}, line {number}: no string \"prompt\" and \"predict\" (expected LLaMA-Factory's generated_predictions.jsonl).")
    return rows


def read_row_ids(path: Path) -> list[str]:
    """The row ids written with the requests, in request order."""
    try:
        ids = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: cannot read the requests' row ids ({error.__class__.__name__}). Write the requests again (--requests-only).") from None
    if not isinstance(ids, list) or not all(isinstance(row_id, str) for row_id in ids):
        raise CorpusError(f"{path}: not a JSON list of row ids. Write the requests again (--requests-only).")
    return ids


@dataclass
class PredictionsSummary:
    """What a manifest records of the predict engine (the same keys as the HTTP client's ``record``)."""

    items: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return f"{self.items} replies read from a {ENGINE} run (nothing sent)"

    def record(self) -> dict[str, Any]:
        return {"engine": ENGINE, "requests": self.items, "from_cache": 0, "sent": 0, "failed": 0, "seconds": round(self.seconds, 3),
                "prompt_tokens": 0, "completion_tokens": 0, "line": self.line()}  # fmt: skip


class PredictionsClient:
    """Answers requests from a predict run's replies, joined by position to the row ids written with the requests."""

    def __init__(self, predictions_path: Path, ids_path: Path, model: str) -> None:
        self.predictions_path, self.ids_path = Path(predictions_path), Path(ids_path)
        self.rows = read_predictions(self.predictions_path)
        self.ids = read_row_ids(self.ids_path)
        if len(self.rows) != len(self.ids):
            raise CorpusError(
                f"{self.predictions_path} has {len(self.rows)} rows but {self.ids_path} lists {len(self.ids)} requests: predict on the "
                "requests set those ids were written with (and let the run finish)."
            )
        self.position = {row_id: index for index, row_id in enumerate(self.ids)}
        self.model = model
        self.cache_path = None  # nothing is sent, so nothing is cached
        self.summary = PredictionsSummary()

    def check_requests(self, row_ids: list[str]) -> None:
        """Refuse a step whose requests are not the ones written (another source, other options)."""
        if row_ids != self.ids:
            first = next((n for n, (a, b) in enumerate(zip(row_ids, self.ids)) if a != b), min(len(row_ids), len(self.ids)))
            raise CorpusError(
                f"{self.ids_path}: request {first + 1} differs from this run's ({len(self.ids)} written, {len(row_ids)} now): the source or the "
                "options changed since --requests-only. Write the requests again and predict on them."
            )

    def complete(self, requests: Iterable[ChatRequest], desc: str = "") -> Iterator[Completion]:
        """The predicted reply of each request (its input checked against the prediction's prompt)."""
        started = time.perf_counter()
        for request in requests:
            index = self.position.get(request.row_id)
            if index is None:
                raise CorpusError(f"{self.ids_path}: request {request.row_id!r} was not written with the requests; write them again.")
            number, row = self.rows[index]
            if comparable(request.messages[-1]["content"]) not in comparable(row["prompt"]):
                raise CorpusError(
                    f"{self.predictions_path}, line {number}: its prompt does not hold request {index + 1} of {self.ids_path}: the predictions "
                    "are of another set or in another order, or cutoff_len cut the prompt. Predict on the requests set written with these ids "
                    "(with a cutoff_len that fits the longest request)."
                )
            self.summary.items += 1
            yield Completion(request.row_id, row["predict"], None, 0, 0, False, None)
        self.summary.seconds += time.perf_counter() - started

    def close(self) -> None:
        """Nothing to release (the same interface as the HTTP client)."""
