"""The LLM client of the generation steps, against a real `llamafactory-cli api` serving a tiny constant-answer model:
order, usage, the request cache (resume after kill -9, a torn line), the loopback rule, retries and failures."""

from __future__ import annotations

import http.server
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from medfactory.generate import client as client_module
from medfactory.generate.client import REMOTE_FLAG, ChatRequest, ClientSettings, GenerationError, LlmClient, ThroughputSummary
from medfactory.generate.request_cache import RequestCache
from testing_utils.served_models import free_port
from testing_utils.served_models import served as serve_models
from testing_utils.tiny_models import build_constant_answer_model

ANSWER = "Respuesta constante."
SECRET = "Paciente Juana Pérez, 54 años"  # stands for source text: never in an error, a failure or a log line


def requests_for(count: int, prefix: str = "pregunta") -> list[ChatRequest]:
    return [ChatRequest(f"row-{number}", ({"role": "user", "content": f"{SECRET}: {prefix} {number}"},), max_tokens=8) for number in range(count)]


@dataclass
class Served:
    endpoint: str
    log: Path

    def posts(self) -> int:
        """Chat completion requests the server has received (its access log)."""
        return self.log.read_text(errors="replace").count("POST /v1/chat/completions")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """One `llamafactory-cli api` for the module (conftest's llamafactory_api starts one per test); its access log counts requests."""
    folder = tmp_path_factory.mktemp("generate-client")
    with serve_models({"api": build_constant_answer_model(folder / "model", ANSWER)}, folder) as endpoints:
        yield Served(endpoints["api"], folder / "api.log")


class Stub(http.server.ThreadingHTTPServer):
    """A loopback HTTP server answering every POST with ``status`` (and counting them): a proxy or a failing endpoint."""

    def __init__(self, status: int = 200) -> None:
        self.status, self.targets = status, []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.targets.append(self.path)
                answer = {"choices": [{"message": {"content": "vía proxy"}, "finish_reason": "length"}]} if stub.status == 200 else {"echo": body.decode()}
                payload = json.dumps(answer).encode()
                self.send_response(stub.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture()
def stub():
    servers: list[Stub] = []

    def start(status: int = 200) -> Stub:
        servers.append(Stub(status))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_BACKOFF_SECONDS", 0.01)


def test_completions_come_in_order_with_usage_and_a_second_client_answers_from_the_cache(
    served: Served, tmp_path: Path, stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = stub()
    monkeypatch.setenv("http_proxy", proxy.url)  # a loopback endpoint never goes through it
    requests = requests_for(7)
    requests.insert(3, ChatRequest("row-again", requests[1].messages, max_tokens=8))  # the same request under another id: sent once
    cache_path, before = tmp_path / "cache" / "run.requests.jsonl", served.posts()
    client = LlmClient(ClientSettings(endpoint=served.endpoint, model="tiny", concurrency=3), cache_path)
    completions = list(client.complete(requests, desc="test"))
    assert [completion.row_id for completion in completions] == [request.row_id for request in requests]
    assert all(c.ok and c.text == ANSWER and c.finish_reason == "stop" and c.failure is None for c in completions)
    assert all(c.prompt_tokens > 0 and c.completion_tokens >= 1 for c in completions)
    assert [c.cached for c in completions].count(True) == 1 and completions[3].cached
    assert served.posts() - before == 7 and proxy.targets == []
    assert len(cache_path.read_text().splitlines()) == 7 and stat.S_IMODE(cache_path.stat().st_mode) == 0o600
    summary = client.summary
    assert (summary.items, summary.cached, summary.failed) == (8, 1, 0) and summary.items_per_second() > 0
    assert summary.completion_tokens == sum(c.completion_tokens for c in completions if not c.cached)
    client.close()

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: every answer must come from the cache
    again = LlmClient(ClientSettings(endpoint=dead, model="tiny", retries=0), cache_path)
    replayed = list(again.complete(requests, desc="again"))
    assert [(c.row_id, c.text, c.cached, c.prompt_tokens) for c in replayed] == [(c.row_id, c.text, True, c.prompt_tokens) for c in completions]
    assert again.summary.line().startswith("8 requests (8 from cache, 0 failed) in 0.0 s: 0.00 items/s") and again.summary.line().endswith("not priced")
    assert served.posts() - before == 7


CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_generate_client import requests_for
from medfactory.generate.client import ClientSettings, LlmClient
client = LlmClient(ClientSettings(endpoint=sys.argv[1], model="tiny", concurrency=2), Path(sys.argv[2]))
for completion in client.complete(requests_for(40), desc="child"):
    time.sleep(0.3)  # a slow consumer: the run is still going when it is killed
"""


def test_a_run_killed_with_sigkill_resumes_without_re_requesting_finished_items(served: Served, tmp_path: Path) -> None:
    cache_path, before = tmp_path / "run.requests.jsonl", served.posts()
    child = subprocess.Popen([sys.executable, "-c", CHILD, served.endpoint, str(cache_path), str(Path(__file__).parent)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (cache_path.exists() and cache_path.read_bytes().count(b"\n") >= 5):
            assert child.poll() is None and time.time() < deadline, "the child run ended or stalled before 5 answers were cached"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    sent_by_child = served.posts() - before
    finished = len(RequestCache(cache_path))
    assert 5 <= finished < 40 and sent_by_child <= finished + 2 * 2  # only the window (2 x concurrency) was lost
    resumed = LlmClient(ClientSettings(endpoint=served.endpoint, model="tiny", concurrency=2), cache_path)
    completions = list(resumed.complete(requests_for(40), desc="resume"))
    assert [c.row_id for c in completions] == [f"row-{n}" for n in range(40)] and all(c.text == ANSWER for c in completions)
    assert resumed.summary.cached == finished and resumed.summary.sent == 40 - finished
    assert served.posts() - before - sent_by_child == 40 - finished  # finished items were not requested again


@pytest.mark.parametrize("endpoint", ["http://10.0.0.1:8000/v1", "http://example.org/v1", "http://0.0.0.0:8000/v1", "https://[2001:db8::1]:8000/v1"])
def test_a_non_loopback_endpoint_is_refused_before_anything_is_sent(endpoint: str, tmp_path: Path, stub, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = stub()
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, proxy.url)
    with pytest.raises(GenerationError) as error:
        LlmClient(ClientSettings(endpoint=endpoint), tmp_path / "cache.jsonl")
    assert REMOTE_FLAG in str(error.value) and "nothing was sent" in str(error.value)
    assert ("use 127.0.0.1" in str(error.value)) == ("0.0.0.0" in endpoint)
    assert not (tmp_path / "cache.jsonl").exists() and proxy.targets == []


def test_an_allowed_remote_endpoint_is_reached_through_the_environment_proxy(tmp_path: Path, stub, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = stub()  # stands in for the proxy and, behind it, the remote endpoint
    monkeypatch.setenv("http_proxy", proxy.url)
    client = LlmClient(ClientSettings(endpoint="http://example.org/v1", allow_remote=True), None)
    (completion,) = client.complete(requests_for(1), desc="remote")
    assert proxy.targets == ["http://example.org/v1/chat/completions"]
    assert (completion.text, completion.finish_reason, completion.prompt_tokens, completion.completion_tokens) == ("vía proxy", "length", 0, 0)


def test_a_torn_last_line_is_dropped_and_the_last_of_repeated_keys_wins(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    cache = RequestCache(path)
    record = {"text": "uno", "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 1}
    cache.put("a", record)
    cache.put("b", record)
    cache.put("a", {**record, "text": "dos"})
    cache.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"key": "c", "text": "tr')  # a kill inside a write
    reopened = RequestCache(path)
    assert reopened.dropped_torn_line and path.read_bytes() == whole
    assert len(reopened) == 2 and reopened.get("a")["text"] == "dos" and reopened.get("b")["text"] == "uno" and reopened.get("c") is None
    reopened.put("c", record)
    reopened.close()
    assert RequestCache(path).get("c")["text"] == "uno"
    path.write_bytes(whole.replace(b'"key": "b"', b'"clave": "b"'))
    with pytest.raises(GenerationError, match=r"line 2: not a request cache line"):
        RequestCache(path)


def test_a_closed_port_fails_after_the_retries_and_too_many_failures_stop_the_run(tmp_path: Path, quick_backoff: None) -> None:
    endpoint, cache_path = f"http://127.0.0.1:{free_port()}/v1", tmp_path / "cache.jsonl"
    client = LlmClient(ClientSettings(endpoint=endpoint, retries=1, concurrency=1, max_consecutive_failures=3), cache_path)
    completions = client.complete(requests_for(10), desc="down")
    first = next(completions)
    assert not first.ok and first.text is None and first.failure == "request failed (URLError)" and not first.cached
    next(completions)
    with pytest.raises(GenerationError) as error:
        next(completions)
    message = str(error.value)
    assert "3 requests in a row failed" in message and str(cache_path) in message and "run the same command again" in message
    assert SECRET not in message and "pregunta" not in message
    assert client.summary.failed == 3 and cache_path.read_text() == ""


@pytest.mark.parametrize(("status", "attempts"), [(503, 3), (400, 1)])
def test_an_http_error_is_retried_only_when_it_can_pass_and_its_body_is_never_shown(stub, quick_backoff: None, status: int, attempts: int) -> None:
    server = stub(status)  # its body echoes the request, as some servers do
    client = LlmClient(ClientSettings(endpoint=server.url + "/v1", retries=2), None)
    (completion,) = client.complete(requests_for(1), desc="errors")
    assert completion.failure == f"request failed (HTTP {status})" and len(server.targets) == attempts


def test_the_cache_key_is_what_decides_the_answer() -> None:
    messages = ({"role": "system", "content": "Traduce."}, {"role": "user", "content": "Fever."})
    base = ChatRequest("r1", messages, temperature=0.0, max_tokens=64)
    key = base.cache_key("m")
    assert ChatRequest("another id", list(messages), temperature=0, max_tokens=64).cache_key("m") == key
    others = [
        base.cache_key("m2"),
        ChatRequest("r1", messages[:1], max_tokens=64).cache_key("m"),
        ChatRequest("r1", (messages[0], {"role": "user", "content": "Fever!"}), max_tokens=64).cache_key("m"),
        ChatRequest("r1", messages, temperature=0.2, max_tokens=64).cache_key("m"),
        ChatRequest("r1", messages, max_tokens=65).cache_key("m"),
    ]
    assert len({key, *others}) == 6


def test_the_summary_line_and_record_give_throughput_and_cost() -> None:
    summary = ThroughputSummary(
        items=12, cached=3, failed=1, seconds=4.5, prompt_tokens=1000, completion_tokens=90, price_input_per_million=0.5, price_output_per_million=2.0
    )
    assert summary.line() == "12 requests (3 from cache, 1 failed) in 4.5 s: 2.00 items/s, 20.0 completion tokens/s; cost $0.0007"
    assert summary.record()["sent"] == 9 and summary.record()["cost_usd"] == pytest.approx(0.00068)
    assert ThroughputSummary().line() == "0 requests (0 from cache, 0 failed) in 0.0 s: 0.00 items/s, 0.0 completion tokens/s; not priced"


def test_client_settings_name_the_flag_of_a_value_out_of_range() -> None:
    import typer

    from medfactory.generate.endpoint_options import client_settings

    settings = client_settings("http://localhost:8000/v1", "m", False, 2, 0, 5.0, 0.1, None)
    assert (settings.concurrency, settings.retries, settings.price_input_per_million, settings.price_output_per_million) == (2, 0, 0.1, None)
    for arguments, flag in [
        (("ftp://x/v1",), "--endpoint"),
        (("http://127.0.0.1:1/v1", "m", False, 0), "--concurrency"),
        (("http://127.0.0.1:1/v1", "m", False, 1, -1), "--retries"),
    ]:
        with pytest.raises(typer.BadParameter) as error:
            client_settings(*arguments)
        assert error.value.param_hint == flag
