"""Sentence boundaries and sentence-aligned chunks of Spanish, Portuguese and English prose.

A rule-based splitter (nltk's punkt would need its data downloaded, which this environment does
not have offline): a sentence ends after ``.``, ``!``, ``?`` or ``…`` (and any closing quotes or
brackets) followed by whitespace and a capital letter, a digit or an opening mark (``¿ ¡ « " ( [``),
and at every blank line. It does not end:

- after an abbreviation of :data:`ABBREVIATIONS` (``Dr.``, ``Sra.``, ``p. ej.``, ``et al.``, ``Fig.``...),
- after a single letter (initials: ``J. García``),
- before a lower-case letter (``etc. y``),
- inside a number (``2.5`` has no space after its point).

A single line break is whitespace (hard-wrapped text), a blank line always ends a sentence.
Every piece keeps the whitespace that follows it, so ``"".join(split_sentences(text)) == text``
and ``"".join(chunk_text(text, ...)) == text``: callers that translate or annotate pieces can put
the document back together exactly.
"""

from __future__ import annotations

import re

# Lower-cased, without their final point. Shared by every language: an abbreviation of one is rarely
# a sentence-final word of another, and mixed texts (English citations in Spanish articles) are common.
COMMON_ABBREVIATIONS = frozenset(
    {"al", "approx", "ca", "cap", "cf", "dr", "dra", "dres", "drs", "ed", "eds", "e.g", "etc", "fig", "figs", "i.e", "ibid", "mr", "mrs", "ms",
     "nº", "núm", "op", "p", "pp", "prof", "ref", "refs", "sr", "sra", "st", "tab", "vol", "vols", "vs"}
)  # fmt: skip
ABBREVIATIONS: dict[str, frozenset[str]] = {
    "es": COMMON_ABBREVIATIONS
    | {"admón", "aprox", "art", "av", "avda", "cía", "col", "cols", "dcha", "ej", "izq", "izqda", "lic", "ing", "máx", "mín", "n.º", "pág", "págs",
       "profa", "sras", "sres", "srta", "ud", "uds", "vd", "vds", "tel", "tlf", "gral", "cit", "coord", "dir", "esp", "hosp", "med"},
    "pt": COMMON_ABBREVIATIONS
    | {"aprox", "art", "av", "cia", "col", "cols", "dir", "dras", "drs", "ex", "exma", "exmo", "fl", "fls", "máx", "mín", "obs", "pág", "págs",
       "profa", "profs", "sras", "srs", "srta", "séc", "tel", "vv", "coord", "esp", "hosp", "med"},
    "en": COMMON_ABBREVIATIONS | {"dept", "est", "inc", "jr", "ltd", "sen", "sr", "univ"},
}  # fmt: skip
ALL_ABBREVIATIONS = frozenset().union(*ABBREVIATIONS.values())

# A candidate end: terminal punctuation, closing marks, then whitespace; what follows decides.
_CANDIDATE = re.compile(r"[.!?…]+[\"'»”’)\]]*(\s+)")
_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")
_STARTS_SENTENCE = re.compile(r"[^\W\d_]|\d|[¿¡«\"“‘'(\[—–-]")
# The word right before a point: letters, digits and inner points ("e.g", "n.º").
_WORD_BEFORE = re.compile(r"([^\W_][\w.º°ª]*)$")
_LONGEST_WORD = 40


def abbreviations(language: str) -> frozenset[str]:
    """The abbreviations that do not end a sentence in ``language`` (every list's union for another code)."""
    return ABBREVIATIONS.get(language, ALL_ABBREVIATIONS)


def _ends_sentence(text: str, match: re.Match, known: frozenset[str]) -> bool:
    after = match.end()
    if after >= len(text):
        return True
    following = text[after]
    if following.islower() or not _STARTS_SENTENCE.match(following):
        return False
    marks = match.group(0).rstrip()
    if not marks.startswith(".") or marks.startswith(".."):
        return True  # "!", "?", "…" and "..." end a sentence before a capital
    word = _WORD_BEFORE.search(text[max(0, match.start() - _LONGEST_WORD) : match.start()])  # a window: searching from 0 is quadratic
    if word is None:
        return True
    token = word.group(1).lower()
    if len(token) == 1 and token.isalpha():
        return False  # an initial ("J. García") or "p. ej."
    return token not in known


def _boundaries(text: str, language: str) -> list[int]:
    """Offsets where a sentence starts (after the whitespace that ends the previous one)."""
    known = abbreviations(language)
    cuts = {match.end() for match in _BLANK_LINE.finditer(text)}
    cuts.update(match.end() for match in _CANDIDATE.finditer(text) if _ends_sentence(text, match, known))
    return sorted(cut for cut in cuts if 0 < cut < len(text))


def split_sentences(text: str, language: str) -> list[str]:
    """``text`` cut into sentences, each with the whitespace that follows it (``"".join`` gives ``text`` back).

    ``language``: ``es``, ``pt`` or ``en`` chooses the abbreviation list (any other code uses all of
    them). An empty text gives ``[]``.
    """
    if not text:
        return []
    starts = [0, *_boundaries(text, language), len(text)]
    return [text[start:end] for start, end in zip(starts, starts[1:], strict=False) if end > start]


def _cut_long(sentence: str, max_characters: int) -> list[str]:
    """A sentence longer than ``max_characters`` cut at word boundaries (a longer word is cut where it must be)."""
    pieces: list[str] = []
    rest = sentence
    while len(rest.rstrip()) > max_characters:
        window = rest[: max_characters + 1]
        space = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
        cut = space + 1 if space > 0 else max_characters
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


def chunk_text(text: str, max_characters: int, language: str) -> list[str]:
    """``text`` in consecutive chunks of whole sentences, each at most ``max_characters`` long (not
    counting the whitespace that ends it); ``"".join`` of the chunks gives ``text`` back.

    Sentences are packed greedily in order; a sentence longer than ``max_characters`` becomes
    several chunks cut at word boundaries (only a single word longer than that is cut inside).
    """
    if max_characters < 1:
        raise ValueError(f"max_characters must be at least 1, got {max_characters}")
    chunks: list[str] = []
    current = ""
    for sentence in split_sentences(text, language):
        for piece in _cut_long(sentence, max_characters) if len(sentence.rstrip()) > max_characters else [sentence]:
            if current and len((current + piece).rstrip()) > max_characters:
                chunks.append(current)
                current = ""
            current += piece
    if current:
        chunks.append(current)
    return chunks
