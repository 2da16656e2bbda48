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
count them.

Card text is clinical text, so it goes only to the endpoint the user names, and only to a loopback
one (127.0.0.0/8, ::1, ``localhost``) unless the user allows a remote one: a loopback endpoint is
reached directly, never through ``http_proxy`` / ``https_proxy`` from the environment, and no
redirect is followed (the rule of every generation step: :mod:`medfactory.generate.client`).
A study is judged incrementally (:func:`judge_study`): cards already scored in
``ratings/judge_<model>.csv`` are kept as they are and only the others are sent, so a run that
failed or was stopped resumes where it ended.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from tqdm import tqdm

from medfactory.base.atomic import atomic_write
from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import iter_jsonl
from medfactory.base.names import confined_path
from medfactory.eval.likert import CRITERIA, CRITERION_KEYS, LONG_COLUMNS, SCORES
from medfactory.generate.client import REMOTE_FLAG, ChatRequest, GenerationError, endpoint_host, is_loopback_host, post_chat  # noqa: F401 -- the endpoint rule, importable from here as before
from medfactory.generate.client import endpoint_opener as client_endpoint_opener
from medfactory.generate.predict_rounds import RoundsClient

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


# Cards in a row whose every attempt failed on the request: the endpoint is down, so the run stops
# rather than waiting out the back-off on every remaining card (a rerun resumes).
MAX_FAILED_IN_A_ROW = 3


class UnparseableAnswer(ValueError):
    """The judge's answer holds no complete set of 1-5 scores."""


class JudgeError(CorpusError):
    """The judge cannot run: a refused or malformed endpoint, unreadable cards or earlier ratings."""


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
                    # The value is not quoted: a judge can echo card text into it.
                    raise UnparseableAnswer(f"{key} is not an integer 1-5 (a {type(value).__name__})")
                scores[key] = int(str(value).strip())
            return scores
    raise UnparseableAnswer(f"no JSON object with {', '.join(CRITERION_KEYS)} in an answer of {len(answer)} characters")


def endpoint_opener(endpoint: str, allow_remote: bool = False) -> urllib.request.OpenerDirector:
    """The opener the judge sends card text with, or :class:`JudgeError` before anything is sent.

    The rule is the generation client's (:func:`medfactory.generate.client.endpoint_opener`): a
    loopback endpoint gets no proxy at all, a remote one is refused unless ``allow_remote``, no
    redirect is followed.
    """
    try:
        return client_endpoint_opener(endpoint, allow_remote, what="card text")
    except GenerationError as error:
        raise JudgeError(str(error)) from None


def ask(
    endpoint: str,
    model: str,
    messages: list[dict[str, str]],
    timeout: float,
    max_tokens: int = MAX_TOKENS,
    temperature: float = TEMPERATURE,
    opener: urllib.request.OpenerDirector | None = None,
) -> str:
    """One chat completion request through ``opener`` (default: :func:`endpoint_opener`, loopback only)."""
    opener = opener or endpoint_opener(endpoint)
    payload = post_chat(opener, endpoint, {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}, timeout)
    return payload["choices"][0]["message"]["content"] or ""


Asker = Callable[[list[dict[str, str]], float], str]  # (messages, temperature) -> the judge's answer


class AwaitingRound(Exception):
    """The judge's request is in no llamafactory-cli predict round's replies yet (``likert judge --engine predict``)."""


def served_asker(endpoint: str, model: str, timeout: float, opener: urllib.request.OpenerDirector) -> Asker:
    """The judge's answers from the endpoint."""
    return lambda messages, temperature: ask(endpoint, model, messages, timeout, temperature=temperature, opener=opener)


def rounds_asker(client: RoundsClient) -> Asker:
    """The judge's answers from predict rounds' replies in ``client``'s cache; :class:`AwaitingRound` for one not there yet."""

    def answer(messages: list[dict[str, str]], temperature: float) -> str:
        (completion,) = client.complete([ChatRequest("card", messages, temperature, MAX_TOKENS)])
        if not completion.ok:
            raise AwaitingRound
        return completion.text or ""

    return answer


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


class _Judged(NamedTuple):
    scores: dict[str, int] | None
    observation: str
    request_failed: bool  # the last attempt failed on the request (not on the answer)


def _judge_card(card: dict[str, str], asker: Asker, retries: int, retry_temperature: float) -> _Judged:
    """Scores (or None) and the observation for one card: temperature 0 first; after an unparseable
    answer the conversation grows by that answer and a correction, at ``retry_temperature``.
    :class:`AwaitingRound` passes through: the card waits for the next predict round."""
    messages, temperature = build_messages(card), TEMPERATURE
    reason, corrected, request_failed = "", False, False
    for attempt in range(retries + 1):
        try:
            answer = asker(messages, temperature)
        except (OSError, http.client.HTTPException, KeyError, IndexError, TypeError, ValueError) as error:
            reason, request_failed = f"request failed ({type(error).__name__}: {error})", True
            if attempt < retries:
                time.sleep(min(2**attempt, 10))
            continue  # a failed request is sent again unchanged
        try:
            scores = parse_scores(answer)
        except UnparseableAnswer as error:
            reason, request_failed = f"unparseable answer ({error})", False
            messages, temperature, corrected = retry_messages(build_messages(card), answer), retry_temperature, True
            continue
        note = f"scored on attempt {attempt + 1} of {retries + 1} ({_retry_note(retry_temperature)})" if corrected else ""
        return _Judged(scores, note, False)
    how = f" (retries: {_retry_note(retry_temperature)})" if corrected else ""
    return _Judged(None, f"missing after {retries + 1} attempts{how}: {reason}", request_failed)


def judge_rater(model: str) -> str:
    """The rater name of a judge model's ratings."""
    return f"judge:{model}"


def _card_rows(card_id: str, rater: str, judged: _Judged) -> list[dict[str, Any]]:
    scores = judged.scores
    return [dict(zip(LONG_COLUMNS, (card_id, rater, key, scores[key] if scores else None, judged.observation))) for key in CRITERION_KEYS]


def judge_cards(
    cards: list[dict[str, str]],
    endpoint: str,
    model: str,
    retries: int = 2,
    timeout: float = 120.0,
    retry_temperature: float = RETRY_TEMPERATURE,
    allow_remote: bool = False,
) -> list[dict[str, Any]]:
    """Long-format ratings (LONG_COLUMNS) of rater ``judge:<model>`` for every card and criterion.

    The observation column records when a card was scored on a retry, and what the retry changed.
    A non-loopback endpoint is refused unless ``allow_remote`` (:func:`endpoint_opener`).
    """
    opener = endpoint_opener(endpoint, allow_remote)
    rater = judge_rater(model)
    rows: list[dict[str, Any]] = []
    for card in tqdm(cards, desc=f"judge {model}", unit="card"):
        rows += _card_rows(card["card_id"], rater, _judge_card(card, served_asker(endpoint, model, timeout, opener), retries, retry_temperature))
    return rows


def _rows_text(rows: list[dict[str, Any]], header: bool = False) -> str:
    """Rows as the canonical long CSV (an empty field for a missing score)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(LONG_COLUMNS), lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({**row, "score": "" if row["score"] is None else row["score"]})
    return buffer.getvalue()


def write_judge_ratings(rows: list[dict[str, Any]], path: Path) -> Path:
    """The judge's ratings as the canonical long CSV (atomically)."""
    with atomic_write(Path(path)) as handle:
        handle.write(_rows_text(rows, header=True))
    return Path(path)


# --------------------------------------------------------------------------------------------
# A study: resume from the earlier ratings, never replace a score by a missing one
# --------------------------------------------------------------------------------------------


def load_cards(path: Path) -> list[dict[str, str]]:
    """The cards of ``cards.jsonl`` the judge needs (card_id, excerpt, completion), checked.

    Problems name the line only: the file holds note text.
    """
    cards, seen, problems = [], set(), []
    for number, record in iter_jsonl(Path(path)):
        card_id = record.get("card_id")
        if not isinstance(card_id, str) or not card_id.strip():
            problems.append(f"line {number}: no card_id")
        elif card_id in seen:
            problems.append(f"line {number}: a card_id of an earlier line repeats")
        elif not all(isinstance(record.get(field), str) for field in ("excerpt", "completion")):
            problems.append(f"line {number}: excerpt or completion missing or not text")
        else:
            seen.add(card_id)
            cards.append(record)
    if problems:
        raise JudgeError(f"{path}: not the cards `medfactory likert run` writes:\n" + "\n".join(problems[:20]))
    if not cards:
        raise JudgeError(f"{path}: no cards. `medfactory likert run --study ...` writes them.")
    return cards


def judge_ratings_path(study_dir: Path, model: str) -> Path:
    """``<study>/ratings/judge_<model>.csv``, the model name made one file name (``/`` of a hub id -> ``_``)."""
    safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in model)
    return confined_path(Path(study_dir) / "ratings", f"judge_{safe}.csv", what="judge ratings file of --model")


@dataclass
class _Earlier:
    """One card's rows in the earlier ratings file: their exact text, and whether all are scored."""

    text: str = ""
    scores: dict[str, int | None] | None = None

    @property
    def complete(self) -> bool:
        return self.scores is not None and all(self.scores.get(key) is not None for key in CRITERION_KEYS)


def _raw_records(text: str) -> list[tuple[int, list[str], str]]:
    """(first line, fields, exact text) of every CSV record of ``text``."""
    lines = io.StringIO(text, newline="")
    consumed: list[str] = []

    def feed() -> Any:
        for line in lines:
            consumed.append(line)
            yield line

    records, first = [], 1
    reader = csv.reader(feed())
    for fields in reader:
        raw = "".join(consumed)
        consumed.clear()
        records.append((first, fields, raw if raw.endswith(("\n", "\r")) else raw + "\n"))
        first = reader.line_num + 1
    return records


def _earlier_row_problem(fields: list[str], rater: str, known: set[str], earlier: dict[str, _Earlier]) -> str | None:
    """Why one row of the earlier ratings cannot be kept beside the new ones (None when it can)."""
    from medfactory.eval.likert.ratings import parse_score

    if len(fields) != len(LONG_COLUMNS):
        return f"{len(fields)} fields, not {len(LONG_COLUMNS)}"
    card_id, row_rater, criterion, score, _ = fields
    if row_rater != rater:
        return f"another rater than {rater!r} (another --model with the same file name?)"
    if card_id not in known:
        return "a card that is not in cards.jsonl (were the cards rebuilt?)"
    if criterion not in CRITERION_KEYS:
        return "an unknown criterion"
    entry = earlier.setdefault(card_id, _Earlier(scores={}))
    if criterion in entry.scores:
        return "a second row of one card and criterion"
    value, reason = parse_score(score)
    entry.scores[criterion] = None if reason else value
    return None


def read_earlier_ratings(path: Path, rater: str, card_ids: list[str]) -> dict[str, _Earlier]:
    """card_id -> its rows in an earlier ``judge_<model>.csv`` (empty when there is none).

    A file that cannot be merged with new ratings (another header, rater or study, a doubled row)
    raises :class:`JudgeError` naming its lines: it is never overwritten.
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise JudgeError(f"{path}: cannot read the earlier judge ratings ({type(error).__name__}); nothing was sent. Move it aside to start over.") from error
    records = _raw_records(text.removeprefix("\ufeff"))
    if not records or [field.strip() for field in records[0][1]] != list(LONG_COLUMNS):
        raise JudgeError(f"{path}, line 1: not the header {','.join(LONG_COLUMNS)}; nothing was sent. Move the file aside to start over.")
    earlier: dict[str, _Earlier] = {}
    known, problems = set(card_ids), []
    for line, fields, raw in records[1:]:
        if not any(field.strip() for field in fields):
            continue
        problem = _earlier_row_problem(fields, rater, known, earlier)
        if problem:
            problems.append(f"line {line}: {problem}")
        else:
            earlier[fields[0]].text += raw
    if problems:
        raise JudgeError(
            f"{path}: {len(problems)} row(s) of the earlier judge ratings cannot be kept; nothing was sent or written. "
            "Fix them or move the file aside to start over:\n" + "\n".join(problems[:20])
        )
    return earlier


@dataclass
class JudgeRun:
    """What one ``likert judge`` run did (counts only: no card text)."""

    path: Path
    cards: int
    kept: int = 0  # scored by an earlier run, left as they were
    judged: int = 0  # scored now
    failed: int = 0  # not scored after every attempt
    not_tried: int = 0  # left for the next run after the endpoint failed MAX_FAILED_IN_A_ROW times
    awaiting: int = 0  # --engine predict: waiting for a predict round (no rows written for them)
    reason: str = ""  # the last failure

    @property
    def missing(self) -> int:
        return self.failed + self.not_tried


def _write_blocks(path: Path, card_ids: list[str], blocks: dict[str, str]) -> None:
    """The ratings file: the header, then each card's rows in the order of the cards (atomically)."""
    with atomic_write(path) as handle:
        handle.write(",".join(LONG_COLUMNS) + "\n")
        for card_id in card_ids:
            handle.write(blocks.get(card_id, ""))


def judge_study(
    cards: list[dict[str, str]],
    path: Path,
    endpoint: str,
    model: str,
    retries: int = 2,
    timeout: float = 120.0,
    retry_temperature: float = RETRY_TEMPERATURE,
    allow_remote: bool = False,
    rounds: RoundsClient | None = None,
) -> JudgeRun:
    """Judge the cards not yet scored in ``path`` and write it after each card (atomically).

    With ``rounds`` the answers come from llamafactory-cli predict rounds (``rounds.pending`` then holds
    the requests still to predict); a card whose answer is not there yet gets no rows and is counted as awaiting.

    Cards fully scored by an earlier run keep their rows byte for byte. A card that cannot be
    scored now gets missing rows only when it had no rows before, so a score is never replaced
    by a missing one. After :data:`MAX_FAILED_IN_A_ROW` cards in a row failed on the request the
    run stops; the rest stay unscored for the next run.
    """
    asker = rounds_asker(rounds) if rounds is not None else served_asker(endpoint, model, timeout, endpoint_opener(endpoint, allow_remote))
    path, rater = Path(path), judge_rater(model)
    card_ids = [card["card_id"] for card in cards]
    earlier = read_earlier_ratings(path, rater, card_ids)
    blocks = {card_id: entry.text for card_id, entry in earlier.items()}
    todo = [card for card in cards if not (card["card_id"] in earlier and earlier[card["card_id"]].complete)]
    run = JudgeRun(path, len(cards), kept=len(cards) - len(todo))
    in_a_row = 0
    for number, card in enumerate(tqdm(todo, desc=f"judge {model}", unit="card")):
        try:
            judged = _judge_card(card, asker, retries, retry_temperature)
        except AwaitingRound:
            run.awaiting += 1
            continue
        if judged.scores is not None:
            blocks[card["card_id"]], in_a_row = _rows_text(_card_rows(card["card_id"], rater, judged)), 0
            run.judged += 1
        else:
            if card["card_id"] not in earlier:
                blocks[card["card_id"]] = _rows_text(_card_rows(card["card_id"], rater, judged))
            run.failed, run.reason = run.failed + 1, judged.observation
            in_a_row = in_a_row + 1 if judged.request_failed else 0
        _write_blocks(path, card_ids, blocks)  # a run stopped now loses at most this card
        if in_a_row >= MAX_FAILED_IN_A_ROW:
            run.not_tried = len(todo) - number - 1
            break
    if run.not_tried:
        stopped = _Judged(None, f"not judged: the run stopped after {MAX_FAILED_IN_A_ROW} cards in a row failed on the request", True)
        for card in todo[len(todo) - run.not_tried :]:
            blocks.setdefault(card["card_id"], _rows_text(_card_rows(card["card_id"], rater, stopped)))
        _write_blocks(path, card_ids, blocks)
    return run
