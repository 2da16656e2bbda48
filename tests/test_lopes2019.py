"""The Lopes et al. 2019 plugin: synthetic files in the corpus's own formats, then the real corpus.

Every clinical sentence here is invented for the tests; none comes from the corpus. The real
corpus is read from ``../shared/data/lopes2019`` (beside the repository; the ``shared_data``
fixture of conftest.py) and those tests skip, with the reason, where it is absent.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.plugins import lopes2019
from medfactory.plugins.lopes2019 import (
    PLUGIN,
    RAW_FOLDERS,
    TAGGED_FOLDER,
    prepare_lopes2019,
    rebuild_tagged_text,
    unwrap_raw_text,
)

SPN1, SPN2 = RAW_FOLDERS


def tagged_lines(spec: str) -> list[str]:
    """``"de/prp o/art"`` -> token<TAB>POS<TAB>lemma lines (the lemma does not matter here)."""
    lines = []
    for item in spec.split():
        token, pos = item.rsplit("/", 1)
        lines.append(f"{token}\t{pos}\t{token.lower()}")
    return lines


def write_tagged(path: Path, spec: str) -> None:
    path.write_bytes(("\n".join(tagged_lines(spec)) + "\n").encode("cp1252"))


def write_raw(path: Path, text: str, encoding: str = "cp1252", newline: str = "\r\n") -> None:
    path.write_bytes(text.replace("\n", newline).encode(encoding))


# --- Rebuilding tagged text ---------------------------------------------------------------------------

CASE_TAGGED = (
    "Doente/adv de/prp o/art sexo/n feminino/adj ,/punc de/prp 34/num anos/n ,/punc enviada/v-pcp a/prp a/art "
    "consulta/n de/prp Neurologia/prop em/prp 10/2019/num por/prp o/art médico/n assistente/adj ./punc "
    "Em/prp a/art consulta/n encontrava/v-fin se/pron-pers vígil/adj (/punc escala/n de/prp Glasgow/prop 15/num "
    ")/punc ;/punc a/art cefaleia/n cedeu/v-fin em/prp 3,5/num horas/n ,/punc com/prp redução/n de/prp 50/num "
    "%/punc ./punc"
)
CASE_TEXT = (
    "Doente do sexo feminino, de 34 anos, enviada à consulta de Neurologia em 10/2019 pelo médico assistente. "
    "Na consulta encontrava-se vígil (escala de Glasgow 15); a cefaleia cedeu em 3,5 horas, com redução de 50%."
)


def test_rebuild_merges_contractions_and_attaches_punctuation() -> None:
    assert rebuild_tagged_text(tagged_lines(CASE_TAGGED)) == CASE_TEXT


def test_rebuild_quotes_brackets_and_plural_contractions() -> None:
    spec = (
        'Referia/v-fin "/punc pontadas/n "/punc a/prp as/art segundas/adj e/conj-c dor/n de/prp um/art lado/n '
        "[/punc esquerdo/adj ]/punc ,/punc de/prp este/pron-det e/conj-c de/prp os/art outros/pron-det ./punc"
    )
    assert (
        rebuild_tagged_text(tagged_lines(spec))
        == 'Referia "pontadas" às segundas e dor de um lado [esquerdo], deste e dos outros.'
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # Not contractions in written Portuguese.
        ("história/n de/prp um/art AVC/prop", "história de um AVC"),
        ("passou/v-fin a/prp ter/v-inf febre/n", "passou a ter febre"),
        ("A/art doente/n refere/v-fin", "A doente refere"),
        ("diagnóstico/n de/prp ELA/prop", "diagnóstico de ELA"),
        ("por/prp um/art dia/n", "por um dia"),
        # Contractions, in every case the tokenizer writes them.
        ("EM/prp O/art", "NO"),
        ("A/art O/art exame/n", "Ao exame"),
        ("A/art A/art entrada/n", "À entrada"),
        ("em/prp um/art dia/n", "num dia"),
        ("de/prp ele/pron-pers", "dele"),
        ("em/prp esse/pron-det dia/n", "nesse dia"),
        ("a/prp aquele/pron-det doente/n", "àquele doente"),
        ("por/prp as/art 8/num horas/n", "pelas 8 horas"),
    ],
)
def test_rebuild_contractions_only_where_portuguese_writes_them(spec: str, expected: str) -> None:
    assert rebuild_tagged_text(tagged_lines(spec)) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("Verificou/v-fin se/pron-pers melhoria/n", "Verificou-se melhoria"),
        ("que/pron-indp se/pron-pers manteve/v-fin", "que se manteve"),
        ("Manteve/prop se/pron-pers estável/adj", "Manteve-se estável"),  # the tagger missed the verb
        ("tendo-/v-ger se/pron-pers", "tendo-se"),  # hyphen left at a PDF line end
        ("Foi/v-fin a/prp ele/pron-pers prescrito/v-pcp repouso/n", "Foi-lhe prescrito repouso"),
        ("que/pron-indp a/prp ele/pron-pers causou/v-fin dor/n", "que lhe causou dor"),
        ("estão/v-fin a/prp mentir/v-inf a/prp mim/pron-pers ./punc", "estão a mentir-me."),
        ("encontraram/v-fin ela/pron-pers confusa/adj", "encontraram-na confusa"),
        ("tentou/v-fin convencer/v-inf ela/pron-pers", "tentou convencê-la"),
        ("auscultando/v-ger ela/pron-pers", "auscultando-a"),
        ("disse/v-fin que/conj-s ela/pron-pers dormia/v-fin", "disse que ela dormia"),
        ("Apresentava/v-fin ELA/prop A/prp TI/prop de/prp 150/90/num mmHg/n", "Apresentava TA de 150/90 mmHg"),
    ],
)
def test_rebuild_clitics_the_tokenizer_split(spec: str, expected: str) -> None:
    assert rebuild_tagged_text(tagged_lines(spec)) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("RM-/prop -CE/prop", "RM-CE"),
        ("TC/prop -/prop CE/prop", "TC-CE"),
        ("dor/n -/punc sem/prp febre/n", "dor - sem febre"),
        ("durante/prp 20-/num 30/num minutos/n", "durante 20-30 minutos"),
        ("intra-/adj e/conj-c extra-axial/adj", "intra- e extra-axial"),
        ("grau/n 4-/num em/prp os/art membros/n", "grau 4- nos membros"),
        ("c./n 434del/n", "c.434del"),
        ("S./prop U./prop", "S.U."),
        ("2./num ª/n dose/n", "2.ª dose"),
        ("e/conj-c //punc ou/conj-c", "e/ou"),
    ],
)
def test_rebuild_hyphens_slashes_and_abbreviations(spec: str, expected: str) -> None:
    assert rebuild_tagged_text(tagged_lines(spec)) == expected


def test_rebuild_blank_line_is_a_paragraph_break() -> None:
    lines = [*tagged_lines("Sem/prp febre/n ./punc"), "", "", *tagged_lines("Teve/v-fin alta/n ./punc")]
    assert rebuild_tagged_text(lines) == "Sem febre.\n\nTeve alta."


def test_rebuild_names_the_line_without_a_tab() -> None:
    with pytest.raises(CorpusError, match="line 2: expected token<TAB>POS<TAB>lemma"):
        rebuild_tagged_text(["Sem\tprp\tsem", "febre", ".\tpunc\t."])


# --- Unwrapping raw text --------------------------------------------------------------------------------


def test_unwrap_joins_hard_wraps_and_keeps_real_hyphens() -> None:
    wrapped = (
        "Homem de 58 anos, com\nqueixas de  parestesias. Ao exame\nencontra-\nse vígil; o quadro\n"
        "tendo-\n-se agravado foi progressivo -\nsem febre - e com\t evolução lenta.\n \n"
        "Segundo parágrafo.\n"
    )
    assert unwrap_raw_text(wrapped) == (
        "Homem de 58 anos, com queixas de parestesias. Ao exame encontra-se vígil; o quadro "
        "tendo-se agravado foi progressivo - sem febre - e com evolução lenta.\n\nSegundo parágrafo."
    )


@pytest.mark.parametrize("folder", [SPN1, TAGGED_FOLDER])
def test_pdf_ligature_gaps_are_closed_in_both_formats(folder: str) -> None:
    raw = "Não se verifi cou défi ce\nmotor nem infl amação."
    tagged = "\n".join(
        tagged_lines(
            "Não/adv se/pron-pers verifi/v-fin cou/v-fin défi/n ce/n motor/adj nem/conj-c infl/n amação/n ./punc"
        )
    )
    text = lopes2019.clean_text(folder, tagged if folder == TAGGED_FOLDER else raw)
    assert text == "Não se verificou défice motor nem inflamação."


def test_unwrap_of_blank_text_is_empty() -> None:
    assert unwrap_raw_text(" \n\xa0\n\t") == ""


# --- Preparing a synthetic corpus --------------------------------------------------------------------

RAW_CASE = (
    "Homem de 58 anos, com queixas de\nparestesias da mão direita. Ao exame encontra-\n"
    "se vígil, com hemiparésia\ndireita grau 4 e reflexos vivos."
)
RAW_CASE_TEXT = (
    "Homem de 58 anos, com queixas de parestesias da mão direita. Ao exame encontra-se vígil, "
    "com hemiparésia direita grau 4 e reflexos vivos."
)
SECOND_CASE_TEXT = "Mulher de 71 anos, internada na enfermaria por afasia súbita."
SECOND_CASE_TAGGED = (
    "Mulher/n de/prp 71/num anos/n ,/punc internada/v-pcp em/prp a/art enfermaria/n por/prp afasia/n súbita/adj ./punc"
)
OTHER_REGISTRY_ENTRY = {"semclinbr": {"file_name": "data/semclinbr/train.jsonl", "columns": {"prompt": "text"}}}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Seven files in the published layout: 3 kept, 2 duplicates, 1 empty, 1 too short."""
    source = tmp_path / "lopes"
    for folder in (SPN1, SPN2, TAGGED_FOLDER):
        (source / folder).mkdir(parents=True)
    write_raw(source / SPN1 / "A1.txt", RAW_CASE)  # cp1252, CRLF, hard wraps
    write_raw(source / SPN1 / "A2.txt", " \n\xa0\n")  # blank after cleaning
    write_raw(source / SPN1 / "A3.txt", "Ver nº 3.")  # too short
    write_raw(source / SPN2 / "B1.txt", RAW_CASE, newline="\n")  # A1 with LF: same text, other bytes
    write_raw(source / SPN2 / "B2.txt", SECOND_CASE_TEXT, encoding="utf-8")
    write_tagged(source / TAGGED_FOLDER / "T1 vol1.txt", CASE_TAGGED)
    write_tagged(source / TAGGED_FOLDER / "T2 vol1.txt", SECOND_CASE_TAGGED)  # rebuilds to B2's text
    return source


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prepare_writes_documents_manifest_and_registry(corpus: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dataset_info.json").write_text(json.dumps(OTHER_REGISTRY_ENTRY), encoding="utf-8")

    manifest = prepare_lopes2019(corpus, output_root=root)

    train = root / "data" / "lopes2019" / "train.jsonl"
    records = read_jsonl(train)
    assert records == [
        {"text": RAW_CASE_TEXT, "source": f"{SPN1}/A1.txt"},
        {"text": SECOND_CASE_TEXT, "source": f"{SPN2}/B2.txt"},
        {"text": CASE_TEXT, "source": f"{TAGGED_FOLDER}/T1 vol1.txt"},
    ]
    assert "súbita" in train.read_text(encoding="utf-8")  # ensure_ascii=False

    assert manifest == json.loads((root / "data" / "lopes2019" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["files_read"] == 7
    assert manifest["files_read_by_source"] == {SPN1: 3, SPN2: 2, TAGGED_FOLDER: 2}
    assert manifest["documents"] == 3
    assert manifest["documents_by_source"] == {SPN1: 1, SPN2: 1, TAGGED_FOLDER: 1}
    assert manifest["dropped"] == {"duplicate": 2, "empty": 1, "too_short": 1}
    assert manifest["documents"] + sum(manifest["dropped"].values()) == manifest["files_read"]
    assert manifest["encodings"] == {"cp1252": 6, "utf-8": 1}
    assert manifest["characters"] == sum(len(record["text"]) for record in records)
    assert manifest["estimated_tokens"] == -(-manifest["characters"] // 4)
    assert manifest["outputs"] == {
        "train.jsonl": {"sha256": hashlib.sha256(train.read_bytes()).hexdigest(), "bytes": train.stat().st_size}
    }

    registry = json.loads((root / "dataset_info.json").read_text(encoding="utf-8"))
    assert registry == {
        **OTHER_REGISTRY_ENTRY,
        "lopes2019": {"file_name": "data/lopes2019/train.jsonl", "columns": {"prompt": "text"}, "medfactory_plugin": "lopes2019"},
    }


def test_manifest_and_log_hold_no_note_text(corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"):
        manifest = prepare_lopes2019(corpus, output_root=tmp_path)
    written = (tmp_path / "data" / "lopes2019" / "manifest.json").read_text(encoding="utf-8")
    for text in (RAW_CASE_TEXT, SECOND_CASE_TEXT, CASE_TEXT):
        words = text.split()
        for start in range(len(words) - 2):
            phrase = " ".join(words[start : start + 3])
            assert phrase not in written and phrase not in json.dumps(manifest, ensure_ascii=False)
            assert phrase not in caplog.text
    assert "3 documents kept" in caplog.text


def test_prepare_twice_gives_the_same_output(corpus: Path, tmp_path: Path) -> None:
    first = prepare_lopes2019(corpus, output_root=tmp_path)
    registry_before = (tmp_path / "dataset_info.json").read_bytes()
    second = prepare_lopes2019(corpus, output_root=tmp_path)
    assert first["outputs"] == second["outputs"]
    assert (tmp_path / "dataset_info.json").read_bytes() == registry_before
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["lopes2019"]


def test_failed_run_leaves_previous_dataset_and_registry_untouched(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare_lopes2019(corpus, output_root=tmp_path)
    kept_paths = [
        tmp_path / "data" / "lopes2019" / "train.jsonl",
        tmp_path / "data" / "lopes2019" / "manifest.json",
        tmp_path / "dataset_info.json",
    ]
    before = {path: path.read_bytes() for path in kept_paths}

    # A new corpus file, then a crash after some documents were already written to staging.
    write_raw(corpus / SPN2 / "B3.txt", "Criança de 6 anos com crises de ausência frequentes.")
    real_clean_text = lopes2019.clean_text
    calls = []

    def crash_midway(folder: str, text: str) -> str:
        calls.append(folder)
        if len(calls) == 5:
            raise RuntimeError("simulated crash")
        return real_clean_text(folder, text)

    monkeypatch.setattr(lopes2019, "clean_text", crash_midway)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_lopes2019(corpus, output_root=tmp_path)

    assert {path: path.read_bytes() for path in kept_paths} == before
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["lopes2019"]  # no staging left


# --- Bad input -------------------------------------------------------------------------------------------


def test_missing_source_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"nowhere: not found\. Pass --source"):
        prepare_lopes2019(tmp_path / "nowhere", output_root=tmp_path)


def test_wrong_layout_lists_what_was_found_and_what_is_expected(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / SPN1).mkdir()
    (tmp_path / "notes" / "extra.txt").write_text("x", encoding="utf-8")
    with pytest.raises(CorpusError) as error:
        prepare_lopes2019(tmp_path / "notes", output_root=tmp_path)
    message = str(error.value)
    assert f"missing '{SPN2}', '{TAGGED_FOLDER}'" in message
    assert f"found '{SPN1}/', 'extra.txt'" in message
    assert "Expected the corpus layout as published" in message

    # Pointing at the folder above the corpus suggests the right one.
    with pytest.raises(CorpusError, match=f"It looks like --source {re.escape(str(corpus))}"):
        prepare_lopes2019(corpus.parent, output_root=tmp_path)


def test_corpus_without_documents_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "lopes"
    for folder in (SPN1, SPN2, TAGGED_FOLDER):
        (source / folder).mkdir(parents=True)
    write_raw(source / SPN1 / "A1.txt", "\n\n")
    root = tmp_path / "repo"
    with pytest.raises(CorpusError, match=r"no documents in 1 files \(dropped: \{'empty': 1\}\)"):
        prepare_lopes2019(source, output_root=root)
    assert not (root / "data" / "lopes2019").exists()
    assert not (root / "dataset_info.json").exists()


def test_undefined_cp1252_byte_names_file_and_offset_unless_skipped(corpus: Path, tmp_path: Path) -> None:
    bad = corpus / SPN1 / "A9.txt"
    bad.write_bytes(b"Febre alta h\xe1 3 dias \x81 sem foco.\r\n")
    with pytest.raises(CorpusError) as error:
        prepare_lopes2019(corpus, output_root=tmp_path)
    assert str(bad) in str(error.value)
    assert "byte 0x81 at offset 21" in str(error.value)
    assert "--on-error skip" in str(error.value)
    assert not (tmp_path / "data" / "lopes2019").exists()

    manifest = prepare_lopes2019(corpus, output_root=tmp_path, on_error="skip")
    assert manifest["dropped"]["undecodable"] == 1
    assert manifest["documents"] == 3
    assert manifest["files_read"] == 8
    assert sum(manifest["encodings"].values()) == 7  # the skipped file has no encoding


def test_malformed_tagged_file_names_file_and_line_unless_skipped(corpus: Path, tmp_path: Path) -> None:
    bad = corpus / TAGGED_FOLDER / "T3 vol1.txt"
    bad.write_bytes(b"Sem\tprp\tsem\nfebre\n")
    with pytest.raises(CorpusError, match=re.escape(f"{bad}: line 2")):
        prepare_lopes2019(corpus, output_root=tmp_path)
    manifest = prepare_lopes2019(corpus, output_root=tmp_path, on_error="skip")
    assert manifest["dropped"]["malformed"] == 1


def test_unknown_on_error_value_is_rejected(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="use one of fail, skip"):
        prepare_lopes2019(corpus, output_root=tmp_path, on_error="ignore")


def test_broken_registry_is_reported_before_anything_is_written(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"invalid JSON.*Fix or delete"):
        prepare_lopes2019(corpus, output_root=tmp_path)
    assert not (tmp_path / "data").exists()


# --- The command ----------------------------------------------------------------------------------------


def plugin_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(PLUGIN.command)
    return app


def test_command_prints_a_summary(corpus: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(plugin_app(), ["--source", str(corpus), "--output-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{SPN1}: 3 files, 1 documents kept" in result.stdout
    assert "3 documents" in result.stdout
    assert "dropped: duplicate 2, empty 1, too_short 1" in result.stdout
    assert (tmp_path / "data" / "lopes2019" / "train.jsonl").is_file()


def test_command_turns_corpus_errors_into_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(plugin_app(), ["--source", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "not found" in result.stderr
    assert "Traceback" not in result.output


def test_plugin_is_registered_under_its_name() -> None:
    assert PLUGIN.name == "lopes2019"
    assert PLUGIN.command is lopes2019.prepare_command


# --- The real corpus (skipped where ../shared is absent) -------------------------------------------------

FORBIDDEN_SPLITS = re.compile(r"(?:^|\s)(?:de|em|por|a) (?:o|a|os|as)\s")


@pytest.fixture(scope="module")
def real_corpus(shared_data: Path) -> Path:
    corpus = shared_data / "lopes2019"
    if not corpus.is_dir():
        pytest.skip(f"real Lopes et al. 2019 corpus {corpus} is absent")
    return corpus


@pytest.fixture(scope="module")
def real_output(real_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    prepare_lopes2019(real_corpus, output_root=root)
    return root


def test_real_corpus_every_file_is_read_and_counted(real_output: Path) -> None:
    manifest = json.loads((real_output / "data" / "lopes2019" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["files_read_by_source"] == {SPN1: 105, SPN2: 176, TAGGED_FOLDER: 3377}
    assert manifest["files_read"] == 3658
    assert manifest["documents"] + sum(manifest["dropped"].values()) == manifest["files_read"]
    assert sum(manifest["documents_by_source"].values()) == manifest["documents"]
    assert sum(manifest["encodings"].values()) == manifest["files_read"]
    # The tagged copies of the raw cases that rebuild to exactly the raw text drop as duplicates.
    assert manifest["dropped"]["duplicate"] >= 200
    # Most of the other rebuilt raw cases differ from their raw text only in quotes or spacing.
    assert manifest["dropped"]["duplicate_except_punctuation"] >= 40
    records = read_jsonl(real_output / "data" / "lopes2019" / "train.jsonl")
    assert len(records) == manifest["documents"]
    assert sum(len(record["text"]) for record in records) == manifest["characters"]


def test_real_corpus_reads_as_portuguese(real_output: Path) -> None:
    records = read_jsonl(real_output / "data" / "lopes2019" / "train.jsonl")
    rebuilt = [record["text"] for record in records if record["source"].startswith(TAGGED_FOLDER)]
    assert len(rebuilt) > 3000
    split_contractions = [match.group(0) for text in rebuilt for match in FORBIDDEN_SPLITS.finditer(text)]
    assert split_contractions == []
    for record in records:
        assert not re.search(r" [,.;]", record["text"]), record["source"]
        assert "\n" not in record["text"]  # no file in this corpus has a paragraph break
    joined = "\n".join(rebuilt)
    assert joined.count("do sexo feminino") > 100
    assert "de o sexo" not in joined


def test_real_tagged_cases_rebuild_to_their_raw_text(real_corpus: Path) -> None:
    # The raw texts are volume 17: "CC1.txt" in SPN 1 is the tagged "CC1 vol17n1.txt".
    similarities = []
    identical = 0
    for folder, volume in ((SPN1, "vol17n1"), (SPN2, "vol17n2")):
        for raw_path in sorted((real_corpus / folder).iterdir()):
            tagged_path = real_corpus / TAGGED_FOLDER / f"{raw_path.stem} {volume}.txt"
            if not tagged_path.exists():
                continue
            raw = lopes2019.clean_text(folder, lopes2019.decode_bytes(raw_path.read_bytes(), raw_path)[0])
            rebuilt = lopes2019.clean_text(
                TAGGED_FOLDER, lopes2019.decode_bytes(tagged_path.read_bytes(), tagged_path)[0]
            )
            identical += raw == rebuilt
            similarities.append(difflib.SequenceMatcher(None, raw.split(), rebuilt.split(), autojunk=False).ratio())
    assert len(similarities) >= 270
    assert identical / len(similarities) >= 0.75
    assert sum(similarities) / len(similarities) >= 0.99


def test_real_corpus_through_the_medfactory_command(real_corpus: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "medfactory.cli", "prepare", "lopes2019", "--source", str(real_corpus),
         "--output-root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Texts Word Embeddings Training: 3377 files" in result.stdout
    assert (tmp_path / "data" / "lopes2019" / "train.jsonl").is_file()
    assert (tmp_path / "data" / "lopes2019" / "manifest.json").is_file()
    assert "lopes2019" in json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))


def test_copies_differing_only_in_punctuation_are_dropped_and_the_first_kept(tmp_path: Path) -> None:
    source = tmp_path / "lopes"
    for folder in (SPN1, SPN2, TAGGED_FOLDER):
        (source / folder).mkdir(parents=True)
    text = 'Homem de 64 anos, com "cefaleia" occipital e diplopia desde há 3 dias; sem febre.'
    write_raw(source / SPN1 / "C1.txt", text)
    write_raw(source / SPN2 / "C1 copy.txt", text.replace('"', "").replace("; ", " ; "))
    manifest = prepare_lopes2019(source, output_root=tmp_path / "repo")
    records = read_jsonl(tmp_path / "repo" / "data" / "lopes2019" / "train.jsonl")
    assert [record["source"] for record in records] == [f"{SPN1}/C1.txt"]
    assert manifest["dropped"] == {"duplicate_except_punctuation": 1}
