"""Personal-identifier scanner run on every clinical note before anything is written.

Brazilian identifiers (locale ``"br"``): CPF, CNS, RG, CRM, phones, e-mail, CEP; Spanish (``"es"``):
DNI, NIE, phones, e-mail. Nothing here logs, stores or returns an identifier value: a
:class:`Finding` holds the kind and offsets only, and :meth:`IdentifierScanner.mask` replaces each
value with a placeholder such as ``[CPF]``. How one compiled regex scans a note in a single pass is
in docs/corpora.md ("Identifier scanning").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["LOCALES", "MODES", "PLACEHOLDERS", "Finding", "IdentifierScanner", "parse_locales"]

LOCALES: dict[str, tuple[str, ...]] = {
    "br": ("cpf", "cns", "rg", "crm", "phone_br", "email", "cep"),
    "es": ("dni", "nie", "phone_es", "email"),
}
MODES = ("report", "mask", "refuse")

PLACEHOLDERS: dict[str, str] = {
    "cpf": "[CPF]",
    "cns": "[CNS]",
    "rg": "[RG]",
    "crm": "[CRM]",
    "phone_br": "[TELEFONE]",
    "email": "[EMAIL]",
    "cep": "[CEP]",
    "dni": "[DNI]",
    "nie": "[NIE]",
    "phone_es": "[TELÉFONO]",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One identifier: its kind and the span ``text[start:end]`` of its value (never the value)."""

    kind: str
    start: int
    end: int  # span of the value (what gets masked)


# --------------------------------------------------------------------------------------------
# Check digits


def _digits(value: str) -> str:
    return "".join(ch for ch in value if "0" <= ch <= "9")


def cpf_is_valid(digits: str) -> bool:
    """11 digits, not all the same, both mod-11 check digits right."""
    if len(digits) != 11 or not digits.isdigit() or digits == digits[0] * 11:
        return False
    nums = [ord(ch) - 48 for ch in digits]
    first = sum(n * w for n, w in zip(nums[:9], range(10, 1, -1))) * 10 % 11 % 10
    if first != nums[9]:
        return False
    second = sum(n * w for n, w in zip(nums[:10], range(11, 1, -1))) * 10 % 11 % 10
    return second == nums[10]


def cns_is_valid(digits: str) -> bool:
    """15 digits starting 1, 2, 7, 8 or 9 whose sum weighted 15..1 is divisible by 11."""
    if len(digits) != 15 or not digits.isdigit() or digits[0] not in "12789":
        return False
    return sum((ord(ch) - 48) * w for ch, w in zip(digits, range(15, 0, -1))) % 11 == 0


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_is_valid(number: str, letter: str) -> bool:
    """8-digit DNI number whose control letter is TRWAGMYFPDXBNJZSQVHLCKE[number % 23]."""
    return number.isdigit() and _DNI_LETTERS[int(number) % 23] == letter.upper()


def nie_is_valid(prefix: str, number: str, letter: str) -> bool:
    """NIE: X/Y/Z become 0/1/2 in front of the 7 digits, then the DNI letter check."""
    lead = "XYZ".find(prefix.upper())
    return lead >= 0 and len(number) == 7 and dni_is_valid(f"{lead}{number}", letter)


# Brazilian area codes (DDD) in use; the unparenthesised "11 98765-4321" form must have one.
_VALID_DDD = frozenset(
    str(ddd)
    for ddd in (
        *range(11, 20), 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, *range(41, 50),
        51, 53, 54, 55, *range(61, 70), 71, 73, 74, 75, 77, 79, *range(81, 90), *range(91, 100),
    )
)


def _check_cpf(value: str) -> bool:
    return cpf_is_valid(_digits(value))


def _check_cns(value: str) -> bool:
    return cns_is_valid(_digits(value))


def _check_dni(value: str) -> bool:
    return dni_is_valid(_digits(value), value[-1])


def _check_nie(value: str) -> bool:
    return nie_is_valid(value[0], _digits(value), value[-1])


def _check_ddd(value: str) -> bool:
    return value[:2] in _VALID_DDD


# --------------------------------------------------------------------------------------------
# Pattern pieces. Every rule is "first character" + "rest": the combined regex has one top-level
# branch per possible first character, holding the rests of the rules that can start with it.

_UF = "AC|AL|AP|AM|BA|CE|DF|ES|GO|MA|MT|MS|MG|PA|PB|PR|PE|PI|RJ|RN|RS|RO|RR|SC|SP|SE|TO"
# Between a keyword (RG, CRM, CEP) and its number: punctuation, spaces, "nº", "n.", "número".
_FILL = r"[ \t:.#=\-]{0,4}(?:[nN](?:[º°o]|úm(?:ero)?)?\.?[ \t:.]{0,3})?"
_NOT_LETTER = r"(?![^\W\d_])"
_END_NUM = r"(?![0-9]|[.,\-][0-9])"  # not followed by more of a number
# Brazilian subscriber number: mobile 9 dddd (the 9 may stand apart) or landline 2-8 ddd.
_BR_SUB = r"(?:9 ?[0-9]{4}|[2-8][0-9]{3})"
# Spanish 9-digit number after its first digit [6-9], grouped 3-3-3, 3-2-2-2 or 2-3-2-2.
_ES_GROUPED_REST = (
    r"(?:[0-9]{2}[ \-][0-9]{3}[ \-][0-9]{3}"
    r"|[0-9]{2}[ .\-][0-9]{2}[ .\-][0-9]{2}[ .\-][0-9]{2}"
    r"|[0-9][ .\-][0-9]{3}[ .\-][0-9]{2}[ .\-][0-9]{2})"
)
# After a +34 / 0034 prefix the number may also be bare or dotted 3-3-3.
_ES_ANY = rf"[6-9](?:[0-9]{{8}}|{_ES_GROUPED_REST}|[0-9]{{2}}\.[0-9]{{3}}\.[0-9]{{3}}){_END_NUM}"
_RG_NUMBER = (
    rf"(?:(?:{_UF})[-\s/]?|[A-Z]-)?"
    r"(?:[0-9]{1,2}\.[0-9]{3}\.[0-9]{3}|[0-9]{1,3}\.[0-9]{3}|[0-9]{5,11})"
    r"(?:-?[0-9Xx])?(?![0-9A-Za-z])"
)
_CRM_NUMBER = rf"(?:[0-9]{{1,3}}\.[0-9]{{3,5}}|[0-9]{{4,7}})(?:-[0-9])?{_END_NUM}"
# E-mail from its "@": one or more domain labels and a top-level domain of letters. The local
# part is read backwards from the "@" in Python (see IdentifierScanner._emails).
_EMAIL_AT = re.compile(r"@(?:[^\W_](?:[\w\-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w\-])")
_EMAIL_LOCAL_CHARS = frozenset("._%+-")


@dataclass(frozen=True)
class _Rule:
    group: str  # stem of the regex group names (unique among the rules)
    kind: str
    first: str  # the characters the identifier can begin with (literally, not a class)
    left: str  # left boundary, evaluated just after the first character
    rest: str  # regex for the rest; keyword rules mark their value with (?P<VALUE>...)
    keyword: bool = False  # True: the value is the named group, not the whole match
    check: Callable[[str], bool] | None = None


_DIGITS = "0123456789"
_NUM_LEFT = r"(?<![0-9].)(?<![0-9][.,\-].)"  # not inside a longer number
_WORD_LEFT = r"(?<!\w.)"  # keyword / NIE starts a word

_RULES: tuple[_Rule, ...] = (
    # ---- numbers starting with a digit
    _Rule("cns", "cns", "12789", _NUM_LEFT,
          rf"[0-9]{{2}}(?:[0-9]{{12}}| [0-9]{{4}} [0-9]{{4}} [0-9]{{4}}){_END_NUM}",
          check=_check_cns),
    _Rule("cpf", "cpf", _DIGITS, _NUM_LEFT,
          rf"[0-9]{{2}}(?:\.[0-9]{{3}}\.[0-9]{{3}}[\-.]?|[0-9]{{6}}-?)[0-9]{{2}}{_END_NUM}",
          check=_check_cpf),
    _Rule("dni", "dni", _DIGITS, _NUM_LEFT,
          r"(?:[0-9]{7}|[0-9]\.[0-9]{3}\.[0-9]{3})[\- ]?[A-Z](?![0-9A-Za-z])", check=_check_dni),
    _Rule("cep", "cep", _DIGITS, _NUM_LEFT, rf"[0-9]{{4}}-[0-9]{{3}}{_END_NUM}"),
    _Rule("phone_es_00", "phone_es", "0", _NUM_LEFT, rf"034[ \-]?{_ES_ANY}"),
    _Rule("phone_br_0800", "phone_br", "0", _NUM_LEFT,
          rf"[3589]00(?:[ \-][0-9]{{3}}[ \-]?|[0-9]{{3}}[ \-])[0-9]{{4}}{_END_NUM}"),
    _Rule("phone_br_ddd", "phone_br", "123456789", _NUM_LEFT,
          rf"[1-9][ \-]{_BR_SUB}-[0-9]{{4}}{_END_NUM}", check=_check_ddd),
    _Rule("phone_br_local", "phone_br", "9", _NUM_LEFT, rf" ?[0-9]{{4}}-[0-9]{{4}}{_END_NUM}"),
    # without a prefix, a grouped number inside a longer run of number groups is not a phone
    _Rule("phone_es_grp", "phone_es", "6789", _NUM_LEFT + r"(?<![0-9][ .\-].)",
          rf"{_ES_GROUPED_REST}{_END_NUM}(?![ .\-][0-9])"),
    # ---- international prefix "+55" / "+34"
    _Rule("phone_br_plus", "phone_br", "+", r"(?<![0-9].)",
          rf"55[ \-]?(?:\(0?[1-9][1-9]\)|0?[1-9][1-9])[ \-]?{_BR_SUB}[\-. ]?[0-9]{{4}}{_END_NUM}"),
    _Rule("phone_es_plus", "phone_es", "+", r"(?<![0-9].)", rf"34[ \-]?{_ES_ANY}"),
    # ---- area code or country code in parentheses
    _Rule("phone_br_paren", "phone_br", "(", r"(?<![0-9].)",
          rf"0?[1-9][1-9]\) ?{_BR_SUB}[\-. ]?[0-9]{{4}}{_END_NUM}"),
    _Rule("phone_br_cc", "phone_br", "(", r"(?<![0-9].)",
          rf"\+?55\) ?(?:\(0?[1-9][1-9]\)|0?[1-9][1-9])[ \-]?{_BR_SUB}[\-. ]?[0-9]{{4}}{_END_NUM}"),
    _Rule("phone_es_cc", "phone_es", "(", r"(?<![0-9].)", rf"(?:\+|00)?34\) ?{_ES_ANY}"),
    # ---- keywords: only the number is the value
    _Rule("rg", "rg", "R", _WORD_LEFT, rf"\.?G\.?{_NOT_LETTER}{_FILL}(?P<VALUE>{_RG_NUMBER})", keyword=True),
    _Rule("crm", "crm", "C", _WORD_LEFT,
          rf"RM(?:[\-/ ]?(?:{_UF}))?{_NOT_LETTER}{_FILL}(?P<VALUE>{_CRM_NUMBER})", keyword=True),
    _Rule("cep_kw", "cep", "C", _WORD_LEFT,
          rf"EP{_NOT_LETTER}{_FILL}(?P<VALUE>[0-9]{{5}}-?[0-9]{{3}}|[0-9]{{2}}\.[0-9]{{3}}-?[0-9]{{3}}){_END_NUM}",
          keyword=True),
    # ---- NIE: X/Y/Z + 7 digits + letter
    _Rule("nie", "nie", "XYZ", _WORD_LEFT, r"[\- ]?[0-9]{7}[\- ]?[A-Z](?![0-9A-Za-z])", check=_check_nie),
)
_TRIGGER = re.compile(r"[0-9@]")


def _compile(rules: list[_Rule]) -> tuple[re.Pattern[str] | None, dict[str, _Rule]]:
    """One regex: ``0(?:left(?:rest(?P<g>)|...))|1(?:...)|...|R(?:...)|C(?:...)``, and its groups.

    Every top-level branch starts with a literal character, so the regex engine derives the set
    of possible first characters and skips everything else at C speed; inside a branch the first
    character is known, so no branch re-tests it. Each branch ends in (or, for keyword rules,
    wraps its value in) a named group of its own, so ``match.lastgroup`` names the rule.
    """
    groups: dict[str, _Rule] = {}
    by_first: dict[str, dict[str, list[str]]] = {}
    for rule in rules:
        for char in rule.first:
            name = f"{rule.group}_{len(groups)}"
            groups[name] = rule
            branch = rule.rest.replace("(?P<VALUE>", f"(?P<{name}>") if rule.keyword else f"{rule.rest}(?P<{name}>)"
            by_first.setdefault(char, {}).setdefault(rule.left, []).append(branch)
    if not by_first:
        return None, groups
    alternatives = []
    for char, by_left in by_first.items():
        inner = "|".join(f"{left}(?:{'|'.join(branches)})" for left, branches in by_left.items())
        alternatives.append(f"{re.escape(char)}(?:{inner})")
    return re.compile("|".join(alternatives), re.DOTALL), groups


def parse_locales(value: str) -> tuple[str, ...]:
    """``"br"``, ``"es"`` or ``"br,es"`` (a CLI option) as a tuple of locales, duplicates removed."""
    names = [part.strip().lower() for part in str(value).split(",")]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in LOCALES]
    if not names or unknown:
        what = f"unknown locale(s) {', '.join(map(repr, unknown))}" if unknown else "no locale given"
        raise ValueError(f"{what}: valid locales are {', '.join(LOCALES)} (comma-separated, e.g. 'br,es')")
    return tuple(dict.fromkeys(names))


class IdentifierScanner:
    """Finds personal identifiers of the given locales (and, optionally, only the given kinds)."""

    def __init__(self, locales: Iterable[str] = ("br",), kinds: Iterable[str] | None = None):
        if isinstance(locales, str):
            locales = parse_locales(locales)
        self.locales: tuple[str, ...] = parse_locales(",".join(locales)) if locales else parse_locales("")
        available = tuple(dict.fromkeys(kind for loc in self.locales for kind in LOCALES[loc]))
        if kinds is None:
            chosen = available
        else:
            chosen = tuple(dict.fromkeys(kinds))
            unknown = [kind for kind in chosen if kind not in available]
            if unknown or not chosen:
                what = f"unknown identifier kind(s) {', '.join(map(repr, unknown))}" if unknown else "no kind given"
                raise ValueError(
                    f"{what} for locale(s) {','.join(self.locales)}: valid kinds are {', '.join(available)}"
                )
        self.kinds: tuple[str, ...] = chosen
        self._regex, self._groups = _compile([rule for rule in _RULES if rule.kind in chosen])
        self._email = "email" in chosen

    def __repr__(self) -> str:
        return f"IdentifierScanner(locales={self.locales!r}, kinds={self.kinds!r})"

    def __reduce__(self) -> tuple[type[IdentifierScanner], tuple[tuple[str, ...], tuple[str, ...]]]:
        # Worker processes rebuild the scanner (and its regex) from its options.
        return (IdentifierScanner, (self.locales, self.kinds))

    def find(self, text: str) -> list[Finding]:
        """Identifiers in ``text``: non-overlapping, sorted by start; check digits validated."""
        if not isinstance(text, str):
            raise TypeError(f"IdentifierScanner.find expects str, not {type(text).__name__}")
        # Cheap pre-filter: every identifier has a digit, except e-mail addresses, which have '@'.
        if not _TRIGGER.search(text):
            return []
        findings: list[Finding] = []
        append = findings.append
        if self._regex is not None:
            groups = self._groups
            for match in self._regex.finditer(text):
                name: str = match.lastgroup  # type: ignore[assignment]
                rule = groups[name]
                start, end = match.span(name) if rule.keyword else match.span()
                if rule.check is not None and not rule.check(text[start:end]):
                    continue
                kind = rule.kind
                if kind == "rg" and "cpf" in self.kinds and cpf_is_valid(_digits(text[start:end])):
                    kind = "cpf"  # "RG: 12345678909" that is really a CPF
                append(Finding(kind, start, end))
        if self._email and "@" in text:
            emails = self._emails(text)
            if emails:
                findings = self._merge_emails(findings, emails)
        return findings

    @staticmethod
    def _merge_emails(findings: list[Finding], emails: list[Finding]) -> list[Finding]:
        """An address wins over a number inside it ("joao.12345678909@x.com"): overlaps become one email."""
        merged: list[Finding] = []
        for finding in sorted(findings + emails, key=lambda f: (f.start, f.kind != "email")):
            if merged and finding.start < merged[-1].end:
                previous = merged[-1]
                kind = "email" if "email" in (previous.kind, finding.kind) else previous.kind
                merged[-1] = Finding(kind, previous.start, max(previous.end, finding.end))
            else:
                merged.append(finding)
        return merged

    @staticmethod
    def _emails(text: str) -> list[Finding]:
        """E-mail addresses: the domain by regex from each "@", the local part read backwards."""
        found: list[Finding] = []
        limit = 0  # an address never starts inside the previous one (and scanning stays linear)
        local_chars = _EMAIL_LOCAL_CHARS
        for match in _EMAIL_AT.finditer(text):
            at = match.start()
            start = at
            while start > limit and (text[start - 1].isalnum() or text[start - 1] in local_chars):
                start -= 1
            while start < at and text[start] == ".":  # "...alta.joao@x.com" keeps its full stop
                start += 1
            if start == at:
                continue  # "@x.com" alone: no local part, no address
            found.append(Finding("email", start, match.end()))
            limit = match.end()
        return found

    def mask(self, text: str, findings: list[Finding] | None = None) -> str:
        """``text`` with every identifier value replaced by its placeholder ("[CPF]", "[TELEFONE]" ...)."""
        if findings is None:
            findings = self.find(text)
        if not findings:
            return text
        parts: list[str] = []
        position = 0
        for finding in sorted(findings, key=lambda f: f.start):
            if finding.start < position:  # overlaps the previous one (findings from a caller)
                position = max(position, finding.end)  # mask the union, never leave a tail visible
                continue
            parts.append(text[position : finding.start])
            parts.append(PLACEHOLDERS[finding.kind])
            position = finding.end
        parts.append(text[position:])
        return "".join(parts)

    def count(self, text: str) -> Counter[str]:
        """Number of identifiers in ``text`` by kind."""
        return Counter(finding.kind for finding in self.find(text))
