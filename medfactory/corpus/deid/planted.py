"""A pt-BR evaluation set for de-identification: real Portuguese clinical text with planted, annotated PHI.

No public pt-BR PHI corpus exists, so this builds one: each clinical case of the Lopes et al. 2019
corpus (real Portuguese neurology cases, ``../shared/data/lopes2019``) gets header, identity,
address, admission, family, follow-up and signature lines in the styles Brazilian notes use
("Paciente Fulano, 54 anos, prontuário 1234567", "Dr. Fulano (CRM 12345/SP)", CPF, CNS, phones,
dates as dd/mm/aaaa and "3 de março de 2021", hospitals, cities), with surrogate values from
Faker's pt_BR locale and a seed. Every planted value is a gold span. Ages ("de 66 anos") and
dates ("Agosto de 2016", "em 2012") already in the cases are annotated by pattern, so a tagger
that finds them is not counted wrong.

The last phrasing of each group is kept for the test part only, so the test measures phrasings
the train part never shows. Written as BRAT folders ``OUTPUT/train`` and ``OUTPUT/test`` with
``OUTPUT/planted.json`` (counts only):

    python -m medfactory.corpus.deid.planted --source ../shared/data/lopes2019 --output data/deid_planted_pt
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medfactory.base.atomic import write_json_atomic
from medfactory.corpus.deid import gazetteers
from medfactory.corpus.deid.brat import write_brat
from medfactory.corpus.deid.spans import PhiSpan
from medfactory.corpus.text import decode

RAW_FOLDERS = ("Texts SPN 1 Raw", "Texts SPN 2 Raw")  # plugins/lopes2019.py's raw layout
SOURCE = "planted"
PATTERN_SOURCE = "pattern"
DEFAULT_SEED = 15
DEFAULT_TEST_FRACTION = 0.3
MONTHS = ("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro", "novembro", "dezembro")

# Each group: phrasings with {SLOT}s; the last phrasing appears in the test part only.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "header": (
        "Paciente {PATIENT}, {AGE}, prontuário {PRONTUARIO}.",
        "Nome: {PATIENT}\nIdade: {AGE}\nSexo: {SEX}\nProntuário: {PRONTUARIO}",
        "Pac. {PATIENT}, {AGE}, sexo {SEX}, registro nº {PRONTUARIO}.",
        "{PATIENT}, {AGE}, natural de {CITY}, prontuário nº {PRONTUARIO}.",
    ),
    "identity": ("CPF: {CPF}   CNS: {CNS}", "RG {RG} - CPF {CPF}", "Cartão SUS {CNS}; RG {RG}.", "Documentos: CPF {CPF}, cartão nacional de saúde {CNS}."),
    "address": (
        "Endereço: {STREET}, {CITY} - {UF}, CEP {CEP}. Telefone: {PHONE}",
        "Reside em {CITY}/{UF}. Contato: {PHONE} / {EMAIL}",
        "Residente na {STREET}, {CITY}. Tel. {PHONE}",
        "Mora em {CITY} ({UF}), {STREET}; celular {PHONE}, e-mail {EMAIL}.",
    ),
    "admission": (
        "Internado no {HOSPITAL} em {DATE}.",
        "Admitida em {DATE_TEXT} no {HOSPITAL}, em {CITY}.",
        "Data de internação: {DATE}. Procedência: {HOSPITAL}.",
        "Encaminhado pelo {HOSPITAL} ({CITY}) no dia {DATE}.",
    ),
    "family": (
        "Acompanhado pela mãe, {RELATIVE}.",
        "Informações fornecidas pela esposa, {RELATIVE}, telefone {PHONE}.",
        "Responsável: {RELATIVE} (filho).",
        "Veio com o irmão {RELATIVE}, que relata a história.",
    ),
    "followup": (
        "Retorno agendado para {DATE_TEXT}.", "Alta em {DATE}, com seguimento no {HOSPITAL}.", "Reavaliação em {DATE} no ambulatório.",
        "Próxima consulta: {DATE_TEXT}, no {HOSPITAL}.",
    ),
    "signature": ("Dr. {DOCTOR} (CRM {CRM})", "Dra. {DOCTOR} - CRM {CRM}", "Enf. {DOCTOR}, COREN-{UF} {COREN}", "Médico responsável: {DOCTOR}, CRM {CRM}."),
}  # fmt: skip
_SLOT_RE = re.compile(r"\{([A-Z_]+)\}")
# Which groups sit where: before the case, after its first paragraph, at its end; each with a probability.
_HEAD_GROUPS = (("header", 1.0), ("identity", 0.7), ("address", 0.6))
_MIDDLE_GROUPS = (("admission", 0.9), ("family", 0.5))
_TAIL_GROUPS = (("followup", 0.7), ("signature", 0.9))

# PHI the Lopes cases already hold: a patient's age after de/aos/com, and written dates.
_AGE_RE = re.compile(r"\b(?:[Dd]e|[Aa]os|[Cc]om) (\d{1,3} (?:anos|meses))\b(?! de (?:evolução|duração|história|seguimento))")
_MONTH_NAMES = "|".join(month.capitalize() + "|" + month for month in MONTHS)
_DATE_RE = re.compile(
    rf"\b((?:\d{{1,2}} de )?(?:{_MONTH_NAMES}) de (?:19|20)\d{{2}}|\d{{1,2}}/\d{{1,2}}/\d{{2,4}})\b|\b(?:[Ee]m|[Dd]esde|[Aa]té) ((?:19|20)\d{{2}})\b"
)


@dataclass
class PlantedDocument:
    """One document: its text, its gold spans, and for each span the value planted ('' for a pattern span)."""

    name: str
    text: str = ""
    spans: list[PhiSpan] = field(default_factory=list)
    planted: list[str] = field(default_factory=list)

    def add(self, piece: str) -> None:
        self.text += piece

    def add_phi(self, value: str, category: str) -> None:
        self.spans.append(PhiSpan(len(self.text), len(self.text) + len(value), category, SOURCE))
        self.planted.append(value)
        self.text += value


def _cns(rng: random.Random) -> str:
    """A provisional CNS (starts 7, 8 or 9) whose weighted digit sum is divisible by 11, written 3-4-4-4."""
    while True:
        digits = [rng.choice((7, 8, 9))] + [rng.randrange(10) for _ in range(13)]
        remainder = sum(digit * (15 - index) for index, digit in enumerate(digits)) % 11
        last = (11 - remainder) % 11
        if last < 10:
            number = "".join(map(str, [*digits, last]))
            return f"{number[:3]} {number[3:7]} {number[7:11]} {number[11:]}" if rng.random() < 0.6 else number


def _slot_values(fake, rng: random.Random, place: tuple[str, str]) -> dict[str, tuple[str, Callable[[], str]]]:  # fake: a Faker
    """For each slot: its category and a generator of a fresh value (the city and state stay one per document)."""

    def person() -> str:
        names = [fake.first_name(), fake.last_name()] + ([fake.last_name()] if rng.random() < 0.5 else [])
        return " ".join(names)

    def date_numeric() -> str:
        return f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2005, 2024)}"

    def date_text() -> str:
        return f"{rng.randint(1, 28)} de {rng.choice(MONTHS)} de {rng.randint(2005, 2024)}"

    def hospital() -> str:
        forms = ("Hospital {s}", "Hospital das Clínicas de {c}", "Santa Casa de {c}", "Hospital Universitário {s}", "Hospital São {f}")
        return rng.choice(forms).format(s=fake.last_name(), c=place[0], f=fake.first_name_male())

    return {
        "PATIENT": ("NOMBRE_SUJETO_ASISTENCIA", person), "DOCTOR": ("NOMBRE_PERSONAL_SANITARIO", person),
        "RELATIVE": ("FAMILIARES_SUJETO_ASISTENCIA", person), "AGE": ("EDAD_SUJETO_ASISTENCIA", lambda: f"{rng.randint(18, 95)} anos"),
        "SEX": ("SEXO_SUJETO_ASISTENCIA", lambda: rng.choice(("masculino", "feminino"))),
        "PRONTUARIO": ("PRONTUARIO", lambda: str(rng.randint(10_000, 99_999_999))), "CITY": ("TERRITORIO", lambda: place[0]),
        "UF": ("TERRITORIO", lambda: place[1]), "CPF": ("CPF", lambda: fake.cpf() if rng.random() < 0.8 else re.sub(r"\D", "", fake.cpf())),
        "CNS": ("CNS", lambda: _cns(rng)),
        "RG": ("RG", lambda: f"{rng.randint(1, 99)}.{rng.randrange(1000):03d}.{rng.randrange(1000):03d}-{rng.randrange(10)}"),
        "STREET": ("CALLE", lambda: f"{fake.street_name()}, {fake.building_number()}"), "CEP": ("CEP", lambda: fake.postcode()),
        "PHONE": ("NUMERO_TELEFONO", lambda: fake.cellphone_number() if rng.random() < 0.5 else fake.phone_number()),
        "EMAIL": ("CORREO_ELECTRONICO", fake.email), "HOSPITAL": ("HOSPITAL", hospital), "DATE": ("FECHAS", date_numeric),
        "DATE_TEXT": ("FECHAS", date_text), "CRM": ("CRM_COREN", lambda: f"{rng.randint(1000, 199_999)}{rng.choice('/-')}{place[1]}"),
        "COREN": ("CRM_COREN", lambda: str(rng.randint(100_000, 999_999))),
    }  # fmt: skip


def _plant_line(document: PlantedDocument, template: str, slots: dict[str, tuple[str, Callable[[], str]]]) -> None:
    """Append ``template`` with each slot filled and annotated, then a line break."""
    position = 0
    for match in _SLOT_RE.finditer(template):
        document.add(template[position : match.start()])
        category, generate = slots[match.group(1)]
        document.add_phi(generate(), category)
        position = match.end()
    document.add(template[position:] + "\n")


def _paragraphs(raw: str) -> list[str]:
    """The case's paragraphs: PDF line wraps joined (a line not ending a sentence continues on the next)."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"(?<![.:;!?])\n(?!\n)", " ", text)
    return [re.sub(r"[ \t]+", " ", paragraph).strip() for paragraph in re.split(r"\n+", text) if paragraph.strip()]


def _add_case_text(document: PlantedDocument, paragraph: str) -> None:
    """Append a paragraph of the real case, annotating the ages and dates it already holds (source ``pattern``)."""
    offset = len(document.text)
    found = [(match.start(1), match.end(1), "EDAD_SUJETO_ASISTENCIA") for match in _AGE_RE.finditer(paragraph)]
    for match in _DATE_RE.finditer(paragraph):
        group = 1 if match.group(1) else 2
        found.append((match.start(group), match.end(group), "FECHAS"))
    for start, end, category in sorted(found):
        if not any(span.start < offset + end and offset + start < span.end for span in document.spans):
            document.spans.append(PhiSpan(offset + start, offset + end, category, PATTERN_SOURCE))
            document.planted.append("")
    document.add(paragraph + "\n")


def plant_document(name: str, raw: str, rng: random.Random, fake, held_out: bool) -> PlantedDocument:  # fake: a Faker
    """One case with planted PHI; ``held_out`` draws from every phrasing, else from all but each group's last."""
    slots = _slot_values(fake, rng, rng.choice(gazetteers.brazilian_places()))
    document = PlantedDocument(name)

    def plant(groups: tuple[tuple[str, float], ...]) -> None:
        for group, probability in groups:
            if rng.random() < probability:
                phrasings = TEMPLATES[group] if held_out else TEMPLATES[group][:-1]
                _plant_line(document, rng.choice(phrasings), slots)

    paragraphs = _paragraphs(raw)
    plant(_HEAD_GROUPS)
    for index, paragraph in enumerate(paragraphs):
        _add_case_text(document, paragraph)
        if index == 0:
            plant(_MIDDLE_GROUPS)
    plant(_TAIL_GROUPS)
    order = sorted(range(len(document.spans)), key=lambda index: document.spans[index])
    document.spans = [document.spans[index] for index in order]
    document.planted = [document.planted[index] for index in order]
    return document


_PLACEHOLDER_SLOTS = {"[NOME]": "PATIENT", "[CIDADE]": "CITY", "[DATA]": "DATE"}
_PLACEHOLDER_RE = re.compile(r"\[(?:NOME|CIDADE|DATA)\]|\b\d{1,3} anos\b|(?<=sexo )(?:masculino|feminino)\b")


def plant_synthetic_note(name: str, note: str, rng: random.Random, fake) -> PlantedDocument:  # fake: a Faker
    """A synthetic note (:mod:`medfactory.corpus.synthetic_notes`) with its placeholders filled, plus planted lines.

    No real text at all: what a pt-BR model trained on it holds can ship with the package.
    """
    slots = _slot_values(fake, rng, rng.choice(gazetteers.brazilian_places()))
    document = PlantedDocument(name)
    for group, probability in _HEAD_GROUPS:  # a header line too: the note's own "Paciente [NOME]" is one phrasing only
        if rng.random() < probability:
            _plant_line(document, rng.choice(TEMPLATES[group][:-1]), slots)
    position = 0
    for match in _PLACEHOLDER_RE.finditer(note):
        document.add(note[position : match.start()])
        value = match.group()
        if value in _PLACEHOLDER_SLOTS:
            category, generate = slots[_PLACEHOLDER_SLOTS[value]]
            document.add_phi(generate(), category)
        else:
            document.add_phi(value, "EDAD_SUJETO_ASISTENCIA" if value.endswith("anos") else "SEXO_SUJETO_ASISTENCIA")
        position = match.end()
    document.add(note[position:] + "\n")
    for group, probability in (*_MIDDLE_GROUPS, *_TAIL_GROUPS):
        if rng.random() < probability:
            _plant_line(document, rng.choice(TEMPLATES[group][:-1]), slots)
    return document


def write_synthetic_training_set(output: Path, seed: int = DEFAULT_SEED, documents: int = 600) -> dict:
    """Write ``output/train`` (BRAT): synthetic pt-BR notes with planted PHI, train phrasings only; return counts."""
    from faker import Faker

    from medfactory.corpus.synthetic_notes import generate_notes

    rng = random.Random(seed)
    fake = Faker("pt_BR")
    fake.seed_instance(seed)
    categories: Counter[str] = Counter()
    for number, note in enumerate(generate_notes(documents, seed=seed)):
        document = plant_synthetic_note(f"synthetic_{number:05d}", note, rng, fake)
        write_brat(Path(output) / "train" / document.name, document.text, document.spans)
        categories.update(span.category for span in document.spans)
    facts = {"source": "medfactory.corpus.synthetic_notes", "seed": seed, "parts": {"train": {"documents": documents, "spans": sum(categories.values())}}}
    facts["parts"]["train"]["by_category"] = dict(categories)
    write_json_atomic(Path(output) / "planted.json", facts)
    return facts


def source_cases(source: Path) -> list[tuple[str, str]]:
    """(document name, raw text) of every case in the Lopes raw folders, in name order."""
    cases = []
    for number, folder in enumerate(RAW_FOLDERS, start=1):
        for path in sorted((Path(source) / folder).glob("*.txt")):
            cases.append((f"lopes_spn{number}_{path.stem}", decode(path.read_bytes())[0]))
    if not cases:
        raise FileNotFoundError(f"{source}: no .txt under {' or '.join(RAW_FOLDERS)}. Fix: pass the Lopes 2019 folder (see docs/corpora.md).")
    return cases


def planted_documents(
    source: Path, seed: int = DEFAULT_SEED, documents: int | None = None, test_fraction: float = DEFAULT_TEST_FRACTION
) -> dict[str, list[PlantedDocument]]:
    """{"train": [...], "test": [...]}: ``documents`` cases (all by default) drawn with ``seed``, planted."""
    from faker import Faker

    cases = source_cases(source)
    rng = random.Random(seed)
    rng.shuffle(cases)
    cases = cases[:documents] if documents else cases
    fake = Faker("pt_BR")
    fake.seed_instance(seed)
    test_count = max(1, round(len(cases) * test_fraction))
    parts: dict[str, list[PlantedDocument]] = {"train": [], "test": []}
    for index, (name, raw) in enumerate(cases):
        part = "test" if index < test_count else "train"
        parts[part].append(plant_document(name, raw, rng, fake, held_out=part == "test"))
    return parts


def write_planted_set(source: Path, output: Path, seed: int = DEFAULT_SEED, documents: int | None = None, test_fraction: float = DEFAULT_TEST_FRACTION) -> dict:
    """Write ``output/train`` and ``output/test`` as BRAT folders and ``output/planted.json`` (counts); return those counts."""
    output = Path(output)
    parts = planted_documents(source, seed, documents, test_fraction)
    facts: dict = {"source": "Lopes et al. 2019 raw cases", "seed": seed, "test_fraction": test_fraction, "parts": {}}
    for part, part_documents in parts.items():
        categories: Counter[str] = Counter()
        sources: Counter[str] = Counter()
        for document in part_documents:
            write_brat(output / part / document.name, document.text, document.spans)
            categories.update(span.category for span in document.spans)
            sources.update(span.source for span in document.spans)
        counts = {"documents": len(part_documents), "spans": sum(categories.values()), "by_source": dict(sources)}
        facts["parts"][part] = {**counts, "by_category": dict(categories)}
    write_json_atomic(output / "planted.json", facts)
    return facts
