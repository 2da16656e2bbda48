"""The rules layer of de-identification: structured and keyword-anchored PHI in Spanish and pt-BR notes.

What it finds (``find(text, language)``, every span ``source="rules"``):

- dates in every written form: ``03/03/1946``, ``3-3-46``, ``3.3.1946``, ``1946-03-03``, ``03/1946``,
  ``3 de marzo de 2021``, ``3 de março de 2021``, ``marzo de 2019``, ``3 mar. 2021``, ``3/mar/2021``,
  ``el 3 de marzo``, and a bare year after "en / em / desde / año / ano";
- ages: ``54 años``, ``54 anos``, ``de 54 años de edad``, ``, 54 anos,``, ``54a``, ``Edad: 70``
  (not durations: "hace 5 años", "há 3 anos", "durante 10 años");
- record numbers anchored by their keyword (only the number is the span, as MEDDOCAN annotates it):
  ``NHC``, ``Nº Historia``, ``CIPA``, ``NASS``, ``Nº SS``, ``nº col.`` / ``Número de colegiado``,
  ``Episodio``, ``prontuário``, ``CRM 12345/SP``, ``COREN-SP 123456``, ``CPF``, ``CNS``, ``RG``, ``CEP``;
- CPF, CNS, DNI and NIE by their shape. Check digits never gate: a CPF with a wrong check digit is
  still a CPF (a bare 11-digit number is a CPF when its check digits hold or a "CPF" keyword
  precedes it; otherwise it is an unnamed identifier, OTRO_NUMERO_IDENTIF);
- phones and faxes (:mod:`medfactory.corpus.identifiers`' Brazilian and Spanish forms, plus any
  number after "Tel.", "Teléfono", "Telefone", "Cel.", "Fax" ...), e-mail, URL, IPv4;
- street addresses after ``Calle``, ``C/``, ``Avda.``, ``Av.``, ``Paseo``, ``Plaza``, ``Rua``,
  ``Travessa``, ``Alameda`` ... up to the house number (and floor / door), or after ``Domicilio:`` /
  ``Endereço:``; Spanish postcodes before a town (MEDDOCAN calls them TERRITORIO);
- the header fields of MEDDOCAN-style reports and Brazilian forms (``Nombre:``, ``Apellidos:``,
  ``Paciente:``, ``Médico:``, ``Localidad:``, ``País:``, ``Sexo:``, ``Cidade:`` ...), names after
  ``Dr.`` / ``Dra.``, and hospitals / health centres named after ``Hospital`` / ``Clínica`` / ``UBS`` ....

Spans never overlap: of two rules that overlap, the one anchored by a keyword wins, then the longer.
Compiled regexes run once each over a note (a handful, most with a literal first character, so the
regex engine skips at C speed); the last result is kept so the CRF's rule features and the
de-identifier share one scan of the same note.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from medfactory.corpus.deid.spans import LANGUAGES, PhiSpan
from medfactory.corpus.identifiers import IdentifierScanner, cns_is_valid, cpf_is_valid, dni_is_valid, nie_is_valid

SOURCE = "rules"
# Categories the rules find by form or keyword: where the CRF overlaps them, the rule wins (see deidentifier).
STRUCTURED_CATEGORIES: frozenset[str] = frozenset(
    {
        "FECHAS", "EDAD_SUJETO_ASISTENCIA", "ID_SUJETO_ASISTENCIA", "ID_ASEGURAMIENTO", "ID_CONTACTO_ASISTENCIAL",
        "ID_TITULACION_PERSONAL_SANITARIO", "ID_EMPLEO_PERSONAL_SANITARIO", "NUMERO_TELEFONO", "NUMERO_FAX",
        "CORREO_ELECTRONICO", "URL_WEB", "DIRECCION_IP", "OTRO_NUMERO_IDENTIF", "CPF", "CNS", "RG", "CRM_COREN",
        "PRONTUARIO", "CEP",
    }
)  # fmt: skip

# Ranks: a keyword-anchored value beats a value found by its shape alone, which beats a weak shape.
ANCHORED, SHAPED, WEAK = 3, 2, 1

_MONTHS_ES = "enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|noviembre|diciembre"
_MONTHS_PT = "janeiro|fevereiro|março|marco|abril|maio|junho|julho|agosto|setembro|outubro|novembro|dezembro"
_MONTH_ABBR = "ene|feb|mar|abr|may|jun|jul|ago|sept?|set|oct|out|nov|dic|dez|jan|fev|mai"
_MONTH = rf"(?i:{_MONTHS_ES}|{_MONTHS_PT}|(?:{_MONTH_ABBR})\.?)"
_MONTH_FULL = rf"(?i:{_MONTHS_ES}|{_MONTHS_PT})"
_DAY = r"(?:0?[1-9]|[12][0-9]|3[01])"
_MON = r"(?:0?[1-9]|1[0-2])"
_YEAR4 = r"(?:1[89][0-9]{2}|20[0-9]{2})"
_YEAR = rf"(?:{_YEAR4}|'?[0-9]{{2}})"
_NOT_NUM_LEFT = r"(?<![0-9])(?<![0-9][.,/\-])"
_NOT_NUM_RIGHT = r"(?![0-9]|[.,/\-][0-9])"
_DE = r"(?:\s+(?i:de|del)\s+|\s*[\-/.,]\s*|\s+)"
_UF = "AC|AL|AP|AM|BA|CE|DF|ES|GO|MA|MT|MS|MG|PA|PB|PR|PE|PI|RJ|RN|RS|RO|RR|SC|SP|SE|TO"
_UPPER = "A-ZÁÉÍÓÚÂÊÔÃÕÀÇÑÜ"
_LOWER = "a-záéíóúâêôãõàçñüïè"
_CAP_WORD = rf"[{_UPPER}][{_LOWER}'´’]+(?:-[{_UPPER}]?[{_LOWER}]+)*(?![{_LOWER}{_UPPER}])"
# Words that end a name: what follows a doctor's name in a signature (service, hospital, street, e-mail).
_NAME_STOP = (
    r"(?!(?:Servicio|Serviço|Secci[oó]n|Unidad|Unidade|Departamento|Hospital|Complejo|Cl[ií]nica|Centro|Instituto|Fundaci[oó]n|"
    r"Correo|Email|E-mail|Mail|Tel|Tel[eé]fono|Telefone|Fax|Calle|Avenida|Avda|Av|Paseo|Plaza|Rua|Travessa|Carretera|Ctra|"
    r"Medicina|Cirug[ií]a|Pediatr[ií]a|Psiquiatr[ií]a|Anatom[ií]a|Radiodiagn[oó]stico|Enfermer[ií]a|Urgencias|Facultad|Universidad|"
    r"NHC|NASS|CRM|COREN|Col|Nº|Tfno|Tlf|Telf|M[oó]vil|Espa[ñn]a|Brasil|Portugal|Argentina|M[ée]xico|Chile|Colombia|Per[uú]|Cuba|"
    r"[{_UPPER}][{_LOWER}]*log[ií]a)(?![{_LOWER}]))"
).replace("{_UPPER}", _UPPER).replace("{_LOWER}", _LOWER)  # fmt: skip
_PARTICLE = r"(?:de|del|de la|de las|de los|la|las|los|da|das|do|dos|e|y|i|d'|San|Santa|Santo|São)"
# A proper name: capitalised words, with the particles names carry ("Rivera de la Fuente").
_NAME = rf"{_NAME_STOP}{_CAP_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{_NAME_STOP}{_CAP_WORD}){{0,5}}"
# Between a keyword and its value: punctuation, spaces, "nº", "n.", "número", "de", "do".
_FILL = r"[ \t]*(?:[:.#=\-][ \t]*)?(?i:(?:n[º°o.]|núm(?:ero)?\.?|number|nro\.?)[ \t]*[:.]?[ \t]*)?(?i:(?:de|do|da)[ \t]+)?"
# An identifier value: digits, optionally with a letter prefix, in groups joined by one separator.
_ID_VALUE = r"(?:[A-Z]{1,3}[\-]?)?[0-9](?:[0-9]|[ .\-/](?=[0-9])){2,24}[A-Z]?(?![0-9A-Za-z])"
_SPACE = r"[ \t]"
# Ages written out ("cinco años", "ocho meses", "vinte e dois anos").
_UNITS_ES = "un|una|uno|dos|tres|cuatro|cinco|seis|siete|ocho|nueve|diez|once|doce|trece|catorce|quince|dieciséis|diecisiete|dieciocho|diecinueve"
_UNITS_PT = "um|uma|dois|duas|três|quatro|cinco|seis|sete|oito|nove|dez|onze|doze|treze|catorze|quatorze|quinze|dezesseis|dezessete|dezoito|dezenove"
_TENS = "veinte|treinta|cuarenta|cincuenta|sesenta|setenta|ochenta|noventa|vinte|trinta|quarenta|cinquenta|sessenta|setenta|oitenta|noventa"
_SPELLED = rf"(?i:(?:{_TENS})(?:[ \t]+(?:y|e)[ \t]+(?:{_UNITS_ES}|{_UNITS_PT}))?|veinti[a-zéú]+|{_UNITS_ES}|{_UNITS_PT})"


@dataclass(frozen=True)
class Rule:
    """One pattern; ``category`` of its match (or of its ``v`` group), its rank, and an optional check.

    ``group`` says where the pattern starts: ``digit`` patterns are the rest of a match after its
    first digit (which the combined regex consumes), ``word`` patterns follow a non-word character
    (the combined regex consumes it; the text is scanned with a line break in front).
    """

    name: str
    category: str
    rank: int
    pattern: str
    check: Callable[[str, Context], str | None] | None = None  # -> category, or None to drop the match
    languages: tuple[str, ...] = LANGUAGES
    group: str = "word"
    follow: bool = False  # a town may follow the match ("28036 Madrid", "Santander, Cantabria"): see _towns_after


class Context(NamedTuple):
    """What a check sees besides the value: the keyword before it, up to 30 characters before the match, a flag group."""

    prefix: str
    before: str
    flag: bool


def _digits(value: str) -> str:
    return "".join(ch for ch in value if "0" <= ch <= "9")


def _bare_eleven(value: str, context: Context) -> str | None:
    """11 bare digits: a CPF when its check digits hold, else an unnamed identifier."""
    return "CPF" if cpf_is_valid(value) else "OTRO_NUMERO_IDENTIF"


def _long_number(value: str, context: Context) -> str | None:
    """A run of 8+ bare digits no keyword names: CNS / CPF by shape and check digit, else an unnamed identifier."""
    if len(value) == 15 and value[0] in "12789":
        return "CNS"
    if len(value) == 11 and cpf_is_valid(value):
        return "CPF"
    return "OTRO_NUMERO_IDENTIF"


def _spanish_mobile(value: str, context: Context) -> str | None:
    return "NUMERO_TELEFONO" if len(_digits(value)) == 9 else None


def _ip(value: str, context: Context) -> str | None:
    parts = value.split(".")
    ok = all(part == "0" or (not part.startswith("0") and int(part) <= 255) for part in parts)
    return "DIRECCION_IP" if ok else None


def _phone_keyword(value: str, context: Context) -> str | None:
    """A number after a phone or fax keyword; the keyword says which."""
    if len(_digits(value)) < 6:
        return None
    keyword = context.prefix[:3].casefold()
    return "NUMERO_FAX" if keyword == "fax" else "NUMERO_TELEFONO"


# An age needs a cue before it ("de", "con", "a los", "Edad:", a comma) or "de edad" after it, and
# no duration cue before it ("hace 5 años" is a time, not an age).
_AGE_CUE_BEFORE = re.compile(
    r"(?i:(?:\b(?:de|con|com|a\s+los|desde\s+los|aos|los|tiene|tem|contaba\s+con|edad|idade|paciente|varón|varon|mujer|hombre|"
    r"niño|niña|masculino|feminino|femenino|menino|menina|homem|mulher|senhora|senhor|sra|sr|anciano|anciana|lactante|joven|jovem)"
    r"\s*[:.]?|[,(;]|\n|^)\s*)$"
)
_DURATION_BEFORE = re.compile(
    r"(?i:\b(?:hace|há|ha|faz|durante|por|tras|hasta|até|ate|após|apos|después\s+de|despues\s+de|depois\s+de|últimos|ultimos|"
    r"cada|cerca\s+de\s+\d+\s+a|desde\s+hace|más\s+de|mais\s+de|menos\s+de|hace\s+unos|hace\s+más\s+de|en\s+los|nos)\s*)$"
)


# After a duration, not an age: "2 años de evolución", "a los 6 meses de la cirugía", "3 años después".
_NOT_AGE_AFTER = (
    r"(?i:de[ \t]+(?:evoluci|evoluç|duraci|duraç|seguimiento|tratamiento|la\b|el\b|su\b|sua\b|seu\b|los\b|las\b|este|esta|ese|esa|infecc|"
    r"historia|história|inicio|início|ingreso)|del\b|do\b|da\b|despu[eé]s|depois|m[aá]s[ \t]+tarde|mais[ \t]+tarde|tras|antes|atr[aá]s|siguientes|seguintes)"
)
# Months, days and weeks are an age only after a word that names the patient ("lactante de 8 días").
_STRONG_AGE_CUE = re.compile(
    r"(?i:\b(?:lactante|niñ[oa]|var[oó]n|mujer|hombre|beb[eé]|nacid[oa]|paciente|edad|idade|menin[oa]|crian[cç]a|neonato|rec[eé]m-nascid[oa])"
    r"[ \t]*(?:de|com|con|:)?[ \t]*)$"
)
_YEAR_UNITS = ("año", "ano", "a")


def _age(value: str, context: Context) -> str | None:
    if _DURATION_BEFORE.search(context.before):
        return None
    if context.flag:  # "de edad" / "de idade" follows
        return "EDAD_SUJETO_ASISTENCIA"
    words = value.split()
    unit = words[1] if len(words) > 1 else "a"
    in_years = unit.casefold().startswith(_YEAR_UNITS) or unit.startswith("a.")
    cue = _AGE_CUE_BEFORE if in_years else _STRONG_AGE_CUE
    return "EDAD_SUJETO_ASISTENCIA" if cue.search(context.before) else None


def _in_range(value: str, low: int, high: int) -> bool:
    return value.isdigit() and low <= int(value) <= high


def _numeric_date(value: str, context: Context) -> str | None:
    """d/m/y, d-m-yy, d.m.yyyy or yyyy-mm-dd with a real day, month and (four-digit) year."""
    parts = re.split(r"[/\-.]", value)
    if len(parts[0]) == 4:
        parts = parts[::-1]
    day, month, year = parts
    if not (_in_range(day, 1, 31) and _in_range(month, 1, 12)):
        return None
    return "FECHAS" if len(year) == 2 or _in_range(year, 1800, 2099) else None


def _month_year(value: str, context: Context) -> str | None:
    month, year = value.split("/")
    return "FECHAS" if _in_range(month, 1, 12) and _in_range(year, 1800, 2099) else None


def _day_of_month(value: str, context: Context) -> str | None:
    return "FECHAS" if _in_range(re.match(r"[0-9]+", value).group(), 1, 31) else None  # type: ignore[union-attr]


def _spanish_postcode(value: str, context: Context) -> str | None:
    return "TERRITORIO" if _in_range(value[:2], 1, 52) else None


_NUM_LEFT = r"(?<![0-9].)(?<![0-9][.,/\-].)"  # after the first digit: that digit does not continue a number
_NUM_RIGHT = r"(?![0-9]|[.,/\-][0-9])"


def _digit(name: str, category: str, rank: int, rest: str, check: Callable[[str, Context], str | None] | None = None,
           languages: tuple[str, ...] = LANGUAGES) -> Rule:  # fmt: skip
    """A rule whose match starts with a digit; ``rest`` is what follows that digit."""
    return Rule(name, category, rank, rest, check, languages, group="digit")


def _rules() -> tuple[Rule, ...]:
    """Every rule (the table is built once: see :func:`_compiled`)."""
    digits = r"[0-9]{0,2}"
    unit = r"(?i:años|anos|año|ano|meses|mes|mês|d[ií]as|semanas)"
    number = rf"(?:(?:1[01][0-9]|[1-9]?[0-9])|{_SPELLED})"
    age_tail = (rf"(?:[ \t]+(?:y|e)[ \t]+{number}[ \t]+{unit}(?![{_LOWER}]))?)"
                rf"(?P<edad>[ \t]+(?i:de[ \t]+(?:edad|idade|vida)))?(?!,?[ \t]+{_NOT_AGE_AFTER})")  # fmt: skip
    dates = (
        _digit("date_numeric", "FECHAS", SHAPED, rf"{_NUM_LEFT}[0-9]?(?P<sep>[/\-.])[0-9]{{1,2}}(?P=sep)(?:[0-9]{{4}}|[0-9]{{2}}){_NUM_RIGHT}",
               check=_numeric_date),
        _digit("date_iso", "FECHAS", SHAPED, rf"{_NUM_LEFT}[0-9]{{3}}(?P<sep>[\-/.])[0-9]{{1,2}}(?P=sep)[0-9]{{1,2}}{_NUM_RIGHT}", check=_numeric_date),
        _digit("date_month_year_numeric", "FECHAS", WEAK, rf"{_NUM_LEFT}[0-9]?/[0-9]{{4}}{_NUM_RIGHT}", check=_month_year),
        # "3 de marzo de 2021", "3 março 2021", "3-mar-2021", "3 mar. 21", "el 3 de marzo"
        _digit("date_day_month", "FECHAS", SHAPED, rf"(?<![0-9].)[0-9]?(?:º|°)?{_DE}{_MONTH}(?![{_LOWER}])(?:{_DE}{_YEAR})?(?![0-9])",
               check=_day_of_month),
        # "marzo de 2019", "março/2021", "mar-2021", "Marzo 2019"
        Rule("date_month_year", "FECHAS", SHAPED, rf"{_MONTH}(?![{_LOWER}]){_DE}{_YEAR4}(?![0-9])"),
        # "en 2010", "em 2015", "desde 1998", "el año 1992", "no ano de 2001"
        Rule("date_year", "FECHAS", WEAK,
             rf"(?i:(?:en|em|desde|hasta|até|in|no|del|el)\b[ \t]+(?:(?:el|o)[ \t]+)?)"
             rf"(?P<v>(?i:(?:año|ano)[ \t]+(?:de[ \t]+)?)?{_YEAR4})(?![0-9]|[.,][0-9]|[ \t]*(?i:mg|g\b|ml|mcg|µg|ui|u\b|cc|mm|cm|kg|%|x\b|/))"),
    )  # fmt: skip
    ages = (
        _digit("age", "EDAD_SUJETO_ASISTENCIA", SHAPED,
               rf"(?<![0-9.,\w].)(?P<v>{digits}(?:[ \t]*{unit}|a\b|[ \t]a\.)(?![{_LOWER}]){age_tail}", check=_age),
        Rule("age_spelled", "EDAD_SUJETO_ASISTENCIA", SHAPED, rf"(?P<v>{_SPELLED}[ \t]+{unit}(?![{_LOWER}]){age_tail}", check=_age),
        Rule("age_field", "EDAD_SUJETO_ASISTENCIA", ANCHORED,
             r"(?i:edad|idade)[ \t]*:[ \t]*(?P<v>(?:1[01][0-9]|[1-9]?[0-9])(?:[ \t]*(?i:años|anos|meses|mes|mês|d[ií]as|a\b))?)(?![0-9])"),
    )  # fmt: skip
    return dates + ages + _id_rules() + _number_rules() + _contact_rules() + _place_rules() + _name_rules()


def _keyword(name: str, category: str, keywords: str, value: str = _ID_VALUE, languages: tuple[str, ...] = LANGUAGES) -> Rule:
    """A value after one of ``keywords`` (case-insensitive, a whole word); only the value is the span."""
    return Rule(name, category, ANCHORED, rf"(?i:{keywords})(?![{_LOWER}]){_FILL}(?P<v>{value})", languages=languages)


def _id_rules() -> tuple[Rule, ...]:
    crm_value = rf"[0-9](?:[0-9.]){{2,8}}[0-9](?:-[0-9])?(?:[ \t]*[/\-][ \t]*(?:{_UF}))?(?![0-9A-Za-z])"
    return (
        _keyword("nhc", "ID_SUJETO_ASISTENCIA",
                 r"nhc|n\.h\.c\.?|cipa(?:[ \t]*:[ \t]*nhc)?|historia(?:[ \t]+cl[ií]nica)?|h\.?c\.|nº[ \t]*(?:de[ \t]+)?historia|sip|n\.?i\.?f\.?|d\.?n\.?i\.?"),
        _keyword("nass", "ID_ASEGURAMIENTO",
                 r"nass|n\.a\.s\.s\.?|nº[ \t]*(?:de[ \t]+)?(?:la[ \t]+)?s(?:eguridad)?\.?[ \t]*s(?:ocial)?\.?|seguridad[ \t]+social|"
                 r"afiliaci[oó]n|tarjeta[ \t]+sanitaria|t\.?i\.?s\.?|cip|p[oó]liza|aseguradora"),
        _keyword("colegiado", "ID_TITULACION_PERSONAL_SANITARIO",
                 r"n[º°o]\.?[ \t]*col(?:egiado)?\.?|col\.|colegiad[oa]|n[uú]mero[ \t]+de[ \t]+colegiad[oa]|n[ºo°][ \t]*de[ \t]+colegiad[oa]"),
        _keyword("episodio", "ID_CONTACTO_ASISTENCIAL", r"episodio|n[ºo°][ \t]*(?:de[ \t]+)?episodio|n[ºo°][ \t]*(?:de[ \t]+)?ingreso|atendimento"),
        _keyword("prontuario", "PRONTUARIO", r"prontu[aá]rio|pront\.|registro(?:[ \t]+hospitalar)?|rh|n[ºo°][ \t]*(?:do[ \t]+)?prontu[aá]rio",
                 languages=("pt",)),
        _keyword("crm", "CRM_COREN", rf"(?:crm|coren|cro|crf|crefito|crp|crn)(?:[ \t]*[\-/]?[ \t]*(?:{_UF}))?", value=crm_value),
        Rule("licence_state", "TERRITORIO", ANCHORED, rf"(?:CRM|COREN|CRO|CRF|CRP|CRN)[ \t]*[\-/][ \t]*(?P<v>(?:{_UF}))(?![\w])",
             languages=("pt",)),
        _keyword("cpf_kw", "CPF", r"cpf|c\.p\.f\.?", value=r"[0-9](?:[0-9]|[ .\-/](?=[0-9])){8,16}(?![0-9])"),
        _keyword("cns_kw", "CNS", r"cns|cart[aã]o[ \t]+(?:do[ \t]+)?sus|cart[aã]o[ \t]+nacional[ \t]+de[ \t]+sa[uú]de",
                 value=r"[0-9](?:[0-9]|[ .\-](?=[0-9])){10,20}(?![0-9])"),
        _keyword("rg_kw", "RG", r"rg|r\.g\.|identidade", value=rf"(?:(?:{_UF})[\-\s/]?)?{_ID_VALUE}", languages=("pt",)),
        _keyword("cep_kw", "CEP", r"cep", value=r"[0-9]{2}\.?[0-9]{3}-?[0-9]{3}(?![0-9])", languages=("pt",)),
        _keyword("cp_kw", "TERRITORIO", r"cp|c\.p\.|c[oó]digo[ \t]+postal", value=r"(?:E-)?[0-9]{5}(?![0-9])", languages=("es",)),
        Rule("nie", "ID_SUJETO_ASISTENCIA", SHAPED, r"[XYZ][\- ]?[0-9]{7}[\- ]?[A-HJ-NP-TV-Z](?![0-9A-Za-z])"),
    )  # fmt: skip


def _number_rules() -> tuple[Rule, ...]:
    """Identifiers by their shape alone (each pattern is the rest after the first digit)."""
    return (
        _digit("cpf", "CPF", SHAPED, rf"{_NUM_LEFT}[0-9]{{2}}\.[0-9]{{3}}\.[0-9]{{3}}[\-.][0-9]{{2}}{_NUM_RIGHT}|{_NUM_LEFT}[0-9]{{8}}-[0-9]{{2}}{_NUM_RIGHT}"),
        _digit("cns", "CNS", SHAPED, rf"(?<=[12789]){_NUM_LEFT}[0-9]{{2}}[ .][0-9]{{4}}[ .][0-9]{{4}}[ .][0-9]{{4}}{_NUM_RIGHT}"),
        _digit("cep", "CEP", SHAPED, rf"{_NUM_LEFT}[0-9]\.?[0-9]{{3}}-[0-9]{{3}}{_NUM_RIGHT}", languages=("pt",)),
        _digit("dni", "ID_SUJETO_ASISTENCIA", SHAPED, r"(?<![0-9A-Za-z].)[0-9]{7}[\- ]?[A-HJ-NP-TV-Z](?![0-9A-Za-z])"),
        _digit("ip", "DIRECCION_IP", SHAPED, r"(?<![0-9.].)[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![0-9]|\.[0-9])", check=_ip),
        _digit("phone_es_bare", "NUMERO_TELEFONO", WEAK, r"(?<=[6-9])(?<![0-9.,/\-].)[0-9]{2}(?:[ .\-]?[0-9]{2,3}){2,3}(?![0-9]|[.,][0-9])",
               check=_spanish_mobile, languages=("es",)),
        Rule("postcode_es", "TERRITORIO", WEAK, rf"(?<![0-9.,/\-].)[0-9]{{4}}(?=[ \t.]+[{_UPPER}])", _spanish_postcode, ("es",), "digit", follow=True),
        _digit("bare_eleven", "CPF", WEAK, r"(?<![0-9.,/\-].)[0-9]{10}(?![0-9]|[.,][0-9])", check=_bare_eleven),
        _digit("long_number", "OTRO_NUMERO_IDENTIF", WEAK, r"(?<![0-9.,/\-].)[0-9]{7,9}(?:[0-9]{2,10})?(?![0-9]|[.,][0-9])", check=_long_number),
    )  # fmt: skip


def _contact_rules() -> tuple[Rule, ...]:
    phone_value = r"(?:\+|\(\+?)?[0-9](?:[0-9]|[ .\-()/](?=[0-9(])|\)[ \t]?(?=[0-9])){5,22}(?![0-9])"
    return (
        Rule("phone_kw", "NUMERO_TELEFONO", ANCHORED,
             r"(?i:fax|tel[eé]fonos?|telefones?|tel[ée]f?\.?|telf\.?|tfno\.?|tlf\.?|tlfno\.?|m[oó]vil|celular|cel\.|fone|contato|"
             rf"tel\.?[ \t]*(?:m[oó]vil|fijo|contacto))(?![{_LOWER}])[ \t]*(?:[:.\-][ \t]*)?(?:\(?[ \t]*n[º°o.][ \t]*)?(?P<v>{phone_value})",
             check=_phone_keyword),
        Rule("url", "URL_WEB", SHAPED, r"(?i:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:)\]]"),
    )  # fmt: skip


_BR_STREET_TYPES = (
    "Aeroporto", "Alameda", "Área", "Avenida", "Campo", "Chácara", "Colônia", "Condomínio", "Conjunto", "Distrito", "Esplanada", "Estação",
    "Estrada", "Favela", "Fazenda", "Feira", "Jardim", "Ladeira", "Lago", "Lagoa", "Largo", "Loteamento", "Morro", "Núcleo", "Parque",
    "Passarela", "Pátio", "Praça", "Praia", "Quadra", "Recanto", "Residencial", "Rodovia", "Rua", "Setor", "Sítio", "Travessa", "Trecho",
    "Trevo", "Vale", "Vereda", "Via", "Viaduto", "Viela", "Vila",
)  # fmt: skip


def _place_rules() -> tuple[Rule, ...]:
    street_kw = (r"calle|c/|avda\.?|avd\.?|avenida|av\.|paseo|p[ºo]\.|plaza|pza\.?|glorieta|camino|carretera|ctra\.?|ronda|"
                 r"traves[ií]a|r[uú]a|pasaje|urbanizaci[oó]n|urb\.|rua|travessa|tv\.|alameda|praça|pça\.?|estrada|rodovia|largo|"
                 r"vila|quadra|qd\.|conjunto")  # fmt: skip
    # After the keyword: the street name (no digits, no line break), the house number or "s/n",
    # then floor / door pieces ("2º dcha", "7B", "portal F", "- P1- 2B", "apto 12").
    number = r"(?:[0-9]{1,5}(?:(?:[A-Za-z]|[ \t][A-Z])(?![a-z]))?(?:[ \t]*[\-–][ \t]*[0-9]{1,5})?|s/n|S/N)"
    door = (r"(?:[ \t]*[,\-–][ \t]*|[ \t]+)(?:[0-9]{1,2}[ºª°]?[ \t]?(?:[A-Za-z]{1,4}\.?)?|portal[ \t]+\w+|piso[ \t]+\w+|apto\.?[ \t]*\w+|"
            r"apartamento[ \t]+\w+|bloco[ \t]+\w+|casa[ \t]+\w+|[A-Z]-?[0-9]{1,3}|P[0-9]{1,2})")  # fmt: skip
    house = rf",?[ \t]*(?:(?i:n[º°o]\.?|número|#)[ \t]*)?{number}(?![0-9])(?:{door}(?![0-9A-Za-z])){{0,3}}"
    street = rf"(?i:{street_kw})(?![{_LOWER}])[ \t]*[^\n0-9,;:()]{{1,60}}?{house}"
    # Brazilian address types (Faker's pt_BR list: "Ladeira", "Setor", "Sítio" ...): capitalised, before a capitalised name.
    street_br = rf"(?:{'|'.join(_BR_STREET_TYPES)})[ \t]+(?:(?:de|da|do|dos|das)[ \t]+)?[{_UPPER}][^\n0-9,;:().]{{0,60}}?{house}"
    address = rf"[^\n0-9,;:()]{{1,80}}?{house}"  # after "Endereço:": up to the house number, the town follows
    field_value = r"[^\n]*?[^\s.]"
    town = r"[^\n,(]*?[^\s.,(]"  # one town; a province after a comma or in brackets is the next span
    return (
        Rule("street", "CALLE", SHAPED, street),
        Rule("street_br", "CALLE", SHAPED, street_br, languages=("pt",)),
        # A Spanish "Domicilio:" line is the street (MEDDOCAN); a Brazilian "Endereço:" goes on with the town, state and CEP.
        Rule("address_field", "CALLE", ANCHORED,
             rf"(?i:domicilio|direcci[oó]n|endere[cç]o|morada|resid[eê]ncia)[ \t]*:[ \t]*(?P<v>{field_value})(?=\.?[ \t]*(?:\n|$))", languages=("es",)),
        Rule("address_field_pt", "CALLE", ANCHORED,
             rf"(?i:endere[cç]o|morada|resid[eê]ncia|domic[ií]lio)[ \t]*:[ \t]*(?P<v>{address}|{field_value}(?=\.?[ \t]*(?:\n|$)))",
             languages=("pt",), follow=True),
        Rule("town_field", "TERRITORIO", ANCHORED,
             rf"(?i:localidad(?:[ \t]*/[ \t]*provincia)?|provincia|ciudad|municipio|poblaci[oó]n|cidade|munic[ií]pio|naturalidade|"
             rf"procedência|procedencia|natural[ \t]+de|estado)[ \t]*:[ \t]*(?P<v>{town})(?=[ \t]*[,(]|\.?[ \t]*(?:\n|$))", follow=True),
        Rule("country_field", "PAIS", ANCHORED,
             rf"(?i:pa[ií]s(?:[ \t]+de[ \t]+(?:nacimiento|origen|nascimento|origem))?|nacionalidad|nacionalidade)[ \t]*:[ \t]*"
             rf"(?P<v>{field_value})(?=\.?[ \t]*(?:\n|$))"),
        Rule("hospital", "HOSPITAL", SHAPED,
             rf"(?:Hospital|Hosp\.|Complejo[ \t]+Hospitalario|Cl[ií]nica|Santa[ \t]+Casa|Policl[ií]nica|Sanatorio|Sanatório|"
             rf"Instituto|Fundaci[oó]n|Funda[cç][aã]o)(?:[ \t]+(?:{_PARTICLE}[ \t]+)?(?:{_NAME_STOP}{_CAP_WORD}|[0-9]{{1,2}}[ \t]+de[ \t]+{_CAP_WORD}|"
             rf"[0-9]{{1,2}}[ \t]+de[ \t]+[a-z]+)){{1,6}}"),
        Rule("health_centre", "CENTRO_SALUD", SHAPED,
             rf"(?:Centro[ \t]+de[ \t]+Salud|Centro[ \t]+de[ \t]+Sa[uú]de|C\.S\.|UBS|USF|UPA|Posto[ \t]+de[ \t]+Sa[uú]de|"
             rf"Unidade[ \t]+B[aá]sica(?:[ \t]+de[ \t]+Sa[uú]de)?|Ambulatorio)(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{_CAP_WORD}){{1,5}}"),
    )  # fmt: skip


# Country names that are more often a Spanish or Brazilian town (Granada) in these notes.
_NOT_COUNTRIES = frozenset({"Granada", "Georgia", "Jordania", "Jordânia", "Salvador", "Montenegro", "Chade", "Guiné", "Mali", "Samoa", "Tonga"})


def _country_pattern() -> str:
    """Country names of Faker's es and pt_BR lists (MIT), longest first, as whole words."""
    from faker.providers.address import es, pt_BR

    countries = (*es.Provider.countries, *pt_BR.Provider.countries, "EE. UU.", "EE.UU.", "EUA", "USA", "U.S.A.")
    names = {name for name in countries if (len(name) > 3 or "." in name) and name not in _NOT_COUNTRIES}
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=lambda name: (-len(name), name)))
    return rf"(?:{alternatives})(?![\w])"


def _name_rules() -> tuple[Rule, ...]:
    return (
        Rule("patient_field", "NOMBRE_SUJETO_ASISTENCIA", ANCHORED,
             rf"(?i:nombre|apellidos?|nome(?:[ \t]+do[ \t]+paciente)?|sobrenome|paciente|nombre[ \t]+del[ \t]+paciente)[ \t]*:[ \t]*"
             rf"(?P<v>{_NAME})(?=[ \t.,]*(?:\n|$))"),
        Rule("staff_field", "NOMBRE_PERSONAL_SANITARIO", ANCHORED,
             rf"(?i:m[ée]dico(?:[ \t]+responsable)?|responsable(?:[ \t]+cl[ií]nico)?|remitido[ \t]+por|"
             rf"m[ée]dico[ \t]+assistente|enfermeir[oa]|enfermer[oa])[ \t]*:[ \t]*(?:(?:Dra?|Dr\(a\))[.:]?[ \t]*)?(?P<v>{_NAME})"),
        # pt-BR forms: "Responsável:" is the patient's guardian or relative.
        Rule("relative_field", "FAMILIARES_SUJETO_ASISTENCIA", ANCHORED,
             rf"(?i:respons[aá]vel|acompanhante)[ \t]*:[ \t]*(?P<v>{_NAME})", languages=("pt",)),
        Rule("staff_title", "NOMBRE_PERSONAL_SANITARIO", SHAPED, rf"(?:Dra?\.|Dra?(?=[ \t])|Doctora?|Doutora?|Enf\.)[ \t]*(?P<v>{_NAME})"),
        Rule("sex_field", "SEXO_SUJETO_ASISTENCIA", ANCHORED, rf"(?i:sexo|g[eê]nero)[ \t]*:[ \t]*(?P<v>[{_UPPER}{_LOWER}]+)"),
        Rule("sex_word", "SEXO_SUJETO_ASISTENCIA", SHAPED,
             r"(?:[Vv]ar[oó]n|(?i:(?<=sexo )|(?<=paciente ))(?:[Mm]asculino|[Ff]emenino|[Ff]eminino)|"
             r"(?<=[Ee]l )niño|(?<=[Ll]a )niña|(?<=[Uu]n )niño|(?<=[Uu]na )niña|(?<=[Uu]na )mujer|(?<=[Uu]n )hombre)(?![\w])"),
        # MEDDOCAN marks "Varón" in "Varón de 54 años"; the pt-BR gold (planted.py) does not mark "Homem de 54 anos".
        Rule("sex_before_age", "SEXO_SUJETO_ASISTENCIA", SHAPED,
             r"(?P<v>(?i:var[oó]n|mujer|hombre|niñ[oa]|masculino|femenino))"
             r"(?=,?[ \t]+(?:de|con)[ \t]+(?:unos[ \t]+)?[0-9]{1,3}[ \t]*(?:años|meses|a\b))", languages=("es",)),
        Rule("country", "PAIS", WEAK, _country_pattern()),
    )  # fmt: skip


# The lower-case words a word rule can start with: the rule is tried only where one of them stands.
_MONTH_WORDS = f"{_MONTHS_ES}|{_MONTHS_PT}|ene|feb|mar|abr|may|jun|jul|ago|sep|sept|set|oct|out|nov|dic|dez|jan|fev|mai".replace("|", " ")
_SPELLED_WORDS = (f"{_UNITS_ES}|{_UNITS_PT}|{_TENS}".replace("|", " ")
                  + " veintiuno veintiún veintiun veintidós veintidos veintitrés veintitres veinticuatro veinticinco veintiséis veintiseis"
                  " veintisiete veintiocho veintinueve")  # fmt: skip
_SEX_WORDS = "varón varon mujer hombre niño niña masculino femenino feminino homem mulher menino menina"
KEYS: dict[str, str] = {
    "date_month_year": _MONTH_WORDS,
    "date_year": "en em desde hasta até in no del el",
    "age_spelled": _SPELLED_WORDS,
    "age_field": "edad idade",
    "nhc": "nhc n cipa historia h hc nº sip nif dni d",
    "nass": "nass n nº seguridad afiliación afiliacion tarjeta tis t cip póliza poliza aseguradora",
    "colegiado": "nº n no nºcol col colegiado colegiada número numero",
    "episodio": "episodio nº n no atendimento",
    "prontuario": "prontuário prontuario pront registro rh nº n no",
    "crm": "crm coren cro crf crefito crp crn",
    "cpf_kw": "cpf c",
    "cns_kw": "cns cartão cartao",
    "rg_kw": "rg r identidade",
    "cep_kw": "cep",
    "cp_kw": "cp c código codigo",
    "nie": "x y z",
    "phone_kw": "fax teléfono telefono teléfonos telefonos telefone telefones tel telf teléf telef tfno tlf tlfno móvil movil celular cel fone contato",
    "url": "http https www",
    "street_br": " ".join(word.casefold() for word in _BR_STREET_TYPES),
    "street": "calle c avda avd avenida av paseo p pº po plaza pza glorieta camino carretera ctra ronda travesía travesia rúa pasaje "
              "urbanización urbanizacion urb rua travessa tv alameda praça pça estrada rodovia largo vila quadra qd conjunto",
    "address_field": "domicilio dirección direccion endereço endereco morada residência residencia",
    "address_field_pt": "endereço endereco morada residência residencia domicílio domicilio",
    "town_field": "localidad provincia ciudad municipio población poblacion cidade município naturalidade procedência procedencia natural estado",
    "country_field": "país pais nacionalidad nacionalidade",
    "hospital": "hospital hosp complejo clínica clinica santa policlínica policlinica sanatorio sanatório instituto fundación fundacion fundação fundacao",
    "health_centre": "centro c ubs usf upa posto unidade ambulatorio",
    "patient_field": "nombre apellidos apellido nome sobrenome paciente",
    "relative_field": "responsável responsavel acompanhante",
    "licence_state": "crm coren cro crf crp crn",
    "staff_field": "médico medico responsable remitido enfermeiro enfermeira enfermero enfermera",
    "staff_title": "dr dra doctor doctora doutor doutora enf",
    "sex_field": "sexo género genero gênero",
    "sex_word": _SEX_WORDS,
    "sex_before_age": _SEX_WORDS,
}  # fmt: skip
# Header fields: only at the start of a line (after spaces).
LINE_START_RULES = frozenset({"address_field", "address_field_pt", "relative_field", "town_field", "country_field", "patient_field", "staff_field"})


def _country_keys() -> str:
    from faker.providers.address import es, pt_BR

    return " ".join({name.split()[0].casefold() for name in (*es.Provider.countries, *pt_BR.Provider.countries)} | {"ee", "eua", "usa"})


def _trie_pattern(words: set[str]) -> str:
    """A regex matching exactly ``words``, as a trie (one branch per next character), so that the
    regex engine checks one character at a time instead of every word in turn."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node: dict[str, dict]) -> str:
        branches = [re.escape(char) + pattern(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        return f"(?:{body})?" if "" in node else body

    return pattern(root)


def _branch(index: int, rule: Rule) -> str:
    """The rule's pattern with its group names made unique, ending in an empty group that names it."""
    pattern = rule.pattern
    for group in ("v", "sep", "edad"):
        pattern = pattern.replace(f"(?P<{group}>", f"(?P<{group}_{index}>").replace(f"(?P={group})", f"(?P={group}_{index})")
    return f"(?:{pattern})(?P<r_{index}>)"


class Compiled(NamedTuple):
    """A language's rules: the digit regex, the trigger regex of key words and, per key word, the rules to try there."""

    rules: tuple[Rule, ...]
    digit: re.Pattern[str]
    trigger: re.Pattern[str]
    by_key: dict[str, tuple[tuple[Rule, re.Pattern[str]], ...]]


@lru_cache(maxsize=len(LANGUAGES))
def _compiled(language: str) -> Compiled:
    """The digit rules as one regex ``[0-9](?:...)``; the word rules behind one trigger regex.

    Both start with one character class, so the regex engine skips at C speed to where a rule can
    start. Python's regex engine tries the branches of an alternation one after another, so the
    word rules (keywords, month names, countries ...) are not one alternation: a trie of their key
    words finds where one stands, and only the rules of that word are tried there.
    """
    rules = tuple(sorted((rule for rule in _rules() if language in rule.languages), key=lambda rule: -rule.rank))
    digit = re.compile("[0-9](?:" + "|".join(_branch(index, rule) for index, rule in enumerate(rules) if rule.group == "digit") + ")")
    keys = {**KEYS, "country": _country_keys()}
    by_key: dict[str, list[tuple[Rule, re.Pattern[str]]]] = {}
    for rule in rules:
        if rule.group == "word":
            compiled = re.compile(rule.pattern)
            for key in keys[rule.name].split():
                by_key.setdefault(key, []).append((rule, compiled))
    trigger = re.compile(rf"[^\w](?P<k>{_trie_pattern(set(by_key))})(?![^\W\d_])")
    return Compiled(rules, digit, trigger, {key: tuple(value) for key, value in by_key.items()})


@lru_cache(maxsize=len(LANGUAGES))
def _scanner(language: str) -> IdentifierScanner:
    # identifiers.py's phones (Brazilian and Spanish forms) and e-mail addresses: none has a check digit that gates.
    kinds = ("phone_br", "email") if language == "pt" else ("phone_es", "email")
    return IdentifierScanner(locales=("br",) if language == "pt" else ("es",), kinds=kinds)


_SCANNER_CATEGORY = {"phone_br": "NUMERO_TELEFONO", "phone_es": "NUMERO_TELEFONO", "email": "CORREO_ELECTRONICO"}


def _found(rule: Rule, match: re.Match[str], start: int, end: int, flag: bool) -> tuple[int, int, int, str] | None:
    """(rank, start, end, category) of one match, after the rule's check."""
    if end <= start:
        return None
    category: str | None = rule.category
    if rule.check is not None:
        text = match.string
        category = rule.check(text[start:end], Context(text[match.start() : start], text[max(0, start - 30) : start], flag))
    return None if category is None else (rule.rank, start, end, category)


_PLACE = rf"{_NAME_STOP}{_CAP_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{_NAME_STOP}{_CAP_WORD}){{0,3}}"
# After a postcode or a town: a state code ("- SP", "/RJ"), a town or province after punctuation, or a town after a space.
_TOWN_AFTER = re.compile(rf"[ \t]*[\-/][ \t]*(?P<u>(?:{_UF}))(?![\w])|[ \t]*[,.(\-–][ \t]*(?P<v>{_PLACE})\)?|[ \t]+(?P<w>{_PLACE})")


@lru_cache(maxsize=1)
def _country_words() -> frozenset[str]:
    from faker.providers.address import es, pt_BR

    return frozenset(name.casefold() for name in (*es.Provider.countries, *pt_BR.Provider.countries) if name not in _NOT_COUNTRIES)


def _towns_after(text: str, end: int, first_needs_space: bool) -> list[tuple[int, int, int, str]]:
    """Up to two place names right after a postcode or a town field ("28036 Madrid (Madrid)", "Santander, Cantabria")."""
    found = []
    for step in range(2):
        match = _TOWN_AFTER.match(text, end)
        if match is None or (step == 0 and first_needs_space and match.group("w") is None) or (step == 0 and match.group("u")):
            break
        group = "w" if match.group("w") else "u" if match.group("u") else "v"
        start, end = match.span(group)
        category = "PAIS" if match.group(group).casefold() in _country_words() else "TERRITORIO"
        found.append((WEAK, start, end, category))
    return found


def _digit_matches(text: str, compiled: Compiled) -> list[tuple[int, int, int, str]]:
    found = []
    groups = compiled.digit.groupindex
    for match in compiled.digit.finditer(text):
        index = int(match.lastgroup[2:])  # type: ignore[index]
        value, flag = f"v_{index}", f"edad_{index}"
        end = match.end(value) if value in groups and match.start(value) >= 0 else match.end()
        rule = compiled.rules[index]
        hit = _found(rule, match, match.start(), end, flag in groups and match.start(flag) >= 0)
        if hit:
            found.append(hit)
            if rule.follow:
                found += _towns_after(text, end, first_needs_space=True)
    return found


def _lowered(text: str) -> str:
    """``text`` lower-cased character by character, same length (a few characters lower-case to two)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else "".join(char.lower() if len(char.lower()) == 1 else char for char in text)


def _word_matches(text: str, compiled: Compiled) -> list[tuple[int, int, int, str]]:
    found = []
    for key in compiled.trigger.finditer("\n" + _lowered(text)):  # the line break stands for the start of the text
        position = key.start("k") - 1
        for rule, regex in compiled.by_key[key.group("k")]:
            if rule.name in LINE_START_RULES and text[text.rfind("\n", 0, position) + 1 : position].strip(" \t\ufeff"):
                continue
            match = regex.match(text, position)
            if match is None:
                continue
            has_value = "v" in regex.groupindex and match.start("v") >= 0
            start, end = match.span("v") if has_value else match.span()
            hit = _found(rule, match, start, end, "edad" in regex.groupindex and match.start("edad") >= 0)
            if hit:
                found.append(hit)
                if rule.follow:
                    found += _towns_after(text, end, first_needs_space=False)
    return found


def _candidates(text: str, language: str) -> list[tuple[int, int, int, str]]:
    """(rank, start, end, category) of every rule match, overlapping."""
    compiled = _compiled(language)
    found = _digit_matches(text, compiled) + _word_matches(text, compiled)
    for finding in _scanner(language).find(text):
        found.append((SHAPED + (finding.kind == "email"), finding.start, finding.end, _SCANNER_CATEGORY[finding.kind]))
    return found


def _non_overlapping(candidates: list[tuple[int, int, int, str]]) -> list[PhiSpan]:
    """Higher rank first, then longer, then earlier; a candidate overlapping one kept is dropped."""
    starts: list[int] = []  # kept spans, sorted and disjoint: starts[i] < ends[i] <= starts[i + 1]
    ends: list[int] = []
    categories: list[str] = []
    for _, start, end, category in sorted(candidates, key=lambda c: (-c[0], c[1] - c[2], c[1])):
        at = bisect.bisect_right(starts, start)
        if (at and ends[at - 1] > start) or (at < len(starts) and starts[at] < end):
            continue
        starts.insert(at, start)
        ends.insert(at, end)
        categories.insert(at, category)
    return [PhiSpan(start, end, category, SOURCE) for start, end, category in zip(starts, ends, categories)]


_LAST: list[object] = [None, None, ()]  # (text, language, spans) of the last call


def find(text: str, language: str) -> list[PhiSpan]:
    """PHI spans the rules find in ``text`` (``language`` "es" or "pt"): non-overlapping, in text order, ``source="rules"``."""
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r}: use one of {', '.join(LANGUAGES)}")
    if not isinstance(text, str):
        raise TypeError(f"rules.find expects str, not {type(text).__name__}")
    if _LAST[0] is text and _LAST[1] == language:  # the CRF's features and the de-identifier scan the same note
        return list(_LAST[2])  # type: ignore[call-overload]
    spans = _non_overlapping(_candidates(text, language))
    _LAST[:] = [text, language, tuple(spans)]
    return spans


def check_digits_valid(text: str, span: PhiSpan) -> bool | None:
    """Whether the check digits of a CPF / CNS / DNI / NIE span hold (None for other categories): a confidence, never a gate."""
    value = text[span.start : span.end]
    digits = _digits(value)
    if span.category == "CPF":
        return cpf_is_valid(digits)
    if span.category == "CNS":
        return cns_is_valid(digits)
    compact = value.replace("-", "").replace(" ", "").upper()
    if re.fullmatch(r"[0-9]{8}[A-Z]", compact):
        return dni_is_valid(compact[:8], compact[8])
    if re.fullmatch(r"[XYZ][0-9]{7}[A-Z]", compact):
        return nie_is_valid(compact[0], compact[1:8], compact[8])
    return None
