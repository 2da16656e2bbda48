"""Quality gates of machine translations: pure functions of (source, translation), no model, no I/O.

Two users: ``plugins/mimic_cxr.py`` judges medgemma's Portuguese reports with :func:`rejection_reason`
(the MIMIC-CXR-PT-BR rules, docs/mimic_cxr_ptbr.md), and ``generate translate`` runs :func:`translation_gate`
on every reply (docs/translation.md gives each gate's threshold and the reason for it). A gate returns the
first rule that fails, so each rejected item is counted once, under one name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medfactory.corpus.language import identify

# --- The MIMIC-CXR-PT-BR rules (moved here from plugins/mimic_cxr.py; behaviour unchanged) -------------

# Very common function words of one language that are not words of the other ("no", "a", "as" are both).
PORTUGUESE_WORDS = frozenset(
    ["de", "da", "do", "das", "dos", "em", "na", "nas", "nos", "com", "sem", "não", "para", "os", "uma", "pelo", "pela", "ao", "que", "ou"]
)
ENGLISH_WORDS = frozenset(["the", "of", "and", "with", "is", "are", "there", "was", "were", "without", "this", "which", "or"])
MIN_PORTUGUESE_SHARE = 0.8
MIN_WORDS_FOR_LANGUAGE = 8
MIN_LENGTH_RATIO = 0.5
SENTENCE_END = (".", "!", "?", "…")
_TRAILING = " \t\r\n\"'”’»)]*"
WORD = re.compile(r"[^\W\d_]+")  # a run of letters: digits and punctuation are not words


def language_counts(text: str) -> tuple[int, int]:
    """(Portuguese function words, English function words) in ``text``."""
    words = [word.lower() for word in WORD.findall(text)]
    portuguese = sum(word in PORTUGUESE_WORDS for word in words)
    english = sum(word in ENGLISH_WORDS for word in words)
    return portuguese, english


def is_portuguese(text: str) -> bool:
    portuguese, english = language_counts(text)
    if portuguese + english == 0:
        return len(WORD.findall(text)) < MIN_WORDS_FOR_LANGUAGE
    return portuguese / (portuguese + english) >= MIN_PORTUGUESE_SHARE


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends with sentence punctuation (closing quotes, brackets and markdown asterisks ignored)."""
    return text.rstrip(_TRAILING).endswith(SENTENCE_END)


def stops_mid_sentence(translation: str, source: str) -> bool:
    """The source ends a sentence and the translation does not: generation stopped early (max new tokens)."""
    return ends_sentence(source) and not ends_sentence(translation)


def is_truncated(translation: str, source: str) -> bool:
    if len(translation) < MIN_LENGTH_RATIO * len(source):
        return True
    return stops_mid_sentence(translation, source)


def rejection_reason(translation: str, source: str) -> str | None:
    """The first of empty / not_portuguese / truncated that applies, else None (the MIMIC-CXR-PT-BR rules)."""
    if not translation.strip():
        return "empty"
    if not is_portuguese(translation) or WORD.findall(translation.casefold()) == WORD.findall(source.casefold()):
        return "not_portuguese"
    if is_truncated(translation.strip(), source):
        return "truncated"
    return None


# --- The gates of `generate translate` -----------------------------------------------------------------

# Gate names, in the order they are tried (the manifest lists every one, with zeros).
REQUEST_FAILED = "request_failed"
TRUNCATED = "truncated"
UNPARSEABLE = "unparseable"
OPTION_COUNT = "option_count"
EMPTY = "empty"
IDENTICAL_OPTIONS = "identical_options"
TARGET_LANGUAGE = "target_language"
LENGTH_RATIO = "length_ratio"
UNTRANSLATED_RESIDUE = "untranslated_residue"
BACK_TRANSLATION = "back_translation"
GATES = (
    REQUEST_FAILED, TRUNCATED, UNPARSEABLE, OPTION_COUNT, EMPTY, IDENTICAL_OPTIONS,
    TARGET_LANGUAGE, LENGTH_RATIO, UNTRANSLATED_RESIDUE, BACK_TRANSLATION,
)  # fmt: skip

# Thresholds (docs/translation.md, "Gates", gives the reasons).
LENGTH_RATIO_RANGE = (MIN_LENGTH_RATIO, 2.0)
MIN_CHARACTERS_FOR_RATIO = 20  # "Yes" -> "Sí": a short text's ratio says nothing
MIN_LETTERS_FOR_LANGUAGE = 20  # language identification of a few letters is a guess
RESIDUE_NGRAM = 3
MAX_RESIDUE_SHARE = 0.3
DEFAULT_MIN_CHRF = 40.0


@dataclass(frozen=True)
class GateSettings:
    """What a translation is checked against; recorded in the manifest."""

    target_language: str
    length_ratio: tuple[float, float] = LENGTH_RATIO_RANGE
    max_residue_share: float = MAX_RESIDUE_SHARE
    residue_ngram: int = RESIDUE_NGRAM

    def record(self) -> dict[str, Any]:
        return {
            "target_language": self.target_language,
            "length_ratio": list(self.length_ratio),
            "length_ratio_min_source_characters": MIN_CHARACTERS_FOR_RATIO,
            "target_language_min_letters": MIN_LETTERS_FOR_LANGUAGE,
            "untranslated_residue": {"ngram_words": self.residue_ngram, "max_share": self.max_residue_share},
        }


def is_target_language(text: str, language: str) -> bool:
    """The most likely language of ``text`` (py3langid, ``corpus.language.identify``) is ``language``.

    Texts under MIN_LETTERS_FOR_LANGUAGE letters pass: identifying a few letters is a guess.
    """
    if sum(len(word) for word in WORD.findall(text)) < MIN_LETTERS_FOR_LANGUAGE:
        return True
    return identify(text)[0] == language


def length_ratio(translations: Sequence[str], sources: Sequence[str]) -> float | None:
    """Translated / source characters over all fields; None when the source is too short to judge."""
    source_characters = sum(len(text) for text in sources)
    if source_characters < MIN_CHARACTERS_FOR_RATIO:
        return None
    return sum(len(text) for text in translations) / source_characters


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.casefold())
    return {tuple(words[index : index + n]) for index in range(len(words) - n + 1)}


def residue_share(translations: Sequence[str], sources: Sequence[str], n: int = RESIDUE_NGRAM) -> float:
    """Share of the sources' distinct word n-grams found verbatim in the matching translation (0 with none).

    Words are runs of letters, case-folded (numbers, doses and units are copied by every translation and
    so are not counted). Pooled over the fields: a field's n-grams are looked up in its own translation.
    """
    found = total = 0
    for source, translation in zip(sources, translations, strict=True):
        grams = _ngrams(source, n)
        total += len(grams)
        found += len(grams & _ngrams(translation, n))
    return found / total if total else 0.0


def normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def has_identical(texts: Sequence[str]) -> bool:
    keys = [normalised(text) for text in texts]
    return len(set(keys)) < len(keys)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object of a reply: the whole text, else inside a ``` fence, else from its first ``{`` to its last ``}``."""
    candidates = [text.strip()]
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        candidates.append(fenced.group(1).strip())
    if "{" in text and "}" in text:
        candidates.append(text[text.index("{") : text.rindex("}") + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_mcq(text: str) -> tuple[str, list[str]] | None:
    """(question, options) of an MCQ reply ``{"question": str, "options": [str, ...]}``; None when it is not that."""
    value = parse_json_object(text)
    if value is None or set(value) != {"question", "options"}:
        return None
    question, options = value["question"], value["options"]
    if not isinstance(question, str) or not isinstance(options, list) or not all(isinstance(option, str) for option in options):
        return None
    return question, options


def translation_gate(translations: Sequence[str], sources: Sequence[str], settings: GateSettings, options_from: int | None = None) -> str | None:
    """The first gate the translated fields fail, else None.

    ``translations`` and ``sources`` are the same fields in the same order (one text; or an MCQ's question then
    its options, whose ``options_from`` is 1). Order: empty, truncated (stops mid-sentence), identical_options,
    target_language, length_ratio, untranslated_residue.
    """
    if any(not text.strip() for text in translations):
        return EMPTY
    if any(stops_mid_sentence(translation.strip(), source) for translation, source in zip(translations, sources, strict=True)):
        return TRUNCATED
    if options_from is not None and has_identical(translations[options_from:]) and not has_identical(sources[options_from:]):
        return IDENTICAL_OPTIONS
    if not is_target_language("\n".join(translations), settings.target_language):
        return TARGET_LANGUAGE
    ratio = length_ratio(translations, sources)
    low, high = settings.length_ratio
    if ratio is not None and not low <= ratio <= high:
        return LENGTH_RATIO
    if residue_share(translations, sources, settings.residue_ngram) > settings.max_residue_share:
        return UNTRANSLATED_RESIDUE
    return None


def chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence chrF (0-100) of ``hypothesis`` against ``reference``."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(hypothesis, [reference]).score)
