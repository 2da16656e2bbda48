"""Teste de Progresso plugin: option splitting on the formats seen in the real CSV, a synthetic CSV
always, and the real file (../shared/data/pt_medical_mcq/dataset.csv) when present."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.corpus.mcq import read_items
from medfactory.plugins import pt_exam_mcq
from medfactory.plugins.pt_exam_mcq import PLUGIN, ParseError, exam_year, prepare_pt_exam_mcq, refers_to_image, split_options

EXAM_2021 = "prova_consorcio_interinstitucional_nordeste_teste_do_progresso_2021.pdf"
EXAM_2013 = "prova_consorcio_interinstitucional_teste_do_progresso_2013.pdf"


# --- Splitting the stem from the options ---------------------------------------------------------------


def test_plain_question() -> None:
    parsed = split_options("Qual a conduta?  (A) Fazer X. (B) Prescrever Y. (C) Iniciar Z. (D) Orientar dieta.")
    assert parsed.stem == "Qual a conduta?"
    assert parsed.options == ["Fazer X.", "Prescrever Y.", "Iniciar Z.", "Orientar dieta."]
    assert not parsed.lowercase_markers


def test_odd_spacing_line_breaks_and_a_lowercase_marker() -> None:
    parsed = split_options("Mulher, 32 anos.\nQual o diagnóstico?\r\n(A)Diabetes gestacional –\n dieta ( B ) Insulina  (C) Metformina   (d) Nada")
    assert parsed.stem == "Mulher, 32 anos. Qual o diagnóstico?"
    assert parsed.options == ["Diabetes gestacional – dieta", "Insulina", "Metformina", "Nada"]
    assert parsed.lowercase_markers


def test_parentheses_inside_options_are_not_markers() -> None:
    parsed = split_options(
        "A conduta é: (A) Isoniazida por 3 meses. (B) Isoniazida, rifampicina(R), pirazinamida(P) e etambutol(E) por "
        "2 meses. (C) Isoniazida(I) por 6 meses (se assintomática). (D) Nada."
    )
    assert parsed.options[1] == "Isoniazida, rifampicina(R), pirazinamida(P) e etambutol(E) por 2 meses."
    assert parsed.options[2] == "Isoniazida(I) por 6 meses (se assintomática)."


def test_figure_labels_in_the_stem_do_not_start_the_options() -> None:
    parsed = split_options("Verifique as imagens (figuras A e B):  (A)        (B)   Selecione a correta:  (A) Um. (B) Dois. (C) Três. (D) Quatro.")
    assert parsed.stem == "Verifique as imagens (figuras A e B): (A) (B) Selecione a correta:"
    assert parsed.options == ["Um.", "Dois.", "Três.", "Quatro."]


def test_five_options_and_page_break_notes() -> None:
    parsed = split_options("Exames (CONTINUA) (CONTINUAÇÃO DA QUESTÃO 44) normais. A causa é: (A) a (B) b (C) c (D) d (E) e")
    assert parsed.stem == "Exames normais. A causa é:" and parsed.options == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("O gráfico abaixo mostra a esperança de vida ao nascer - Brasil, 1980-", r"no \(A\)..\(D\) option markers in order \(markers found: none\)"),
        ("Qual? (A) um (B) dois (D) quatro", r"markers found: ABD"),
        ("(A) um (B) dois (C) três (D) quatro", "empty question stem"),
        ("Qual? (A) um (B) (C) três (D) quatro", r"empty option \(B\)"),
        ("Qual? (A) um (B) dois (C) três (A) de novo (D) quatro", r"option \(C\) holds another option marker \(A\): ambiguous"),
    ],
)
def test_unparseable_questions_say_why(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        split_options(text)


@pytest.mark.parametrize(
    "stem",
    [
        "representado pela figura abaixo.Em S. aureus",
        "Radiografia de tórax mostrada abaixo:",
        "Realizou tomografia computadorizada do crânio (a seguir). Determine:",
        "lesões no tronco (foto): Qual?",
        "Exame de imagem realizado apresentado abaixo: (Fonte: J Clin Neonatol)",
        "com a seguinte imagem: (Legenda ...)",
        "sem displasia (imagem): Uma resposta",
    ],
)
def test_stems_pointing_at_a_figure_are_flagged(stem: str) -> None:
    assert refers_to_image(stem)


@pytest.mark.parametrize(
    "stem",
    [
        "Exames de imagem não mostraram sinais de metástase. Qual o tratamento?",
        "Qual dos exames abaixo seria o mais indicado?",
        "feto com peso de 1010g (abaixo do percentil 3%). Qual o diagnóstico?",
        "Diante do quadro acima, qual a conduta?",
        "postou no Instagram a foto dessa criança. Segundo o Código de Ética Médica, o pediatra:",
    ],
)
def test_other_stems_are_not_flagged(stem: str) -> None:
    assert not refers_to_image(stem)


def test_exam_year_is_read_from_the_file_name() -> None:
    assert exam_year(EXAM_2021) == 2021 and exam_year("prova_sp1_2019_v2.pdf") == 2019 and exam_year("prova.pdf") is None


# --- A synthetic CSV in the published layout ---------------------------------------------------------------


def write_csv(path: Path, rows: list[list[str]], header=("Número", "Texto", "Bloco", "Resposta Correta", "Arquivo Prova")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


SYNTHETIC_ROWS = [
    ["1", "Homem, 45 anos. Qual a proposta?  (A) Sinvastatina. (B) Fibrato. (C) Ezetimiba. (D) Dieta.", "", "D", EXAM_2021],
    ["2", "Radiografia de tórax a seguir:\n Qual o diagnóstico? (A) Pneumonia (B) Derrame (C) TEP (D) Normal", "CLÍNICA MÉDICA", "b", EXAM_2021],
    ["23", "O gráfico abaixo mostra a esperança de vida ao nascer, em anos, de 1980 a 2100. - Esperanças", "", "B", EXAM_2013],
    ["24", "Qual? (A) um (B) dois (C) três (D) quatro (E) cinco", "SAÚDE COLETIVA", "E", EXAM_2013],
    ["25", "Qual? (A) um (B) dois (C) três (D) quatro", "", "E", EXAM_2013],
    ["24", "Repetida? (A) um (B) dois (C) três (D) quatro", "", "A", EXAM_2013],
]


@pytest.fixture()
def prepared(tmp_path: Path) -> tuple[Path, dict]:
    source = write_csv(tmp_path / "dataset.csv", SYNTHETIC_ROWS)
    return tmp_path / "repo", prepare_pt_exam_mcq(source, tmp_path / "repo")


def test_synthetic_questions_are_parsed_and_failures_listed(prepared) -> None:
    output_root, manifest = prepared
    items = read_items(output_root / "data/pt_exam_mcq/test.jsonl")
    assert [item.id for item in items] == [
        "prova_consorcio_interinstitucional_nordeste_teste_do_progresso_2021-1",
        "prova_consorcio_interinstitucional_nordeste_teste_do_progresso_2021-2",
        "prova_consorcio_interinstitucional_teste_do_progresso_2013-24",
    ]
    first, second, five = items
    assert (first.question, first.answer, first.category, first.year, first.exam, first.language) == (
        "Homem, 45 anos. Qual a proposta?", 3, None, 2021, EXAM_2021, "pt")  # fmt: skip
    assert second.answer == 1 and second.category == "CLÍNICA MÉDICA" and second.has_image and not first.has_image
    assert five.letters == ["A", "B", "C", "D", "E"] and five.answer == 4 and five.year == 2013
    assert manifest["parse_failures"] == [
        {"numero": "23", "exam": EXAM_2013, "reason": "no (A)..(D) option markers in order (markers found: none)"},
        {"numero": "25", "exam": EXAM_2013, "reason": "answer 'E' is not one of the options A, B, C, D"},
        {"numero": "24", "exam": EXAM_2013, "reason": "Número repeated in the exam"},
    ]
    assert (manifest["rows"], manifest["items"], manifest["image_questions"]) == (6, 3, 1)
    assert manifest["option_counts"] == {"4": 2, "5": 1} and manifest["answer_positions"] == {"B": 1, "D": 1, "E": 1}
    assert manifest["outputs"]["test.jsonl"]["bytes"] == (output_root / "data/pt_exam_mcq/test.jsonl").stat().st_size
    assert not (output_root / "dataset_info.json").exists()  # evaluation only: nothing registered


def test_csv_problems_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        prepare_pt_exam_mcq(tmp_path / "nowhere.csv", tmp_path)
    with pytest.raises(CorpusError, match="is a folder"):
        prepare_pt_exam_mcq(tmp_path, tmp_path)
    source = write_csv(tmp_path / "bad.csv", [["1", "x", "", "A"]], header=("Número", "Texto", "Bloco", "Resposta"))
    with pytest.raises(CorpusError, match=r"bad.csv: missing column\(s\) Resposta Correta, Arquivo Prova"):
        prepare_pt_exam_mcq(source, tmp_path)
    source = write_csv(tmp_path / "none.csv", [["1", "Sem opções", "", "A", EXAM_2013]])
    with pytest.raises(CorpusError, match="none of the 1 questions could be parsed"):
        prepare_pt_exam_mcq(source, tmp_path / "out")
    assert not (tmp_path / "out/data").exists()
    (tmp_path / "latin1.csv").write_bytes("Número,Texto,Bloco,Resposta Correta,Arquivo Prova\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        prepare_pt_exam_mcq(tmp_path / "latin1.csv", tmp_path)


def command_app(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    return app


def test_command_prints_counts_and_turns_errors_into_exit_1(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "dataset.csv", SYNTHETIC_ROWS)
    result = CliRunner().invoke(command_app(PLUGIN.command), ["--source", str(source), "--output-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "3 of 6 questions parsed; 3 dropped (listed in the manifest); 1 refer to an image" in result.stdout
    assert "Homem" not in result.stdout
    result = CliRunner().invoke(command_app(PLUGIN.command), ["--source", str(tmp_path / "nowhere.csv")])
    assert result.exit_code == 1 and "not found" in result.stderr and "Traceback" not in result.output


def test_plugin_is_named_for_the_cli() -> None:
    assert PLUGIN.name == "pt_exam_mcq" and PLUGIN.command is pt_exam_mcq.prepare_command


# --- The real CSV ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list, dict]:
    output_root = tmp_path_factory.mktemp("pt_exam_real")
    manifest = prepare_pt_exam_mcq(shared_data / "pt_medical_mcq/dataset.csv", output_root)
    return read_items(output_root / "data/pt_exam_mcq/test.jsonl"), manifest


def test_real_csv_parses_719_of_720(real) -> None:
    items, manifest = real
    assert (manifest["rows"], manifest["items"], len(items)) == (720, 719, 719)
    # 2013 question 23 lost its options with its chart in the PDF export.
    assert manifest["parse_failures"] == [
        {"numero": "23", "exam": EXAM_2013, "reason": "no (A)..(D) option markers in order (markers found: none)"}
    ]
    assert manifest["option_counts"] == {"4": 719}
    assert manifest["datasets"]["pt_exam_mcq"]["records"] == 719 and manifest["dropped"] == {"unparseable": 1}
    assert manifest["answer_positions"] == {"A": 180, "B": 179, "C": 180, "D": 180}
    assert manifest["years"] == {"2013": 119, "2019": 120, "2020": 120, "2021": 120, "2022": 120, "2023": 120}
    assert manifest["lowercase_option_markers"] == ["prova_consorcio_interinstitucional_nordeste_teste_do_progresso_2021-32"]
    assert all(len(option) > 0 and option == " ".join(option.split()) for item in items for option in item.options)


def test_real_hard_cases(real) -> None:
    items, manifest = real
    by_id = {item.id: item for item in items}
    drugs = by_id["prova_consorcio_interinstitucional_teste_do_progresso_2013-70"]
    assert "etambutol(E)" in drugs.options[1] and drugs.answer_letter == "C"
    figures = by_id["prova_consorcio_sp1_teste_do_progresso_2020-59"]
    assert figures.question.endswith("(figuras A e B): (A) (B) Correlacione os achados clínicos e radiológicos e selecione a afirmativa correta:")
    assert all(option.startswith("A descrição de sintomas") for option in figures.options) and figures.has_image
    lowercase = by_id["prova_consorcio_interinstitucional_nordeste_teste_do_progresso_2021-32"]
    assert lowercase.options[3] == "Diabetes mellitus – iniciar metformina"
    assert 40 <= manifest["image_questions"] <= 60
    assert figures.question[:40] not in json.dumps(manifest, ensure_ascii=False)  # counts and ids, no question text


# --- A file cut short (an interrupted download or copy) is refused, never read as a smaller benchmark ---------

EXAMS = ("prova_a_teste_do_progresso_2019.pdf", "prova_b_teste_do_progresso_2020.pdf", "prova_c_teste_do_progresso_2021.pdf")


def published_csv(path: Path, questions: int = 4) -> Path:
    """Three exams of ``questions`` each, laid out as the published dataset.csv: CRLF, no final newline."""
    rows = [
        [str(number), f"Paciente {number}, 40 anos, com dor. Qual a conduta? (A) Observar. (B) Tratar, já. (C) Operar. (D) Alta.", bloco, "B", exam]
        for exam in EXAMS
        for number, bloco in zip(range(1, questions + 1), ("", "CLÍNICA MÉDICA", "", "SAÚDE COLETIVA") * questions)
    ]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([["Número", "Texto", "Bloco", "Resposta Correta", "Arquivo Prova"], *rows])
    path.write_bytes(buffer.getvalue().removesuffix("\r\n").encode("utf-8"))
    return path


def cut_at(source: Path, target: Path, marker: str, offset: int = 0, occurrence: int = -1) -> Path:
    """``source`` cut just before the ``occurrence``-th ``marker`` (bytes), moved by ``offset``."""
    raw = source.read_bytes()
    starts = [index for index in range(len(raw)) if raw.startswith(marker.encode("utf-8"), index)]
    target.write_bytes(raw[: starts[occurrence] + offset])
    return target


@pytest.fixture()
def published(tmp_path: Path) -> Path:
    return published_csv(tmp_path / "dataset.csv")


def test_the_complete_published_layout_is_read_with_or_without_a_final_newline(published: Path, tmp_path: Path) -> None:
    assert len(pt_exam_mcq.read_rows(published)) == 12
    with_newline = tmp_path / "newline.csv"
    with_newline.write_bytes(published.read_bytes() + b"\r\n")
    assert len(pt_exam_mcq.read_rows(with_newline)) == 12


@pytest.mark.parametrize(
    ("marker", "offset", "words"),
    [
        ("\r\n4,", 3, "1 of the header's 5 fields"),  # inside Número of the last record
        ("Qual a conduta?", 5, "inside a quoted field"),  # inside the quoted Texto
        ('Alta."', 6, "2 of the header's 5 fields"),  # right after Texto's closing quote
        ("SAÚDE COLETIVA", 6, "3 of the header's 5 fields"),  # inside Bloco
        (",B,prova_c", 2, "4 of the header's 5 fields"),  # right after the answer
        ("prova_c", 9, "last field (Arquivo Prova) of the last record is incomplete"),  # inside Arquivo Prova
        (".pdf", 0, "last field (Arquivo Prova) of the last record is incomplete"),  # Arquivo Prova without .pdf
        ("já", 2, "ends in the middle of a character"),  # inside the two bytes of "á"
    ],
)
def test_a_file_cut_mid_record_is_refused_and_the_previous_set_kept(published: Path, tmp_path: Path, marker: str, offset: int, words: str) -> None:
    output_root = tmp_path / "repo"
    before = prepare_pt_exam_mcq(published, output_root)["items"]
    cut = cut_at(published, tmp_path / "cut.csv", marker, offset)
    with pytest.raises(CorpusError) as error:
        prepare_pt_exam_mcq(cut, output_root)
    message = str(error.value)
    assert message.startswith(str(cut)) and words in message and "Download dataset.csv again" in message
    assert "middle of a character" in words or re.search(r", line \d+: ", message)
    assert "Paciente" not in message and "conduta" not in message  # no question text
    assert len(read_items(output_root / "data/pt_exam_mcq/test.jsonl")) == before == 12


def test_a_file_cut_between_records_of_its_last_exam_is_refused(published: Path, tmp_path: Path) -> None:
    for offset, name in ((0, "no_newline.csv"), (2, "newline.csv")):  # before / after the record's CRLF
        cut = cut_at(published, tmp_path / name, "\r\n3,", offset)
        expected = r", line 11: the file ends after 2 question\(s\) of its last exam \(records 9-10\), where each other exam has at least 4"
        with pytest.raises(CorpusError, match=expected):
            pt_exam_mcq.read_rows(cut)


def test_every_cut_after_the_first_exam_is_refused(published: Path, tmp_path: Path) -> None:
    """Any byte count short of the whole file is refused once the first exam is complete, except a cut
    exactly between two exams (it reads as a file of fewer exams). Inside the first exam only a cut
    exactly between two records goes unnoticed: nothing in the file says how many questions follow."""
    raw = published.read_bytes()
    exam_ends = [raw.index(b"\r\n1,", raw.index(exam.encode())) for exam in EXAMS[:2]]
    between_exams = {end + step for end in exam_ends for step in (0, 1, 2)}
    cut = tmp_path / "cut.csv"
    for size in sorted(set(range(exam_ends[0] + 3, len(raw))) - between_exams):
        cut.write_bytes(raw[:size])
        with pytest.raises(CorpusError, match="cut short|middle of a question"):
            pt_exam_mcq.read_rows(cut)


def test_a_short_record_inside_the_file_is_refused_with_its_line(published: Path, tmp_path: Path) -> None:
    lines = published.read_bytes().split(b"\r\n")
    lines[3] = b"3,Sem aspas e sem campos"
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"\r\n".join(lines))
    with pytest.raises(CorpusError, match=r"broken.csv, line 4: 2 of the header's 5 fields"):
        pt_exam_mcq.read_rows(broken)


def test_the_real_csv_cut_short_is_refused(shared_data: Path, tmp_path: Path) -> None:
    """The case of the report: the real file cut inside record 390 gave 388 items and exit 0."""
    source = shared_data / "pt_medical_mcq/dataset.csv"
    output_root = tmp_path / "repo"
    assert prepare_pt_exam_mcq(source, output_root)["items"] == 719
    raw = source.read_bytes()
    record_starts = [index + 2 for index in range(len(raw)) if raw.startswith(b"\r\n", index)]
    cuts = {
        "inside record 390": record_starts[389] + 200,  # the old code read 388 items here, exit 0
        "between records 399 and 400": record_starts[399] - 2,
        **{f"at {fraction:.0%} of the bytes": int(len(raw) * fraction) for fraction in (0.05, 0.25, 0.5, 0.75, 0.999)},
    }
    for where, size in cuts.items():
        cut = tmp_path / "cut.csv"
        cut.write_bytes(raw[:size])
        with pytest.raises(CorpusError, match=r"cut short|middle of a question") as error:
            prepare_pt_exam_mcq(cut, output_root)
        assert str(cut) in str(error.value), where
    assert len(read_items(output_root / "data/pt_exam_mcq/test.jsonl")) == 719
