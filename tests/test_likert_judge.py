"""The LLM judge against a real `llamafactory-cli api` serving tiny local models on localhost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from medfactory.eval.likert import CRITERION_KEYS
from medfactory.eval.likert.judge import UnparseableAnswer, judge_cards, parse_scores, write_judge_ratings
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
    assert all(row["observation"].startswith("missing after 3 attempts: unparseable answer") for row in rows)
    log = next(tmp_path.glob("api-*.log")).read_text()
    assert log.count("POST /v1/chat/completions") == 3  # one request and two retries
    assert time.time() - started < 60
