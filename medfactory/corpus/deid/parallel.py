"""De-identification of a stream of notes in batches, in this process or in worker processes, results in order.

``prepare`` and ``deid apply`` read notes one at a time; the tagger is faster per note on a batch
(:meth:`.deidentifier.Deidentifier.apply_many` decodes the batch's label paths together), and a
corpus of gigabytes needs every core. :class:`BatchedDeidentifier` collects notes into batches and
hands each to a worker (``multiprocessing``, spawn: safe beside a loaded tokenizer's threads), each
worker building its own de-identifier once. At most ``2 * workers`` batches are in flight, so memory
stays flat, and results come back in the order the notes went in, so splits and files are written
exactly as a one-process run writes them.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.pool import AsyncResult, Pool
from typing import Any, NamedTuple

from medfactory.corpus.deid.deidentifier import Deidentifier
from medfactory.corpus.deid.spans import PhiSpan

DEFAULT_BATCH_NOTES = 64
_WORKER: dict[str, Deidentifier] = {}


class Finished(NamedTuple):
    """One note, de-identified: what the caller passed with it, the new text and the spans found in the original."""

    payload: Any
    text: str
    spans: list[PhiSpan]


def _start_worker(deidentifier: Deidentifier) -> None:
    _WORKER["deidentifier"] = deidentifier  # unpickled through Deidentifier.__reduce__: the worker loads its own model


def _apply_batch(texts: Sequence[str], keys: Sequence[str], mode: str, seed: str) -> list[tuple[str, list[PhiSpan]]]:
    return _WORKER["deidentifier"].apply_many(texts, keys, mode=mode, seed=seed)


class BatchedDeidentifier:
    """``submit`` notes, get back the finished ones in order; ``finish`` returns the rest. Use it as a context manager."""

    def __init__(self, deidentifier: Deidentifier, mode: str, seed: str, workers: int = 1, batch_notes: int = DEFAULT_BATCH_NOTES) -> None:
        if workers < 1:
            raise ValueError(f"--workers {workers}: pass 1 (this process) or more worker processes.")
        self.deidentifier, self.mode, self.seed, self.workers = deidentifier, mode, seed, workers
        self.batch_notes = max(1, batch_notes)
        self._texts: list[str] = []
        self._keys: list[str] = []
        self._payloads: list[Any] = []
        self._in_flight: deque[tuple[list[Any], AsyncResult]] = deque()
        self._pool: Pool | None = None
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(workers, initializer=_start_worker, initargs=(deidentifier,))

    def __enter__(self) -> BatchedDeidentifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (on an error too: nothing is left running)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def submit(self, text: str, patient_key: str, payload: Any = None) -> list[Finished]:
        """Queue one note; returns the notes finished so far (possibly none), in submission order."""
        self._texts.append(text)
        self._keys.append(patient_key)
        self._payloads.append(payload)
        if len(self._texts) < self.batch_notes:
            return []
        return list(self._dispatch(wait_for_all=False))

    def finish(self) -> list[Finished]:
        """Every note still queued or in flight, de-identified, in submission order."""
        return list(self._dispatch(wait_for_all=True))

    def _dispatch(self, wait_for_all: bool) -> Iterator[Finished]:
        texts, keys, payloads = self._texts, self._keys, self._payloads
        self._texts, self._keys, self._payloads = [], [], []
        if self._pool is None:
            if texts:
                for payload, (text, spans) in zip(payloads, self.deidentifier.apply_many(texts, keys, self.mode, self.seed), strict=True):
                    yield Finished(payload, text, spans)
            return
        if texts:
            self._in_flight.append((payloads, self._pool.apply_async(_apply_batch, (texts, keys, self.mode, self.seed))))
        while self._in_flight and (wait_for_all or len(self._in_flight) > 2 * self.workers or self._in_flight[0][1].ready()):
            done_payloads, result = self._in_flight.popleft()
            for payload, (text, spans) in zip(done_payloads, result.get(), strict=True):
                yield Finished(payload, text, spans)
