"""An LLM judge for the Likert study: the raters' rubric, scored by a model behind an OpenAI-compatible
endpoint (``llamafactory-cli api``, vLLM, ...), written as ratings of rater ``judge:<model>``.

The judge sees exactly what a rater sees (excerpt and continuation, never the model name) and
the three criteria with their definitions, and must answer with a JSON object of three scores,
at temperature 0. An answer that does not parse is asked again, up to ``retries`` more times,
and each retry changes what can change the answer: the bad answer and a corrective message
(:data:`CORRECTION`) join the conversation and the request goes at :data:`RETRY_TEMPERATURE`
(the same request at temperature 0 would get the same answer). A failed request is sent again
as it was. The observation column says when a card was scored on a retry and how; after the
last attempt the card's scores are recorded as missing, with the reason, so the report can
count them. Requests go only to the endpoint the user names (by default localhost).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medfactory.eval.likert import CRITERIA, CRITERION_KEYS, LONG_COLUMNS, SCORES

SYSTEM_PROMPT = (
    "Você é um médico avaliando, às cegas, continuações de notas clínicas em português. "
    "Dê a cada critério uma nota inteira de 1 a 5."
)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
TEMPERATURE = 0.0
# Greedy decoding repeats itself: a retry samples (llamafactory-cli api and vLLM sample when
# temperature > 0), at a low temperature so that the scores stay near the model's mode.
RETRY_TEMPERATURE = 0.5
MAX_TOKENS = 64
ANSWER_FORMAT = "{" + ", ".join(f'"{key}": <1-5>' for key in CRITERION_KEYS) + "}"
CORRECTION = (
    "Sua resposta não pôde ser lida: faltam as três notas inteiras de 1 a 5. "
    f"Responda apenas com o JSON {ANSWER_FORMAT}, sem nenhum texto antes ou depois."
)


class UnparseableAnswer(ValueError):
    """The judge's answer holds no complete set of 1-5 scores."""


def build_messages(card: dict[str, str]) -> list[dict[str, str]]:
    """The chat messages for one card: the rubric, the excerpt, the continuation, the answer format."""
    rubric = "\n".join(f"- {criterion.key} ({criterion.name}): {criterion.question}" for criterion in CRITERIA)
    user = (
        f"Critérios:\n{rubric}\n\nTrecho inicial da nota:\n{card['excerpt']}\n\n"
        f"Continuação a avaliar:\n{card['completion']}\n\nResponda apenas com o JSON {ANSWER_FORMAT}."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_scores(answer: str) -> dict[str, int]:
    """Scores from the judge's answer: the first JSON object with all three criteria, each 1-5."""
    for match in _JSON_OBJECT.finditer(answer):
        try:
            candidate = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(candidate, dict) and all(key in candidate for key in CRITERION_KEYS):
            scores = {}
            for key in CRITERION_KEYS:
                value = candidate[key]
                if isinstance(value, bool) or not isinstance(value, (int, float, str)) or str(value).strip() not in {str(s) for s in SCORES}:
                    raise UnparseableAnswer(f"{key} is {value!r}, not an integer 1-5")
                scores[key] = int(str(value).strip())
            return scores
    raise UnparseableAnswer(f"no JSON object with {', '.join(CRITERION_KEYS)} in an answer of {len(answer)} characters")


def ask(endpoint: str, model: str, messages: list[dict[str, str]], timeout: float, max_tokens: int = MAX_TOKENS, temperature: float = TEMPERATURE) -> str:
    """One chat completion request; returns the answer text."""
    body = json.dumps({"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}).encode()
    request = urllib.request.Request(
        endpoint.rstrip("/") + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read().decode("utf-8"))
    return payload["choices"][0]["message"]["content"] or ""


def retry_messages(messages: list[dict[str, str]], answer: str) -> list[dict[str, str]]:
    """The conversation for a retry after an unparseable ``answer``: the answer, then :data:`CORRECTION`."""
    return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": CORRECTION}]


def judge_settings(retries: int = 2, retry_temperature: float = RETRY_TEMPERATURE) -> dict[str, Any]:
    """What the judge sends and what a retry changes (for a study's records beside the ratings)."""
    return {
        "system_prompt": SYSTEM_PROMPT,
        "temperature": TEMPERATURE,
        "max_tokens": MAX_TOKENS,
        "retries": retries,
        "retry_after_unparseable_answer": {"temperature": retry_temperature, "adds": ["the unparseable answer", CORRECTION]},
        "retry_after_failed_request": "the same request again, after a back-off of 1, 2, 4 ... (at most 10) seconds",
    }


def _retry_note(retry_temperature: float) -> str:
    return f"the unparseable answer and a corrective message added, temperature {retry_temperature:g}"


def _judge_card(card: dict[str, str], endpoint: str, model: str, retries: int, timeout: float, retry_temperature: float) -> tuple[dict[str, int] | None, str]:
    """(scores or None, observation) for one card: temperature 0 first; after an unparseable
    answer the conversation grows by that answer and a correction, at ``retry_temperature``."""
    messages, temperature = build_messages(card), TEMPERATURE
    reason, corrected = "", False
    for attempt in range(retries + 1):
        try:
            answer = ask(endpoint, model, messages, timeout, temperature=temperature)
        except (urllib.error.URLError, TimeoutError, KeyError, ValueError) as error:
            reason = f"request failed ({type(error).__name__}: {error})"
            time.sleep(min(2**attempt, 10))
            continue  # a failed request is sent again unchanged
        try:
            scores = parse_scores(answer)
        except UnparseableAnswer as error:
            reason = f"unparseable answer ({error})"
            messages, temperature, corrected = retry_messages(build_messages(card), answer), retry_temperature, True
            continue
        note = f"scored on attempt {attempt + 1} of {retries + 1} ({_retry_note(retry_temperature)})" if corrected else ""
        return scores, note
    how = f" (retries: {_retry_note(retry_temperature)})" if corrected else ""
    return None, f"missing after {retries + 1} attempts{how}: {reason}"


def judge_cards(
    cards: list[dict[str, str]],
    endpoint: str,
    model: str,
    retries: int = 2,
    timeout: float = 120.0,
    retry_temperature: float = RETRY_TEMPERATURE,
) -> list[dict[str, Any]]:
    """Long-format ratings (LONG_COLUMNS) of rater ``judge:<model>`` for every card and criterion.

    The observation column records when a card was scored on a retry, and what the retry changed.
    """
    rater = f"judge:{model}"
    rows: list[dict[str, Any]] = []
    for card in tqdm(cards, desc=f"judge {model}", unit="card"):
        scores, observation = _judge_card(card, endpoint, model, retries, timeout, retry_temperature)
        for key in CRITERION_KEYS:
            rows.append(dict(zip(LONG_COLUMNS, (card["card_id"], rater, key, scores[key] if scores else None, observation))))
    return rows


def write_judge_ratings(rows: list[dict[str, Any]], path: Path) -> Path:
    """The judge's ratings as the canonical long CSV (atomically)."""
    import csv

    from medfactory.base.atomic import atomic_write

    with atomic_write(Path(path)) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(LONG_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "score": "" if row["score"] is None else row["score"]})
    return Path(path)
