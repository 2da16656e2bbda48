"""The LLM judge against a real `llamafactory-cli api` serving tiny local models on localhost."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medfactory.eval.likert import CRITERION_KEYS
from medfactory.eval.likert.judge import CORRECTION, RETRY_TEMPERATURE, UnparseableAnswer, judge_cards, judge_settings, parse_scores, write_judge_ratings
from testing_utils.tiny_models import build_constant_answer_model

ANSWER = '{"format": 4, "spelling": 5, "coherence": 3}'
CARDS = [
    {"card_id": "C00000001", "excerpt": "Paciente de 70 anos, internado por pneumonia.", "completion": "Evolui afebril, em uso de ceftriaxona."},
    {"card_id": "C00000002", "excerpt": "Gestante de 30 semanas com cefaleia.", "completion": "PA 150x100 mmHg, iniciado sulfato de magnésio."},
]


def test_parse_scores_accepts_only_a_complete_set_of_1_to_5() -> None:
    assert parse_scores(f"Aqui está: {ANSWER} obrigado") == {"format": 4, "spelling": 5, "coherence": 3}
    assert parse_scores('{"format": "2", "spelling": 2, "coherence": 1}') == {"format": 2, "spelling": 2, "coherence": 1}
    for bad in ("nota 4", '{"format": 4, "spelling": 5}', '{"format": 6, "spelling": 5, "coherence": 3}', '{"format": 3.5, "spelling": 5, "coherence": 3}', ""):
        with pytest.raises(UnparseableAnswer):
            parse_scores(bad)


@pytest.mark.slow
def test_judge_scores_through_a_live_llamafactory_api(tmp_path: Path, llamafactory_api) -> None:
    endpoint = llamafactory_api(build_constant_answer_model(tmp_path / "judge-model", ANSWER))
    rows = judge_cards(CARDS, endpoint, model="tiny-judge", retries=1)
    assert len(rows) == len(CARDS) * len(CRITERION_KEYS)
    assert {row["rater"] for row in rows} == {"judge:tiny-judge"}
    scores = {(row["card_id"], row["criterion"]): row["score"] for row in rows}
    assert scores[("C00000001", "format")] == 4 and scores[("C00000002", "spelling")] == 5 and scores[("C00000002", "coherence")] == 3
    path = write_judge_ratings(rows, tmp_path / "judge.csv")
    assert path.read_text().splitlines()[0] == "card_id,rater,criterion,score,observation"


@pytest.mark.slow
def test_unparseable_answers_are_retried_then_recorded_missing(tmp_path: Path, llamafactory_api) -> None:
    from medfactory.corpus.synthetic_notes import generate_notes
    from medfactory.run.tiny_model import build_tiny_model

    endpoint = llamafactory_api(build_tiny_model("mistral", list(generate_notes(100, seed=8))))  # random weights: never JSON
    started = time.time()
    rows = judge_cards(CARDS[:1], endpoint, model="tiny-random", retries=2)
    assert all(row["score"] is None for row in rows)
    assert all(row["observation"].startswith("missing after 3 attempts (retries: the unparseable answer and a corrective message") for row in rows)
    assert all(": unparseable answer" in row["observation"] for row in rows)
    log = next(tmp_path.glob("api-*.log")).read_text()
    assert log.count("POST /v1/chat/completions") == 3  # one request and two retries
    assert time.time() - started < 60


class DeterministicModel(http.server.BaseHTTPRequestHandler):
    """A chat endpoint whose answer is a pure function of the request, as a model decoding greedily:
    the first request it sees gets an unparseable answer, and so does every repeat of it; any
    other request gets the scores. A retry that changes nothing is therefore never answered."""

    first_request: bytes | None = None
    requests: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append(json.loads(body))
        if type(self).first_request is None:
            type(self).first_request = body
        answer = "Nota: quatro, cinco e três." if body == type(self).first_request else ANSWER
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def deterministic_endpoint() -> Iterator[str]:
    DeterministicModel.first_request, DeterministicModel.requests = None, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DeterministicModel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_retry_changes_what_can_change_a_greedy_answer(deterministic_endpoint: str) -> None:
    rows = judge_cards(CARDS[:1], deterministic_endpoint, model="greedy", retries=2)
    assert [row["score"] for row in rows] == [4, 5, 3]  # scored on the first retry
    first, retry = DeterministicModel.requests
    assert first["temperature"] == 0.0 and retry["temperature"] == RETRY_TEMPERATURE > 0
    assert retry["messages"][: len(first["messages"])] == first["messages"]
    assert [m["role"] for m in retry["messages"][len(first["messages"]) :]] == ["assistant", "user"]
    assert retry["messages"][-2]["content"] == "Nota: quatro, cinco e três." and retry["messages"][-1]["content"] == CORRECTION
    # The ratings record that the card was scored on a retry, and what the retry changed.
    assert {row["observation"] for row in rows} == {
        f"scored on attempt 2 of 3 (the unparseable answer and a corrective message added, temperature {RETRY_TEMPERATURE:g})"
    }
    settings = judge_settings(retries=2)
    assert settings["temperature"] == 0.0 and settings["retry_after_unparseable_answer"]["temperature"] == RETRY_TEMPERATURE
    assert CORRECTION in settings["retry_after_unparseable_answer"]["adds"]


# --------------------------------------------------------------------------------------------
# `likert judge` through the CLI: no proxy for loopback, no remote endpoint unless allowed,
# resume without ever replacing a score by a missing one (issue 14)
# --------------------------------------------------------------------------------------------

STUDY_CARDS = [
    {"card_id": f"C{index:08x}", "note_index": index, "excerpt": f"Trecho sintético {index} da nota.", "completion": f"Continuação sintética {index}."}
    for index in range(1, 13)
]
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the scores and records its target and body: a judge endpoint, or,
    for a request to an absolute URL, a proxy that would forward it elsewhere."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, body))  # type: ignore[attr-defined]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": ANSWER}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    """serve() -> a recording server on 127.0.0.1 (its base URL in ``.url``, requests in ``.requests``)."""
    servers = []

    def start() -> http.server.ThreadingHTTPServer:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        server.requests, server.url = [], f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A study folder with 12 synthetic cards, the working directory at its repository root."""
    import urllib.request

    from medfactory.base.jsonl import write_jsonl

    monkeypatch.chdir(tmp_path)
    for name in ("no_proxy", "NO_PROXY", *PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    # urlopen() keeps the opener (and the proxies it read from the environment) of its first call:
    # start and end without one, so a test sees the environment it sets.
    urllib.request.install_opener(None)
    write_jsonl(tmp_path / "reports" / "likert" / "s1" / "cards.jsonl", STUDY_CARDS)
    yield tmp_path / "reports" / "likert" / "s1"
    urllib.request.install_opener(None)


def judge_cli(*args: str):
    from typer.testing import CliRunner

    from medfactory.cli.likert import likert_app

    return CliRunner().invoke(likert_app, ["judge", "--study", "s1", "--model", "tiny-judge", *args])


def assert_no_card_text(output: str) -> None:
    for card in STUDY_CARDS:
        assert card["excerpt"] not in output and card["completion"] not in output
    assert "Traceback" not in output


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_endpoint_never_goes_through_the_environment_proxy(study: Path, serve, monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    judge, proxy = serve(), serve()
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, proxy.url)
    result = judge_cli("--endpoint", judge.url.replace("127.0.0.1", host) + "/v1", "--retries", "0")
    assert result.exit_code == 0, result.output
    assert proxy.requests == []  # the card text never reached the proxy
    assert len(judge.requests) == len(STUDY_CARDS)
    assert (study / "ratings" / "judge_tiny-judge.csv").read_text().count(",judge:tiny-judge,") == 3 * len(STUDY_CARDS)


@pytest.mark.parametrize("host", ["::1", "[::1]", "127.0.0.1", "127.3.2.1", "LOCALHOST", "localhost", "::ffff:127.0.0.1"])
def test_loopback_hosts(host: str) -> None:
    from medfactory.eval.likert.judge import is_loopback_host

    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.20", "judge.example.org", "localhost.example.org", "127.0.0.1.nip.io", "127.1"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    from medfactory.eval.likert.judge import is_loopback_host

    assert not is_loopback_host(host)


@pytest.mark.parametrize("endpoint", ["judge.example.org:8000/v1", "file:///etc/passwd", "ftp://127.0.0.1/v1", "http://127.0.0.1:port/v1", "http:///v1", ""])
def test_an_endpoint_that_is_not_an_http_url_is_refused_before_sending(study: Path, endpoint: str) -> None:
    result = judge_cli("--endpoint", endpoint)
    assert result.exit_code == 1 and "is not an http(s) URL" in result.output, result.output
    assert not (study / "ratings").exists()


@pytest.mark.parametrize("host", ["judge.example.org", "10.20.30.40", "0.0.0.0"])
def test_a_remote_endpoint_is_refused_and_nothing_is_sent(study: Path, serve, monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    proxy = serve()  # where urllib would send a request for any non-loopback host
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, proxy.url)
    result = judge_cli("--endpoint", f"http://{host}:8000/v1")
    assert result.exit_code == 1
    assert f"refusing to send card text to {host}" in result.output and "--allow-remote-endpoint" in result.output
    assert ("use 127.0.0.1" in result.output) == (host == "0.0.0.0")
    assert proxy.requests == []
    assert not (study / "ratings").exists()
    assert_no_card_text(result.output)


def test_an_allowed_remote_endpoint_uses_the_environment_proxy(study: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = serve()  # stands in for the proxy and, behind it, the remote judge
    monkeypatch.setenv("http_proxy", proxy.url)
    result = judge_cli("--endpoint", "http://judge.example.org:8000/v1", "--allow-remote-endpoint", "--retries", "0")
    assert result.exit_code == 0, result.output
    assert {target for target, _ in proxy.requests} == {"http://judge.example.org:8000/v1/chat/completions"}
    assert len(proxy.requests) == len(STUDY_CARDS)


def test_a_redirect_is_not_followed() -> None:
    import urllib.error
    import urllib.request

    from medfactory.eval.likert.judge import endpoint_opener

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("Location", "http://judge.example.org/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
        with pytest.raises(urllib.error.HTTPError) as error:
            endpoint_opener(url).open(urllib.request.Request(url, data=b"{}"), timeout=5)
        assert error.value.code == 307
    finally:
        server.shutdown()
        server.server_close()


def test_an_endpoint_down_keeps_earlier_scores_exits_1_and_a_rerun_judges_only_the_missing(study: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_module

    from medfactory.eval.likert.judge import MAX_FAILED_IN_A_ROW, write_judge_ratings

    monkeypatch.setattr(time_module, "sleep", lambda seconds: None)  # the back-off between attempts
    judge = serve()
    assert judge_cli("--endpoint", judge.url + "/v1").exit_code == 0
    path = study / "ratings" / "judge_tiny-judge.csv"
    good = path.read_bytes()

    # The endpoint is down: nothing left to judge, so nothing is sent and the file is unchanged.
    down = f"http://127.0.0.1:{free_port()}/v1"
    result = judge_cli("--endpoint", down)
    assert result.exit_code == 0 and "12 scored by an earlier run (kept), 0 scored now, 0 missing" in result.output, result.output
    assert path.read_bytes() == good

    # An earlier run that scored 8 cards: the endpoint down now leaves those 8 byte for byte.
    rows = [
        {"card_id": card["card_id"], "rater": "judge:tiny-judge", "criterion": key, "score": 2 if index < 8 else None, "observation": "" if index < 8 else "x"}
        for index, card in enumerate(STUDY_CARDS)
        for key in CRITERION_KEYS
    ]
    write_judge_ratings(rows, path)
    earlier = path.read_text().splitlines(keepends=True)
    result = judge_cli("--endpoint", down)
    assert result.exit_code == 1
    assert f"4 of 12 cards could not be judged ({MAX_FAILED_IN_A_ROW} after 3 attempts each; 1 not tried" in result.output
    assert "Run the same command again" in result.output and "Connection refused" in result.output
    assert_no_card_text(result.output)
    assert path.read_text().splitlines(keepends=True)[: 1 + 8 * 3] == earlier[: 1 + 8 * 3]
    assert path.read_text().count(",judge:tiny-judge,") == 36

    # The rerun with the endpoint up sends only the 4 missing cards and keeps the other rows.
    judge.requests.clear()
    result = judge_cli("--endpoint", judge.url + "/v1")
    assert result.exit_code == 0 and "8 scored by an earlier run (kept), 4 scored now, 0 missing" in result.output, result.output
    assert len(judge.requests) == 4
    sent = b"".join(body for _, body in judge.requests).decode("unicode_escape")
    assert all(card["excerpt"] not in sent for card in STUDY_CARDS[:8])
    lines = path.read_text().splitlines(keepends=True)
    assert lines[: 1 + 8 * 3] == earlier[: 1 + 8 * 3] and len(lines) == 1 + 12 * 3
    assert all(line.split(",")[3] for line in lines[1:])  # every score present


def test_a_fresh_run_against_a_down_endpoint_exits_1(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_module

    monkeypatch.setattr(time_module, "sleep", lambda seconds: None)
    result = judge_cli("--endpoint", f"http://127.0.0.1:{free_port()}/v1", "--retries", "1")
    assert result.exit_code == 1 and "12 of 12 cards could not be judged" in result.output, result.output
    assert_no_card_text(result.output)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda text: text.replace("C00000002", "C99999999", 1), "not in cards.jsonl"),
        (lambda text: text.replace("judge:tiny-judge", "judge:other", 1), "another rater"),
        (lambda text: text + text.splitlines(keepends=True)[1], "a second row"),
        (lambda text: text.replace("card_id,rater", "card,rater", 1), "not the header"),
    ],
)
def test_earlier_ratings_that_cannot_be_kept_are_never_overwritten(study: Path, serve, edit, problem: str) -> None:
    judge = serve()
    assert judge_cli("--endpoint", judge.url + "/v1").exit_code == 0
    path = study / "ratings" / "judge_tiny-judge.csv"
    path.write_text(edit(path.read_text()))
    before, sent = path.read_bytes(), len(judge.requests)
    result = judge_cli("--endpoint", judge.url + "/v1")
    assert result.exit_code == 1 and problem in result.output and "move" in result.output.lower(), result.output
    assert path.read_bytes() == before and len(judge.requests) == sent
    assert_no_card_text(result.output)


@pytest.mark.slow
def test_the_judge_through_predict_rounds_retries_an_unreadable_round_with_the_next(study: Path, llamafactory_train) -> None:
    """--engine predict: round 1 answered by a model that never gives scores, so every card's retry (the answer and the
    correction, a multi-turn request) becomes round 2, answered by the scoring model: every card scored on attempt 2."""
    import shutil

    root = study.parent.parent.parent
    shutil.copytree(Path(__file__).resolve().parents[1] / "recipes", root / "recipes")
    (root / "dataset_info.json").write_text("{}", encoding="utf-8")

    def predict(model: Path, output: str) -> str:
        run = llamafactory_train(root, "recipes/clinical_cases_predict.yaml", model_name_or_path=model, adapter_name_or_path="null", template="empty",
                                 quantization_bit="null", bf16="false", eval_dataset="likert_judge_s1_round", preprocessing_num_workers=1,
                                 output_dir=root / "saves" / output)  # fmt: skip
        return str(run / "generated_predictions.jsonl")

    first = judge_cli("--engine", "predict")
    assert first.exit_code == 0, first.output
    assert f"not finished: {len(STUDY_CARDS)} requests await a predict run: registered likert_judge_s1_round" in first.output
    unreadable = predict(build_constant_answer_model(root / "unsure", "Não sei avaliar."), "round1")
    second = judge_cli("--engine", "predict", "--predictions", unreadable)
    assert second.exit_code == 0, second.output
    assert f"not finished: {len(STUDY_CARDS)} requests await" in second.output  # the retries, each built from its card's first answer
    rows = [json.loads(line) for line in (root / "data/likert_judge_s1_round/requests.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [turn["role"] for turn in rows[0]["messages"]] == ["user", "assistant", "user", "assistant"] and rows[0]["messages"][2]["content"] == CORRECTION
    scores = predict(build_constant_answer_model(root / "scorer", ANSWER), "round2")
    third = judge_cli("--engine", "predict", "--predictions", scores)
    assert third.exit_code == 0, third.output
    assert f"{len(STUDY_CARDS)} cards: 0 scored by an earlier run (kept), {len(STUDY_CARDS)} scored now, 0 missing" in third.output
    text = (study / "ratings" / "judge_tiny-judge.csv").read_text(encoding="utf-8")
    assert text.count(",judge:tiny-judge,") == len(STUDY_CARDS) * len(CRITERION_KEYS) and text.count("scored on attempt 2 of 3") == len(STUDY_CARDS) * 3
    assert_no_card_text(first.output + second.output + third.output)
