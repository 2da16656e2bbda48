"""Is a generated answer grounded in its passage? Lexical overlap, and the model's own verdict.

Two signals, both recorded per item (``provenance.jsonl``) and both gated (docs/qa_generation.md):

- :func:`lexical_overlap`: the share of the answer's distinct content words that also occur in the
  passage. Words are case- and accent-folded, stop words of Spanish / Portuguese removed, and
  compared by their Snowball stem (NLTK's, no data download), so "hepática" meets "hepático" and
  "reduce" meets "reducen": the two languages inflect at the end of the word.
- :func:`verification_messages` / :func:`parse_verdict`: a second request that shows the model the
  passage, the question and the answer and asks whether the passage supports the answer. Only a
  clear yes counts: ``sí`` / ``sim`` / ``yes`` as the first word, or ``{"supported": true}``;
  anything else (no, an unreadable answer, a failed request) does not.

Texts are compared here and never logged or stored.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import cache
from typing import Any

VERIFY_PROMPT_VERSION = "qa-verify/1"
# Half of the answer's content words must come from the passage: below that the answer is mostly the
# model's own words, which is where facts the passage does not hold come from (docs/qa_generation.md).
DEFAULT_MIN_OVERLAP = 0.5
LANGUAGES = ("es", "pt")
_STEMMER_LANGUAGE = {"es": "spanish", "pt": "portuguese"}
_WORD = re.compile(r"\w+")
_LETTERS = re.compile(r"[^\W\d_]+")

# Function words (Snowball's Spanish and Portuguese stop lists, abridged to the forms that carry no
# medical content), written folded (no accents, lower case) because words are compared folded.
_STOP_ES = """
a al algo algun alguna algunas alguno algunos ante antes aquel aquella aquellas aquellos aqui asi aun aunque cada como con contra
cual cuales cuando cuanto de del desde donde dos durante e el ella ellas ello ellos en entre era eran es esa esas ese eso esos esta
estaba estaban estan estar este esto estos fue fueron ha haber habia han hasta hay la las le les lo los mas me mi mis mucho muchos muy
nada ni no nos nosotros o os otra otras otro otros para pero poco por porque puede pueden que quien quienes se sea sean segun ser si
sido siempre sin sino sobre son su sus tambien tan tanto te tiene tienen todo todos tras tu tus u un una unas uno unos usted ya yo
cual cuales puede suele suelen mediante dicho dicha
"""
_STOP_PT = """
a ao aos aquela aquelas aquele aqueles aquilo as ate com como da das de dela delas dele deles depois do dos e ela elas ele eles em
entre era eram essa essas esse esses esta estao estas este estes eu foi foram ha isso isto ja lhe lhes mais mas me mesmo meu minha
muito na nao nas nem no nos nossa nosso num numa o os ou para pela pelas pelo pelos por porque qual quais quando que quem se seja
sem ser seu seus sua suas so tambem te tem ter um uma umas uns voce pode podem sao sendo sido sobre atraves cada outro outra outros
outras todo toda todos todas tal
"""


def fold(text: str) -> str:
    """Lower case without accents: ``"Hepática"`` -> ``"hepatica"``."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


STOP_WORDS: dict[str, frozenset[str]] = {"es": frozenset(_STOP_ES.split()), "pt": frozenset(_STOP_PT.split())}


@cache
def _stemmer(language: str) -> Any:
    from nltk.stem.snowball import SnowballStemmer  # here, not at the top: importing nltk costs every `medfactory` command ~3 s

    return SnowballStemmer(_STEMMER_LANGUAGE[language])


def content_words(text: str, language: str) -> set[str]:
    """The folded stems of ``text``'s words that are not stop words (numbers kept: doses and values matter)."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    stemmer, stop = _stemmer(language), STOP_WORDS[language]
    words: set[str] = set()
    for word in _WORD.findall(text.casefold()):
        folded = fold(word)
        if folded in stop or (len(folded) < 2 and not folded.isdigit()):
            continue
        # Stem the accented word (Snowball's rules expect it), then fold the stem.
        words.add(fold(stemmer.stem(word)))
    return words


def lexical_overlap(answer: str, passage_words: set[str], language: str) -> float:
    """Share of the answer's distinct content words found in ``passage_words`` (:func:`content_words` of the passage).

    An answer without a content word ("Sí.") has overlap 0: nothing in it can be checked against the passage.
    """
    words = content_words(answer, language)
    if not words:
        return 0.0
    return round(len(words & passage_words) / len(words), 4)


_VERIFY = {
    "es": (
        "Eres un revisor médico riguroso. Respondes solo con «sí» o «no».",
        "Lee el texto y di si el texto, por sí solo, respalda la respuesta a la pregunta. "
        'Responde únicamente «sí» o «no».\n\nTexto:\n"""\n{passage}\n"""\n\nPregunta: {question}\nRespuesta: {answer}',
    ),
    "pt": (
        "Você é um revisor médico rigoroso. Responde apenas «sim» ou «não».",
        "Leia o texto e diga se o texto, por si só, sustenta a resposta à pergunta. "
        'Responda apenas «sim» ou «não».\n\nTexto:\n"""\n{passage}\n"""\n\nPergunta: {question}\nResposta: {answer}',
    ),
}
_YES = frozenset({"si", "sim", "yes"})
_NO = frozenset({"no", "nao", "not"})


def verification_messages(passage: str, question: str, answer: str, language: str) -> tuple[dict[str, str], ...]:
    """The chat messages of the verification request (prompt ``VERIFY_PROMPT_VERSION``)."""
    system, user = _VERIFY[language]
    return ({"role": "system", "content": system}, {"role": "user", "content": user.format(passage=passage, question=question, answer=answer)})


def _json_verdict(text: str) -> bool | None:
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    supported = value.get("supported") if isinstance(value, dict) else None
    return supported if isinstance(supported, bool) else None


def parse_verdict(text: str | None) -> bool | None:
    """True (supported), False (not supported) or None (no verdict) from the verification answer.

    ``{"supported": true|false}`` anywhere in the answer wins; otherwise the first word decides
    (``sí``, ``sim``, ``yes`` / ``no``, ``não``, ``not``), whatever quotes or punctuation surround it.
    """
    if not text:
        return None
    verdict = _json_verdict(text)
    if verdict is not None:
        return verdict
    first = _LETTERS.search(fold(text))
    if first is None:
        return None
    word = first.group(0)
    if word in _YES:
        return True
    if word in _NO:
        return False
    return None
