"""Replacing what de-identification found: consistent surrogates per patient, or placeholders.

Surrogates keep a note natural for language-model training while no real value survives:

- names: each name word is replaced on its own (first names by first names of the same sex,
  surnames by surnames, particles such as "de la" kept), so "Ernesto" in ``Nombre:`` and
  "Ernesto Rivera Bueno" later in the note, or in another note of the same patient, get the same
  fake words; the word is compared case- and accent-folded, and the fake word takes the original's
  case (``GARCÍA`` -> ``LÓPEZ``);
- dates: every date of a patient is shifted by the same number of days (between -365 and +365,
  never 0), so intervals between a patient's dates are kept, in the written form of the original
  (``03/03/1946``, ``3-3-46``, ``1946-03-03``, ``3 de marzo de 2021``, ``marzo de 2019``, ``mar. 2021``,
  ``en 2010``); a date that cannot be read becomes its placeholder, never stays;
- ages over 89 become "90 años o más" / "90 anos ou mais" (HIPAA's Safe Harbor group); other
  ages, and the patient's sex, stay (neither identifies a patient alone, and both matter clinically);
- identifiers, phones, postcodes: the same shape with other digits (letters and separators kept);
- e-mail, URL, IP, streets, towns, countries, hospitals, health centres, institutions: Faker's
  es_ES / pt_BR values; professions and the remaining categories: their placeholder.

Every choice comes from a keyed hash (BLAKE2b keyed with ``seed``) of the patient key, the kind of
value and the folded value, so it is the same across notes and runs with the same seed, and
independent between patients. The hash is of the original value: keep ``seed`` secret (a known
seed lets someone test guesses of a name against its surrogate). Nothing here logs a value.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import random
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from medfactory.corpus.deid.spans import LANGUAGES, PhiSpan, placeholder

MODES = ("surrogate", "placeholder")
NAME_CATEGORIES = frozenset({"NOMBRE_SUJETO_ASISTENCIA", "NOMBRE_PERSONAL_SANITARIO", "FAMILIARES_SUJETO_ASISTENCIA"})
KEPT_CATEGORIES = frozenset({"SEXO_SUJETO_ASISTENCIA"})
DIGIT_CATEGORIES = frozenset(
    {
        "ID_SUJETO_ASISTENCIA", "ID_ASEGURAMIENTO", "ID_CONTACTO_ASISTENCIAL", "ID_TITULACION_PERSONAL_SANITARIO",
        "ID_EMPLEO_PERSONAL_SANITARIO", "NUMERO_TELEFONO", "NUMERO_FAX", "OTRO_NUMERO_IDENTIF", "IDENTIF_VEHICULOS_NRSERIE_PLACAS",
        "IDENTIF_DISPOSITIVOS_NRSERIE", "IDENTIF_BIOMETRICOS", "CPF", "CNS", "RG", "CRM_COREN", "PRONTUARIO", "CEP",
    }
)  # fmt: skip
MAX_SHIFT_DAYS = 365
AGE_GROUP = {"es": "90 años o más", "pt": "90 anos ou mais"}
_LOCALES = {"es": "es_ES", "pt": "pt_BR"}
_PARTICLES = frozenset({"de", "del", "la", "las", "los", "da", "das", "do", "dos", "e", "y", "i", "d'", "van", "von", "san", "santa"})

_MONTHS = {
    "es": ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre"),
    "pt": ("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro", "novembro", "dezembro"),
}
_ABBREVIATIONS = {
    "es": ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"),
    "pt": ("jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago", "set", "out", "nov", "dez"),
}
# month word (lower case) -> (month number, language of the word, whether it is an abbreviation)
_MONTH_WORDS: dict[str, tuple[int, str | None, bool]] = {}
for _language in ("es", "pt"):
    for _number, _word in enumerate(_MONTHS[_language], 1):
        _MONTH_WORDS[_word] = (_number, _language, False)
    for _number, _word in enumerate(_ABBREVIATIONS[_language], 1):
        shared = _word in _MONTH_WORDS and _MONTH_WORDS[_word][2]
        _MONTH_WORDS[_word] = (_number, None if shared else _language, True)
_MONTH_WORDS.update({"marco": (3, "pt", False), "setiembre": (9, "es", False), "sept": (9, "es", True)})
for _word in ("abril", "agosto"):
    _MONTH_WORDS[_word] = (_MONTH_WORDS[_word][0], None, False)  # the same word in both languages

_SEP = r"(?:\s+(?:de|del)\s+|\s*[\-/.,]\s*|\s+)"
_NUMERIC = re.compile(r"(\d{1,2})([/\-.])(\d{1,2})\2(\d{4}|\d{2})")
_ISO = re.compile(r"(\d{4})([\-/.])(\d{1,2})\2(\d{1,2})")
_MONTH_YEAR_NUMERIC = re.compile(r"(\d{1,2})/(\d{4})")
_WRITTEN = re.compile(rf"(?:(\d{{1,2}})([º°]?)({_SEP}))?([^\W\d_]+)(\.?)(?:({_SEP})('?)(\d{{4}}|\d{{2}}))?", re.IGNORECASE)
_YEAR_ONLY = re.compile(r"((?:año|ano)\s+(?:de\s+)?)?(\d{4})", re.IGNORECASE)
_SPELLED_OVER_89 = re.compile(r"(?i:noventa|cien|ciento|cem|cento)")


def fold(value: str) -> str:
    """``value`` case- and accent-folded, spaces collapsed: the form two mentions of one name share."""
    decomposed = unicodedata.normalize("NFKD", value)
    return " ".join("".join(char for char in decomposed if not unicodedata.combining(char)).casefold().split())


def _seed_bytes(seed: int | str | bytes) -> bytes:
    raw = seed if isinstance(seed, bytes) else str(seed).encode("utf-8")
    return hashlib.blake2b(raw, digest_size=32).digest()  # BLAKE2b keys are at most 64 bytes


def keyed_int(seed: int | str | bytes, *parts: str) -> int:
    """A 64-bit integer from BLAKE2b keyed with ``seed`` over ``parts`` (the patient, the kind of value, the folded value)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), key=_seed_bytes(seed), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def date_offset(seed: int | str | bytes, patient_key: str) -> int:
    """The patient's date shift in days: in [-365, 365], never 0."""
    offset = keyed_int(seed, patient_key, "date-shift") % (2 * MAX_SHIFT_DAYS) - MAX_SHIFT_DAYS
    return offset if offset < 0 else offset + 1


@lru_cache(maxsize=len(LANGUAGES))
def _faker(language: str) -> Any:
    from faker import Faker

    return Faker(_LOCALES[language])


@lru_cache(maxsize=len(LANGUAGES))
def _first_names(language: str) -> tuple[frozenset[str], frozenset[str]]:
    """(female, male) first names of both locales, folded: a name word in either is a first name."""
    from faker.providers.person import es_ES, pt_BR

    female = {fold(word) for provider in (es_ES.Provider, pt_BR.Provider) for name in provider.first_names_female for word in name.split()}
    male = {fold(word) for provider in (es_ES.Provider, pt_BR.Provider) for name in provider.first_names_male for word in name.split()}
    return frozenset(female), frozenset(male - female)


def _like_case(original: str, fake: str) -> str:
    if original.isupper() and len(original) > 1:
        return fake.upper()
    if original.islower():
        return fake.lower()
    return fake


class SurrogateMaker:
    """Surrogates of one language and seed; ``replace`` is :func:`replace` with these fixed (one per run)."""

    def __init__(self, language: str, seed: int | str | bytes = 0) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"language {language!r}: use one of {', '.join(LANGUAGES)}")
        self.language = language
        self.seed = seed
        self._cache: dict[tuple[str, str, str], str] = {}

    def _draw(self, patient_key: str, kind: str, value: str, make: Any) -> str:
        """``make(faker)`` seeded from (patient, kind, folded value); cached, and never the original value."""
        key = (patient_key, kind, fold(value))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        fake = _faker(self.language)
        for attempt in range(8):
            fake.seed_instance(keyed_int(self.seed, patient_key, kind, key[2], str(attempt)))
            drawn = str(make(fake))
            if fold(drawn) != key[2]:
                break
        if len(self._cache) > 200_000:  # bounded: a long run over many patients
            self._cache.clear()
        self._cache[key] = drawn
        return drawn

    def name(self, value: str, patient_key: str) -> str:
        """Each word of a name replaced on its own: first names by first names of the same sex, surnames by surnames."""
        female, male = _first_names(self.language)
        parts = re.split(r"([\s\-]+)", value)
        out = []
        for part in parts:
            folded = fold(part)
            if not folded or not part[0].isalpha() or folded in _PARTICLES or re.fullmatch(r"[\s\-]+", part):
                out.append(part)
            elif folded in female:
                out.append(_like_case(part, self._draw(patient_key, "first-f", part, lambda f: f.first_name_female().split()[0])))
            elif folded in male:
                out.append(_like_case(part, self._draw(patient_key, "first-m", part, lambda f: f.first_name_male().split()[0])))
            else:
                out.append(_like_case(part, self._draw(patient_key, "last", part, lambda f: f.last_name().split()[0])))
        return "".join(out)

    def digits(self, value: str, patient_key: str, category: str) -> str:
        """The same shape with other digits (the first digit stays non-zero when it was)."""
        rng = random.Random(keyed_int(self.seed, patient_key, "digits", category, fold(value)))
        for _ in range(8):
            out = []
            for index, char in enumerate(value):
                if "0" <= char <= "9":
                    out.append(str(rng.randint(1 if index == 0 and char != "0" else 0, 9)))
                else:
                    out.append(char)
            drawn = "".join(out)
            if drawn != value or not any(char.isdigit() for char in value):
                return drawn
        return drawn

    def age(self, value: str) -> str:
        """Ages over 89 grouped; other ages as they are."""
        number = re.match(r"\s*(\d{1,3})", value)
        if (number and int(number.group(1)) > 89) or (not number and _SPELLED_OVER_89.match(value.strip())):
            return AGE_GROUP[self.language]
        return value

    def date(self, value: str, patient_key: str) -> str | None:
        """``value`` shifted by the patient's offset in the same written form; None when it cannot be read."""
        offset = date_offset(self.seed, patient_key)
        return shift_date(value, offset, self.language)

    def other(self, category: str, value: str, patient_key: str) -> str | None:
        """Faker's surrogate of a place, contact or institution; None for categories without one."""
        language = self.language
        makers = {
            "CORREO_ELECTRONICO": lambda f: f.email(),
            "URL_WEB": lambda f: f.url().rstrip("/"),
            "DIRECCION_IP": lambda f: f.ipv4_private(),
            "CALLE": (lambda f: f.street_address()) if language == "es" else (lambda f: f"{f.street_name()}, {f.building_number()}"),
            "TERRITORIO": lambda f: f.city(),
            "PAIS": lambda f: f.country(),
            "HOSPITAL": lambda f: f"Hospital {f.last_name()}",
            "CENTRO_SALUD": (lambda f: f"Centro de Salud {f.city()}") if language == "es" else (lambda f: f"UBS {f.city()}"),
            "INSTITUCION": lambda f: f"Instituto {f.last_name()}",
        }
        make = makers.get(category)
        if make is None:
            return None
        if category == "TERRITORIO" and any(char.isdigit() for char in value):
            return self.digits(value, patient_key, category)  # a postcode
        return self._draw(patient_key, category, value, make)

    def surrogate(self, category: str, value: str, patient_key: str) -> str:
        """The surrogate of one value (its placeholder where no surrogate fits)."""
        if category in KEPT_CATEGORIES:
            return value
        if category in NAME_CATEGORIES:
            return self.name(value, patient_key)
        if category in DIGIT_CATEGORIES:
            return self.digits(value, patient_key, category)
        if category == "EDAD_SUJETO_ASISTENCIA":
            return self.age(value)
        drawn = self.date(value, patient_key) if category == "FECHAS" else self.other(category, value, patient_key)
        return drawn if drawn is not None else placeholder(category, self.language)

    def replace(self, text: str, spans: Iterable[PhiSpan], patient_key: str = "", mode: str = "surrogate") -> str:
        """``text`` with each span replaced (see :func:`replace`)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
        parts: list[str] = []
        position = 0
        for span in _merged(spans, len(text)):
            parts.append(text[position : span.start])
            value = text[span.start : span.end]
            parts.append(placeholder(span.category, self.language) if mode == "placeholder" else self.surrogate(span.category, value, patient_key))
            position = span.end
        parts.append(text[position:])
        return "".join(parts)


def _merged(spans: Iterable[PhiSpan], length: int) -> list[PhiSpan]:
    """Spans in text order; overlapping ones become their union (nothing of either is left visible)."""
    merged: list[PhiSpan] = []
    for span in sorted(spans):
        if not 0 <= span.start < span.end <= length:
            raise ValueError(f"span {span.start}-{span.end} ({span.category}) is outside the text of {length} characters")
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = PhiSpan(last.start, max(last.end, span.end), last.category, last.source)
        else:
            merged.append(span)
    return merged


@lru_cache(maxsize=64)
def _maker(language: str, seed: int | str | bytes) -> SurrogateMaker:
    return SurrogateMaker(language, seed)


def replace(text: str, spans: Iterable[PhiSpan], mode: str = "surrogate", patient_key: str = "", language: str = "es", seed: int | str | bytes = 0) -> str:
    """``text`` with every span replaced: a surrogate consistent for ``patient_key`` (``mode="surrogate"``), or its placeholder.

    ``spans`` hold offsets into ``text`` (overlapping spans are replaced as their union). Pass the
    patient's id as ``patient_key`` (a note id where no patient id exists: each note is then its own
    patient), and the same secret ``seed`` on every run that must produce the same surrogates.
    """
    return _maker(language, seed).replace(text, spans, patient_key, mode)


# ----------------------------------------------------------------------------------------------
# Dates in their written form


def _shifted(year: int, month: int, day: int, offset: int) -> dt.date | None:
    if not (1 <= month <= 12 and 1 <= year <= 9998):
        return None
    day = min(max(day, 1), calendar.monthrange(year, month)[1])
    try:
        return dt.date(year, month, day) + dt.timedelta(days=offset)
    except OverflowError:
        return None


def _full_year(year: str) -> int:
    """A two-digit year as a clinical note means it: up to next year's two digits, this century."""
    if len(year) == 4:
        return int(year)
    pivot = (dt.date.today().year + 1) % 100
    return (2000 if int(year) <= pivot else 1900) + int(year)


def _width(original: str, number: int) -> str:
    return f"{number:0{len(original)}d}" if original.startswith("0") or len(original) > len(str(number)) else str(number)


def _month_word(original: str, month: int, language: str) -> str:
    info = _MONTH_WORDS[original.casefold()]
    word_language = info[1] or language
    word = (_ABBREVIATIONS if info[2] else _MONTHS)[word_language][month - 1]
    if original.casefold() == "marco":
        word = "marco" if month == 3 else word
    return _like_case(original, word.capitalize()) if original[:1].isupper() else word


def _shift_numeric(value: str, offset: int) -> str | None:
    match = _NUMERIC.fullmatch(value)
    if match:
        day, sep, month, year = match.groups()
        new = _shifted(_full_year(year), int(month), int(day), offset)
        if new is None:
            return None
        new_year = str(new.year) if len(year) == 4 else f"{new.year % 100:02d}"
        return f"{_width(day, new.day)}{sep}{_width(month, new.month)}{sep}{new_year}"
    match = _ISO.fullmatch(value)
    if match:
        year, sep, month, day = match.groups()
        new = _shifted(int(year), int(month), int(day), offset)
        return None if new is None else f"{new.year}{sep}{_width(month, new.month)}{sep}{_width(day, new.day)}"
    match = _MONTH_YEAR_NUMERIC.fullmatch(value)
    if match:
        month, year = match.groups()
        new = _shifted(int(year), int(month), 15, offset)
        return None if new is None else f"{_width(month, new.month)}/{new.year}"
    return None


def _shift_written(value: str, offset: int, language: str) -> str | None:
    match = _WRITTEN.fullmatch(value)
    if not match or match.group(4).casefold() not in _MONTH_WORDS:
        return None
    day, ordinal, sep1, month_word, dot, sep2, apostrophe, year = match.groups()
    if day is None and year is None:
        return None
    month = _MONTH_WORDS[month_word.casefold()][0]
    full_year = _full_year(year) if year else 2000  # no year: a leap year, so 29 February still shifts
    new = _shifted(full_year, month, int(day) if day else 15, offset)
    if new is None:
        return None
    out = f"{_width(day, new.day)}{ordinal}{sep1}" if day else ""
    out += _month_word(month_word, new.month, language) + dot
    if year:
        out += f"{sep2}{apostrophe}{new.year if len(year) == 4 else f'{new.year % 100:02d}'}"
    return out


def shift_date(value: str, offset: int, language: str = "es") -> str | None:
    """``value`` (a date as written in a note) moved by ``offset`` days, in the same form; None when it is not a date read here."""
    value_stripped = value.strip()
    shifted = _shift_numeric(value_stripped, offset) or _shift_written(value_stripped, offset, language)
    if shifted is None:
        match = _YEAR_ONLY.fullmatch(value_stripped)
        if not match:
            return None
        new = _shifted(int(match.group(2)), 7, 1, offset)
        shifted = None if new is None else f"{match.group(1) or ''}{new.year}"
    if shifted is None:
        return None
    lead = value[: len(value) - len(value.lstrip())]
    trail = value[len(value.rstrip()) :]
    return f"{lead}{shifted}{trail}"
