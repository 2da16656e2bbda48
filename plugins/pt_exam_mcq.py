"""Brazilian "Teste de Progresso" medical exam questions (pt-BR) as an MCQ evaluation set.

Writes ``data/pt_exam_mcq/test.jsonl`` and its manifest (evaluation only, nothing registered). How
the options are told apart from the stem, what is dropped and the image rule are in docs/mcqa.md
("Source formats").
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.atomic import sha256_file
from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.manifest import count_records, manifest_header, output_facts
from medfactory.base.publish import publish_datasets
from medfactory.corpus.mcq import LETTERS, McqItem, write_items
from medfactory.plugins import CorpusPlugin, ReplaceOption

CORPUS_NAME = "pt_exam_mcq"
DATASET_DIR = Path("data") / CORPUS_NAME
TEST_FILE = "test.jsonl"
COLUMNS = ("Número", "Texto", "Bloco", "Resposta Correta", "Arquivo Prova")
OPTION_COUNTS = (5, 4)  # tried in this order: an E chain wins when there is one

# "(A)", "( b )": not right after a letter or digit ("etambutol(E)", "a(s)").
MARKER = re.compile(r"(?<![^\W_])\(\s*([A-Ea-e])\s*\)")
# Page-break notes of the PDF export, inside a question's text.
PAGE_BREAK = re.compile(r"\(CONTINUA\)\s*\(CONTINUAÇÃO DA QUESTÃO \d+\)", re.IGNORECASE)
YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?!\d)")

_VISUAL = (
    r"(?:figuras?|image(?:m|ns)|fotos?|fotografias?|fotomicrografias?|gr[aá]ficos?|radiografias?|radiogramas?|"
    r"tomografias?|resson[aâ]ncias?|ultrassonografias?|ecografias?|eletrocardiogramas?|ECG|tra[çc]ados?|"
    r"cardiotocografias?|tromboelastogramas?|esquemas?|heredogramas?|raio[s]?[ -]?x|exame contrastado|monitoriza[çc][aã]o)"
)
_POINTER = r"(?:abaixo|a seguir|ao lado|que segue|mostrad[ao]s?|representad[ao]s?|apresentad[ao]s?)"
IMAGE_REFERENCE = re.compile(
    rf"\b{_VISUAL}\b[^.?!;]{{0,60}}?\b{_POINTER}\b"  # "radiografia de tórax mostrada abaixo"
    rf"|\bseguintes?\s+{_VISUAL}\b"  # "o seguinte traçado"
    r"|\((?:figuras?|fotos?|image(?:m|ns))\b|\((?:a seguir|abaixo)\)"  # "(foto a seguir)", "(Imagem: ...)", "(a seguir)"
    r"|\b(?:figuras?|fotomicrografias?|heredogramas?)\b",  # always a picture in these exams
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedQuestion:
    stem: str
    options: list[str]
    lowercase_markers: bool


class ParseError(ValueError):
    """Why a question's options could not be split from its text."""


def _clean(text: str) -> str:
    return " ".join(text.split())


def split_options(text: str) -> ParsedQuestion:
    """The stem and the options of an inline ``... (A) … (B) … (C) … (D) …`` question text."""
    text = PAGE_BREAK.sub(" ", text)
    markers = [(match.start(), match.end(), match.group(1).upper(), match.group(1).islower()) for match in MARKER.finditer(text)]
    for count in OPTION_COUNTS:
        wanted = LETTERS[:count]
        chain: list[tuple[int, int, str, bool]] = []
        limit = len(text) + 1
        for letter in reversed(wanted):
            found = next((marker for marker in reversed(markers) if marker[2] == letter and marker[0] < limit), None)
            if found is None:
                break
            chain.insert(0, found)
            limit = found[0]
        if len(chain) == count:
            break
    else:
        letters = "".join(marker[2] for marker in markers)
        raise ParseError(f"no (A)..(D) option markers in order (markers found: {letters or 'none'})")
    stem = _clean(text[: chain[0][0]])
    options = [_clean(text[marker[1] : following[0]]) for marker, following in itertools.pairwise(chain)]
    options.append(_clean(text[chain[-1][1] :]))
    if not stem:
        raise ParseError("empty question stem before (A)")
    for letter, option in zip(LETTERS, options):
        if not option:
            raise ParseError(f"empty option ({letter})")
        inner = MARKER.search(option)
        if inner:
            raise ParseError(f"option ({letter}) holds another option marker ({inner.group(1)}): ambiguous")
    return ParsedQuestion(stem, options, any(marker[3] for marker in chain))


def refers_to_image(stem: str) -> bool:
    """Whether the stem points at a figure the CSV does not have (heuristic, see the module doc)."""
    return IMAGE_REFERENCE.search(stem) is not None


def exam_year(exam: str) -> int | None:
    """The last plausible year in the exam file name: ``..._teste_do_progresso_2021.pdf`` -> 2021."""
    years = YEAR.findall(exam)
    return int(years[-1]) if years else None


def _exam_stem(exam: str) -> str:
    return exam[:-4] if exam.lower().endswith(".pdf") else exam


REFETCH = "Download dataset.csv again (or copy it again in full) and rerun"


@dataclass(frozen=True)
class _Record:
    """One CSV record: its fields and the physical lines it spans (1-based, the header is line 1)."""

    fields: list[str]
    first_line: int
    last_line: int


def _decode(source: Path) -> str:
    """The file's text; a multi-byte character cut at the very end is a truncated file, not another encoding."""
    raw = source.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if error.reason == "unexpected end of data":
            raise CorpusError(f"{source}: ends in the middle of a character (byte {error.start}): the file is cut short. {REFETCH}.") from error
        raise CorpusError(f"{source}: not UTF-8 (byte offset {error.start}). Re-save the CSV as UTF-8.") from error


def _records(source: Path, lines: list[str]) -> tuple[list[str], list[_Record]]:
    """(header, records); a record with more fields than the header is refused with its line."""
    reader = csv.reader(lines)
    try:
        header = [name.strip() for name in next(reader, [])]
        records: list[_Record] = []
        last_line = reader.line_num
        for fields in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if not fields:
                continue
            if len(fields) > len(header):
                raise CorpusError(f"{source}, line {first_line}: more fields than the header has (an unquoted comma?).")
            records.append(_Record(fields, first_line, last_line))
    except csv.Error as error:
        raise CorpusError(f"{source}, line {reader.line_num}: unreadable CSV ({error}).") from error
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise CorpusError(f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}, found {', '.join(header) or 'no header'}.")
    return header, records


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _check_last_record(source: Path, lines: list[str], header: list[str], records: list[_Record]) -> None:
    """Refuse a file that ends inside its last record: an open quote, missing fields, a cut last field."""
    last = records[-1]
    cut = f"{REFETCH}; a partial benchmark would replace the whole one."
    if "".join(lines[last.first_line - 1 : last.last_line]).count('"') % 2:
        raise CorpusError(
            f"{source}, line {last.first_line}: the file ends inside a quoted field of its last record (the quote never closes): "
            f"it is cut short. {cut}"
        )
    if len(last.fields) < len(header):
        raise CorpusError(
            f"{source}, line {last.first_line}: the last record has {len(last.fields)} of the header's {len(header)} fields: "
            f"the file ends in the middle of a question. {cut}"
        )
    # The physical last field (Arquivo Prova, a PDF name, in the published file) cut short: it lacks the
    # extension every other record's has, or it is empty where no other record's is.
    others = [record.fields[-1].strip() for record in records[:-1]]
    final = last.fields[-1].strip()
    extensions = {_extension(value) for value in others}
    lacks_extension = len(extensions) == 1 and "" not in extensions and _extension(final) not in extensions
    if others and (lacks_extension or (not final and all(others))):
        raise CorpusError(
            f"{source}, line {last.first_line}: the last field ({header[-1]}) of the last record is incomplete: "
            f"the file ends in the middle of a question. {cut}"
        )


def _check_last_exam(source: Path, records: list[_Record], exam_column: int) -> None:
    """Refuse a file whose last exam has fewer questions than every other exam: a cut between two records."""
    sizes = Counter(record.fields[exam_column].strip() for record in records)
    last_exam = records[-1].fields[exam_column].strip()
    others = [count for exam, count in sizes.items() if exam != last_exam]
    if others and sizes[last_exam] < min(others):
        rows = [index for index, record in enumerate(records, start=1) if record.fields[exam_column].strip() == last_exam]
        raise CorpusError(
            f"{source}, line {records[-1].last_line}: the file ends after {sizes[last_exam]} question(s) of its last exam "
            f"(records {rows[0]}-{rows[-1]}), where each other exam has at least {min(others)}: it looks cut short. "
            f"{REFETCH} (a shorter exam may be listed before the others)."
        )


def read_rows(source: Path) -> list[dict[str, str]]:
    """The CSV rows as dicts; CorpusError names the file and the problem.

    A file that ends mid-record (an interrupted download or copy) is refused rather than read as a
    smaller benchmark: see :func:`_check_last_record` and :func:`_check_last_exam`.
    """
    source = Path(source)
    if not source.exists():
        raise CorpusError(f"{source}: not found. Pass --source the dataset.csv of the Teste de Progresso questions.")
    if not source.is_file():
        raise CorpusError(f"{source}: is a folder. Pass --source the CSV file itself (dataset.csv).")
    # Lines split as csv counts them (\n, \r\n or \r), so a record's lines can be looked at again.
    lines = io.StringIO(_decode(source), newline="").readlines()
    header, records = _records(source, lines)
    if records:
        _check_last_record(source, lines, header, records)
    for record in records[:-1]:
        if len(record.fields) < len(header):
            raise CorpusError(
                f"{source}, line {record.first_line}: {len(record.fields)} of the header's {len(header)} fields "
                "(a line break outside quotes, or a quote that never closes?). Fix the record or download the file again."
            )
    if records:
        _check_last_exam(source, records, header.index("Arquivo Prova"))
    index = {name: header.index(name) for name in COLUMNS}
    return [{name: record.fields[position] for name, position in index.items()} for record in records]


def build_items(rows: list[dict[str, str]]) -> tuple[list[McqItem], list[dict[str, Any]], list[str]]:
    """(items, parse failures, ids of items whose option markers were lower case)."""
    items: list[McqItem] = []
    failures: list[dict[str, Any]] = []
    lowercase: list[str] = []
    seen: set[str] = set()
    for row in rows:
        number = row["Número"].strip()
        exam = row["Arquivo Prova"].strip()

        def fail(reason: str, number: str = number, exam: str = exam) -> None:
            failures.append({"numero": number, "exam": exam or None, "reason": reason})

        if not number:
            fail("empty Número")
            continue
        item_id = f"{_exam_stem(exam) or 'exam'}-{number}"
        if item_id in seen:
            fail("Número repeated in the exam")
            continue
        try:
            parsed = split_options(row["Texto"])
        except ParseError as error:
            fail(str(error))
            continue
        letters = list(LETTERS[: len(parsed.options)])
        answer = row["Resposta Correta"].strip().upper()
        if answer not in letters:
            fail(f"answer {row['Resposta Correta'].strip()!r} is not one of the options {', '.join(letters)}")
            continue
        seen.add(item_id)
        if parsed.lowercase_markers:
            lowercase.append(item_id)
        items.append(
            McqItem(
                id=item_id,
                question=parsed.stem,
                options=parsed.options,
                answer=letters.index(answer),
                letters=letters,
                category=_clean(row["Bloco"]) or None,
                year=exam_year(exam),
                exam=exam or None,
                has_image=refers_to_image(parsed.stem),
                language="pt",
            )
        )
    return items, failures, lowercase


def prepare_pt_exam_mcq(source: Path, output_root: Path = Path("."), replace: bool = False) -> dict[str, Any]:
    """Write ``output_root/data/pt_exam_mcq/test.jsonl`` and its manifest; return the manifest.

    Questions that cannot be parsed are left out and listed; none parsing at all is an error.
    """
    source, output_root = Path(source), Path(output_root)
    rows = read_rows(source)
    items, failures, lowercase = build_items(rows)
    if not items:
        raise CorpusError(f"{source}: none of the {len(rows)} questions could be parsed (first problem: {failures[0]['reason'] if failures else 'no rows'}).")
    with publish_datasets(output_root, DATASET_DIR, {}, CORPUS_NAME, replace) as publication:
        staging = publication.staging
        test_path = staging / TEST_FILE
        write_items(test_path, items)
        manifest = {
            **manifest_header(CORPUS_NAME, source),
            "language": "pt",
            "source_sha256": sha256_file(source),
            "rows": len(rows),
            "items": len(items),
            "parse_failures": failures,
            "option_counts": {str(count): number for count, number in sorted(Counter(len(item.options) for item in items).items())},
            "answer_positions": dict(sorted(Counter(item.answer_letter for item in items).items())),
            "exams": dict(sorted(Counter(item.exam or "unknown" for item in items).items())),
            "categories": dict(sorted(Counter(item.category or "unknown" for item in items).items())),
            "years": {str(year): count for year, count in sorted(Counter(item.year for item in items).items(), key=lambda pair: str(pair[0]))},
            "image_questions": sum(item.has_image for item in items),
            "image_rule": "heuristic: the stem points at a figure (figura, foto, gráfico/radiografia ... abaixo/a seguir, (imagem ...))",
            "lowercase_option_markers": lowercase,
            "dropped": {"unparseable": len(failures)} if failures else {},
            "datasets": {CORPUS_NAME: {"file": (DATASET_DIR / TEST_FILE).as_posix(), "records": count_records(test_path)}},
            "outputs": output_facts([test_path]),
        }
        publication.write_manifest(manifest)
    return manifest


# --- Command line (mounted as ``medfactory prepare pt_exam_mcq``) ------------------------------------


def prepare_command(
    source: Annotated[Path, typer.Option(help="The questions CSV (Número, Texto, Bloco, Resposta Correta, Arquivo Prova)")],
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/pt_exam_mcq/")] = Path("."),
    replace: ReplaceOption = False,
) -> None:
    """Prepare the Brazilian Teste de Progresso questions as an MCQ evaluation set (data/pt_exam_mcq/test.jsonl)."""
    with exit_on_corpus_error():
        manifest = prepare_pt_exam_mcq(source, output_root=output_root, replace=replace)
    typer.echo(
        f"{manifest['items']} of {manifest['rows']} questions parsed; {len(manifest['parse_failures'])} dropped "
        f"(listed in the manifest); {manifest['image_questions']} refer to an image"
    )
    typer.echo(f"wrote {Path(output_root) / DATASET_DIR / TEST_FILE}")


PLUGIN = CorpusPlugin(
    name=CORPUS_NAME,
    summary="Brazilian Teste de Progresso medical MCQs (CSV, options inline) as a pt MCQ evaluation set",
    command=prepare_command,
)
