"""``prepare notes`` de-identifies by default: names, dates, ids replaced, consistently per patient; counts, never values."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from medfactory.cli import app

PATIENT_NAME = "Joaquim Barbosa Tavares"
OTHER_NAME = "Maria Fontes Meireles"
NOTES = [
    ("p1", "n1", f"Paciente {PATIENT_NAME}, 54 anos, prontuário 1234567, internado em 03/02/2021 com dispneia."),
    ("p1", "n2", f"Evolução: {PATIENT_NAME} refere melhora; alta prevista para 10/02/2021. Mantém furosemida."),
    ("p2", "n3", f"Paciente {OTHER_NAME}, 71 anos, prontuário 7654321, atendida em 15/03/2021 por dor torácica."),
]


def write_export(path: Path) -> Path:
    rows = ["id,patient_id,text"] + [f'{note},{patient},"{text}"' for patient, note, text in NOTES]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def prepare(tmp_path: Path, *extra: str) -> tuple[dict, dict[str, str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "repo"
    args = ["prepare", "notes", "--source", str(write_export(tmp_path / "notes.csv")), "--name", "hc", "--output-root", str(root)]
    args += ["--validation-fraction", "0", "--test-fraction", "0", "--likert-notes", "0", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((root / "data/hc/manifest.json").read_text(encoding="utf-8"))
    texts = {}
    for line in (root / "data/hc/train.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        texts[record["id"]] = record["text"]
    return {"manifest": manifest, "output": result.output}, texts


def test_prepare_replaces_names_dates_and_record_numbers_by_default(tmp_path: Path) -> None:
    run, texts = prepare(tmp_path, "--deid-seed", "k1")
    written = "\n".join(texts.values())
    for value in (PATIENT_NAME, OTHER_NAME, "1234567", "7654321", "03/02/2021", "15/03/2021"):
        assert value not in written
    deid = run["manifest"]["deid"]
    assert deid["mode"] == "surrogate" and deid["language"] == "pt" and deid["surrogate_seed"] == "--deid-seed"
    assert deid["notes_with_findings"] == 3
    assert {"FECHAS", "PRONTUARIO"} <= set(deid["findings_by_category"])
    serialised = json.dumps(run["manifest"], ensure_ascii=False) + run["output"]
    for value in (PATIENT_NAME, OTHER_NAME, "1234567", "Joaquim", "k1"):
        assert value not in serialised  # counts only; the seed is never recorded


def test_surrogates_are_consistent_within_a_patient_and_keep_the_interval_between_dates(tmp_path: Path) -> None:
    import datetime as dt

    _, texts = prepare(tmp_path, "--deid-seed", "k1")
    dates = {note: re.findall(r"\d{2}/\d{2}/\d{4}", text) for note, text in texts.items()}
    first, second = (dt.datetime.strptime(dates[note][0], "%d/%m/%Y") for note in ("n1", "n2"))
    assert (second - first).days == 7  # 03/02 -> 10/02 in the source
    surrogate_in_n1 = texts["n1"].split(",")[0].removeprefix("Paciente ")
    assert surrogate_in_n1 and surrogate_in_n1 in texts["n2"]  # the same fake name in both notes of p1
    _, again = prepare(tmp_path / "again", "--deid-seed", "k1")
    assert again == texts  # the same key gives the same surrogates on another run


def test_placeholders_and_opting_out_are_stated_in_the_manifest(tmp_path: Path) -> None:
    _, texts = prepare(tmp_path, "--deid", "placeholder")
    assert "[DATA]" in texts["n1"] and PATIENT_NAME not in texts["n1"]
    run, texts = prepare(tmp_path / "off", "--deid", "none")
    assert PATIENT_NAME in texts["n1"]
    assert run["manifest"]["deid"]["mode"] == "none"
    assert "de-identification is off" in run["output"]
