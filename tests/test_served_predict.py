"""``generate predict``: a registered predict set answered by a served model (`llamafactory-cli api`) gives the rows a
`llamafactory-cli train` predict run gives (same order, same replies, same labels), and the next stage (`eval cases`)
reads it unchanged; failures and image sets write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_clinical_cases import CASES, published_folder
from typer.testing import CliRunner

from medfactory.cli import app
from medfactory.generate.predictions import comparable
from testing_utils.served_models import free_port, served
from testing_utils.tiny_models import build_constant_answer_model

ANSWER = "Pielonefritis aguda"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.slow
def test_served_rows_equal_the_predict_runs_and_feed_eval_cases(repo_copy: Path, llamafactory_train, medfactory_cli) -> None:
    root = repo_copy
    medfactory_cli(root, "prepare", "clinical_cases", "--source", str(published_folder(root)), "--task", "diagnosis")
    model = build_constant_answer_model(root / "constant", ANSWER)
    predict = llamafactory_train(root, "recipes/clinical_cases_predict.yaml", model_name_or_path=model, adapter_name_or_path="null", template="empty",
                                 quantization_bit="null", bf16="false", output_dir=root / "saves" / "predicted")  # fmt: skip
    with served({"constant": model}, root) as endpoints:
        output = medfactory_cli(root, "generate", "predict", "--recipe", "recipes/clinical_cases_predict.yaml", "--output-dir", "saves/served",
                                "--endpoint", endpoints["constant"], "--model", "constant")  # fmt: skip
    assert f"{len(CASES)} records of casos_clinicos_diagnostico_predict answered" in output
    predicted = [json.loads(line) for line in (predict / "generated_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    served_rows = [json.loads(line) for line in (root / "saves/served/generated_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["predict"].strip() for row in served_rows] == [row["predict"].strip() for row in predicted] == [ANSWER] * len(CASES)
    assert [comparable(row["label"]) for row in served_rows] == [comparable(row["label"]) for row in predicted] == [comparable(a) for _, a, _ in CASES]
    for served_row, predicted_row in zip(served_rows, predicted, strict=True):
        assert comparable(served_row["prompt"]) in comparable(predicted_row["prompt"])  # the same turns; predict adds the template
    summary = json.loads((root / "saves/served/served_predict.json").read_text(encoding="utf-8"))
    assert summary["records"] == len(CASES) and summary["temperature"] == 0.0 and summary["max_tokens"] == 384
    assert "repetition_penalty" in summary["recipe_values_not_sent"]  # reported, not silently dropped
    assert not any(case in json.dumps(summary) for case, _, _ in CASES)

    medfactory_cli(root, "eval", "cases", "--items", "data/casos_clinicos_diagnostico/test.jsonl", "--predictions", "saves/served/generated_predictions.jsonl",
                   "--out-dir", "reports/served", "--no-judge", "--no-bertscore")  # fmt: skip
    assert json.loads((root / "reports/served/metrics.json").read_text(encoding="utf-8"))["n"] == len(CASES)


def test_failures_unknown_sets_and_image_sets_write_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/qa.json").write_text(json.dumps([{"instruction": "Diagnóstico:", "input": "fiebre", "output": "gripe"}]), encoding="utf-8")
    (tmp_path / "data/cxr.json").write_text(json.dumps([{"messages": [{"role": "user", "content": "<image>"}], "images": ["a.png"]}]), encoding="utf-8")
    registry = {"qa": {"file_name": "data/qa.json", "columns": {"prompt": "instruction", "query": "input", "response": "output"}},
                "cxr": {"file_name": "data/cxr.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}  # fmt: skip
    (tmp_path / "dataset_info.json").write_text(json.dumps(registry), encoding="utf-8")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    code, output = run("generate", "predict", "--dataset", "qa", "--output-dir", "out", "--endpoint", dead, "--retries", "0")
    assert code == 1 and "1 of 1 requests failed" in output and not (tmp_path / "out").exists()
    code, output = run("generate", "predict", "--dataset", "nope", "--output-dir", "out", "--endpoint", dead)
    assert code == 1 and "dataset_info.json" in output and "nope" in output
    code, output = run("generate", "predict", "--dataset", "cxr", "--output-dir", "out", "--endpoint", dead)
    assert code == 1 and "images" in output and "llamafactory-cli train" in output
    code, output = run("generate", "predict", "--dataset", "qa", "--output-dir", "out", "--endpoint", "http://10.1.2.3:8000/v1")
    assert code == 1 and not (tmp_path / "out").exists() and "gripe" not in output and "fiebre" not in output
