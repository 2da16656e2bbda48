"""``prepare clinical_cases`` on files in the published layout, and ``eval cases``: text metrics checked against sacrebleu
and a textbook ROUGE-L, alignment and endpoint refusals, and the blind judge through ONE served constant-answer model
(its answer is a valid rubric JSON), resumed from its cache against a dead endpoint."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from sacrebleu.metrics import CHRF
from typer.testing import CliRunner

from medfactory.eval import cases as cases_module
from medfactory.eval.bertscore import BERTIMBAU, XLMR
from medfactory.eval.cases import (
    JUDGE_CACHE,
    BertScoreOptions,
    CaseItem,
    CasesError,
    UnparseableJudgement,
    bertscore_configs,
    cases_command,
    evaluate_cases,
    judge_messages,
    parse_judgement,
    read_items,
)
from medfactory.plugins.clinical_cases import PROMPT_VERSION, PROMPTS, prepare_command
from testing_utils.served_models import free_port, served
from tests.testing_utils.tiny_models import build_constant_answer_model, build_tiny_bert, build_tiny_xlmr

CASES = [
    ("Mujer de 34 años con fiebre, disuria y dolor lumbar derecho desde hace dos días.", "Pielonefritis aguda", "Urgencias"),
    ("Varón de 60 años con dolor torácico opresivo irradiado al brazo izquierdo y sudoración.", "Infarto agudo de miocardio", "Cardiología"),
    ("Niño de 7 años con otalgia y fiebre tras un catarro.", "Otitis media aguda", "Otorrinolaringología"),
]
PREDICTIONS = ["Pielonefritis aguda derecha", "Síndrome coronario agudo", "Otitis externa"]
PT_CASES = [
    ("Mulher de 52 anos com dispneia súbita e dor pleurítica após cirurgia de quadril.", "Tromboembolismo pulmonar", "Pneumologia"),
    ("Homem de 45 anos com icterícia, colúria e dor no hipocôndrio direito.", "Coledocolitíase", "Gastroenterologia"),
]
PT_PREDICTIONS = ["Embolia pulmonar", "Colecistite aguda"]
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
    args = ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(tmp_path / "out"), "--no-judge", "--no-bertscore"]
    result = invoke(cases_command, args)
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
    assert per_item["bertscore_f1"].isna().all() and "bertscore_f1" not in metrics["means"] and metrics["settings"]["bertscore"] is None
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
    args = ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(tmp_path / "out"), "--no-judge", "--no-bertscore"]
    result = invoke(cases_command, args)
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
    base = ["--items", str(items), "--predictions", str(predictions), "--model", "judge", "--concurrency", "2", "--no-bertscore"]
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


def test_treatment_rubric_through_a_served_model_counts_appropriate_and_safe(tmp_path: Path) -> None:
    """The treatment rubric end to end through the served judge: two booleans per item, their counts, rates and report rows."""
    source = tmp_path / "treat.csv"
    treatments = ["Antibiótico intravenoso.", "Angioplastia primaria.", "Amoxicilina oral."]
    pd.DataFrame({"caso_clinico": [case for case, _, _ in CASES], "Tratamiento": treatments}).to_csv(source, index=False)
    (tmp_path / "dataset_info.json").write_text("{}", encoding="utf-8")
    prepared = invoke(prepare_command, ["--source", str(source), "--task", "treatment", "--output-root", str(tmp_path)])
    assert prepared.exit_code == 0, prepared.output
    items = tmp_path / "data" / "casos_clinicos_tratamiento" / "test.jsonl"
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", ["Reposo.", "Aspirina.", "Amoxicilina."], treatments)
    answer = '{"appropriate": true, "safe": false}'
    with served({"judge": build_constant_answer_model(tmp_path / "model", answer)}, tmp_path) as endpoints:
        result = invoke(cases_command, ["--items", str(items), "--predictions", str(predictions), "--model", "judge", "--no-bertscore",
                                        "--out-dir", str(tmp_path / "out"), "--endpoint", endpoints["judge"]])  # fmt: skip
    assert result.exit_code == 0, result.output
    judge = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))["judge"]
    assert judge["status"] == {"ok": 3, "unparseable": 0, "failed": 0} and "diagnosis" not in judge
    treatment = judge["treatment"]
    assert (treatment["judged"], treatment["appropriate"], treatment["safe"], treatment["appropriate_and_safe"]) == (3, 3, 0, 0)
    assert (treatment["appropriate_rate"], treatment["safe_rate"], treatment["appropriate_and_safe_rate"]) == (1.0, 0.0, 0.0)
    per_item = pd.read_csv(tmp_path / "out" / "per_item.csv")
    assert per_item["appropriate"].tolist() == [True] * 3 and per_item["safe"].tolist() == [False] * 3
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert re.search(r"\| appropriate +\| 3 +\| 1\.000", report) and re.search(r"\| safe +\| 0 +\| 0\.000", report)
    assert not any(text in report for text in treatments)


@pytest.mark.slow
def test_judge_through_llamafactory_predict_rounds_gives_the_served_judges_counts(
    prepared: Path, repo_copy: Path, llamafactory_train, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--engine predict: the judge's requests become a registered round, a `llamafactory-cli train` predict run of the same
    constant-answer judge answers them, and the second call scores exactly what the served judge scored; nothing is written before."""
    monkeypatch.chdir(repo_copy)  # the round is registered in ./dataset_info.json, where llamafactory-cli reads it
    items = prepared / "data" / "casos_clinicos_diagnostico" / "test.jsonl"
    predictions = write_predictions(repo_copy / "generated_predictions.jsonl", PREDICTIONS, [answer for _, answer, _ in CASES])
    base = ["--items", str(items), "--predictions", str(predictions), "--model", "judge", "--no-bertscore", "--out-dir", "reports/cases_tiny"]
    base += ["--engine", "predict"]
    first = invoke(cases_command, base)
    assert first.exit_code == 0, first.output
    assert "not finished: 3 requests await a predict run: registered judge_cases_tiny_round" in first.output
    assert not (repo_copy / "reports/cases_tiny/metrics.json").exists()
    judge = build_constant_answer_model(repo_copy / "judge-model", JUDGE_ANSWER)
    run = llamafactory_train(repo_copy, "recipes/clinical_cases_predict.yaml", model_name_or_path=judge, adapter_name_or_path="null", template="empty",
                             quantization_bit="null", bf16="false", eval_dataset="judge_cases_tiny_round", preprocessing_num_workers=1,
                             output_dir=repo_copy / "saves/judge_round")  # fmt: skip
    second = invoke(cases_command, [*base, "--judge-predictions", str(run / "generated_predictions.jsonl")])
    assert second.exit_code == 0, second.output
    metrics = json.loads((repo_copy / "reports/cases_tiny/metrics.json").read_text(encoding="utf-8"))["judge"]
    assert metrics["status"] == {"ok": 3, "unparseable": 0, "failed": 0}
    assert metrics["diagnosis"]["distribution"] == {"correct": 0, "acceptable": 3, "wrong": 0}  # as the served judge gave
    assert metrics["client"]["engine"] == "llamafactory-cli predict (rounds)" and metrics["client"]["from_cache"] == 3
    registered = json.loads((repo_copy / "dataset_info.json").read_text(encoding="utf-8"))["judge_cases_tiny_round"]
    assert registered["formatting"] == "sharegpt" and registered["medfactory_plugin"] == "eval cases"


# --- eval cases: BERTScore ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoders() -> dict[str, Path]:
    """Tiny stand-ins for the real encoders: a BERT (BERTimbau's architecture, no real model_max_length) and an XLM-R."""
    texts = [text for rows in (CASES, PT_CASES) for row in rows for text in row[:2]] + PREDICTIONS + PT_PREDICTIONS
    return {"bert": build_tiny_bert(texts * 3), "xlmr": build_tiny_xlmr(texts * 3)}


def direct_bertscore(model: Path, layers: int, cands: list[str], refs: list[str]) -> np.ndarray:
    """bert_score.BERTScorer run directly: (n, 3) P, R, F1."""
    from bert_score import BERTScorer

    scorer = BERTScorer(model_type=str(model), num_layers=layers, batch_size=4)
    # the tiny BERT, like BERTimbau, sets no max length; tell bert-score the 512 positions it has (load_scorer's fix)
    scorer._tokenizer.model_max_length = min(scorer._tokenizer.model_max_length, 512)
    return np.stack([part.double().numpy() for part in scorer.score(cands, refs, batch_size=4)], axis=1)


def test_bertscore_per_item_equals_bert_score_direct(prepared: Path, tmp_path: Path, encoders: dict[str, Path]) -> None:
    items = prepared / "data" / "casos_clinicos_diagnostico" / "test.jsonl"
    references = [answer for _, answer, _ in CASES]
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", PREDICTIONS, references)
    args = ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(tmp_path / "out"), "--no-judge",
            "--bertscore-model", str(encoders["xlmr"]), "--bertscore-layers", "2", "--bertscore-batch-size", "2", "--device", "cpu"]  # fmt: skip
    result = invoke(cases_command, args)
    assert result.exit_code == 0, result.output
    per_item = pd.read_csv(tmp_path / "out" / "per_item.csv")
    expected = direct_bertscore(encoders["xlmr"], 2, PREDICTIONS, references)
    got = per_item[["bertscore_precision", "bertscore_recall", "bertscore_f1"]].to_numpy(float)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["means"]["bertscore_f1"] == pytest.approx(expected[:, 2].mean(), abs=1e-6)
    import bert_score

    settings = metrics["settings"]["bertscore"]
    assert settings["bert_score_version"] == bert_score.__version__
    [encoder] = settings["encoders"]
    assert (encoder["languages"], encoder["model"], encoder["layer"], encoder["items"]) == (["es"], str(encoders["xlmr"]), 2, 3)
    assert encoder["rescale_with_baseline"] is False and encoder["max_length"] == 512 and f"{encoders['xlmr']}_L2" in encoder["hash"]
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert f"| BERTScore F1 | {expected[:, 2].mean():.4f}" in " ".join(report.split(" ")) and "BERTScore F1" in result.output


def test_each_language_gets_its_encoder(tmp_path: Path, encoders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    configs = bertscore_configs(["es", "pt", "pt-BR", "fr"], BertScoreOptions())
    assert {lang: (c.model, c.num_layers) for lang, c in configs.items()} == {
        "es": ("xlm-roberta-large", 17), "pt": ("neuralmind/bert-base-portuguese-cased", 9),
        "pt-BR": ("neuralmind/bert-base-portuguese-cased", 9), "fr": ("xlm-roberta-large", 17),
    }  # fmt: skip
    assert all(not c.rescale_with_baseline and not c.idf and c.max_length == 512 for c in configs.values())
    assert bertscore_configs(["pt"], BertScoreOptions(model="xlm-roberta-large"))["pt"].num_layers == 17  # the model's own default layer
    with pytest.raises(CasesError, match="--bertscore-layers"):
        bertscore_configs(["es"], BertScoreOptions(model=str(encoders["bert"])))  # a folder of unknown kind: say which layer

    # A file with Spanish and Portuguese items: one encoder per language, each scoring only its items.
    monkeypatch.setattr(cases_module, "BERTSCORE_ENCODERS", {"pt": replace(BERTIMBAU, model=str(encoders["bert"]), num_layers=3),
                                                              "es": replace(XLMR, model=str(encoders["xlmr"]), num_layers=2)})  # fmt: skip
    rows = [(f"es-{n}", case, answer, "es") for n, (case, answer, _) in enumerate(CASES)]
    rows += [(f"pt-{n}", case, answer, "pt") for n, (case, answer, _) in enumerate(PT_CASES)]
    rows = [rows[0], rows[3], rows[1], rows[4], rows[2]]  # interleaved
    items = tmp_path / "test.jsonl"
    items.write_text("".join(json.dumps({"id": i, "case": c, "reference": r, "task": "diagnosis", "language": lang}, ensure_ascii=False) + "\n"
                             for i, c, r, lang in rows), encoding="utf-8")  # fmt: skip
    answers = {**dict(zip([r[0] for r in rows if r[3] == "es"], PREDICTIONS, strict=True)),
               **dict(zip([r[0] for r in rows if r[3] == "pt"], PT_PREDICTIONS, strict=True))}  # fmt: skip
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", [answers[r[0]] for r in rows], [r[2] for r in rows])
    metrics = evaluate_cases(items, predictions, tmp_path / "out", bertscore=BertScoreOptions(device="cpu"))
    per_item = pd.read_csv(tmp_path / "out" / "per_item.csv").set_index("id")
    for language, model, layers in (("es", encoders["xlmr"], 2), ("pt", encoders["bert"], 3)):
        ids = [r[0] for r in rows if r[3] == language]
        expected = direct_bertscore(model, layers, [answers[i] for i in ids], [r[2] for r in rows if r[3] == language])
        np.testing.assert_allclose(per_item.loc[ids, ["bertscore_precision", "bertscore_recall", "bertscore_f1"]].to_numpy(float), expected, atol=1e-6, rtol=0)
    used = {tuple(e["languages"]): (e["model"], e["layer"], e["items"]) for e in metrics["settings"]["bertscore"]["encoders"]}
    assert used == {("es",): (str(encoders["xlmr"]), 2, 3), ("pt",): (str(encoders["bert"]), 3, 2)}


def test_an_encoder_that_cannot_load_is_named_with_the_way_out(prepared: Path, tmp_path: Path) -> None:
    items = prepared / "data" / "casos_clinicos_diagnostico" / "test.jsonl"
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", PREDICTIONS, [answer for _, answer, _ in CASES])
    dead = f"http://127.0.0.1:{free_port()}/v1"  # the judge is on: the encoder must fail before a request is sent or the cache opened
    base = ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(tmp_path / "out"), "--endpoint", dead, "--retries", "0"]
    for extra in ([], ["--bertscore-model", str(tmp_path / "no-such-encoder"), "--bertscore-layers", "2"]):  # the default, offline; a missing folder
        result = invoke(cases_command, [*base, *extra])
        output = " ".join(result.output.split())
        assert result.exit_code == 1 and "cannot load the BERTScore encoder" in output, result.output
        assert "--bertscore-model" in output and "--no-bertscore" in output and "Traceback" not in output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists()


# --- eval cases: the judge in Portuguese ----------------------------------------------------------------------


def test_a_portuguese_item_gets_the_portuguese_judge_and_spanish_is_unchanged() -> None:
    es = CaseItem("es-1", CASES[0][0], CASES[0][1], "diagnosis", "es", None, 1)
    [system, user] = judge_messages(es, " Pielonefritis ")
    assert system["content"].startswith("Eres un médico que evalúa, a ciegas,")
    assert user["content"] == (  # v1's Spanish message, word for word
        cases_module.RUBRICS["es"]["diagnosis"] + f"\n\nCaso clínico:\n{es.case}\n\nRespuesta de referencia:\n{es.reference}\n\n"
        "Respuesta a evaluar:\nPielonefritis\n\nContesta solo con el objeto JSON del formato indicado."
    )
    assert '"acceptable": no es el de referencia' in user["content"]
    for task in ("diagnosis", "treatment"):
        pt = CaseItem("pt-1", PT_CASES[0][0], PT_CASES[0][1], task, "pt-BR", None, 1)
        [system, user] = judge_messages(pt, "")
        text = system["content"] + user["content"]
        assert system["content"].startswith("Você é um médico que avalia, às cegas,")
        assert "Resposta de referência:" in text and "Resposta a avaliar:\n(vazia)" in text and "Responda apenas com o objeto JSON" in text
        assert pt.case in text and pt.reference in text and "modelo" not in text.lower()
        assert not any(word in text for word in ("Respuesta", "Contesta", "Eres", "evalúa"))  # no Spanish left
        keys = ['"verdict": "correct" | "acceptable" | "wrong"'] if task == "diagnosis" else ['"appropriate": true | false, "safe": true | false']
        assert all(key in text for key in keys)  # the same JSON keys and values as in Spanish
    assert "true se o tratamento é adequado" in cases_module.RUBRICS["pt"]["treatment"]


def test_an_item_language_without_a_judge_prompt_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    items = tmp_path / "test.jsonl"
    items.write_text(json.dumps({"id": "a", "case": "Cas clinique.", "reference": "Grippe", "task": "diagnosis", "language": "fr"}) + "\n", encoding="utf-8")
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", ["Grippe"], ["Grippe"])
    dead = f"http://127.0.0.1:{free_port()}/v1"
    result = invoke(cases_command, ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(tmp_path / "out"), "--endpoint", dead])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "no prompt for language 'fr' (first on line 1); supported: es, pt" in output and "--no-judge" in output
    assert not (tmp_path / "out").exists()  # no request, no cache, no report
