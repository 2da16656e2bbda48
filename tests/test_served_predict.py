"""``generate predict``: a registered predict set answered by a served model (`llamafactory-cli api`) gives the rows a
`llamafactory-cli train` predict run gives (same order, same replies, same labels), and the next stage (`eval cases`)
reads it unchanged; image records go as content parts; failures write nothing."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_clinical_cases import CASES, published_folder
from typer.testing import CliRunner

from medfactory.cli import app
from medfactory.generate.predictions import comparable
from testing_utils.served_models import free_port, served
from testing_utils.tiny_models import build_constant_answer_model, build_tiny_gemma3_vlm

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
        # The recipe builds prompts with template `mistral`; this server runs `empty`: the check stops before anything is cached.
        checked = subprocess.run([sys.executable, "-m", "medfactory.cli", "generate", "predict", "--recipe", "recipes/clinical_cases_predict.yaml",
                                  "--output-dir", "saves/checked", "--endpoint", endpoints["constant"], "--check-prompts", str(model)],
                                 cwd=root, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert checked.returncode == 1 and "where template 'mistral' builds" in checked.stderr and "nothing was written or cached" in checked.stderr
    assert not (root / "saves/checked").exists()
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
    assert summary["server_must_match"]["quantization_bit"] == 4 and summary["server_must_match"]["template"] == "mistral"  # what the server must load
    assert "adapter_name_or_path" in summary["server_must_match"]
    assert not any(case in json.dumps(summary) for case, _, _ in CASES)

    medfactory_cli(root, "eval", "cases", "--items", "data/casos_clinicos_diagnostico/test.jsonl", "--predictions", "saves/served/generated_predictions.jsonl",
                   "--out-dir", "reports/served", "--no-judge", "--no-bertscore")  # fmt: skip
    assert json.loads((root / "reports/served/metrics.json").read_text(encoding="utf-8"))["n"] == len(CASES)


def test_failures_unknown_sets_missing_images_and_video_sets_write_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/qa.json").write_text(json.dumps([{"instruction": "Diagnóstico:", "input": "fiebre", "output": "gripe"}]), encoding="utf-8")
    (tmp_path / "data/cxr.json").write_text(
        json.dumps([{"messages": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "ok"}], "images": ["a.png"]}]), encoding="utf-8"
    )
    registry = {"qa": {"file_name": "data/qa.json", "columns": {"prompt": "instruction", "query": "input", "response": "output"}},
                "cxr": {"file_name": "data/cxr.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}  # fmt: skip
    registry["clip"] = {**registry["cxr"], "columns": {"messages": "messages", "videos": "videos"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(registry), encoding="utf-8")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    code, output = run("generate", "predict", "--dataset", "qa", "--output-dir", "out", "--endpoint", dead, "--retries", "0")
    assert code == 1 and "1 of 1 requests failed" in output and not (tmp_path / "out").exists()
    code, output = run("generate", "predict", "--dataset", "nope", "--output-dir", "out", "--endpoint", dead)
    assert code == 1 and "dataset_info.json" in output and "nope" in output
    code, output = run("generate", "predict", "--dataset", "cxr", "--output-dir", "out", "--endpoint", dead)
    assert code == 1 and "a.png: cannot read the image" in output and "nothing was sent" in output and not (tmp_path / "out").exists()
    code, output = run("generate", "predict", "--dataset", "clip", "--output-dir", "out", "--endpoint", dead)
    assert code == 1 and "videos or audio" in output and "llamafactory-cli train" in output
    code, output = run("generate", "predict", "--dataset", "qa", "--output-dir", "out", "--endpoint", "http://10.1.2.3:8000/v1")
    assert code == 1 and not (tmp_path / "out").exists() and "gripe" not in output and "fiebre" not in output


def write_image_set(root: Path) -> list[dict]:
    """Two chest-X-ray-shaped records in the MIMIC-CXR-PT-BR sharegpt layout (one image each, one with an example report first)."""
    from PIL import Image

    (root / "data/cxr").mkdir(parents=True)
    for name, shade in (("a.png", 40), ("b.png", 200)):
        Image.new("L", (64, 48), shade).save(root / "data/cxr" / name)
    records = [
        {"messages": [{"role": "user", "content": "<image>Descreva a radiografia de tórax."}, {"role": "assistant", "content": "Pulmões limpos."}],
         "images": ["data/cxr/a.png"]},
        {"messages": [{"role": "user", "content": "Exemplo de relatório: sem derrame.\n<image>Descreva a radiografia."},
                      {"role": "assistant", "content": "Derrame pleural à direita."}], "images": ["data/cxr/b.png"]},
    ]  # fmt: skip
    (root / "data/cxr/test.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    registry = json.loads((root / "dataset_info.json").read_text(encoding="utf-8"))
    registry["cxr_small"] = {"file_name": "data/cxr/test.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
                             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}  # fmt: skip
    (root / "dataset_info.json").write_text(json.dumps(registry), encoding="utf-8")
    return records


@pytest.mark.slow
def test_image_records_served_as_content_parts_equal_the_predict_run(repo_copy: Path, llamafactory_train, medfactory_cli) -> None:
    """The MIMIC-CXR-PT-BR scenario recipe's set with images: served through `llamafactory-cli api` (gemma3, the recipe's pixels)
    the replies equal the predict run's token for token on a tiny random Gemma 3 VLM, greedy, in the set's order."""
    root = repo_copy
    records = write_image_set(root)
    vlm = build_tiny_gemma3_vlm(["Descreva a radiografia de tórax.", "Pulmões limpos.", "Exemplo de relatório: sem derrame.", "Derrame pleural."])
    greedy = {"do_sample": "false", "repetition_penalty": 1.0, "max_new_tokens": 8}  # the server's defaults, so both decode alike
    predict = llamafactory_train(root, "recipes/medgemma_cxr_ptbr_predict_zeroshot.yaml", model_name_or_path=vlm, eval_dataset="cxr_small",
                                 quantization_bit="null", bf16="false", per_device_eval_batch_size=1, preprocessing_num_workers=1,
                                 output_dir=root / "saves/predicted", **greedy)  # fmt: skip
    server = ("--template", "gemma3", "--image_max_pixels", "802816")
    with served({"vlm": vlm}, root, args={"vlm": server}) as endpoints:
        output = medfactory_cli(root, "generate", "predict", "--dataset", "cxr_small", "--output-dir", "saves/served", "--max-tokens", "8",
                                "--endpoint", endpoints["vlm"], "--model", "vlm")  # fmt: skip
    assert "2 records of cxr_small answered" in output
    predicted = [json.loads(line) for line in (predict / "generated_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    served_rows = [json.loads(line) for line in (root / "saves/served/generated_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["predict"] for row in served_rows] == [row["predict"] for row in predicted]
    assert any(row["predict"].strip() for row in served_rows)  # the tiny model said something, so the equality compares text
    assert [row["label"] for row in served_rows] == [record["messages"][1]["content"] for record in records]
    summary = json.loads((root / "saves/served/served_predict.json").read_text(encoding="utf-8"))
    assert summary["images"] == 2 and summary["client"]["sent"] == 2
    log = (root / "vlm.log").read_text(encoding="utf-8", errors="replace")
    assert "does not exist" not in log  # the server decoded the data URLs, not a path


def test_an_image_request_sends_content_parts_in_order_and_keys_the_cache_by_image_bytes(tmp_path: Path) -> None:
    from PIL import Image

    from medfactory.generate.client import ChatRequest

    for name, shade in (("a.png", 10), ("b.png", 20)):
        Image.new("L", (4, 4), shade).save(tmp_path / name)
    (tmp_path / "c.jpg").write_bytes((tmp_path / "a.png").read_bytes())  # a PNG by its bytes whatever the suffix
    turns = [{"role": "user", "content": "antes <image> entre <image>"}]
    request = ChatRequest("r1", turns, images=(str(tmp_path / "a.png"), str(tmp_path / "b.png")))
    parts = request.body("m")["messages"][0]["content"]
    assert [part["type"] for part in parts] == ["text", "image_url", "text", "image_url"]
    assert parts[0]["text"] == "antes " and parts[2]["text"] == " entre "
    decoded = [base64.b64decode(part["image_url"]["url"].split(",", 1)[1]) for part in parts if part["type"] == "image_url"]
    assert decoded == [(tmp_path / "a.png").read_bytes(), (tmp_path / "b.png").read_bytes()]
    assert all(part["image_url"]["url"].startswith("data:image/png;base64,") for part in parts if part["type"] == "image_url")
    swapped = ChatRequest("r2", turns, images=(str(tmp_path / "b.png"), str(tmp_path / "a.png")))
    same_bytes = ChatRequest("r3", turns, images=(str(tmp_path / "c.jpg"), str(tmp_path / "b.png")))
    assert request.cache_key("m") != swapped.cache_key("m") and request.cache_key("m") == same_bytes.cache_key("m")
    assert ChatRequest("t", [{"role": "user", "content": "x"}]).body("m")["messages"] == [{"role": "user", "content": "x"}]  # text stays a string
    with pytest.raises(ValueError, match="1 images for 2"):
        ChatRequest("r4", turns, images=(str(tmp_path / "a.png"),))
    (tmp_path / "d.png").write_text("not an image", encoding="utf-8")
    from medfactory.generate.client import GenerationError

    with pytest.raises(GenerationError, match="d.png: not a PNG"):
        ChatRequest("r5", [{"role": "user", "content": "<image>"}], images=(str(tmp_path / "d.png"),)).cache_key("m")
