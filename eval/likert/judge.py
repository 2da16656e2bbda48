"""An LLM judge for the Likert study: the raters' rubric, scored by a model behind an OpenAI-compatible
endpoint (``llamafactory-cli api``, vLLM, ...), written as ratings of rater ``judge:<model>``.

The judge sees exactly what a rater sees (excerpt and continuation, never the model name) and
the three criteria with their definitions, and must answer with a JSON object of three scores.
An answer that does not parse is asked again, up to ``retries`` more times; then the card's
scores are recorded as missing, with the reason in the observation column, so the report can
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


class UnparseableAnswer(ValueError):
    """The judge's answer holds no complete set of 1-5 scores."""


def build_messages(card: dict[str, str]) -> list[dict[str, str]]:
    """The chat messages for one card: the rubric, the excerpt, the continuation, the answer format."""
    rubric = "\n".join(f"- {criterion.key} ({criterion.name}): {criterion.question}" for criterion in CRITERIA)
    answer = "{" + ", ".join(f'"{key}": <1-5>' for key in CRITERION_KEYS) + "}"
    user = (
        f"Critérios:\n{rubric}\n\nTrecho inicial da nota:\n{card['excerpt']}\n\n"
        f"Continuação a avaliar:\n{card['completion']}\n\nResponda apenas com o JSON {answer}."
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


def ask(endpoint: str, model: str, messages: list[dict[str, str]], timeout: float, max_tokens: int = 64) -> str:
    """One chat completion request; returns the answer text."""
    body = json.dumps({"model": model, "messages": messages, "temperature": 0.0, "max_tokens": max_tokens}).encode()
    request = urllib.request.Request(
        endpoint.rstrip("/") + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read().decode("utf-8"))
    return payload["choices"][0]["message"]["content"] or ""


def judge_cards(
    cards: list[dict[str, str]],
    endpoint: str,
    model: str,
    retries: int = 2,
    timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """Long-format ratings (LONG_COLUMNS) of rater ``judge:<model>`` for every card and criterion."""
    rater = f"judge:{model}"
    rows: list[dict[str, Any]] = []
    for card in tqdm(cards, desc=f"judge {model}", unit="card"):
        messages = build_messages(card)
        reason = ""
        scores: dict[str, int] | None = None
        for attempt in range(retries + 1):
            try:
                scores = parse_scores(ask(endpoint, model, messages, timeout))
                break
            except UnparseableAnswer as error:
                reason = f"unparseable answer ({error})"
            except (urllib.error.URLError, TimeoutError, KeyError, ValueError) as error:
                reason = f"request failed ({type(error).__name__}: {error})"
                time.sleep(min(2**attempt, 10))
        for key in CRITERION_KEYS:
            observation = "" if scores else f"missing after {retries + 1} attempts: {reason}"
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
