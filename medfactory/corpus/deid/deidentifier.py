"""The de-identifier: the rules layer, the CRF tagger (or, without a model, gazetteer names), combined.

Construct one :class:`Deidentifier` per run (it loads the model once) and call :meth:`Deidentifier.find`
per note; :meth:`Deidentifier.apply` also replaces what it found (:mod:`.surrogates`).

Layers (``Deidentifier.layers`` says which ran):

- ``rules`` (:mod:`.rules`), always;
- ``crf``: :class:`.crf.CrfTagger` with the model passed, or the embedded default of the language
  (``models/es_meddocan.crfsuite`` for Spanish, ``models/pt_planted.crfsuite`` for Portuguese) when
  it is there and ``use_crf`` is on;
- ``encoder``: :class:`.encoder.EncoderTagger` (a fine-tuned transformers token classifier) when an
  ``encoder`` folder is passed; it then runs *in place of* the CRF: both are the statistical layer,
  trained on the same gold, and two taggers of one rank would only trade each other's boundaries;
- ``gazetteer``: where no CRF runs, runs of capitalised words that start with a first name of
  Faker's es_ES / pt_BR lists (patient names) and the Brazilian state capitals (towns).

Where spans of two layers overlap (:func:`.spans.resolve_overlaps`), the priority is:

1. rule spans of the structured categories (:data:`.rules.STRUCTURED_CATEGORIES`: dates, ages,
   identifiers, phones, e-mail, URL, IP): their form or keyword is exact, and the CRF learned them
   from the rules' own output;
2. CRF (or encoder) spans (names, places, hospitals, streets: the tagger sees more context, so its extent wins);
3. the other rule spans (header-field names, streets, hospitals, countries ...);
4. gazetteer spans.
Of overlapping spans of one priority the longer wins.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from medfactory.corpus.deid import rules
from medfactory.corpus.deid.spans import LANGUAGES, PhiSpan, resolve_overlaps

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODELS = {"es": "es_meddocan.crfsuite", "pt": "pt_planted.crfsuite"}
GAZETTEER = "gazetteer"
ENCODER = "encoder"  # the source of encoder.EncoderTagger's spans (encoder.SOURCE; not imported here: that would load torch)
_WEAK_RULES = "rules-weak"  # rule spans outside the structured categories, while overlaps are resolved
PRIORITY = {rules.SOURCE: 3, "crf": 2, ENCODER: 2, _WEAK_RULES: 1, GAZETTEER: 0}

_UPPER = "A-ZÁÉÍÓÚÂÊÔÃÕÀÇÑÜ"
_LOWER = "a-záéíóúâêôãõàçñüï"
_CAP_RUN = re.compile(rf"[{_UPPER}][{_LOWER}]+(?:[ \t]+(?:(?:de|da|do|dos|das|del|la|los|e|y)[ \t]+)?[{_UPPER}][{_LOWER}]+){{0,5}}")


def default_model(language: str) -> Path | None:
    """The embedded model of ``language`` when the package has one."""
    path = MODELS_DIR / DEFAULT_MODELS.get(language, "")
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def _gazetteer_words() -> tuple[frozenset[str], tuple[str, ...]]:
    """(first names, Brazilian capitals) from :mod:`.gazetteers` when it is installed, else from Faker."""
    try:
        from medfactory.corpus.deid import gazetteers

        return gazetteers.first_names(), gazetteers.BRAZILIAN_CAPITALS
    except ImportError:  # the gazetteer module is absent: read Faker's lists directly
        from faker.providers.person import es_ES, pt_BR

        return frozenset(name.casefold() for provider in (es_ES.Provider, pt_BR.Provider) for name in provider.first_names), ()


def gazetteer_spans(text: str) -> list[PhiSpan]:
    """Names (a run of capitalised words that starts with a known first name) and Brazilian state capitals."""
    first, capitals = _gazetteer_words()
    found = []
    for match in _CAP_RUN.finditer(text):
        words = list(re.finditer(r"\S+", match.group()))
        # The name starts at the run's first known first name ("Paciente João da Silva" -> "João da Silva").
        lead = next((index for index, word in enumerate(words) if word.group().casefold() in first), None)
        if lead is None or match.group()[words[lead].start() :] in capitals:  # "João Pessoa" is a town
            continue
        start = match.start() + words[lead].start()
        # A lone first name ("Rosario", "Luz") is too often a word or a place: only after "paciente", "Sra." ...
        if len(words) - lead > 1 or _after_patient_cue(text, start):
            relative = _RELATIVE_CUE.search(text[max(0, start - 30) : start])
            found.append(PhiSpan(start, match.end(), "FAMILIARES_SUJETO_ASISTENCIA" if relative else "NOMBRE_SUJETO_ASISTENCIA", GAZETTEER))
    if capitals:
        pattern = _capitals_pattern(capitals)
        for match in pattern.finditer(text):
            found.append(PhiSpan(match.start("city"), match.end("city"), "TERRITORIO", GAZETTEER))
            if match.group("state"):  # "Aracaju/SE", "Natal - RN"
                found.append(PhiSpan(match.start("state"), match.end("state"), "TERRITORIO", GAZETTEER))
    return found


_PATIENT_CUE = re.compile(r"(?i:paciente|sr\.?|sra\.?|srta\.?|don|doña|dona|senhor|senhora|filho|filha|mãe|pai|esposa|marido)[ \t:,]*$")


_RELATIVE_CUE = re.compile(
    r"(?i:\b(?:esposa|esposo|marido|mujer|mãe|mae|pai|madre|padre|filho|filha|hijo|hija|irmão|irmã|irmao|irma|hermano|hermana|"
    r"av[oóô]|abuelo|abuela|neto|neta|nieto|nieta|tio|tia|tío|tía|primo|prima|companheir[oa]|compañer[oa]|cuidador[a]?|acompanhante)\b[^\n.]{0,12})$"
)


def _after_patient_cue(text: str, start: int) -> bool:
    return bool(_PATIENT_CUE.search(text[max(0, start - 20) : start]))


@lru_cache(maxsize=1)
def _capitals_pattern(capitals: tuple[str, ...]) -> re.Pattern[str]:
    names = sorted(capitals, key=len, reverse=True)
    states = "AC|AL|AP|AM|BA|CE|DF|ES|GO|MA|MT|MS|MG|PA|PB|PR|PE|PI|RJ|RN|RS|RO|RR|SC|SP|SE|TO"
    cities = "|".join(re.escape(name) for name in names)
    return re.compile(rf"(?<![\w])(?P<city>{cities})(?![\w])(?:[ \t]*[\-/][ \t]*(?P<state>{states})(?![\w]))?")


def _crf_tagger(model: Path | None, language: str, use_crf: bool, explicit: bool) -> Any:
    """The CRF tagger, or None (no crf module, no model, or use_crf off); a model passed explicitly must load."""
    if not use_crf or model is None:
        return None
    try:
        from medfactory.corpus.deid.crf import CrfTagger
    except ImportError as error:  # python-crfsuite missing, or the module not installed
        if explicit:
            raise RuntimeError(f"--model {model}: the CRF layer cannot be imported ({error}). Fix: pip install python-crfsuite.") from error
        log.warning("CRF layer unavailable (%s): rules and gazetteers only", type(error).__name__)
        return None
    return CrfTagger(model, language=language)


def _encoder_tagger(folder: Path) -> Any:
    """The encoder tagger of ``folder``; torch and transformers are imported only here, when one is asked for."""
    from medfactory.corpus.deid.encoder import EncoderTagger

    return EncoderTagger(folder)


class Deidentifier:
    """Finds PHI in notes of one language; construct once per run, call :meth:`find` (or :meth:`apply`) per note."""

    def __init__(self, language: str, model: Path | str | None = None, use_crf: bool = True, encoder: Path | str | None = None) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"language {language!r}: use one of {', '.join(LANGUAGES)}")
        self.language = language
        self.use_crf = use_crf
        explicit = model is not None
        self.encoder: Path | None = Path(encoder) if encoder is not None else None
        if self.encoder is not None and explicit:
            raise ValueError(f"--model {model} and --encoder {encoder}: pass one statistical layer, not both. Fix: drop --model or --encoder.")
        self.model: Path | None = Path(model) if explicit else default_model(language)
        if explicit and use_crf and not self.model.is_file():  # type: ignore[union-attr]
            raise FileNotFoundError(f"--model {self.model}: no such model file. Fix: pass a .crfsuite file written by `medfactory deid train`.")
        if self.encoder is not None:
            self._tagger, self.model = _encoder_tagger(self.encoder), None
        else:
            self._tagger = _crf_tagger(self.model, language, use_crf, explicit)
        statistical = ENCODER if self.encoder is not None else "crf"
        self.layers: tuple[str, ...] = ("rules", statistical) if self._tagger is not None else ("rules", GAZETTEER)
        if self._tagger is None:
            self.model = None

    def __repr__(self) -> str:
        encoder = f", encoder={str(self.encoder)!r}" if self.encoder else ""
        return f"Deidentifier(language={self.language!r}, layers={self.layers!r}, model={str(self.model) if self.model else None!r}{encoder})"

    def __reduce__(self) -> tuple[type[Deidentifier], tuple[str, Path | None, bool, Path | None]]:
        # Worker processes rebuild the tagger (a pycrfsuite.Tagger does not pickle; an encoder reloads its folder) from the options.
        return (Deidentifier, (self.language, self.model, self.use_crf and self.model is not None, self.encoder))

    def find(self, text: str) -> list[PhiSpan]:
        """PHI spans of ``text``: non-overlapping, in text order, offsets into ``text``; ``source`` names the layer."""
        return self.find_many([text])[0]

    def find_many(self, texts: Sequence[str]) -> list[list[PhiSpan]]:
        """:meth:`find` of each text; faster per note than one call each when the CRF runs (it decodes them together)."""
        rule_spans = [rules.find(text, self.language) for text in texts]
        if self._tagger is not None:
            statistical = self._tagger.find_many(texts, rule_spans)
        else:
            statistical = [gazetteer_spans(text) for text in texts]
        return [self._combine(found, more) for found, more in zip(rule_spans, statistical, strict=True)]

    @staticmethod
    def _combine(rule_spans: list[PhiSpan], statistical: list[PhiSpan]) -> list[PhiSpan]:
        """Rule and CRF (or gazetteer) spans without overlaps, by :data:`PRIORITY`."""
        found = [span if span.category in rules.STRUCTURED_CATEGORIES else PhiSpan(span.start, span.end, span.category, _WEAK_RULES) for span in rule_spans]
        resolved = resolve_overlaps(found + statistical, PRIORITY)
        return [PhiSpan(span.start, span.end, span.category, rules.SOURCE) if span.source == _WEAK_RULES else span for span in resolved]

    def apply_many(
        self, texts: Sequence[str], patient_keys: Sequence[str], mode: str = "surrogate", seed: int | str | bytes = 0
    ) -> list[tuple[str, list[PhiSpan]]]:
        """:meth:`apply` of each (text, patient key) pair."""
        from medfactory.corpus.deid.surrogates import replace

        found = self.find_many(texts)
        return [
            (replace(text, spans, mode=mode, patient_key=key, language=self.language, seed=seed), spans)
            for text, key, spans in zip(texts, patient_keys, found, strict=True)
        ]

    def apply(self, text: str, patient_key: str = "", mode: str = "surrogate", seed: int | str | bytes = 0) -> tuple[str, list[PhiSpan]]:
        """(the de-identified text, the spans found in the original ``text``); see :func:`.surrogates.replace`."""
        from medfactory.corpus.deid.surrogates import replace

        spans = self.find(text)
        return replace(text, spans, mode=mode, patient_key=patient_key, language=self.language, seed=seed), spans

    @staticmethod
    def counts(spans: Iterable[PhiSpan]) -> Counter[str]:
        """Findings per category (what a manifest or a report may show; never a value)."""
        return Counter(span.category for span in spans)
