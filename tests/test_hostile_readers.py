"""Users' exports gone wrong, as a new user meets them (issue 14): every case stops with a located,
actionable message that shows no cell value, or reads the file correctly; none exits 0 with a wrong
result and none ends in a traceback."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.corpus.pipeline import PrepareOptions, prepare_corpus
from medfactory.corpus.readers import FIELD_FLAGS, FIELDS, ColumnMapping, describe_columns, looks_like_column_name
from medfactory.corpus.splits import SplitPlan
from medfactory.plugins.notes import GENERIC_MAPPING, mapping_with_overrides, print_summary

CPF = "123.456.789-09"
FIRST_NOTE = f"Paciente Maria Aparecida da Silva, CPF {CPF}, internada por dispneia aos esforços"


def options(**overrides) -> PrepareOptions:
    settings = {"mapping": GENERIC_MAPPING, "split": SplitPlan(0.1, 0.3, seed=5), "likert_notes": 0, "likert_min_characters": 50, "min_characters": 10}
    settings.update(overrides)
    return PrepareOptions(name="hc_notes", **settings)


def rows_csv(rows: list[list[str]], header: tuple[str, ...] = ("id", "id_paciente", "texto"), raw: bool = False) -> str:
    """CSV text of ``rows`` under ``header``; ``raw``: fields joined as they are, quotes and all."""
    if raw:
        return "\n".join(",".join(row) for row in [list(header), *rows]) + "\n"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([list(header), *rows])
    return buffer.getvalue()


def texts_of(root: Path, name: str = "hc_notes") -> list[str]:
    folder = root / "data" / name
    return sorted(json.loads(line)["text"] for path in folder.glob("*.jsonl") for line in path.read_text(encoding="utf-8").splitlines())


# --- 1. no note text in "the columns found are" ------------------------------------------------


def test_a_headerless_csv_error_counts_the_columns_and_shows_no_cell(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(f'1,p1,"{FIRST_NOTE}"\n2,p2,"Paciente estável, sem queixas no momento da avaliação"\n', encoding="utf-8")
    with pytest.raises(CorpusError) as error:
        prepare_corpus([path], options(), tmp_path)
    message = str(error.value)
    assert CPF not in message and "Maria" not in message and "'p1'" not in message
    assert "3 columns found, not shown because the first row does not look like a header row" in message
    assert "add a header row of column names" in message and str(path) in message


def test_a_jsonl_key_or_parquet_column_holding_text_is_not_shown(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "keys.jsonl"
    jsonl.write_text(json.dumps({FIRST_NOTE: "x", "id": "1"}, ensure_ascii=False) + "\n", encoding="utf-8")
    parquet = tmp_path / "columns.parquet"
    pq.write_table(pa.table({FIRST_NOTE: ["a"], "id": ["1"]}), parquet)
    for path, expected in ((jsonl, "2 keys found"), (parquet, "2 columns found")):
        with pytest.raises(CorpusError) as error:
            prepare_corpus([path], options(), tmp_path)
        message = str(error.value)
        assert CPF not in message and "Maria" not in message, path
        assert expected in message and "--text-column" in message, path


@pytest.mark.parametrize("value", ["id", "texto", "id_paciente", "dt_evolucao", "evolução", "note-id", "cid10"])
def test_column_names_look_like_column_names(value: str) -> None:
    assert looks_like_column_name(value)


@pytest.mark.parametrize(
    "value",
    [FIRST_NOTE, "Paciente estável", "1", "2020-01-03", "03/01/2020", CPF, "52998224725", "maria@example.com.br", "HC1234567", "(11) 98765-4321", ""],
)
def test_data_does_not_look_like_column_names(value: str) -> None:
    assert not looks_like_column_name(value)
    described = describe_columns(["id", value])
    assert described == "2 columns found, not shown because the first row does not look like a header row (it may be data)"


# --- 2. every advised flag exists ------------------------------------------------------------


@pytest.mark.parametrize("plugin", ["notes", "semclinbr", "brateca"])
def test_every_field_advises_a_flag_the_prepare_command_has(plugin: str) -> None:
    from medfactory.cli import app

    command = typer.main.get_command(app).commands["prepare"].commands[plugin]
    flags = {option for parameter in command.params for option in parameter.opts}
    assert set(FIELD_FLAGS) == set(FIELDS)
    for name in FIELDS:
        mapping = ColumnMapping(**{"text": ("texto",), name: (f"missing_{name}",)}, required=frozenset({"text", name}))
        with pytest.raises(CorpusError) as error:
            mapping.resolve(["texto", "other"], "x.csv")
        advised = [word.rstrip(".,") for word in str(error.value).split() if word.startswith("--")]
        assert advised == [FIELD_FLAGS[name]], (name, str(error.value))
        assert FIELD_FLAGS[name] in flags, (plugin, name)


def test_a_missing_id_column_advises_the_real_flag(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(rows_csv([["1", "p1", "Paciente estável, sem queixas."]]), encoding="utf-8")
    mapping = mapping_with_overrides(GENERIC_MAPPING, patient_id="prontuario", note_id="nid")
    with pytest.raises(CorpusError, match="no note_id column .*Fix: pass --id-column with the right name"):
        prepare_corpus([path], options(mapping=mapping), tmp_path)


# --- 3. a runaway quoted field ---------------------------------------------------------------


def ten_rows() -> list[list[str]]:
    return [[str(i), f"p{i}", f"Paciente {i} estável sem queixas, aceitando dieta"] for i in range(1, 11)]


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_an_unterminated_quote_stops_at_the_line_where_it_opened(tmp_path: Path, on_error: str) -> None:
    rows = [[str(i), f"p{i}", f"Paciente {i} estável sem queixas"] for i in range(1, 11)]
    rows[2][2] = '"Paciente com dor'  # line 4: opened, never closed; rows 4-10 follow unquoted
    path = tmp_path / "runaway.csv"
    path.write_text(rows_csv(rows, raw=True), encoding="utf-8")
    with pytest.raises(CorpusError) as error:
        prepare_corpus([path], options(on_error=on_error), tmp_path)
    message = str(error.value)
    assert message.startswith(f"{path}:4: the quoted field that opens on this line is never closed")
    assert "to the end of the file" in message and "over 7 later line(s) that look like rows" in message
    assert 'CSV writes a quote inside a field as ""' in message
    assert "Paciente" not in message
    assert not (tmp_path / "data" / "hc_notes").exists()


def test_an_unterminated_quote_closed_by_a_later_row_is_caught(tmp_path: Path) -> None:
    rows = ten_rows()
    rows[2][2] = '"Paciente com dor'
    rows[6][2] = f'"{rows[6][2]}"'  # row 7's opening quote closes row 3's field: rows 4-7 swallowed
    path = tmp_path / "runaway.csv"
    path.write_text(rows_csv([[row[0], row[1], row[2].replace(",", ";")] for row in rows], raw=True), encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"{path}:4: the quoted field .* never closed: it runs over 4 later line"):
        prepare_corpus([path], options(), tmp_path)


def test_a_file_cut_inside_a_quoted_note_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv"
    path.write_text('id,id_paciente,texto\n1,p1,"Paciente estável, sem queixas."\n2,p2,"Paciente com dor torácica\ne dispneia, ', encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"{path}:3: the quoted field that opens on this line is never closed: it runs to the end of the file\."):
        prepare_corpus([path], options(), tmp_path)


LONG_NOTE_LINES = [
    "Evolução médica, enfermaria de clínica, leito 12.",
    "PA 120x80, FC 80, FR 18, SatO2 96%, Tax 36,8.",
    "Hb 12,5, Ht 37, leuco 8.400, plaq 210.000.",
    "2,5 mg de morfina se dor, até 4/4h.",
    "12,5 mg de carvedilol, 2x/dia.",
    "1,p1,aceitando dieta",  # a line shaped like a row once, as notes can quote a CSV line
    "Conduta: mantida, sem alterações, reavaliar.",
    'Paciente refere ""melhora"", nega febre, nega dor.',
    "",
    "37,5,38,1,37,9 (curva térmica)",
]


@pytest.mark.parametrize("delimiter", [",", "\t", ";"])
def test_a_long_legitimate_multiline_note_with_delimiters_still_reads(tmp_path: Path, delimiter: str) -> None:
    note = "\n".join(LONG_NOTE_LINES * 20).replace(",", delimiter) if delimiter != "," else "\n".join(LONG_NOTE_LINES * 20)
    rows = [{"id": "n1", "id_paciente": "p1", "texto": note}, {"id": "n2", "id_paciente": "p2", "texto": "Paciente estável, sem queixas."}]
    path = tmp_path / ("notes.tsv" if delimiter == "\t" else "notes.csv")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    manifest = prepare_corpus([path], options(delimiter=None if delimiter in ",\t" else delimiter), tmp_path)
    assert manifest["records_read"] == 2 and manifest["documents"] == 2
    assert any(text.count("\n") > 150 and "Hb 12" in text for text in texts_of(tmp_path))


# --- 4. repeated note ids --------------------------------------------------------------------


def thirty_rows_one_id(tmp_path: Path) -> Path:
    path = tmp_path / "ids.csv"
    path.write_text(rows_csv([["NOTA-0001-REPETIDA", f"p{i}", f"Evolução {i}: paciente estável, sem queixas."] for i in range(30)]), encoding="utf-8")
    return path


def test_repeated_note_ids_are_refused_under_on_error_fail(tmp_path: Path) -> None:
    path = thirty_rows_one_id(tmp_path)
    with pytest.raises(CorpusError) as error:
        prepare_corpus([path], options(), tmp_path)
    message = str(error.value)
    assert message.startswith(f"{path}:3: this record has the note id of an earlier record")
    assert "--on-error skip" in message and "--id-column" in message
    assert "NOTA-0001" not in message


def test_repeated_note_ids_are_counted_under_skip_and_summarised(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = prepare_corpus([thirty_rows_one_id(tmp_path)], options(on_error="skip"), tmp_path)
    assert manifest["repeated_note_ids"] == 29
    assert manifest["dropped"] == {"repeated_note_id": 29} and manifest["documents"] == 1
    assert "NOTA-0001" not in json.dumps(manifest)
    print_summary(manifest, tmp_path)
    assert "warning: 29 records had the note id of an earlier record; the first of each was kept" in capsys.readouterr().out


def test_txt_files_of_one_name_in_two_folders_are_not_repeated_ids(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / "notes" / folder).mkdir(parents=True)
        (tmp_path / "notes" / folder / "1.txt").write_text(f"Paciente da pasta {folder}, estável, sem queixas.", encoding="utf-8")
    manifest = prepare_corpus([tmp_path / "notes"], options(), tmp_path)
    assert manifest["repeated_note_ids"] == 0 and manifest["documents"] == 2


# --- 5. fewer Likert notes than asked --------------------------------------------------------


def test_fewer_likert_notes_than_asked_is_a_caveat_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "n.csv"
    path.write_text(rows_csv([[f"n{i}", f"p{i}", f"Evolução {i}: paciente estável, sem queixas, aceitando dieta oral."] for i in range(40)]), encoding="utf-8")
    manifest = prepare_corpus([path], options(likert_notes=5, split=SplitPlan(0.1, 0.0, seed=5)), tmp_path)
    assert manifest["splits"]["likert"]["documents"] == 0
    (caveat,) = manifest["likert_caveats"]
    assert caveat.startswith("0 of the 5 Likert notes asked for (--likert-notes) could be drawn: the test split (--test-fraction 0) kept 0 notes")
    assert "Fix: raise --test-fraction or lower --likert-min-characters" in caveat
    print_summary(manifest, tmp_path)
    assert f"warning: {caveat}" in capsys.readouterr().out
    enough = prepare_corpus([path], options(likert_notes=2, split=SplitPlan(0.1, 0.5, seed=5)), tmp_path / "b")
    assert enough["splits"]["likert"]["documents"] == 2 and enough["likert_caveats"] == []


# --- 6, 7. values out of range, and tracebacks -----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"likert_notes": -1}, "--likert-notes -1: a whole number, 0 or more"),
        ({"min_characters": -5}, "--min-characters -5: a whole number"),
        ({"likert_min_characters": -1}, "--likert-min-characters -1: a whole number"),
        ({"near_duplicate_threshold": 0.0}, "--near-duplicates 0: a Jaccard similarity in (0, 1]"),
        ({"near_duplicate_threshold": float("nan")}, "--near-duplicates nan"),
        ({"encoding": "klingon"}, "--encoding 'klingon': it is not a codec Python knows"),
        ({"encoding": "rot13"}, "--encoding 'rot13': it is not a text encoding"),
        ({"delimiter": "ab"}, "--delimiter 'ab': one character"),
        ({"delimiter": '"'}, "--delimiter '\"': one character other than a quote"),
        ({"identifier_mode": "hide"}, "--identifier-mode 'hide'"),
        ({"on_error": "ignore"}, "--on-error 'ignore'"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_flag(tmp_path: Path, overrides: dict, expected: str) -> None:
    with pytest.raises(CorpusError) as error:
        prepare_corpus([tmp_path / "not-read.csv"], options(**overrides), tmp_path)  # checked before any file is read
    assert expected in str(error.value)


@pytest.mark.parametrize(
    ("validation", "test", "expected"),
    [
        (-0.1, 0.1, "--validation-fraction -0.1: a share"),
        (0.1, 1.0, "--test-fraction 1: a share"),
        (0.5, 0.5, "leaves no patient for training"),
        (float("nan"), 0.1, "--validation-fraction nan"),
    ],
)
def test_split_fractions_are_checked_naming_the_flag(validation: float, test: float, expected: str) -> None:
    with pytest.raises(CorpusError, match=expected.replace("(", r"\(")):
        PrepareOptions.check_fractions(validation, test)


def test_a_tokenizer_that_does_not_load_is_a_message(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text(rows_csv([["n1", "p1", "Paciente estável, sem queixas."]]), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"--tokenizer '/nonexistent': no such folder\. Fix: pass the folder"):
        prepare_corpus([path], options(tokenizer="/nonexistent"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"--tokenizer '.*empty': no tokenizer could be loaded \("):
        prepare_corpus([path], options(tokenizer=str(tmp_path / "empty")), tmp_path)
    assert not (tmp_path / "data" / "hc_notes").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--encoding", "klingon"], "error: --encoding 'klingon'"),
        (["--delimiter", "ab"], "error: --delimiter 'ab'"),
        (["--tokenizer", "/nonexistent"], "error: --tokenizer '/nonexistent'"),
        (["--likert-notes", "-1"], "error: --likert-notes -1"),
        (["--test-fraction", "1.5"], "error: --test-fraction 1.5"),
    ],
)
def test_the_cli_answers_bad_values_with_one_line_and_exit_1(tmp_path: Path, flags: list[str], expected: str) -> None:
    from medfactory.cli import app

    path = tmp_path / "n.csv"
    path.write_text(rows_csv([["n1", "p1", "Paciente estável, sem queixas."]]), encoding="utf-8")
    command = ["prepare", "notes", "--source", str(path), "--name", "hc_notes", "--output-root", str(tmp_path), *flags]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit(1), not an exception escaping
    assert expected in result.output and "Traceback" not in result.output


def test_delimiter_tab_means_a_tab(tmp_path: Path) -> None:
    from medfactory.cli import app

    path = tmp_path / "n.csv"
    path.write_text("id\tid_paciente\ttexto\nn1\tp1\tPaciente estável, sem queixas.\n", encoding="utf-8")
    command = ["prepare", "notes", "--source", str(path), "--name", "hc_notes", "--output-root", str(tmp_path), "--delimiter", "tab", "--likert-notes", "0"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert texts_of(tmp_path) == ["Paciente estável, sem queixas."]


# --- 8. UTF-16 and UTF-32 --------------------------------------------------------------------

NOTES = ["Paciente com insuficiência cardíaca, evolução estável.", "Ação de reabilitação:\nlúcido, orientado; sem queixas."]
WIDE = {
    "utf-16 (LE mark)": (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
    "utf-16 (BE mark)": (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
    "utf-32 (LE mark)": (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"),
    "utf-32 (BE mark)": (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
}


def utf8_export(folder: Path, suffix: str) -> Path:
    """The two notes as a UTF-8 file of the format ``suffix`` (.txt: a folder of one file per note)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"n{i}", "id_paciente": f"p{i}", "texto": text} for i, text in enumerate(NOTES)]
    if suffix == ".txt":
        for row in rows:
            (folder / f"{row['id']}.txt").write_text(row["texto"], encoding="utf-8")
        return folder
    path = folder / f"notes{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        return path
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
    return path


def reencode(source: Path, bom: bytes, codec: str) -> None:
    for path in [source] if source.is_file() else sorted(source.iterdir()):
        path.write_bytes(bom + path.read_bytes().decode("utf-8").encode(codec))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".txt"])
@pytest.mark.parametrize("wide", list(WIDE))
def test_utf16_and_utf32_with_a_byte_order_mark_are_read(tmp_path: Path, suffix: str, wide: str) -> None:
    bom, codec, reported = WIDE[wide]
    source = utf8_export(tmp_path / "src", suffix)
    reencode(source, bom, codec)
    manifest = prepare_corpus([source], options(), tmp_path / "out")
    assert texts_of(tmp_path / "out") == sorted(NOTES)
    encodings = manifest["sources"]["encodings"]
    assert set(encodings) == {reported}, encodings
    first = Path(manifest["sources"]["listed"][0]["path"])
    assert manifest["sources"]["listed"][0]["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()


@pytest.mark.parametrize("forced", ["utf-16-le", "utf-16", "utf-16-be"])
def test_a_forced_utf16_encoding_reads_files_without_a_mark(tmp_path: Path, forced: str) -> None:
    source = utf8_export(tmp_path / "src", ".csv")
    reencode(source, b"", "utf-16-be" if forced == "utf-16-be" else "utf-16-le")
    manifest = prepare_corpus([source], options(encoding=forced), tmp_path / "out")
    assert texts_of(tmp_path / "out") == sorted(NOTES)
    assert manifest["sources"]["encodings"] == {"utf-16-be" if forced == "utf-16-be" else "utf-16-le": 4}


def test_utf16_without_a_mark_in_auto_mode_says_which_encoding_to_pass(tmp_path: Path) -> None:
    source = utf8_export(tmp_path / "src", ".csv")
    reencode(source, b"", "utf-16-le")
    with pytest.raises(CorpusError, match="NUL characters.*--encoding utf-16-le"):
        prepare_corpus([source], options(), tmp_path / "out")


def test_damaged_utf16_names_the_line_or_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "damaged.csv"
    good = "id,id_paciente,texto\nn1,p1,Paciente estável sem queixas.\n".encode("utf-16")
    lone_surrogate = b"\x00\xdc"  # a low surrogate with no high one before it
    path.write_bytes(good + "n2,p2,Paciente ".encode("utf-16-le") + lone_surrogate + " com dor.\nn3,p3,Evolução sem intercorrências.\n".encode("utf-16-le"))
    with pytest.raises(CorpusError, match=rf"{path}:3: bytes that are not valid utf-16 .*--on-error skip"):
        prepare_corpus([path], options(), tmp_path)
    manifest = prepare_corpus([path], options(on_error="skip"), tmp_path)
    assert manifest["dropped"] == {"undecodable": 1} and manifest["documents"] == 2
    truncated = tmp_path / "truncated.csv"
    truncated.write_bytes(good[:-1])
    with pytest.raises(CorpusError, match=rf"{truncated}:2: bytes that are not valid utf-16"):
        prepare_corpus([truncated], options(), tmp_path / "t")


# --- other exceptions that used to escape as tracebacks ---------------------------------------


def test_a_damaged_parquet_data_page_is_a_located_message(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "damaged.parquet"
    rows = [{"id": f"n{i}", "texto": f"Paciente {i} estável sem queixas, aceitando dieta oral."} for i in range(50)]
    pq.write_table(pa.Table.from_pylist(rows), path, compression="snappy")
    data = bytearray(path.read_bytes())
    data[100:164] = b"\xff" * 64  # inside the first data page; the footer stays readable
    path.write_bytes(bytes(data))
    with pytest.raises(CorpusError, match=rf"{path}: after row 0, the data cannot be read \(OSError\)\. Fix: re-export"):
        prepare_corpus([path], options(), tmp_path)


def test_jsonl_surrogate_escapes_and_deep_nesting_are_messages(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    good = json.dumps({"id": "n1", "texto": "Paciente estável, sem queixas."}, ensure_ascii=False)
    path.write_text(good + "\n" + '{"id": "n2", "texto": "Paciente \\ud800 com dor."}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"{path}:2: an unpaired surrogate escape"):
        prepare_corpus([path], options(), tmp_path)
    manifest = prepare_corpus([path], options(on_error="skip"), tmp_path)
    assert manifest["dropped"] == {"undecodable": 1} and manifest["documents"] == 1
    nested = tmp_path / "nested.jsonl"
    nested.write_text(good + "\n" + "[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"{nested}:2: not a JSON object"):
        prepare_corpus([nested], options(), tmp_path / "n")
