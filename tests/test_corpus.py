"""The clinical-notes pipeline on messy synthetic exports: encodings, clean-up, identifiers,
de-duplication, leak-free splits, manifests and every kind of bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medfactory.base.errors import CorpusError
from medfactory.corpus.pipeline import PrepareOptions, prepare_corpus
from medfactory.corpus.splits import SplitPlan
from medfactory.plugins.brateca import BRATECA_MAPPING
from medfactory.plugins.notes import GENERIC_MAPPING, mapping_with_overrides
from medfactory.plugins.semclinbr import SEMCLINBR_MAPPING

VALID_CPF = "529.982.247-25"
NOTE_TEMPLATES = [
    "Paciente [NOME], {age} anos, admitida em <DATA> com dispneia aos esforços há {days} dias. "
    "Ao exame: BEG, corada, hidratada. PA 130x80 mmHg, FC {fc} bpm. HD: ICC descompensada. Conduta: furosemida EV.",
    "Evolução D{days}: paciente *** refere melhora da dor torácica. Sem febre nas últimas 24h. "
    "MV+ bilateralmente sem RA. Mantida antibioticoterapia, programada alta para XXXX. Idade {age}, FC {fc}.",
    "Resumo de alta: internado por pneumonia adquirida na comunidade, tratado com ceftriaxona por {days} dias. "
    "Evoluiu com melhora clínica. Retorno ambulatorial em 15 dias. Paciente de {age} anos, FC {fc} na alta.",
]


def synthetic_rows(patients: int, notes_per_patient: int) -> list[dict[str, str]]:
    rows = []
    for patient in range(patients):
        for visit in range(notes_per_patient):
            template = NOTE_TEMPLATES[(patient + visit) % len(NOTE_TEMPLATES)]
            text = template.format(age=20 + patient % 70, days=visit + 1, fc=60 + (patient * 7 + visit) % 60)
            rows.append({"id": f"p{patient}-n{visit}", "id_paciente": f"p{patient}", "data": f"2020-01-0{1 + visit % 9}", "texto": text})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], encoding: str = "utf-8", delimiter: str = ",") -> Path:
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def options(name: str = "hc_notes", mapping=SEMCLINBR_MAPPING, **overrides) -> PrepareOptions:
    settings = {"split": SplitPlan(0.1, 0.2, seed=11), "likert_notes": 5, "likert_min_characters": 100, "min_characters": 20}
    settings.update(overrides)
    return PrepareOptions(name=name, mapping=mapping, **settings)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_outputs(root: Path, name: str = "hc_notes") -> dict[str, list[dict]]:
    folder = root / "data" / name
    return {path.stem: read_jsonl(path) for path in sorted(folder.glob("*.jsonl"))}


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "notes.csv", synthetic_rows(patients=60, notes_per_patient=4))


def test_mixed_encodings_in_one_file_are_decoded_per_line_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    header = b"id,id_paciente,texto\n"
    utf8_row = 'a1,p1,"Paciente com insuficiência cardíaca, evolução estável e sem intercorrências."\n'.encode()
    cp1252_row = 'a2,p2,"Paciente em ação de reabilitação, lúcido e orientado, sem queixas."\n'.encode("cp1252")
    path.write_bytes(header + utf8_row + cp1252_row)
    manifest = prepare_corpus([path], options(likert_notes=0), tmp_path)
    texts = [record["text"] for records in all_outputs(tmp_path).values() for record in records]
    assert sorted(texts) == sorted(
        ["Paciente com insuficiência cardíaca, evolução estável e sem intercorrências.", "Paciente em ação de reabilitação, lúcido e orientado, sem queixas."]
    )
    (source,) = manifest["sources"]["listed"]
    assert source["encodings"] == {"utf-8": 2, "cp1252": 1}  # header + one row in UTF-8, one row in cp1252
    assert manifest["sources"]["mixed_encoding_files"] == [str(path)]
    assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_clean_up_keeps_deidentification_placeholders(tmp_path: Path) -> None:
    text = "Paciente  [NOME],\u00a0internado\r\n\r\n\r\n\r\nem <DATA>\tpor *** no leito XXXX.\x07\u200b  "
    write_csv(tmp_path / "n.csv", [{"id": "1", "texto": text}])
    prepare_corpus([tmp_path / "n.csv"], options(likert_notes=0), tmp_path)
    (record,) = [r for records in all_outputs(tmp_path).values() for r in records]
    assert record["text"] == "Paciente [NOME], internado\n\nem <DATA> por *** no leito XXXX."


def test_counts_add_up_and_the_manifest_holds_no_text(export: Path, tmp_path: Path) -> None:
    manifest = prepare_corpus([export], options(), tmp_path)
    outputs = all_outputs(tmp_path)
    assert manifest["records_read"] == 240
    assert manifest["documents"] + sum(manifest["dropped"].values()) == manifest["records_read"]
    for split, records in {"train": "train", "validation": "validation", "test": "test", "likert": "likert_heldout"}.items():
        assert manifest["splits"][split]["documents"] == len(outputs[records])
        assert manifest["splits"][split]["characters"] == sum(len(r["text"]) for r in outputs[records])
    serialized = json.dumps(manifest, ensure_ascii=False)
    for record in outputs["train"][:20]:
        assert record["text"][:40] not in serialized
    assert manifest["versions"]["medfactory"] and manifest["versions"]["llamafactory"] == "0.9.5"
    for name, entry in manifest["outputs"].items():
        assert entry["sha256"] == hashlib.sha256((tmp_path / "data" / "hc_notes" / name).read_bytes()).hexdigest()
    registry = json.loads((tmp_path / "dataset_info.json").read_text())
    assert registry["hc_notes"] == {"file_name": "data/hc_notes/train.jsonl", "columns": {"prompt": "text"}, "medfactory_plugin": "notes"}
    assert {"hc_notes_validation", "hc_notes_test", "hc_notes_likert"} <= set(registry)


def test_no_patient_of_an_evaluation_split_is_in_training(export: Path, tmp_path: Path) -> None:
    prepare_corpus([export], options(likert_notes=8), tmp_path)
    outputs = all_outputs(tmp_path)
    patients = {name: {record["id"].split("-")[0] for record in records} for name, records in outputs.items()}
    for held_out in ("validation", "test", "likert_heldout"):
        assert patients[held_out], held_out
        assert not patients[held_out] & patients["train"], held_out
    assert not patients["validation"] & patients["test"]
    assert len(outputs["likert_heldout"]) == 8
    assert len(patients["likert_heldout"]) == 8  # one note per patient
    test_ids = {record["id"] for record in outputs["test"]}
    assert not test_ids & {record["id"] for record in outputs["likert_heldout"]}


def test_splits_are_deterministic_and_stable_when_the_corpus_grows(tmp_path: Path) -> None:
    rows = synthetic_rows(patients=60, notes_per_patient=4)
    write_csv(tmp_path / "small.csv", rows[:120])
    write_csv(tmp_path / "all.csv", rows)
    first = prepare_corpus([tmp_path / "all.csv"], options(likert_notes=0), tmp_path / "a")
    again = prepare_corpus([tmp_path / "all.csv"], options(likert_notes=0), tmp_path / "b")
    assert first["outputs"] == again["outputs"]
    prepare_corpus([tmp_path / "small.csv"], options(likert_notes=0), tmp_path / "c")
    split_of = lambda root: {r["id"]: split for split, records in all_outputs(root).items() for r in records}  # noqa: E731
    small, full = split_of(tmp_path / "c"), split_of(tmp_path / "a")
    assert all(full[note] == split for note, split in small.items())


def test_notes_without_patient_ids_are_grouped_by_admission(tmp_path: Path) -> None:
    rows = [{"id_atendimento": f"a{i // 3}", "texto": f"Evolução {i}: paciente estável, sem queixas, aceitando dieta oral."} for i in range(90)]
    write_csv(tmp_path / "brateca.csv", rows)
    manifest = prepare_corpus([tmp_path / "brateca.csv"], options(mapping=BRATECA_MAPPING, likert_notes=0), tmp_path)
    assert manifest["notes_by_group_kind"] == {"admission": 90}


def test_a_split_that_cannot_be_patient_disjoint_says_so_in_manifest_and_summary(tmp_path: Path) -> None:
    # BRATECA's documented columns, without a patient column: splits fall back to admissions.
    rows = [{"id": f"n{i}", "id_atendimento": f"a{i // 3}", "texto": f"Evolução {i}: paciente estável, sem queixas, aceitando dieta oral."} for i in range(30)]
    write_csv(tmp_path / "brateca.csv", rows)
    command = [sys.executable, "-m", "medfactory.cli", "prepare", "brateca", "--source", str(tmp_path / "brateca.csv"),
               "--likert-notes", "0", "--output-root", str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "data" / "brateca" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["patient_disjoint"] is False
    caveat = "splits are by admission; the same patient can be in train and test (30 of 30 notes have no patient id)"
    assert manifest["split_caveats"] == [caveat]
    assert f"warning: {caveat}" in result.stdout
    # Notes with neither id are split one by one, and say so too; with patient ids there is no caveat.
    bare = write_csv(tmp_path / "bare.csv", [{"texto": r["texto"]} for r in rows])
    no_ids = prepare_corpus([bare], options(name="bare", mapping=BRATECA_MAPPING, likert_notes=0), tmp_path)
    assert no_ids["patient_disjoint"] is False and no_ids["split_caveats"][0].startswith("splits are by note;")
    with_patients = prepare_corpus([write_csv(tmp_path / "p.csv", synthetic_rows(10, 2))], options(name="with_patients", likert_notes=0), tmp_path)
    assert with_patients["patient_disjoint"] is True and with_patients["split_caveats"] == []


# Pairs that are one note for every purpose (exact duplicates) and one pair that is not.
NOTE = "Paciente evolui bem, afebril há 48 horas, aceitando dieta oral."
DUPLICATE_PAIRS = {
    "case": ("Paciente EVOLUI bem, afebril há 48 horas, aceitando dieta oral.", "paciente evolui bem, afebril HÁ 48 HORAS, aceitando dieta oral."),
    "whitespace": ("Paciente evolui bem,\nafebril há 48 horas, aceitando dieta oral.", "Paciente  evolui bem, afebril há 48\thoras, aceitando dieta oral. "),
    "accents composed or not": (NOTE, NOTE.replace("há", "ha\u0301")),
    "zero-width space": (NOTE, NOTE.replace("evolui", "evolui\u200b")),
}
NOT_DUPLICATES = (NOTE, NOTE.replace(",", ";"))


@pytest.mark.parametrize("pair", [*DUPLICATE_PAIRS, "punctuation"])
def test_one_definition_of_duplicate_in_prepare_and_contamination(tmp_path: Path, pair: str) -> None:
    from medfactory.corpus.contamination import contamination_report
    from medfactory.corpus.dedup import duplicate_key

    first, second = DUPLICATE_PAIRS.get(pair, NOT_DUPLICATES)
    duplicate = pair in DUPLICATE_PAIRS
    assert (duplicate_key(first) == duplicate_key(second)) is duplicate
    rows = [{"id": "1", "id_paciente": "p1", "texto": first}, {"id": "2", "id_paciente": "p2", "texto": second}]
    manifest = prepare_corpus([write_csv(tmp_path / "n.csv", rows)], options(likert_notes=0), tmp_path)
    assert manifest["dropped"].get("duplicate", 0) == int(duplicate), "prepare"
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text(json.dumps({"id": "1", "text": first}) + "\n", encoding="utf-8")
    b.write_text(json.dumps({"id": "2", "text": second}) + "\n", encoding="utf-8")
    report = contamination_report(a, b, threshold=1.0, progress=False)
    assert report["counts"]["a_exact_in_b"] == int(duplicate), "contamination"
    assert report["settings"]["exact_key"] == manifest["deduplication"]["exact_key"]


def test_exact_duplicates_always_and_near_duplicates_when_asked(tmp_path: Path) -> None:
    base = ("Paciente de 71 anos internado por pneumonia, em uso de ceftriaxona e azitromicina, "
            "evoluindo com melhora do padrão respiratório, afebril há 48 horas, aceitando dieta, "
            "deambulando sem auxílio, diurese presente, sem queixas álgicas no momento da avaliação.")  # fmt: skip
    rows = [
        {"id": "1", "id_paciente": "p1", "texto": base},
        {"id": "2", "id_paciente": "p1", "texto": base.replace(" ", "  ")},  # same after clean-up
        {"id": "3", "id_paciente": "p1", "texto": base.replace("48 horas", "72 horas")},  # copy-forward
        {"id": "4", "id_paciente": "p2", "texto": "Gestante de 32 semanas com cefaleia e edema de membros inferiores, PA elevada."},
    ]
    write_csv(tmp_path / "n.csv", rows)
    default = prepare_corpus([tmp_path / "n.csv"], options(likert_notes=0), tmp_path / "a")
    assert default["dropped"] == {"duplicate": 1}
    near = prepare_corpus([tmp_path / "n.csv"], options(likert_notes=0, near_duplicate_threshold=0.7), tmp_path / "b")
    assert near["dropped"] == {"duplicate": 1, "near_duplicate": 1}
    assert near["options"]["near_duplicate_threshold"] == 0.7


@pytest.fixture
def export_with_identifiers(tmp_path: Path) -> Path:
    rows = synthetic_rows(patients=10, notes_per_patient=2)
    rows[3]["texto"] += f" CPF {VALID_CPF}, contato (11) 98765-4321, e-mail joana.silva@example.com.br."
    rows[7]["texto"] += " Telefone da filha: (21) 3456-7890."
    return write_csv(tmp_path / "ids.csv", rows)


def test_identifiers_masked_by_default_and_counted_without_values(export_with_identifiers: Path, tmp_path: Path) -> None:
    manifest = prepare_corpus([export_with_identifiers], options(likert_notes=0), tmp_path)
    assert manifest["identifiers"]["mode"] == "mask"
    assert manifest["identifiers"]["notes_with_findings"] == 2
    assert manifest["identifiers"]["findings_by_type"] == {"cpf": 1, "email": 1, "phone_br": 2}
    written = "".join(path.read_text(encoding="utf-8") for path in (tmp_path / "data" / "hc_notes").iterdir())
    for value in (VALID_CPF, "98765-4321", "joana.silva@example.com.br", "3456-7890"):
        assert value not in written
    assert "[CPF]" in written and "[EMAIL]" in written


def test_identifier_report_mode_keeps_text(export_with_identifiers: Path, tmp_path: Path) -> None:
    manifest = prepare_corpus([export_with_identifiers], options(likert_notes=0, identifier_mode="report", deid="none"), tmp_path)
    assert manifest["identifiers"]["findings_by_type"]["cpf"] == 1
    written = "".join(path.read_text(encoding="utf-8") for path in (tmp_path / "data" / "hc_notes").glob("*.jsonl"))
    assert VALID_CPF in written
    assert VALID_CPF not in (tmp_path / "data" / "hc_notes" / "manifest.json").read_text()


def test_identifier_refuse_mode_writes_nothing_and_keeps_the_previous_dataset(export: Path, export_with_identifiers: Path, tmp_path: Path) -> None:
    prepare_corpus([export], options(), tmp_path)
    before = {path.name: path.read_bytes() for path in (tmp_path / "data" / "hc_notes").iterdir()}
    registry_before = (tmp_path / "dataset_info.json").read_bytes()
    with pytest.raises(CorpusError) as error:
        prepare_corpus([export_with_identifiers], options(identifier_mode="refuse"), tmp_path)
    message = str(error.value)
    assert f"{export_with_identifiers}:5" in message and "cpf" in message and VALID_CPF not in message
    assert "--identifier-mode mask" in message
    assert {path.name: path.read_bytes() for path in (tmp_path / "data" / "hc_notes").iterdir()} == before
    assert (tmp_path / "dataset_info.json").read_bytes() == registry_before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["hc_notes"]  # no staging left behind


def test_a_run_killed_midway_leaves_the_previous_dataset(export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare_corpus([export], options(), tmp_path)
    before = {path.name: path.read_bytes() for path in (tmp_path / "data" / "hc_notes").iterdir()}
    calls = {"n": 0}
    import medfactory.corpus.pipeline as corpus_module

    real = corpus_module.normalise_note

    def dies_midway(text: str) -> str:
        calls["n"] += 1
        if calls["n"] == 100:
            raise KeyboardInterrupt  # what a kill looks like from inside
        return real(text)

    monkeypatch.setattr(corpus_module, "normalise_note", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus([export], options(name="hc_notes", likert_notes=3), tmp_path)
    assert {path.name: path.read_bytes() for path in (tmp_path / "data" / "hc_notes").iterdir()} == before


def test_row_with_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(
        "id,id_paciente,texto\n1,p1,Paciente estável sem queixas no momento.\n2,p2,Paciente com dor, febre e tosse\n3,p3,Evolução sem intercorrências hoje.\n",
        encoding="utf-8",
    )
    with pytest.raises(CorpusError, match=rf"{path}:3: row has 4 fields, the header has 3\. Fix: quote notes"):
        prepare_corpus([path], options(likert_notes=0), tmp_path)
    manifest = prepare_corpus([path], options(likert_notes=0, on_error="skip"), tmp_path)
    assert manifest["dropped"] == {"wrong_field_count": 1}
    assert manifest["documents"] == 2


def test_undecodable_bytes_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bytes.csv"
    path.write_bytes(b'id,texto\n1,"Paciente l\xfacido e orientado, sem queixas."\n2,Paciente \x81\x8d com dor abdominal difusa.\n')
    with pytest.raises(CorpusError, match=rf"{path}:3: byte 0x81 at offset 11 is not valid UTF-8 nor cp1252\..*--on-error skip"):
        prepare_corpus([path], options(likert_notes=0), tmp_path)
    manifest = prepare_corpus([path], options(likert_notes=0, on_error="skip"), tmp_path)
    assert manifest["dropped"] == {"undecodable": 1} and manifest["documents"] == 1
    forced = prepare_corpus([path], options(likert_notes=0, encoding="latin-1"), tmp_path)
    assert forced["documents"] == 2


def test_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    write_csv(tmp_path / "x.csv", [{"nota_id": "1", "conteudo": "Paciente estável, sem queixas."}])
    with pytest.raises(CorpusError) as error:
        prepare_corpus([tmp_path / "x.csv"], options(), tmp_path)
    assert "no text column" in str(error.value) and "'nota_id', 'conteudo'" in str(error.value)
    assert "--text-column" in str(error.value)
    mapping = mapping_with_overrides(SEMCLINBR_MAPPING, text="conteudo", patient_id="prontuario")
    with pytest.raises(CorpusError, match="no patient_id column .*'prontuario'.*--patient-column with"):
        prepare_corpus([tmp_path / "x.csv"], options(mapping=mapping), tmp_path)


def test_missing_path_and_empty_corpus(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"nowhere: no such file or folder\. Fix: check the --source path"):
        prepare_corpus([tmp_path / "nowhere"], options(), tmp_path)
    write_csv(tmp_path / "empty.csv", [{"id": "1", "texto": "  "}, {"id": "2", "texto": "ok"}])
    with pytest.raises(CorpusError, match=r"no notes kept from 2 records read \(dropped: \{'empty': 1, 'too_short': 1\}\)"):
        prepare_corpus([tmp_path / "empty.csv"], options(), tmp_path)
    assert not (tmp_path / "data" / "hc_notes").exists()


def test_every_format_gives_the_same_notes(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = synthetic_rows(patients=6, notes_per_patient=2)
    write_csv(tmp_path / "n.csv", rows)
    write_csv(tmp_path / "n.tsv", rows, delimiter="\t")
    with open(tmp_path / "n.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "n.parquet")
    txt = tmp_path / "txt"
    txt.mkdir()
    for row in rows:
        (txt / f"{row['id']}.txt").write_text(row["texto"], encoding="cp1252")
    texts = {}
    for source in ("n.csv", "n.tsv", "n.jsonl", "n.parquet", "txt"):
        prepare_corpus([tmp_path / source], options(likert_notes=0), tmp_path / f"out-{source}")
        texts[source] = sorted(r["text"] for records in all_outputs(tmp_path / f"out-{source}").values() for r in records)
    assert all(value == texts["n.csv"] for value in texts.values())
    assert len(texts["n.csv"]) == 12


def test_exact_token_counts_with_a_tokenizer(export: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from medfactory.corpus.synthetic_notes import generate_notes
    from medfactory.run.tiny_model import build_tiny_model

    tokenizer_dir = build_tiny_model("mistral", list(generate_notes(200)))
    manifest = prepare_corpus([export], options(tokenizer=str(tokenizer_dir)), tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    for split, stem in {"train": "train", "test": "test", "likert": "likert_heldout"}.items():
        texts = [r["text"] for r in read_jsonl(tmp_path / "data" / "hc_notes" / f"{stem}.jsonl")]
        expected = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else 0
        assert manifest["splits"][split]["tokens"] == expected, split


def test_cli_prepares_users_notes_with_column_flags(tmp_path: Path) -> None:
    rows = [{"evolucao": r["texto"], "prontuario": r["id_paciente"], "nid": r["id"]} for r in synthetic_rows(20, 3)]
    write_csv(tmp_path / "hospital.csv", rows)
    command = [sys.executable, "-m", "medfactory.cli", "prepare", "notes", "--source", str(tmp_path / "hospital.csv"),
               "--name", "hc_notes", "--text-column", "evolucao", "--patient-column", "prontuario", "--id-column", "nid",
               "--likert-notes", "3", "--likert-min-characters", "100", "--test-fraction", "0.3", "--output-root", str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "likert" in result.stdout and "registered" in result.stdout
    assert len(read_jsonl(tmp_path / "data" / "hc_notes" / "likert_heldout.jsonl")) == 3
    # semclinbr's default columns do not include "evolucao": the error lists what the file has.
    semclinbr = [*command[:4], "semclinbr", "--source", str(tmp_path / "hospital.csv"), "--output-root", str(tmp_path)]
    bad = subprocess.run(semclinbr, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "no text column" in bad.stderr and "'evolucao', 'prontuario', 'nid'" in bad.stderr


def test_generic_mapping_recognises_common_export_names() -> None:
    resolved = GENERIC_MAPPING.resolve(["prontuario", "id_atendimento", "dt_evolucao", "evolucao"], "x.csv")
    assert resolved == {"text": "evolucao", "note_id": None, "patient_id": "prontuario", "admission_id": "id_atendimento", "date": "dt_evolucao"}
