"""``eval mcqa-generate`` (``medfactory.eval.mcqa_generate``): answer extraction, outputs, a model that always answers B.

The extraction cascade is checked on a table of es / pt / en answers; the end-to-end runs use a tiny
random Mistral (unparseable text, mostly) and a constant-answer Mistral (``Respuesta: B`` every time),
loaded in process. Accuracy is checked against scikit-learn and the per-item rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import typer
from sklearn.metrics import accuracy_score, f1_score
from typer.testing import CliRunner

from medfactory.corpus.mcq import PROMPTS, McqItem, write_items
from medfactory.eval import mcqa, mcqa_generate
from medfactory.eval.compare import read_run
from medfactory.eval.mcqa_generate import extract_answer
from medfactory.run.tiny_model import build_tiny_model
from tests.testing_utils.tiny_models import build_constant_answer_model

LETTERS = list("ABCD")
OPTIONS = ["Amoxicilina", "Vancomicina", "Insulina glargina", "Metformina"]

EXTRACTION_TABLE = [
    ("Respuesta: B", 1, "answer_cue"),
    ("RESPUESTA: c)", 2, "answer_cue"),
    ("La respuesta correcta es la opción D", 3, "answer_cue"),
    ("A resposta correta é a C.", 2, "answer_cue"),
    ("Resposta: a alternativa C", 2, "answer_cue"),  # "a" is the article, not option A
    ("The answer is D", 3, "answer_cue"),
    ("Answer: (b)", 1, "answer_cue"),
    ("la opción B", 1, "option_word"),
    ("Opção B", 1, "option_word"),
    ("Respuesta: F) x\nla opción A", 0, "option_word"),  # F is no option of a 4-option item
    ("(C)", 2, "parenthesised"),
    ("B) Vancomicina", 1, "letter_paren"),
    (" B", 1, "leading_letter"),
    ("  b", 1, "leading_letter"),
    ("**C**", 2, "leading_letter"),
    ("Vancomicina", 1, "option_text"),
    ("Respuesta: insulina glargina", 2, "option_text"),
    ("INSULINA GLÁRGINA", 2, "option_text"),
    ("Respuesta: E", None, "none"),  # not a letter of this item
    ("Respuesta: F", None, "none"),
    ("A resposta correta é a G.", None, "none"),
    ("La opción F", None, "none"),
    ("(G)", None, "none"),
    ("A mortalidade", None, "none"),  # pt article, no option text
    ("e depois", None, "none"),
    ("vitamina B.", None, "none"),
    ("No lo sé", None, "none"),
]


@pytest.mark.parametrize(("text", "position", "rule"), EXTRACTION_TABLE)
def test_extraction_cascade(text, position, rule):
    found = extract_answer(text, LETTERS, OPTIONS)
    assert (found.position, found.rule) == (position, rule)


SEVEN_LETTERS = list("ABCDEFG")
SEVEN_OPTIONS = [*OPTIONS, "Omeprazol", "Furosemida", "Gentamicina"]

# The same answers for a 7-option item: F and G are letters of it, H is not.
SEVEN_TABLE = [
    ("Respuesta: F", 5, "answer_cue"),
    ("La respuesta correcta es la opción G", 6, "answer_cue"),
    ("A resposta correta é a G.", 6, "answer_cue"),
    ("Resposta: a alternativa F", 5, "answer_cue"),
    ("Resposta correta: (g)", 6, "answer_cue"),
    ("la opción G", 6, "option_word"),
    ("Alternativa F", 5, "option_word"),
    ("Respuesta: H) x\nletra G", 6, "option_word"),  # H is no option of a 7-option item
    ("(F)", 5, "parenthesised"),
    ("G) Gentamicina", 6, "letter_paren"),
    ("F", 5, "leading_letter"),
    ("**G**", 6, "leading_letter"),
    ("Furosemida", 5, "option_text"),
    ("Resposta: gentamicina", 6, "option_text"),
    ("Respuesta: H", None, "none"),
    ("(H)", None, "none"),
]


@pytest.mark.parametrize(("text", "position", "rule"), SEVEN_TABLE)
def test_extraction_cascade_seven_options(text, position, rule):
    found = extract_answer(text, SEVEN_LETTERS, SEVEN_OPTIONS)
    assert (found.position, found.rule) == (position, rule)
    if position is not None and position >= len(LETTERS) and rule != "option_text":  # the same text is no answer for A-D
        assert extract_answer(text, LETTERS, OPTIONS).position is None


def test_extraction_rules_are_named_and_ordered():
    assert mcqa_generate.RULE_NAMES == ("answer_cue", "option_word", "parenthesised", "letter_paren", "leading_letter")
    assert mcqa_generate.EXTRACTIONS[-2:] == ("option_text", "none")
    assert extract_answer("Respuesta: B (C)", LETTERS, OPTIONS).rule == "answer_cue"  # the earlier rule wins
    assert extract_answer("Metformina", LETTERS).rule == "none"  # no options given: no text fallback


def _items() -> list[McqItem]:
    questions = [
        ("¿Fármaco de elección en la neumonía?", ["Amoxicilina", "Vancomicina", "Insulina", "Metformina"], 0, "es"),
        ("La hemoglobina glicosilada refleja:", ["Dos días", "Dos o tres meses", "Cinco años", "Diez minutos", "Un año"], 1, "es"),
        ("Enzima de angiotensina I a II:", ["Renina", "ECA", "Lipasa", "Amilasa"], 1, "es"),
        ("Antídoto del paracetamol:", ["Flumazenilo", "Naloxona", "Atropina", "N-acetilcisteína"], 3, "es"),
        ("pH normal de la sangre arterial:", ["6,8", "7,0", "7,35 a 7,45", "7,8"], 2, "es"),
        ("Agente da pneumonia comunitária:", ["Streptococcus pneumoniae", "E. coli", "Candida", "Giardia"], 0, "pt"),
        ("O sinal de Murphy sugere:", ["Apendicite", "Colecistite aguda", "Pancreatite", "Diverticulite"], 1, "pt"),
        ("A vacina BCG protege contra:", ["Sarampo", "Hepatite B", "Tuberculose grave", "Tétano", "Coqueluche"], 2, "pt"),
    ]
    return [
        McqItem(f"q{index}", question, options, answer, list("ABCDE"[: len(options)]), "medicine", 2020, "exam", False, language)
        for index, (question, options, answer, language) in enumerate(questions)
    ]


@pytest.fixture(scope="module")
def items_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mcq_generate")
    path = folder / "test.jsonl"
    write_items(path, _items())
    (folder / "manifest.json").write_text(json.dumps({"sft": {"prompt": PROMPTS["es"].record()}}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(items_file: Path) -> tuple:
    texts = [mcqa.letter_prompt(mcqa.to_item(item)) + f" {item.answer_letter}" for item in _items()] * 3
    return mcqa.load_model(str(build_tiny_model("mistral", texts, vocab_size=600)), dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def constant(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    folder = build_constant_answer_model(tmp_path_factory.mktemp("constant"), "Respuesta: B")
    return mcqa.load_model(str(folder), dtype="fp32", device="cpu")


def _check_outputs(out: Path, metrics: dict, n: int) -> pd.DataFrame:
    frame = pd.read_csv(out / "per_item.csv", dtype={"prediction": str}, keep_default_na=False)
    assert list(frame.columns[:10]) == ["id", "category", "year", "exam", "language", "has_image", "n_options", "answer", "prediction", "correct"]
    assert len(frame) == metrics["n"] == n
    assert metrics["accuracy"] == pytest.approx(frame["correct"].mean())
    assert metrics["accuracy"] == pytest.approx(accuracy_score(frame["answer"], frame["prediction"]))
    assert sum(metrics["extraction"]["counts"].values()) == n
    assert frame["extraction"].value_counts().to_dict() == {rule: count for rule, count in metrics["extraction"]["counts"].items() if count}
    assert metrics["settings"]["protocol"] == "generate"
    on_disk = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [record["id"] for record in generations] == frame["id"].tolist()
    for record in generations:  # the generated text is in generations.jsonl only
        assert not record["text"].strip() or record["text"] not in json.dumps(on_disk, ensure_ascii=False)
    assert read_run(out, {}, 200, 0.95, 0).accuracy == pytest.approx(metrics["accuracy"])  # eval compare reads it
    assert (out / "report.md").read_text(encoding="utf-8").startswith("# Multiple-choice QA by generation")
    return frame


def test_tiny_model_end_to_end(tiny, items_file, tmp_path):
    metrics = mcqa_generate.evaluate(items_file, "tiny", tmp_path / "out", loaded=tiny, batch_size=3, max_new_tokens=6, progress=False)
    frame = _check_outputs(tmp_path / "out", metrics, 8)
    assert metrics["settings"]["max_new_tokens"] == 6 and (frame["new_tokens"] <= 6).all()
    assert metrics["prompt"]["shape"].endswith("Respuesta:")
    unextracted = frame["extraction"] == "none"
    assert (frame.loc[unextracted, "prediction"] == "").all() and not frame.loc[unextracted, "correct"].any()


@pytest.mark.parametrize("chat_template", ["none", "mistral"])
def test_constant_answer_model_extracts_b(constant, items_file, tmp_path, chat_template):
    out = tmp_path / chat_template
    metrics = mcqa_generate.evaluate(items_file, "constant", out, loaded=constant, batch_size=4, chat_template=chat_template, progress=False)
    frame = _check_outputs(out, metrics, 8)
    assert metrics["extraction"]["counts"]["answer_cue"] == 8
    assert (frame["prediction"] == "B").all()
    share_b = sum(item.answer_letter == "B" for item in _items()) / 8
    assert metrics["accuracy"] == pytest.approx(share_b) and share_b == 0.375
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {record["text"].strip() for record in generations} == {"Respuesta: B"}
    assert metrics["settings"]["chat_template"] == (None if chat_template == "none" else "mistral")


SEVEN_ANSWER = "A resposta correta é a G."  # Portuguese cue; a letter only a 7-option item has


@pytest.fixture(scope="module")
def seven_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 7-option items (gold F and G, es and pt) with the 4- and 5-option items of :func:`_items`."""
    wide = [
        McqItem("w-es", "¿Diurético de asa?", SEVEN_OPTIONS, 5, SEVEN_LETTERS, "pharmacology", 2020, "exam", False, "es"),
        McqItem("w-pt", "Um aminoglicosídeo:", SEVEN_OPTIONS, 6, SEVEN_LETTERS, "farmacologia", 2021, "exam", False, "pt"),
    ]
    path = tmp_path_factory.mktemp("mcq_generate_seven") / "test.jsonl"
    write_items(path, [*wide, *_items()[:2]])
    return path


def test_seven_options_end_to_end(seven_file, tmp_path):
    """A model that always answers G: G is read for the 7-option items, nothing for the 4- and 5-option ones."""
    loaded = mcqa.load_model(str(build_constant_answer_model(tmp_path / "model", SEVEN_ANSWER)), dtype="fp32", device="cpu")
    out = tmp_path / "out"
    metrics = mcqa_generate.evaluate(seven_file, "constant", out, loaded=loaded, batch_size=4, progress=False)
    frame = _check_outputs(out, metrics, 4)
    assert list(frame["n_options"]) == [7, 7, 4, 5] and list(frame["answer"]) == ["F", "G", "A", "B"]
    assert list(frame["prediction"]) == ["G", "G", "", ""] and list(frame["extraction"]) == ["answer_cue", "answer_cue", "none", "none"]
    assert list(frame["correct"]) == [False, True, False, False]
    assert metrics["per_position"]["G"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert metrics["per_position"]["F"]["support"] == 1 and metrics["per_position"]["F"]["f1"] == 0.0
    assert metrics["confusion"]["labels"] == ["A", "B", "F", "G"] and metrics["confusion"]["column_labels"] == ["A", "B", "F", "G", "none"]
    assert metrics["macro_f1"] == pytest.approx((2 / 3) / 4)  # A, B and F score 0; "none" is not a position
    positions = ["A", "B", "F", "G"]
    assert metrics["macro_f1"] == pytest.approx(f1_score(frame["answer"], frame["prediction"], labels=positions, average="macro", zero_division=0))
    assert metrics["per_n_options"]["7"]["correct"] == 1
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [record["prediction"] for record in generations] == ["G", "G", None, None]


def test_command_refuses_bad_options(items_file, tmp_path):
    app = typer.Typer()
    app.command()(mcqa_generate.mcqa_generate_command)
    runner = CliRunner()
    missing = runner.invoke(app, ["--items", str(tmp_path / "nope.jsonl"), "--model", "m", "--out-dir", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "--items" in missing.output
    bad = runner.invoke(app, ["--items", str(items_file), "--model", str(tmp_path), "--out-dir", str(tmp_path / "o"), "--max-new-tokens", "0"])
    assert bad.exit_code == 1 and "--max-new-tokens must be at least 1" in bad.output


def test_command_runs_a_model_folder(items_file, tmp_path):
    folder = build_constant_answer_model(tmp_path / "constant", "Respuesta: B")
    app = typer.Typer()
    app.command()(mcqa_generate.mcqa_generate_command)
    args = ["--items", str(items_file), "--model", str(folder), "--out-dir", str(tmp_path / "o"), "--limit", "4", "--dtype", "fp32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 items" in result.output and "answer_cue 4" in result.output
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["settings"]["limit"] == 4
