"""The one LLM client of every generation step: an OpenAI-compatible chat endpoint (vLLM, ``llamafactory-cli api``).

Text goes only to the endpoint the user names, and only to a loopback one (127.0.0.0/8, ::1,
``localhost``) unless the user passes :data:`REMOTE_FLAG`: a loopback endpoint is reached directly,
never through ``http_proxy`` / ``https_proxy`` from the environment, and no redirect is followed.

:meth:`LlmClient.complete` sends ``POST {endpoint}/chat/completions`` with at most ``concurrency``
requests in flight and yields the answers in the order of the requests (a bounded window, so memory
stays flat however many there are). A failed request is sent again after a back-off of 1, 2, 4 ...
(at most 10) seconds; after ``max_consecutive_failures`` failed items in a row the run stops with
:class:`GenerationError`. Every answer is written to the request cache (:mod:`.request_cache`)
before it is yielded, keyed by model, messages, temperature and max_tokens: a rerun of the same
command (after kill -9, a failure, a change of later steps) sends only what is not there yet.

Nothing here logs, prints or raises with a prompt or an answer: failures name the error type or the
HTTP status, never a response body (a server may echo the request in it).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medfactory.base.errors import CorpusError
from medfactory.generate.request_cache import RequestCache

REMOTE_FLAG = "--allow-remote-endpoint"
MAX_BACKOFF_SECONDS = 10.0
# Statuses of a busy or restarting server, worth sending again; any other (400: a prompt too long
# for the context, 404: a wrong --endpoint path ...) would fail the same way again.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class GenerationError(CorpusError):
    """A generation step cannot go on: a refused endpoint, an endpoint that keeps failing, a broken cache."""


# --------------------------------------------------------------------------------------------
# The endpoint: loopback only unless allowed, no proxy for loopback, no redirects
# --------------------------------------------------------------------------------------------


def endpoint_host(endpoint: str) -> str:
    """The host of an http(s) endpoint URL; :class:`GenerationError` for anything else (nothing is sent)."""
    parts = urllib.parse.urlsplit(str(endpoint).strip())
    try:
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
        host = parts.hostname
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise GenerationError(f"--endpoint {endpoint!r} is not an http(s) URL with a host and port; e.g. http://127.0.0.1:8000/v1")
    return host


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a literal loopback address (127.0.0.0/8, ::1).

    Other names are not resolved: the answer must not depend on (or tell) a DNS server, and a
    name that resolves to loopback today may not tomorrow.
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the next request to a place the user did not name: it fails instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def endpoint_opener(endpoint: str, allow_remote: bool = False, what: str = "text") -> urllib.request.OpenerDirector:
    """The opener ``what`` is sent with, or :class:`GenerationError` before anything is sent.

    A loopback endpoint gets no proxy at all (urllib would otherwise send the request, text
    included, to ``http_proxy`` from the environment). A remote endpoint is refused unless
    ``allow_remote``; then the environment's proxies apply as they would to any request.
    """
    host = endpoint_host(endpoint)
    if is_loopback_host(host):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    if not allow_remote:
        hint = " (0.0.0.0 is where a server listens, not an address to send to: use 127.0.0.1)" if host in ("0.0.0.0", "::") else ""
        raise GenerationError(
            f"refusing to send {what} to {host}: it is not a loopback address (127.0.0.0/8, ::1 or localhost){hint}; nothing was sent. "
            f"Serve the model on this machine, or pass {REMOTE_FLAG} if {host} may receive {what} "
            "(requests then go through http_proxy/https_proxy from the environment, if set)."
        )
    return urllib.request.build_opener(NoRedirect)


def post_chat(opener: urllib.request.OpenerDirector, endpoint: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``POST {endpoint}/chat/completions`` with ``body`` through ``opener``; the answer's JSON object.

    An HTTP error status raises :class:`urllib.error.HTTPError` (whose text holds the status, not the body).
    """
    request = urllib.request.Request(
        str(endpoint).strip().rstrip("/") + "/chat/completions", data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    with opener.open(request, timeout=timeout) as response:
        payload = json.loads(response.read().decode("utf-8"))
    if not isinstance(payload, dict):
        raise TypeError("the answer is not a JSON object")
    return payload


# --------------------------------------------------------------------------------------------
# What is sent and what comes back
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """Where requests go and how they are sent (``medfactory.generate.endpoint_options.client_settings`` builds it from the flags)."""

    endpoint: str = "http://127.0.0.1:8000/v1"
    model: str = "default"  # the served model's name (vLLM: --served-model-name; llamafactory-cli api accepts any)
    allow_remote: bool = False
    concurrency: int = 4
    retries: int = 3  # a failed request is sent again after a back-off of 1, 2, 4 ... (at most 10) s
    timeout: float = 120.0
    max_consecutive_failures: int = 5
    price_input_per_million: float | None = None  # USD per million prompt tokens
    price_output_per_million: float | None = None  # USD per million completion tokens

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.retries < 0 or self.timeout <= 0 or self.max_consecutive_failures < 1:
            raise ValueError("concurrency and max_consecutive_failures must be at least 1, retries at least 0 and timeout above 0")


IMAGE_PLACEHOLDER = "<image>"  # LLaMA-Factory's (extras/constants.py): where a record's image sits in its turn
# The image kinds `llamafactory-cli api` takes as base64 data URLs (api/chat.py), by their first bytes.
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF8", "gif"), (b"BM", "bmp"))


def read_image(path: str) -> tuple[bytes, str]:
    """(bytes, kind) of an image file a request carries; :class:`GenerationError` naming the file for anything else."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise GenerationError(f"{path}: cannot read the image ({type(error).__name__}); nothing was sent. Prepare the set again.") from None
    kind = next((kind for signature, kind in IMAGE_SIGNATURES if data.startswith(signature)), None)
    if kind is None:
        raise GenerationError(f"{path}: not a PNG, JPEG, GIF or BMP image; nothing was sent. Convert it to PNG (the image plugins write PNG).")
    return data, kind


def image_data_url(path: str) -> str:
    """``data:image/<kind>;base64,...`` of an image file: the content part vLLM and `llamafactory-cli api` both read."""
    data, kind = read_image(path)
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def image_digest(path: str) -> str:
    """What stands for an image in the cache key: the sha256 of its bytes (the data URL would only repeat them)."""
    return "sha256:" + hashlib.sha256(read_image(path)[0]).hexdigest()


def content_parts(text: str, image_refs: Iterator[str]) -> list[dict[str, Any]]:
    """A turn whose text holds ``<image>`` placeholders as OpenAI content parts, text and images in their order."""
    parts: list[dict[str, Any]] = []
    for position, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if position:
            parts.append({"type": "image_url", "image_url": {"url": next(image_refs)}})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to ask for; ``row_id`` is the caller's id of the item (not part of the cache key).

    ``images`` are image files, one per ``<image>`` placeholder of the turns in order (LLaMA-Factory's
    convention): each such turn is sent as content parts with the image as a base64 data URL, read only
    when the request is sent.
    """

    row_id: str
    messages: tuple[dict[str, str], ...]
    temperature: float = 0.0
    max_tokens: int = 512
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", tuple(self.messages))  # a list is accepted; the request stays immutable
        object.__setattr__(self, "images", tuple(str(image) for image in self.images))
        if not self.messages or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in self.messages):
            raise ValueError(f"request {self.row_id}: messages must be a non-empty sequence of {{'role': str, 'content': str}}")
        placeholders = sum(message["content"].count(IMAGE_PLACEHOLDER) for message in self.messages)
        if self.images and placeholders != len(self.images):
            raise ValueError(f"request {self.row_id}: {len(self.images)} images for {placeholders} {IMAGE_PLACEHOLDER} placeholders in its turns")

    def body(self, model: str) -> dict[str, Any]:
        """The JSON body sent to ``/chat/completions`` (images as data URLs)."""
        return self._body(model, image_data_url)

    def cache_key(self, model: str) -> str:
        """sha256 of the canonical JSON of what decides the answer: model, messages (images by their bytes' sha256), temperature, max_tokens."""
        canonical = json.dumps(self._body(model, image_digest), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def _body(self, model: str, image_ref: Callable[[str], str]) -> dict[str, Any]:
        if self.images:
            refs = iter([image_ref(image) for image in self.images])
            messages = [{"role": m["role"], "content": content_parts(m["content"], refs) if IMAGE_PLACEHOLDER in m["content"] else m["content"]}
                        for m in self.messages]  # fmt: skip
        else:
            messages = [{"role": message["role"], "content": message["content"]} for message in self.messages]
        return {"model": model, "messages": messages, "temperature": float(self.temperature), "max_tokens": int(self.max_tokens)}


@dataclass(frozen=True)
class Completion:
    """The answer to one request; ``text`` is None when every attempt failed (``failure`` says how, never with text)."""

    row_id: str
    text: str | None
    finish_reason: str | None  # "stop", "length" (the callers' "truncated" gate) ...
    prompt_tokens: int
    completion_tokens: int
    cached: bool  # answered from the request cache: nothing was sent
    failure: str | None

    @property
    def ok(self) -> bool:
        return self.text is not None


def completion_of(row_id: str, payload: dict[str, Any]) -> Completion:
    """A :class:`Completion` from an OpenAI chat completion object (usage counts 0 when absent)."""
    choice = payload["choices"][0]
    text = choice["message"]["content"]
    text = "" if text is None else text
    if not isinstance(text, str):
        raise TypeError("choices[0].message.content is not text")
    usage = payload.get("usage") or {}
    reason = choice.get("finish_reason")
    prompt_tokens, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return Completion(row_id, text, None if reason is None else str(reason), prompt_tokens, completion_tokens, False, None)


@dataclass
class ThroughputSummary:
    """Counts and speed of a client's requests (cumulative over its ``complete`` calls); tokens and cost are of sent requests."""

    items: int = 0
    cached: int = 0
    failed: int = 0
    seconds: float = 0.0  # wall time while requests were being sent
    prompt_tokens: int = 0
    completion_tokens: int = 0
    price_input_per_million: float | None = None
    price_output_per_million: float | None = None

    @property
    def sent(self) -> int:
        return self.items - self.cached

    def items_per_second(self) -> float:
        """Requests actually sent per wall second of sending (0 when nothing was sent)."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def completion_tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def cost_usd(self) -> float | None:
        """The price of the sent tokens, or None when no price was given."""
        if self.price_input_per_million is None and self.price_output_per_million is None:
            return None
        return (self.prompt_tokens * (self.price_input_per_million or 0.0) + self.completion_tokens * (self.price_output_per_million or 0.0)) / 1e6

    def line(self) -> str:
        """One line for the console and the closing note."""
        cost = self.cost_usd()
        priced = "not priced" if cost is None else f"cost ${cost:.4f}"
        return (
            f"{self.items} requests ({self.cached} from cache, {self.failed} failed) in {self.seconds:.1f} s: "
            f"{self.items_per_second():.2f} items/s, {self.completion_tokens_per_second():.1f} completion tokens/s; {priced}"
        )

    def record(self) -> dict[str, Any]:
        """The same facts for a manifest."""
        return {
            "requests": self.items,
            "from_cache": self.cached,
            "sent": self.sent,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "items_per_second": round(self.items_per_second(), 4),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "completion_tokens_per_second": round(self.completion_tokens_per_second(), 2),
            "cost_usd": None if self.cost_usd() is None else round(self.cost_usd(), 6),
            "line": self.line(),
        }


def backoff_seconds(attempt: int) -> float:
    """The wait before re-sending after failed attempt ``attempt`` (0-based): 1, 2, 4 ... at most MAX_BACKOFF_SECONDS."""
    return min(2.0**attempt, MAX_BACKOFF_SECONDS)


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One request of the window: its answer (ready) or the future of it; ``shared`` when another slot sends it."""

    request: ChatRequest
    answer: Completion | Future[Completion]
    shared: bool = False
    key: str = ""

    def ready(self) -> bool:
        return not isinstance(self.answer, Future) or self.answer.done()


@dataclass
class _CallState:
    """What one ``complete`` call tracks besides the window."""

    pending: dict[str, Future[Completion]] = field(default_factory=dict)  # key -> the future sending it
    in_a_row: int = 0
    first_sent: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # set when the call ends: no further attempts


class LlmClient:
    """Chat completions through one endpoint, cached in ``cache_path`` (None: no cache, nothing resumes)."""

    def __init__(self, settings: ClientSettings, cache_path: Path | None) -> None:
        self.settings = settings
        self._opener = endpoint_opener(settings.endpoint, settings.allow_remote, what="source text")  # before the cache is touched
        self.cache_path = None if cache_path is None else Path(cache_path)
        self.cache = None if cache_path is None else RequestCache(Path(cache_path))
        self._summary = ThroughputSummary(price_input_per_million=settings.price_input_per_million, price_output_per_million=settings.price_output_per_million)
        self._last_done = 0.0

    @property
    def summary(self) -> ThroughputSummary:
        return self._summary

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def _send(self, request: ChatRequest, key: str, stop: threading.Event) -> Completion:
        """Send one request (in a worker thread), re-sending after a back-off; cache the answer before returning it."""
        settings, failure = self.settings, "request failed"
        body = request.body(settings.model)
        for attempt in range(settings.retries + 1):
            if attempt and stop.wait(backoff_seconds(attempt - 1)):
                break  # the run is over (stopped or abandoned): no more attempts
            try:
                completion = completion_of(request.row_id, post_chat(self._opener, settings.endpoint, body, settings.timeout))
            except urllib.error.HTTPError as error:
                error.close()  # its body is never read: a server may echo the request in it
                failure = f"request failed (HTTP {error.code})"
                if error.code not in RETRY_STATUSES:
                    break
                continue
            except (OSError, http.client.HTTPException) as error:
                failure = f"request failed ({type(error).__name__})"
                continue
            except (ValueError, KeyError, IndexError, TypeError) as error:
                failure = f"unreadable answer ({type(error).__name__})"
                continue
            if self.cache is not None:
                self.cache.put(key, {"text": completion.text, "finish_reason": completion.finish_reason, "prompt_tokens": completion.prompt_tokens,
                                     "completion_tokens": completion.completion_tokens})  # fmt: skip
            self._last_done = time.monotonic()
            return completion
        self._last_done = time.monotonic()
        return Completion(request.row_id, None, None, 0, 0, False, failure)

    def _start(self, request: ChatRequest, executor: ThreadPoolExecutor, state: _CallState) -> _Slot:
        """The window slot of ``request``: from the cache, shared with an identical request in flight, or submitted."""
        key = request.cache_key(self.settings.model)
        record = None if self.cache is None else self.cache.get(key)
        if record is not None:
            tokens = int(record["prompt_tokens"]), int(record["completion_tokens"])
            return _Slot(request, Completion(request.row_id, record["text"], record["finish_reason"], *tokens, True, None))
        if key in state.pending:
            return _Slot(request, state.pending[key], shared=True, key=key)
        if state.first_sent is None:
            state.first_sent = time.monotonic()
        state.pending[key] = executor.submit(self._send, request, key, state.stop)
        return _Slot(request, state.pending[key], key=key)

    def _finish(self, slot: _Slot, state: _CallState, bar: tqdm) -> Completion:
        """The slot's answer (waiting for it), counted; :class:`GenerationError` after too many failures in a row."""
        answer = slot.answer.result() if isinstance(slot.answer, Future) else slot.answer
        if slot.shared:  # sent once for an earlier row with the same key: this row's copy was not sent
            answer = Completion(slot.request.row_id, answer.text, answer.finish_reason, answer.prompt_tokens, answer.completion_tokens, True, answer.failure)
        elif state.pending.get(slot.key) is slot.answer:
            del state.pending[slot.key]
        summary = self._summary
        summary.items += 1
        summary.cached += answer.cached
        summary.failed += not answer.ok
        if answer.ok and not answer.cached:
            summary.prompt_tokens += answer.prompt_tokens
            summary.completion_tokens += answer.completion_tokens
        bar.update(1)
        bar.set_postfix(cached=summary.cached, failed=summary.failed, refresh=False)
        state.in_a_row = 0 if answer.ok or answer.cached else state.in_a_row + 1
        if state.in_a_row >= self.settings.max_consecutive_failures:
            where = f"finished items are cached in {self.cache_path}" if self.cache_path else "no request cache was kept, so finished items will be sent again"
            raise GenerationError(
                f"{state.in_a_row} requests in a row failed (last: {answer.failure}); stopped rather than wait out the back-off on every remaining item. "
                f"Is {self.settings.endpoint} serving model {self.settings.model!r}? {where}; run the same command again to resume."
            )
        return answer

    def complete(self, requests: Iterable[ChatRequest], desc: str) -> Iterator[Completion]:
        """The completions of ``requests``, in their order, with at most ``concurrency`` requests in flight.

        A cached key is never sent again; a success is on disk in the cache before it is yielded, so a
        kill -9 loses at most the requests in flight. The window holds ``2 * concurrency`` requests, so
        the workers stay busy while the first in line is slow, and memory stays flat.
        """
        window: deque[_Slot] = deque()
        state, limit = _CallState(), 2 * self.settings.concurrency
        executor = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="llm-request")
        bar = tqdm(total=len(requests) if isinstance(requests, Sized) else None, desc=desc, unit="request")
        try:
            for request in requests:
                while len(window) >= limit:
                    yield self._finish(window.popleft(), state, bar)
                window.append(self._start(request, executor, state))
                while window and window[0].ready():
                    yield self._finish(window.popleft(), state, bar)
            while window:
                yield self._finish(window.popleft(), state, bar)
        finally:
            state.stop.set()  # an abandoned or failed run sends no further attempt
            executor.shutdown(wait=True, cancel_futures=True)
            if state.first_sent is not None:
                self._summary.seconds += max(self._last_done - state.first_sent, 0.0)
            bar.close()
