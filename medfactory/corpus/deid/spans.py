"""The one span type of de-identification, and its categories: MEDDOCAN's, plus the Brazilian identifiers.

A :class:`PhiSpan` holds offsets into the original text and a category, never the value, so it can
be logged, counted and written to ``spans.jsonl`` without carrying a note's text.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

# MEDDOCAN's PHI types (IberLEF 2019 annotation guidelines; the labels of its BRAT files).
MEDDOCAN_CATEGORIES: tuple[str, ...] = (
    "NOMBRE_SUJETO_ASISTENCIA",
    "NOMBRE_PERSONAL_SANITARIO",
    "FAMILIARES_SUJETO_ASISTENCIA",
    "FECHAS",
    "EDAD_SUJETO_ASISTENCIA",
    "SEXO_SUJETO_ASISTENCIA",
    "CALLE",
    "TERRITORIO",
    "PAIS",
    "HOSPITAL",
    "INSTITUCION",
    "CENTRO_SALUD",
    "ID_SUJETO_ASISTENCIA",
    "ID_ASEGURAMIENTO",
    "ID_CONTACTO_ASISTENCIAL",
    "ID_TITULACION_PERSONAL_SANITARIO",
    "ID_EMPLEO_PERSONAL_SANITARIO",
    "NUMERO_TELEFONO",
    "NUMERO_FAX",
    "CORREO_ELECTRONICO",
    "URL_WEB",
    "PROFESION",
    "OTROS_SUJETO_ASISTENCIA",
    "IDENTIF_VEHICULOS_NRSERIE_PLACAS",
    "IDENTIF_DISPOSITIVOS_NRSERIE",
    "DIRECCION_IP",
    "IDENTIF_BIOMETRICOS",
    "OTRO_NUMERO_IDENTIF",
)
# Brazilian identifiers with their own category (a CPF is not an insurance number, a CRM is a licence).
BRAZILIAN_CATEGORIES: tuple[str, ...] = ("CPF", "CNS", "RG", "CRM_COREN", "PRONTUARIO", "CEP")
CATEGORIES: tuple[str, ...] = MEDDOCAN_CATEGORIES + BRAZILIAN_CATEGORIES

# Placeholders for --deid placeholder, per language.
PLACEHOLDERS: dict[str, dict[str, str]] = {
    "pt": {
        "NOMBRE_SUJETO_ASISTENCIA": "[NOME]", "NOMBRE_PERSONAL_SANITARIO": "[NOME]", "FAMILIARES_SUJETO_ASISTENCIA": "[NOME]",
        "FECHAS": "[DATA]", "EDAD_SUJETO_ASISTENCIA": "[IDADE]", "SEXO_SUJETO_ASISTENCIA": "[SEXO]", "CALLE": "[ENDERECO]",
        "TERRITORIO": "[LOCAL]", "PAIS": "[PAIS]", "HOSPITAL": "[HOSPITAL]", "INSTITUCION": "[INSTITUICAO]", "CENTRO_SALUD": "[HOSPITAL]",
        "NUMERO_TELEFONO": "[TELEFONE]", "NUMERO_FAX": "[TELEFONE]", "CORREO_ELECTRONICO": "[EMAIL]", "URL_WEB": "[URL]",
        "PROFESION": "[PROFISSAO]", "CPF": "[CPF]", "CNS": "[CNS]", "RG": "[RG]", "CRM_COREN": "[CRM]", "PRONTUARIO": "[PRONTUARIO]",
        "CEP": "[CEP]",
    },
    "es": {
        "NOMBRE_SUJETO_ASISTENCIA": "[NOMBRE]", "NOMBRE_PERSONAL_SANITARIO": "[NOMBRE]", "FAMILIARES_SUJETO_ASISTENCIA": "[NOMBRE]",
        "FECHAS": "[FECHA]", "EDAD_SUJETO_ASISTENCIA": "[EDAD]", "SEXO_SUJETO_ASISTENCIA": "[SEXO]", "CALLE": "[DIRECCION]",
        "TERRITORIO": "[LUGAR]", "PAIS": "[PAIS]", "HOSPITAL": "[HOSPITAL]", "INSTITUCION": "[INSTITUCION]", "CENTRO_SALUD": "[CENTRO]",
        "NUMERO_TELEFONO": "[TELEFONO]", "NUMERO_FAX": "[FAX]", "CORREO_ELECTRONICO": "[EMAIL]", "URL_WEB": "[URL]",
        "PROFESION": "[PROFESION]",
    },
}  # fmt: skip
DEFAULT_PLACEHOLDER = {"pt": "[ID]", "es": "[ID]"}
LANGUAGES = ("es", "pt")


@dataclass(frozen=True, slots=True, order=True)
class PhiSpan:
    """``text[start:end]`` is PHI of ``category``; ``source`` says which layer found it (``rules``, ``crf``, ``gold`` ...)."""

    start: int
    end: int
    category: str
    source: str = ""

    def overlaps(self, other: PhiSpan) -> bool:
        return self.start < other.end and other.start < self.end


def placeholder(category: str, language: str) -> str:
    """The placeholder of ``category`` in ``language`` (``[ID]`` for the identifier categories)."""
    return PLACEHOLDERS.get(language, {}).get(category, DEFAULT_PLACEHOLDER.get(language, "[ID]"))


def resolve_overlaps(spans: Iterable[PhiSpan], priority: dict[str, int] | None = None) -> list[PhiSpan]:
    """Non-overlapping spans in text order: of overlapping ones the higher-priority source wins, then the longer.

    ``priority`` maps a ``source`` to a rank (higher wins); sources not in it rank 0.
    """
    priority = priority or {}
    ranked = sorted(spans, key=lambda span: (-priority.get(span.source, 0), -(span.end - span.start), span.start))
    # The kept spans never overlap, so sorted by start their ends are sorted too: a new span overlaps
    # one of them exactly when it overlaps the last kept span that starts before its end.
    starts: list[int] = []
    kept: list[PhiSpan] = []
    for span in ranked:
        if span.end <= span.start:
            continue
        before = bisect.bisect_left(starts, span.end)
        if before and kept[before - 1].end > span.start:
            continue
        starts.insert(before, span.start)
        kept.insert(before, span)
    return kept
