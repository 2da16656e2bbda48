"""``eval lm-eval-parity``: eval mcqa's per-option log-likelihoods equal lm-evaluation-harness's HFLM on the same items
(both protocols, with few-shot examples, a BOS model and a no-BOS model), and the check fails when they do not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from medfactory.eval import mcqa
from medfactory.eval.lm_eval_parity import PARITY_JSON, PARITY_MD, ParityError, lm_eval_parity_command, run_parity
from medfactory.run.tiny_model import build_tiny_model

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (the test extra installs it: pip install -e '.[test]')")

QUESTIONS = [
    ("¿Qué órgano produce la insulina?", ["Hígado", "Páncreas", "Bazo", "Riñón"], 1),
    ("¿Cuál es el antídoto del paracetamol?", ["Naloxona", "Flumazenilo", "N-acetilcisteína", "Atropina", "Glucagón"], 2),
    ("¿Qué vitamina falta en el escorbuto?", ["Vitamina C", "Vitamina D", "Vitamina K"], 0),
    ("¿Qué arteria irriga la cara anterior del corazón?", ["Coronaria derecha", "Circunfleja", "Descendente anterior", "Marginal"], 2),
]


def _record(index: int, question: str, options: list[str], answer: int) -> dict:
    return {"id": f"q{index}", "question": question, "options": options, "answer": answer, "letters": list("ABCDE"[: len(options)]),
            "category": "medicine", "year": 2020, "exam": "MIR", "has_image": False, "language": "es"}  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parity")
    records = [_record(i, *q) for i, q in enumerate(QUESTIONS)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    pool = [_record(10 + i, q + " (repaso)", o, a) for i, (q, o, a) in enumerate(QUESTIONS)]
    (folder / "pool.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pool), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def models(folder: Path) -> dict[str, Path]:
    texts = [mcqa.letter_prompt(mcqa.to_item(_record(i, *q))) for i, q in enumerate(QUESTIONS)] * 4
    mistral = build_tiny_model("mistral", texts, vocab_size=500)
    return {"mistral": mistral, "llama": build_tiny_model("llama", texts, vocab_size=500), "mistral_bos": _with_bos(mistral, folder / "mistral_bos")}


def _with_bos(model: Path, target: Path) -> Path:
    """A copy whose tokenizer prepends BOS, as the real Mistral and LLaMA-2 tokenizers do (the tiny ones do not)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    shutil.copytree(model, target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    bos = (tokenizer.bos_token, tokenizer.bos_token_id)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos[0]} $A", pair=f"{bos[0]} $A {bos[0]} $B", special_tokens=[bos])
    tokenizer.save_pretrained(target)
    return target


def _report(folder: Path, model: Path, protocol: str, shots: int, name: str) -> Path:
    out = folder / name
    fewshot = folder / "pool.jsonl" if shots else None
    mcqa.evaluate(folder / "test.jsonl", str(model), out, protocol=protocol, shots=shots, fewshot_from=fewshot, dtype="fp32", device="cpu", progress=False)
    return out


RUNS = [("mistral", "letter", 2), ("mistral_bos", "letter", 0), ("mistral_bos", "loglik_norm", 1), ("llama", "loglik_norm", 1)]


@pytest.mark.parametrize(("architecture", "protocol", "shots"), RUNS)
def test_every_option_equals_lm_eval(folder: Path, models: dict[str, Path], architecture: str, protocol: str, shots: int) -> None:
    report = _report(folder, models[architecture], protocol, shots, f"{architecture}-{protocol}-{shots}")
    parity = run_parity(report)
    result = parity["result"]
    assert result["n_items"] == len(QUESTIONS)
    assert result["n_options_scored"] == sum(len(options) for _, options, _ in QUESTIONS)
    assert result["max_abs_difference"] < 1e-4, result
    assert result["same_argmax"] == len(QUESTIONS)
    assert parity["within_tolerance"] is True
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert parity["add_bos_token"] is metrics["scoring"]["bos_prepended"] is (architecture == "mistral_bos")
    assert json.loads((report / PARITY_JSON).read_text(encoding="utf-8")) == parity
    assert "lm-eval parity" in (report / PARITY_MD).read_text(encoding="utf-8")


def test_a_changed_log_likelihood_fails_the_check(folder: Path, models: dict[str, Path], tmp_path: Path) -> None:
    report = _report(folder, models["mistral"], "letter", 0, "tampered")
    per_item = pd.read_csv(report / "per_item.csv", dtype={"id": str})
    per_item.loc[1, "logprob_C"] += 0.5
    per_item.to_csv(report / "per_item.csv", index=False)
    app = typer.Typer()
    app.command()(lm_eval_parity_command)
    result = CliRunner().invoke(app, ["--report", str(report), "--out-dir", str(tmp_path)])
    assert result.exit_code == 1
    parity = json.loads((tmp_path / PARITY_JSON).read_text(encoding="utf-8"))
    assert parity["result"]["max_abs_difference"] == pytest.approx(0.5, abs=1e-4)
    assert parity["result"]["options_over_1e-4"] == 1
    assert parity["within_tolerance"] is False


def test_chat_template_report_and_missing_report_are_refused(folder: Path, models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ParityError, match="metrics.json does not exist"):
        run_parity(tmp_path)
    report = _report(folder, models["mistral"], "letter", 0, "chat")
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    metrics["settings"]["chat_template"] = "mistral"
    (report / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    with pytest.raises(ParityError, match="--chat-template none"):
        run_parity(report)
