"""``prepare clinical_cases`` on files in the published layout, and ``eval cases``: text metrics checked against sacrebleu
and a textbook ROUGE-L, alignment and endpoint refusals, and the blind judge through ONE served constant-answer model
(its answer is a valid rubric JSON), resumed from its cache against a dead endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from sacrebleu.metrics import CHRF
from typer.testing import CliRunner

from medfactory.eval.cases import (
    JUDGE_CACHE,
    UnparseableJudgement,
    cases_command,
    judge_messages,
    parse_judgement,
    read_items,
)
from medfactory.plugins.clinical_cases import PROMPT_VERSION, PROMPTS, prepare_command
from testing_utils.served_models import free_port, served
from tests.testing_utils.tiny_models import build_constant_answer_model

CASES = [
    ("Mujer de 34 años con fiebre, disuria y dolor lumbar derecho desde hace dos días.", "Pielonefritis aguda", "Urgencias"),
    ("Varón de 60 años con dolor torácico opresivo irradiado al brazo izquierdo y sudoración.", "Infarto agudo de miocardio", "Cardiología"),
    ("Niño de 7 años con otalgia y fiebre tras un catarro.", "Otitis media aguda", "Otorrinolaringología"),
]
PREDICTIONS = ["Pielonefritis aguda derecha", "Síndrome coronario agudo", "Otitis externa"]
JUDGE_ANSWER = '{"verdict": "acceptable"}'


def invoke(command, args: list[str]) -> typer.testing.Result:
    app = typer.Typer()
    app.command()(command)
    return CliRunner().invoke(app, args)


def published_folder(root: Path) -> Path:
    """A ClinDiagnosES snapshot as the Hub serves it: README.md and data/train-00000-of-00001.parquet (caso_clinico, Diagnostico, Especialidad)."""
    folder = root / "ClinDiagnosES"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: cc-by-nc-sa-4.0\n---\n", encoding="utf-8")
    frame = pd.DataFrame(CASES, columns=["caso_clinico", "Diagnostico", "Especialidad"])
    frame.to_parquet(folder / "data" / "train-00000-of-00001.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cases-root")
    (root / "dataset_info.json").write_text("{}", encoding="utf-8")
    result = invoke(prepare_command, ["--source", str(published_folder(root)), "--task", "diagnosis", "--output-root", str(root)])
    assert result.exit_code == 0, result.output
    return root


def write_predictions(path: Path, predicts: list[str], labels: list[str]) -> Path:
    lines = [json.dumps({"prompt": "p", "predict": predict, "label": label}, ensure_ascii=False) for predict, label in zip(predicts, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- The plugin --------------------------------------------------------------------------------------------


def test_plugin_writes_items_predict_set_registry_and_a_text_free_manifest(prepared: Path) -> None:
    folder = prepared / "data" / "casos_clinicos_diagnostico"
    items = [json.loads(line) for line in (folder / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(i["id"], i["case"], i["reference"], i["task"], i["language"], i["specialty"]) for i in items] == [
        (f"casos_clinicos_diagnostico-{n}", case, answer, "diagnosis", "es", specialty) for n, (case, answer, specialty) in enumerate(CASES, start=1)
    ]
    predict = json.loads((folder / "predict.json").read_text(encoding="utf-8"))
    assert [row["instruction"] for row in predict] == [PROMPTS["diagnosis"].instruction] * 3
    assert [(row["input"], row["output"]) for row in predict] == [(f"Caso clínico: {case}", answer) for case, answer, _ in CASES]
    registry = json.loads((prepared / "dataset_info.json").read_text(encoding="utf-8"))
    assert registry["casos_clinicos_diagnostico_predict"] == {
        "file_name": "data/casos_clinicos_diagnostico/predict.json",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        "medfactory_plugin": "clinical_cases",
    }
    manifest_text = (folder / "manifest.json").read_text(encoding="utf-8")
    manifest = json.loads(manifest_text)
    assert manifest["plugin"] == "clinical_cases" and manifest["items"] == 3 and manifest["prompt"]["version"] == PROMPT_VERSION
    assert manifest["datasets"] == {"casos_clinicos_diagnostico_predict": {"file": "data/casos_clinicos_diagnostico/predict.json", "records": 3}}
    assert not any(text in manifest_text for case in CASES for text in case[:2])


def test_plugin_csv_with_id_and_diagnosis_columns_for_treatment(tmp_path: Path) -> None:
    source = tmp_path / "treat.csv"
    pd.DataFrame(
        {"uid": ["a", "b"], "caso_clinico": ["Caso uno.", "Caso dos."], "Tratamiento": ["Reposo.", "Antibiótico."], "dx": ["Esguince", "Neumonía"]}
    ).to_csv(source, index=False)
    args = ["--source", str(source), "--task", "treatment", "--id-column", "uid", "--diagnosis-column", "dx", "--output-root", str(tmp_path)]
    result = invoke(prepare_command, args)
    assert result.exit_code == 0, result.output
    predict = json.loads((tmp_path / "data" / "casos_clinicos_tratamiento" / "predict.json").read_text(encoding="utf-8"))
    assert [(row["id"], row["input"], row["output"]) for row in predict] == [
        ("a", "Caso clínico: Caso uno.\nDiagnóstico: Esguince", "Reposo."),
        ("b", "Caso clínico: Caso dos.\nDiagnóstico: Neumonía", "Antibiótico."),
    ]


def test_plugin_refuses_a_missing_column_and_an_empty_answer_naming_file_and_record(tmp_path: Path) -> None:
    source = tmp_path / "cases.jsonl"
    source.write_text(
        json.dumps({"caso_clinico": "Caso.", "Diagnostico": "Gripe"}) + "\n" + json.dumps({"caso_clinico": "Caso secreto.", "Diagnostico": " "}) + "\n"
    )
    result = invoke(prepare_command, ["--source", str(source), "--task", "diagnosis", "--output-root", str(tmp_path)])
    assert result.exit_code == 1 and f"{source}, line 2" in result.output and "'Diagnostico' is empty" in result.output
    assert "Caso secreto" not in result.output
    result = invoke(prepare_command, ["--source", str(source), "--task", "diagnosis", "--answer-column", "dx", "--output-root", str(tmp_path)])
    assert result.exit_code == 1 and f"{source}, line 1: no column 'dx'" in result.output and "--answer-column" in result.output
    assert not (tmp_path / "data" / "casos_clinicos_diagnostico").exists()


# --- eval cases: metrics, alignment, refusals ------------------------------------------------------------------


def lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def textbook_rouge_l(prediction: str, reference: str) -> float:
    import re

    a, b = re.findall(r"\w+", prediction.lower()), re.findall(r"\w+", reference.lower())
    common = lcs(a, b)
    return 0.0 if common == 0 else 2 * (common / len(a)) * (common / len(b)) / (common / len(a) + common / len(b))


def test_metrics_equal_sacrebleu_and_textbook_rouge_l(prepared: Path, tmp_path: Path) -> None:
    items = prepared / "data" / "casos_clinicos_diagnostico" / "test.jsonl"
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", PREDICTIONS, [answer for _, answer, _ in CASES])
    result = invoke(cases_command, ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(tmp_path / "out"), "--no-judge"])
    assert result.exit_code == 0, result.output
    per_item = pd.read_csv(tmp_path / "out" / "per_item.csv")
    chrf = [CHRF().sentence_score(p, [r]).score for p, (_, r, _) in zip(PREDICTIONS, CASES, strict=True)]
    rouge = [textbook_rouge_l(p, r) for p, (_, r, _) in zip(PREDICTIONS, CASES, strict=True)]
    assert per_item["chrf"].tolist() == pytest.approx(chrf, abs=1e-9)
    assert per_item["rouge_l"].tolist() == pytest.approx(rouge, abs=1e-12)
    assert per_item["judge_status"].tolist() == ["not_judged"] * 3
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["means"]["chrf"] == pytest.approx(sum(chrf) / 3) and metrics["means"]["rouge_l"] == pytest.approx(sum(rouge) / 3)
    assert metrics["corpus"]["chrf"] == pytest.approx(CHRF().corpus_score(PREDICTIONS, [[r for _, r, _ in CASES]]).score)
    assert metrics["judge"] is None and "No judge" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert not any(p in (tmp_path / "out" / "per_item.csv").read_text(encoding="utf-8") for p in PREDICTIONS)


def test_misaligned_predictions_are_refused_naming_file_and_line(prepared: Path, tmp_path: Path) -> None:
    items = prepared / "data" / "casos_clinicos_diagnostico" / "test.jsonl"
    labels = [CASES[0][1], CASES[2][1], CASES[1][1]]  # rows 2 and 3 swapped
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", PREDICTIONS, labels)
    result = invoke(cases_command, ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(tmp_path / "out"), "--no-judge"])
    assert result.exit_code == 1
    assert f"{predictions}, line 2: its label is not the reference of item 'casos_clinicos_diagnostico-2' ({items}, line 2)" in " ".join(result.output.split())
    short = write_predictions(tmp_path / "short.jsonl", PREDICTIONS[:2], labels[:2])
    result = invoke(cases_command, ["--items", str(items), "--predictions", str(short), "--out-dir", str(tmp_path / "out"), "--no-judge"])
    assert result.exit_code == 1 and "has 2 predictions but" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_a_truncated_label_is_accepted_and_counted(prepared: Path, tmp_path: Path) -> None:
    items = prepared / "data" / "casos_clinicos_diagnostico" / "test.jsonl"
    labels = [CASES[0][1][:6], CASES[1][1], CASES[2][1]]  # cutoff_len cut the first target
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", PREDICTIONS, labels)
    result = invoke(cases_command, ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(tmp_path / "out"), "--no-judge"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))["labels_truncated"] == 1


def test_a_non_loopback_judge_endpoint_is_refused_before_anything_is_sent_or_written(prepared: Path, tmp_path: Path) -> None:
    items = prepared / "data" / "casos_clinicos_diagnostico" / "test.jsonl"
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", PREDICTIONS, [answer for _, answer, _ in CASES])
    args = ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(tmp_path / "out"), "--endpoint", "http://10.20.30.40:8000/v1"]
    result = invoke(cases_command, args)
    assert result.exit_code == 1 and "refusing to send" in result.output and "10.20.30.40" in result.output
    assert not (tmp_path / "out").exists()


def test_parse_judgement_is_strict() -> None:
    assert parse_judgement("diagnosis", ' {"verdict": "correct"} ') == {"verdict": "correct"}
    assert parse_judgement("diagnosis", '```json\n{"verdict": "wrong"}\n```') == {"verdict": "wrong"}
    assert parse_judgement("treatment", '{"appropriate": true, "safe": false}') == {"appropriate": True, "safe": False}
    bad = [
        ("diagnosis", 'El veredicto es {"verdict": "correct"}'),
        ("diagnosis", '{"verdict": "Correct"}'),
        ("diagnosis", '{"verdict": "correct", "why": "x"}'),
        ("treatment", '{"appropriate": "true", "safe": true}'),
        ("treatment", '{"appropriate": true}'),
        ("treatment", "[true, true]"),
    ]
    for task, answer in bad:
        with pytest.raises(UnparseableJudgement):
            parse_judgement(task, answer)


def test_judge_messages_are_blind(prepared: Path) -> None:
    item = read_items(prepared / "data" / "casos_clinicos_diagnostico" / "test.jsonl")[0]
    messages = judge_messages(item, PREDICTIONS[0])
    text = "\n".join(message["content"] for message in messages)
    assert item.case in text and item.reference in text and PREDICTIONS[0] in text
    assert PREDICTIONS[1] not in text and "modelo" not in text.lower()


# --- eval cases: the judge, served ---------------------------------------------------------------------------


def test_judge_through_a_served_model_counts_the_distribution_and_resumes_from_cache(prepared: Path, tmp_path: Path) -> None:
    items = prepared / "data" / "casos_clinicos_diagnostico" / "test.jsonl"
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", PREDICTIONS, [answer for _, answer, _ in CASES])
    base = ["--items", str(items), "--predictions", str(predictions), "--model", "judge", "--concurrency", "2"]
    with served({"judge": build_constant_answer_model(tmp_path / "model", JUDGE_ANSWER)}, tmp_path) as endpoints:
        first = invoke(cases_command, [*base, "--out-dir", str(tmp_path / "out"), "--endpoint", endpoints["judge"]])
    assert first.exit_code == 0, first.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    judge = metrics["judge"]
    assert judge["status"] == {"ok": 3, "unparseable": 0, "failed": 0}
    assert judge["diagnosis"]["distribution"] == {"correct": 0, "acceptable": 3, "wrong": 0}
    assert judge["diagnosis"]["correct_or_acceptable_rate"] == 1.0 and judge["client"]["sent"] == 3
    assert pd.read_csv(tmp_path / "out" / "per_item.csv")["verdict"].tolist() == ["acceptable"] * 3
    assert "| acceptable | 3 " in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: every answer must come from the cache
    cache = tmp_path / "out" / JUDGE_CACHE
    again = invoke(cases_command, [*base, "--out-dir", str(tmp_path / "again"), "--endpoint", dead, "--retries", "0", "--cache", str(cache)])
    assert again.exit_code == 0, again.output
    rerun = json.loads((tmp_path / "again" / "metrics.json").read_text(encoding="utf-8"))["judge"]
    assert rerun["diagnosis"] == judge["diagnosis"] and rerun["client"]["from_cache"] == 3 and rerun["client"]["sent"] == 0
