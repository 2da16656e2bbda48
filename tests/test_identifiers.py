"""Personal-identifier scanner: planted identifiers found with exact spans, false positives avoided.

Every note here is synthetic: the identifiers are generated with seeded ``random`` (check digits
computed by the small generators below) and planted into notes from ``medfactory.corpus.synthetic_notes``,
which contain none. Run this file directly for a throughput benchmark:
``.venv/bin/python tests/test_identifiers.py``.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import random
import re
import time
from collections import Counter

import pytest

from medfactory.corpus.identifiers import LOCALES, MODES, PLACEHOLDERS, Finding, IdentifierScanner, parse_locales
from medfactory.corpus.synthetic_notes import generate_notes

BR = IdentifierScanner(("br",))
ES = IdentifierScanner(("es",))
BOTH = IdentifierScanner(("br", "es"))

# --------------------------------------------------------------------------------------------
# Generators (independent of the module under test)

DDDS = [11, 12, 13, 19, 21, 22, 24, 27, 31, 35, 41, 47, 48, 51, 61, 62, 71, 79, 81, 85, 91, 92, 98]
DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def cpf_check_digits(nine: str) -> str:
    first = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1))) * 10 % 11 % 10
    ten = nine + str(first)
    second = sum(int(d) * w for d, w in zip(ten, range(11, 1, -1))) * 10 % 11 % 10
    return f"{first}{second}"


def make_cpf(rng: random.Random) -> str:
    """11 digits of a valid CPF (never all the same digit)."""
    while True:
        nine = "".join(rng.choice("0123456789") for _ in range(9))
        if len(set(nine)) > 1:
            return nine + cpf_check_digits(nine)


def format_cpf(digits: str) -> str:
    return f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}"


def make_cns(rng: random.Random) -> str:
    """15 digits of a valid CNS: first digit 1, 2, 7, 8 or 9, weighted (15..1) sum divisible by 11."""
    while True:
        head = rng.choice("12789") + "".join(rng.choice("0123456789") for _ in range(13))
        partial = sum(int(d) * w for d, w in zip(head, range(15, 1, -1)))
        last = -partial % 11
        if last < 10:
            return head + str(last)


def format_cns(digits: str) -> str:
    return f"{digits[:3]} {digits[3:7]} {digits[7:11]} {digits[11:]}"


def make_dni(rng: random.Random) -> str:
    number = rng.randrange(10_000_000, 100_000_000)
    return f"{number}{DNI_LETTERS[number % 23]}"


def make_nie(rng: random.Random) -> str:
    prefix = rng.choice("XYZ")
    digits = f"{rng.randrange(0, 10_000_000):07d}"
    return f"{prefix}{digits}{DNI_LETTERS[int('XYZ'.index(prefix) * 10_000_000 + int(digits)) % 23]}"


def wrong_letter(valid: str) -> str:
    return valid[:-1] + next(letter for letter in DNI_LETTERS if letter != valid[-1])


def digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def br_phone(rng: random.Random, style: int) -> str:
    ddd = rng.choice(DDDS)
    mobile = f"9{digits(rng, 4)}-{digits(rng, 4)}"
    landline = f"{rng.choice('2345')}{digits(rng, 3)}-{digits(rng, 4)}"
    return [
        f"({ddd}) {mobile}",
        f"({ddd}) {landline}",
        f"{ddd} {mobile}",
        f"+55 {ddd} {mobile}",
        f"+55 ({ddd}) {landline}",
        f"({ddd}){mobile}",
        f"0800 {digits(rng, 3)} {digits(rng, 4)}",
        f"+55{ddd}{mobile.replace('-', '')}",
        f"({ddd}) 9 {digits(rng, 4)}-{digits(rng, 4)}",
        f"0800-{digits(rng, 3)}-{digits(rng, 4)}",
    ][style % 10]


BR_PHONE_STYLES = 10


def es_phone(rng: random.Random, style: int) -> str:
    first = rng.choice("6789")
    nine = first + digits(rng, 8)
    return [
        f"+34 {nine[:3]} {nine[3:6]} {nine[6:]}",
        f"{nine[:3]} {nine[3:5]} {nine[5:7]} {nine[7:]}",
        f"{rng.choice('89')}{nine[1:3]} {nine[3:6]} {nine[6:]}",
        f"(+34) {nine}",
        f"{nine[:3]}-{nine[3:6]}-{nine[6:]}",
        f"+34{nine}",
        f"0034 {nine[:3]} {nine[3:6]} {nine[6:]}",
        f"{rng.choice('89')}{nine[1]} {nine[2:5]} {nine[5:7]} {nine[7:]}",
    ][style % 8]


ES_PHONE_STYLES = 8


def email(rng: random.Random) -> str:
    name = rng.choice(["joao.silva", "maria_souza", "ana.p.lima", "pedro123", "enf.plantao", "dr.costa+hc"])
    domain = rng.choice(["hospital.com.br", "gmail.com", "saude.sp.gov.br", "clinica-sao-lucas.med.br", "hc.fm.usp.br"])
    return f"{name}{rng.randrange(100)}@{domain}"


class NoteBuilder:
    """Builds a note piece by piece and records the exact span of every planted value."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.expected: list[Finding] = []

    def text(self, piece: str) -> NoteBuilder:
        self.parts.append(piece)
        self.length += len(piece)
        return self

    def value(self, kind: str, piece: str) -> NoteBuilder:
        self.expected.append(Finding(kind, self.length, self.length + len(piece)))
        return self.text(piece)

    def build(self) -> str:
        return "".join(self.parts)


def planted_br_note(rng: random.Random, base: str, index: int) -> tuple[str, list[Finding]]:
    """A demo note with an identification header and a contact footer full of BR identifiers."""
    cpf, cns = make_cpf(rng), make_cns(rng)
    note = NoteBuilder()
    note.text("Paciente [NOME], CPF ").value("cpf", format_cpf(cpf) if index % 2 else cpf)
    note.text(", CNS: ").value("cns", format_cns(cns) if index % 3 else cns)
    note.text(f", RG {['', 'nº ', ': '][index % 3]}").value(
        "rg", [f"{digits(rng, 2)}.{digits(rng, 3)}.{digits(rng, 3)}-{digits(rng, 1)}",
               f"{digits(rng, 8)}X", f"MG-{digits(rng, 2)}.{digits(rng, 3)}.{digits(rng, 3)}"][index % 3]
    )
    note.text(f", residente à rua [ENDERECO], 123, CEP{':' if index % 2 else ''} ").value(
        "cep", f"{digits(rng, 5)}-{digits(rng, 3)}" if index % 4 else digits(rng, 8)
    )
    note.text(".\n").text(base).text("\nContato do responsável: ").value("phone_br", br_phone(rng, index))
    note.text(" ou ").value("phone_br", br_phone(rng, index + 3))
    note.text(" / e-mail ").value("email", email(rng))
    note.text(f".\nMédico: Dr. [NOME] {['CRM-SP', 'CRM/RJ', 'CRM', 'CRM SP', 'CRM-MG nº'][index % 5]} ").value(
        "crm", [f"{digits(rng, 6)}", f"52.{digits(rng, 5)}-{digits(rng, 1)}", digits(rng, 5),
                digits(rng, 7), digits(rng, 4)][index % 5]
    )
    note.text(". Prontuário revisado em [DATA].")
    return note.build(), note.expected


def spans(text: str, findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in findings]


# --------------------------------------------------------------------------------------------
# Planted identifiers are found with the right kind and the exact span


def test_every_planted_br_identifier_is_found_with_its_exact_span() -> None:
    rng = random.Random(2024)
    kinds: Counter[str] = Counter()
    for index, base in enumerate(generate_notes(300, seed=5)):
        text, expected = planted_br_note(rng, base, index)
        found = BR.find(text)
        assert found == expected, (index, spans(text, found), spans(text, expected))
        assert BOTH.find(text) == expected
        kinds.update(f.kind for f in expected)
    assert set(kinds) == {"cpf", "cns", "rg", "crm", "phone_br", "email", "cep"}


@pytest.mark.parametrize("style", range(BR_PHONE_STYLES))
def test_every_br_phone_format(style: int) -> None:
    rng = random.Random(style)
    for _ in range(50):
        phone = br_phone(rng, style)
        text = f"Tel.: {phone}, falar com a filha."
        assert spans(text, BR.find(text)) == [("phone_br", phone)], phone


@pytest.mark.parametrize(
    "phone",
    ["(11) 98765-4321", "(21) 3456-7890", "11 98765-4321", "+55 11 98765-4321", "+55 (21) 3456-7890",
     "(11)98765-4321", "0800 123 4567", "98765-4321", "9 8765-4321", "(11) 987654321", "+55 11 3456 7890",
     "+5511987654321", "21-3456-7890", "11 9 8765-4321"],
)
def test_brief_br_phone_examples(phone: str) -> None:
    text = f"Contato: {phone}."
    assert spans(text, BR.find(text)) == [("phone_br", phone)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RG 12.345.678-9 SSP/SP", "12.345.678-9"),
        ("RG: 12345678X", "12345678X"),
        ("RG nº MG-12.345.678", "MG-12.345.678"),
        ("R.G. 1.234.567", "1.234.567"),
        ("RG n. 9876543210", "9876543210"),
        ("portador do RG:12.345.678-X", "12.345.678-X"),
    ],
)
def test_rg_needs_its_keyword_and_only_the_number_is_masked(text: str, expected: str) -> None:
    assert spans(text, BR.find(text)) == [("rg", expected)]
    assert BR.mask(text) == text.replace(expected, "[RG]")
    keyword_part = text[: text.index(expected)]
    assert BR.mask(text).startswith(keyword_part) and "G" in keyword_part  # the keyword stays


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CRM-SP 123456", "123456"),
        ("CRM/RJ 52.12345-6", "52.12345-6"),
        ("CRM 12345", "12345"),
        ("CRM SP 1234567", "1234567"),
        ("CRM-MG nº 54321", "54321"),
        ("CRM: 123456/SP", "123456"),
        ("Dra. [NOME] (CRMPR 98765)", "98765"),
    ],
)
def test_crm_number_is_masked_keyword_and_uf_kept(text: str, expected: str) -> None:
    assert spans(text, BR.find(text)) == [("crm", expected)]
    masked = BR.mask(text)
    assert masked == text.replace(expected, "[CRM]")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("CEP 01310-100", "01310-100"), ("CEP: 01310100", "01310100"), ("cep 04038-001, São Paulo", "04038-001"),
     ("CEP 01.310-100", "01.310-100"), ("Av. Paulista, 1578 - 01310-200", "01310-200")],
)
def test_cep_formats(text: str, expected: str) -> None:
    assert spans(text, BR.find(text)) == [("cep", expected)]


def test_brief_cns_example_and_formats() -> None:
    for text, value in [
        ("CNS 898 0012 3456 7891", "898 0012 3456 7891"),
        ("cartão SUS 898001234567891.", "898001234567891"),
    ]:
        assert spans(text, BR.find(text)) == [("cns", value)]


def test_rg_that_is_a_valid_cpf_is_reported_as_cpf() -> None:
    cpf = make_cpf(random.Random(1))
    text = f"RG: {cpf}"
    assert spans(text, BR.find(text)) == [("cpf", cpf)]


def test_email_wins_over_a_number_inside_it() -> None:
    cpf = make_cpf(random.Random(3))
    text = f"escrever para joao.{cpf}@hospital.com.br hoje"
    assert spans(text, BR.find(text)) == [("email", f"joao.{cpf}@hospital.com.br")]
    assert BR.mask(text) == "escrever para [EMAIL] hoje"


def test_email_edges() -> None:
    text = "Alta.maria.souza@gmail.com; cópia a ENF_plantao@hc.fm.usp.br. Twitter @hospital não é e-mail."
    assert spans(text, BR.find(text)) == [
        ("email", "Alta.maria.souza@gmail.com"),
        ("email", "ENF_plantao@hc.fm.usp.br"),
    ]
    assert BR.find("responder a @equipe.") == []


# --------------------------------------------------------------------------------------------
# Invalid check digits are not identifiers


def test_cpf_with_wrong_check_digits_is_not_flagged() -> None:
    rng = random.Random(11)
    for _ in range(300):
        cpf = make_cpf(rng)
        for bad in (cpf[:9] + str((int(cpf[9]) + 1) % 10) + cpf[10], cpf[:10] + str((int(cpf[10]) + 1) % 10)):
            for text in (f"CPF {bad}", f"CPF {format_cpf(bad)}."):
                assert BR.find(text) == [], text
                assert BOTH.find(text) == []


def test_all_same_digit_cpfs_are_not_flagged() -> None:
    for digit in "0123456789":
        same = digit * 11
        assert BR.find(f"CPF {format_cpf(same)} ou {same}") == []


def test_cns_failing_its_check_is_not_flagged() -> None:
    rng = random.Random(12)
    for _ in range(300):
        cns = make_cns(rng)
        bad = cns[:14] + str((int(cns[14]) + 1) % 10)
        assert BR.find(f"CNS {bad}") == []
        assert BR.find(f"CNS {format_cns(bad)}") == []
    # a weighted sum divisible by 11 but a first digit other than 1, 2, 7, 8, 9
    for first in "03456":
        head = first + "1" * 13
        last = -sum(int(d) * w for d, w in zip(head, range(15, 1, -1))) % 11
        if last < 10:
            assert BR.find(f"CNS {head}{last}") == []
            assert BR.find(f"CNS {format_cns(head + str(last))}") == []


# --------------------------------------------------------------------------------------------
# False positives

CLINICAL_NOTE = """EVOLUÇÃO CLÍNICA - UTI ADULTO - 12/03/2024 às 14:30
Paciente [NOME], 67 anos, <PACIENTE> internado há 5 dias (D5), leito 12, registro ***, código XXXX.
PA 120x80 mmHg, FC 88 bpm, FR 18 irpm, SpO2 96% (FiO2 0,21), Tax 37,8 °C, PAM 93, glasgow 15.
Hb 12,3 g/dL, Ht 36,9%, leucócitos 12.340/mm³ (bastões 3%), plaquetas 250.000/mm³, glicemia 145 mg/dL.
Creatinina 1.2 mg/dL (basal 0,9), ureia 45, Na 138, K 4,5 mEq/L, PCR 3.456 mg/L, lactato 1,8, pH 7,35.
pCO2 40 mmHg, HCO3 24, BE -1,2, INR 1,12, TTPA 32,5 s, troponina 0,034 ng/mL, BNP 1.250 pg/mL.
Prescrição: dipirona 500 mg EV 6/6h, ceftriaxona 1 g 12/12h, enoxaparina 40 mg SC 1x/dia, insulina NPH 10-0-8 UI.
Noradrenalina 0,1 mcg/kg/min; SF 0,9% 1000 mL em 24h; balanço hídrico +1.350 mL; diurese 1.800 mL/24h.
Peso 78,5 kg, altura 1,72 m, IMC 26,5 kg/m², CIAP 2, CID-10 I21.0, J18.9; escore SOFA 4, APACHE II 18.
Alergia: nega. Cirurgia prévia em 2019-2021; internações em 03/2022 e 11/2023; seguimento 2024-2025.
Exames de 10/03/2024 08:15 a 12/03/2024 06:00. Leucograma 8.500-11.000. Faixa etária 60-69.
Retorno em 7 dias. Dose de ataque 300 mg, depois 75 mg/dia. Gasometria às 06:30. Hb glicada 7,8%.
"""

SPANISH_NOTE = """EVOLUCIÓN - 12/03/2024 a las 14:30. Paciente [NOMBRE], 54 años.
TA 120/80 mmHg, FC 88 lpm, FR 16 rpm, SatO2 97%, Tª 36,8 °C, Hb 12,3 g/dL, glucemia 145 mg/dL.
Creatinina 1,2 mg/dL, PCR 3.456 mg/L, plaquetas 250.000/mm³, leucocitos 12.340/mm³.
Tratamiento: paracetamol 1 g/8h, enoxaparina 40 mg/24h, furosemida 20 mg. Peso 71,5 kg.
"""


@pytest.mark.parametrize("scanner", [BR, ES, BOTH], ids=["br", "es", "br+es"])
def test_realistic_note_full_of_numbers_has_no_findings(scanner: IdentifierScanner) -> None:
    assert scanner.find(CLINICAL_NOTE) == []
    assert scanner.find(SPANISH_NOTE) == []
    assert scanner.mask(CLINICAL_NOTE) == CLINICAL_NOTE


def test_the_brief_false_positive_sentence() -> None:
    text = "PA 120x80 mmHg, FC 88 bpm, Hb 12,3 g/dL, glicemia 145 mg/dL, 12/03/2024 às 14:30, creatinina 1.2"
    assert BOTH.find(text) == []


def test_demo_corpus_has_no_findings() -> None:
    for note in generate_notes(3000, seed=99):
        assert BOTH.find(note) == []


@pytest.mark.parametrize("text", ["120x80", "3.456", "12/03/2024", "500 mg", "14:30", "2019-2023", "1000-2000",
                                  "12.345.678-9", "11987654321", "612345678", "1.234.567,89", "10000-200000"])
def test_not_phones(text: str) -> None:
    assert BOTH.find(f"valor {text} observado") == []


def test_cep_and_cpf_are_not_phones() -> None:
    cpf = format_cpf(make_cpf(random.Random(5)))
    text = f"CEP 01310-100, CPF {cpf}"
    assert [f.kind for f in BR.find(text)] == ["cep", "cpf"]


def test_placeholders_are_never_flagged() -> None:
    existing = " [NOME] [DATA] <PACIENTE> *** XXXX [CIDADE] [ENDERECO] RG [RG] CRM-SP [CRM] CEP [CEP]"
    text = " ".join(PLACEHOLDERS.values()) + existing
    assert BOTH.find(text) == []


# --------------------------------------------------------------------------------------------
# mask()


def test_mask_replaces_exactly_the_values() -> None:
    rng = random.Random(77)
    for index, base in enumerate(generate_notes(100, seed=8)):
        text, expected = planted_br_note(rng, base, index)
        masked = BR.mask(text)
        rebuilt, position = [], 0
        for finding in expected:
            rebuilt += [text[position : finding.start], PLACEHOLDERS[finding.kind]]
            position = finding.end
        rebuilt.append(text[position:])
        assert masked == "".join(rebuilt)
        assert base in masked  # the clinical text itself is untouched
        for token in ("[NOME]", "[DATA]", "[ENDERECO]"):
            assert masked.count(token) == text.count(token)
        # idempotent: scanning the masked text finds nothing, masking again changes nothing
        assert BOTH.find(masked) == []
        assert BR.mask(masked) == masked


def test_mask_with_given_findings_and_count() -> None:
    cpf = format_cpf(make_cpf(random.Random(9)))
    text = f"CPF {cpf}, tel (11) 98765-4321 e (21) 3456-7890."
    findings = BR.find(text)
    assert BR.mask(text, findings) == "CPF [CPF], tel [TELEFONE] e [TELEFONE]."
    assert BR.mask(text, []) == text
    assert BR.count(text) == Counter({"phone_br": 2, "cpf": 1})
    # overlapping findings from a caller: the union is masked, nothing of the value stays visible
    overlapping = [Finding("cpf", 4, 12), Finding("cpf", 8, 4 + len(cpf))]
    assert BR.mask(text, overlapping) == "CPF [CPF], tel (11) 98765-4321 e (21) 3456-7890."


def test_findings_are_sorted_and_non_overlapping() -> None:
    rng = random.Random(4)
    text = " ".join(planted_br_note(rng, base, i)[0] for i, base in enumerate(generate_notes(40, seed=1)))
    found = BOTH.find(text)
    assert found == sorted(found, key=lambda f: f.start)
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))


# --------------------------------------------------------------------------------------------
# Spanish


def test_spanish_dni_nie_and_phones() -> None:
    rng = random.Random(34)
    for index in range(200):
        dni, nie = make_dni(rng), make_nie(rng)
        dni_text = [dni, f"{dni[:8]}-{dni[8]}", f"{dni[:2]}.{dni[2:5]}.{dni[5:8]}-{dni[8]}"][index % 3]
        phone = es_phone(rng, index)
        note = NoteBuilder()
        note.text("Paciente [NOMBRE], DNI ").value("dni", dni_text).text(", NIE del acompañante ").value("nie", nie)
        note.text(". Teléfono de contacto: ").value("phone_es", phone).text("; correo ").value("email", email(rng))
        note.text(". TA 130/85 mmHg, FC 72 lpm, 12/03/2024.")
        text = note.build()
        assert ES.find(text) == note.expected, spans(text, ES.find(text))
        assert BOTH.find(text) == note.expected
        assert ES.mask(text).count("[TELÉFONO]") == 1


@pytest.mark.parametrize("style", range(ES_PHONE_STYLES))
def test_every_es_phone_format(style: int) -> None:
    rng = random.Random(100 + style)
    for _ in range(50):
        phone = es_phone(rng, style)
        text = f"Tel. {phone}."
        assert spans(text, ES.find(text)) == [("phone_es", phone)], phone


def test_wrong_dni_or_nie_letter_is_not_flagged() -> None:
    rng = random.Random(23)
    for _ in range(300):
        assert ES.find(f"DNI {wrong_letter(make_dni(rng))}") == []
        assert ES.find(f"NIE {wrong_letter(make_nie(rng))}") == []


def test_brief_spanish_examples() -> None:
    text = "DNI 12345678Z, NIE X1234567L, tel. +34 612 345 678 o 912 345 678"
    assert spans(text, ES.find(text)) == [
        ("dni", "12345678Z"), ("nie", "X1234567L"), ("phone_es", "+34 612 345 678"), ("phone_es", "912 345 678")
    ]


def test_locales_do_not_cross() -> None:
    rng = random.Random(55)
    for _ in range(100):
        dni, nie = make_dni(rng), make_nie(rng)
        assert BR.find(f"DNI {dni}, NIE {nie}") == []
        cpf, cns = make_cpf(rng), make_cns(rng)
        assert ES.find(f"CPF {format_cpf(cpf)} / {cpf}, CNS {format_cns(cns)}, RG 12.345.678-9, CRM-SP 123456") == []
    assert "cpf" not in ES.kinds and "dni" not in BR.kinds


# --------------------------------------------------------------------------------------------
# Property-style: many random valid identifiers, all found


def test_many_random_valid_identifiers_are_all_found() -> None:
    rng = random.Random(20240312)
    for _ in range(400):
        cpf, cns, dni = make_cpf(rng), make_cns(rng), make_dni(rng)
        for kind, value in (("cpf", cpf), ("cpf", format_cpf(cpf)), ("cns", cns), ("cns", format_cns(cns))):
            text = f"Identificação: {value}; PA 120x80."
            assert spans(text, BR.find(text)) == [(kind, value)], value
        text = f"Documento {dni}."
        assert spans(text, ES.find(text)) == [("dni", dni)]
        assert spans(text, BOTH.find(text)) == [("dni", dni)]


# --------------------------------------------------------------------------------------------
# API, options and confidentiality


def test_parse_locales() -> None:
    assert parse_locales("br") == ("br",)
    assert parse_locales("es") == ("es",)
    assert parse_locales("br,es") == ("br", "es")
    assert parse_locales(" BR , es,br ") == ("br", "es")
    for bad in ("pt", "br,pt", "", ","):
        with pytest.raises(ValueError, match="valid locales are br, es"):
            parse_locales(bad)
    with pytest.raises(ValueError, match="unknown locale.*'pt'"):
        parse_locales("br,pt")


def test_constants_and_constructor_options() -> None:
    assert LOCALES == {
        "br": ("cpf", "cns", "rg", "crm", "phone_br", "email", "cep"),
        "es": ("dni", "nie", "phone_es", "email"),
    }
    assert MODES == ("report", "mask", "refuse")
    assert set(PLACEHOLDERS) == {kind for kinds in LOCALES.values() for kind in kinds}
    assert IdentifierScanner().kinds == LOCALES["br"]
    assert IdentifierScanner("br,es").kinds == BOTH.kinds
    only_cpf = IdentifierScanner(("br",), kinds=["cpf"])
    cpf = format_cpf(make_cpf(random.Random(2)))
    assert [f.kind for f in only_cpf.find(f"CPF {cpf}, tel (11) 98765-4321, a@b.com")] == ["cpf"]
    only_email = IdentifierScanner(("br",), kinds=["email"])
    assert [f.kind for f in only_email.find(f"CPF {cpf}, a@b.com")] == ["email"]
    with pytest.raises(ValueError, match="unknown identifier kind.*'dni'.*valid kinds are cpf"):
        IdentifierScanner(("br",), kinds=["dni"])
    with pytest.raises(ValueError, match="valid locales"):
        IdentifierScanner(("fr",))


def test_no_value_leaks_in_reprs_logs_output_or_errors(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    cpf = make_cpf(random.Random(8))
    text = f"CPF {format_cpf(cpf)} tel (11) 98765-4321 joao@x.com.br"
    with caplog.at_level(logging.DEBUG):
        findings = BOTH.find(text)
        BOTH.mask(text)
        BOTH.count(text)
    assert caplog.records == []
    assert capsys.readouterr() == ("", "")
    shown = repr(findings) + str(findings) + repr(BOTH)
    for secret in (cpf, cpf[:3], "98765", "joao"):
        assert secret not in shown
    assert re.fullmatch(r"Finding\(kind='\w+', start=\d+, end=\d+\)", repr(findings[0]))
    with pytest.raises(TypeError) as error:
        BOTH.find(text.encode())  # type: ignore[arg-type]
    assert cpf[:3] not in str(error.value)
    with pytest.raises(AttributeError):
        findings[0].kind = "x"  # type: ignore[misc]


def test_scanner_pickles_for_worker_processes() -> None:
    scanner = IdentifierScanner(("br", "es"), kinds=["cpf", "dni", "email"])
    clone = pickle.loads(pickle.dumps(scanner))
    text = f"CPF {format_cpf(make_cpf(random.Random(6)))}, DNI 12345678Z, a@b.com, tel (11) 98765-4321"
    assert clone.kinds == scanner.kinds and clone.find(text) == scanner.find(text)
    assert [f.kind for f in clone.find(text)] == ["cpf", "dni", "email"]


def test_text_without_digits_or_at_is_skipped() -> None:
    assert BOTH.find("Paciente [NOME] evolui bem, sem queixas. RG e CRM ilegíveis.") == []
    assert BOTH.find("") == []


# --------------------------------------------------------------------------------------------
# Benchmark: python tests/test_identifiers.py


def _benchmark(megabytes: float = 50.0) -> None:
    rng = random.Random(1)
    notes = []
    for index, note in enumerate(generate_notes(20_000, seed=3)):
        if index % 10 == 0:  # one note in ten carries identifiers
            note, _ = planted_br_note(rng, note, index)
        notes.append(note)
    size = sum(len(note.encode("utf-8")) for note in notes)
    rounds = max(1, round(megabytes * 1e6 / size))
    for label, scanner in (("br", BR), ("es", ES), ("br+es", BOTH)):
        found = 0
        started = time.perf_counter()
        for _ in range(rounds):
            for note in notes:
                found += len(scanner.find(note))
        elapsed = time.perf_counter() - started
        print(f"{label:6s} {rounds * size / 1e6:6.1f} MB, {rounds * len(notes):,} notes "
              f"(avg {size / len(notes):.0f} B) in {elapsed:5.2f} s: {rounds * size / 1e6 / elapsed:6.1f} MB/s, "
              f"{found:,} findings")


if __name__ == "__main__":
    _benchmark()
