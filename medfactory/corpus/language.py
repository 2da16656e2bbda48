"""Offline language identification with py3langid (a fork of langid.py; its model ships in the wheel).

:func:`identify` names a text's language with a normalised probability; :func:`language_share`
says how much of a text is in a given language, window by window, so that a document or a
translation that is half in another language scores about one half. Both are used by
``prepare documents`` (documents not in ``--language`` are dropped) and by the translation gate.

py3langid's normalised probabilities divide the scores by the square root of the text's length
in bytes before the softmax, which keeps them comparable across lengths; close languages share
the mass (a clear Spanish sentence scores about 0.95 ``es``, with ``gl`` and ``ext`` taking the
rest; Portuguese about 0.85 ``pt``, with ``gl``). Texts without a letter are ``("und", 0.0)``.
"""

from __future__ import annotations

import functools
import re
import threading

from medfactory.corpus.sentences import split_sentences

UNDETERMINED = "und"
# language_share classifies windows of whole sentences at least this long: shorter ones are guessed poorly.
SHARE_WINDOW_CHARACTERS = 100
_LETTER = re.compile(r"[^\W\d_]")
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    # Loaded once (about 0.7 s); its own module-level instance has unnormalised scores.
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _ranked(text: str) -> list[tuple[str, float]]:
    with _LOCK:  # py3langid does not promise thread safety; callers (the translation gate) may use threads
        return _identifier().rank(text)


def identify(text: str) -> tuple[str, float]:
    """``(ISO 639 code, probability)`` of the most likely language of ``text``; ``("und", 0.0)`` without letters."""
    if not _LETTER.search(text):
        return UNDETERMINED, 0.0
    language, probability = _ranked(text)[0]
    return language, float(probability)


def probability_of(text: str, language: str) -> float:
    """The normalised probability that ``text`` is in ``language`` (0.0 without letters)."""
    if not _LETTER.search(text):
        return 0.0
    return float(dict(_ranked(text)).get(language, 0.0))


def _windows(text: str) -> list[str]:
    """Consecutive runs of whole sentences, each at least SHARE_WINDOW_CHARACTERS long (the last may be shorter)."""
    windows, current = [], ""
    for sentence in split_sentences(text, "any"):
        current += sentence
        if len(current.strip()) >= SHARE_WINDOW_CHARACTERS:
            windows.append(current)
            current = ""
    if current.strip():
        if windows and len(current.strip()) < SHARE_WINDOW_CHARACTERS // 2:
            windows[-1] += current  # a short tail joins the window before it
        else:
            windows.append(current)
    return windows


def language_share(text: str, language: str) -> float:
    """The share of ``text`` in ``language``, in [0, 1]: the letter-weighted mean, over windows of
    whole sentences (about SHARE_WINDOW_CHARACTERS each), of the probability that the window is in
    ``language``. A short text is one window (the share is then its probability); a text without
    letters scores 0.0."""
    weights, total = 0.0, 0
    for window in _windows(text):
        letters = len(_LETTER.findall(window))
        if letters:
            weights += letters * probability_of(window, language)
            total += letters
    return weights / total if total else 0.0
