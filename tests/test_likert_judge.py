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
