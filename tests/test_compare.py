"""Side by side (``medfactory.eval.compare``): three eval mcqa report folders -> one table and one figure.

One report is real (``evaluate`` on a tiny random Mistral); the other two are copies with altered
predictions, model and set, rewritten in the same format. The table is checked against pandas and
scikit-learn on the per-item CSVs, the CIs against an independent numpy bootstrap loop.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import typer
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.corpus.mcq import McqItem, write_items
from medfactory.eval import compare, mcqa
from medfactory.run.tiny_model import build_tiny_model

ROWS = [
    ("El antídoto de la intoxicación por paracetamol es:", ["Flumazenilo", "Naloxona", "N-acetilcisteína", "Atropina"], 2),
    ("El nervio que inerva el diafragma es:", ["Vago", "Frénico", "Facial", "Hipogloso"], 1),
    ("La unidad funcional del riñón es:", ["Alvéolo", "Nefrona", "Hepatocito", "Sarcómero"], 1),
    ("¿Cuál es el pH normal de la sangre arterial?", ["6,8", "7,0", "7,35 a 7,45", "7,8"], 2),
    ("La escala de Glasgow valora:", ["Dolor", "Nivel de consciencia", "Riesgo de úlceras", "Ansiedad"], 1),
    ("La vitamina K es necesaria para la síntesis de:", ["Factores de coagulación", "Insulina", "Hemoglobina", "Colágeno"], 0),
    ("El fármaco de elección en la anafilaxia es:", ["Adrenalina", "Paracetamol", "Omeprazol", "Metformina"], 0),
    ("La insulina se produce en las células:", ["Alfa", "Beta", "Delta", "Épsilon"], 1),
    ("La vacuna BCG protege contra formas graves de:", ["Sarampión", "Hepatitis B", "Tuberculosis", "Tétanos"], 2),
    ("El principal electrolito intracelular es:", ["Sodio", "Potasio", "Cloro", "Calcio"], 1),
    ("La arteria más grande del cuerpo es:", ["Femoral", "Carótida", "Aorta", "Radial"], 2),
    ("¿Qué órgano produce la bilis?", ["Hígado", "Bazo", "Riñón", "Pulmón"], 0),
]  # fmt: skip


def _alter(source: Path, target: Path, predictions: list[str], settings: dict) -> None:
    """A copy of a real report with other predictions, rewritten in eval mcqa's format (per_item.csv + metrics.json)."""
    shutil.copytree(source, target)
    frame = pd.read_csv(target / "per_item.csv", dtype={"id": str})
    frame["prediction"] = predictions
    frame["correct"] = frame["prediction"] == frame["answer"]
    frame.to_csv(target / "per_item.csv", index=False)
    metrics = json.loads((target / "metrics.json").read_text(encoding="utf-8"))
    metrics["accuracy"] = float(frame["correct"].mean())
    metrics["macro_f1"] = float(f1_score(frame["answer"], frame["prediction"], average="macro"))
    metrics["settings"].update(settings)
    (target / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("compare")
    items = [McqItem(f"med-{i}", q, options, answer, list("ABCD"), None, None, None, False, "es") for i, (q, options, answer) in enumerate(ROWS)]
    (folder / "careqa_es").mkdir()
    write_items(folder / "careqa_es" / "test.jsonl", items)
    texts = [mcqa.letter_prompt(item) + f" {item.answer_letter}" for item in items] * 3
    model = build_tiny_model("mistral", texts, vocab_size=400)
    real = folder / "reports" / "base_careqa"
    mcqa.evaluate(folder / "careqa_es" / "test.jsonl", str(model), real, dtype="fp32", device="cpu", progress=False)
    answers = pd.read_csv(real / "per_item.csv")["answer"].tolist()
    tuned = [answer if index % 3 else "A" for index, answer in enumerate(answers)]  # right on two thirds
    _alter(real, folder / "reports" / "tuned_careqa", tuned, {"adapter": "saves/spanish_medical_sft"})
    other = ["B", "C", "A", "D"] * 3
    _alter(real, folder / "reports" / "base_general", other, {"items": str(folder / "general_es.jsonl")})
    return {"real": real, "tuned": folder / "reports" / "tuned_careqa", "general": folder / "reports" / "base_general",
            "model": model, "folder": folder}  # fmt: skip


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Local test app: `compare` as in `medfactory eval compare`."""

    app.command("compare")(compare.compare_command)
    return app


def _independent_ci(correct: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [correct[rng.integers(0, correct.size, size=correct.size)].mean() for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_compare_table_and_figure(runs: dict[str, Path]) -> None:
    out = runs["folder"] / "out"
    folders = [str(runs["real"]), str(runs["tuned"]), str(runs["general"])]
    result = CliRunner().invoke(_app(), ["compare", *folders, "--out-dir", str(out), "--resamples", "400", "--seed", "3",
                                         "--label", f"{runs['tuned']}=tuned"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 runs, 2 models, 2 sets" in result.output
    table = pd.read_csv(out / "compare.csv")
    base = runs["model"].name
    assert table["model"].tolist() == [base, "tuned"]
    assert [column for column in table.columns if column.endswith(" accuracy")] == ["careqa_es/test accuracy", "general_es accuracy"]
    expected = {(base, "careqa_es/test"): runs["real"], ("tuned", "careqa_es/test"): runs["tuned"], (base, "general_es"): runs["general"]}
    for (model, name), folder in expected.items():
        items = pd.read_csv(folder / "per_item.csv")
        row = table.set_index("model").loc[model]
        correct = (items["answer"] == items["prediction"]).to_numpy()
        assert row[f"{name} accuracy"] == pytest.approx(correct.mean())
        assert row[f"{name} macro_f1"] == pytest.approx(f1_score(items["answer"], items["prediction"], average="macro"))
        assert row[f"{name} n"] == len(items)
        assert (row[f"{name} ci_low"], row[f"{name} ci_high"]) == pytest.approx(_independent_ci(correct, 400, 3), abs=1e-12)
    assert pd.isna(table.set_index("model").loc["tuned", "general_es accuracy"])  # tuned was not run on it
    markdown = (out / "compare.md").read_text(encoding="utf-8")
    tuned = table.set_index("model").loc["tuned"]
    assert f"{tuned['careqa_es/test accuracy']:.3f} [{tuned['careqa_es/test ci_low']:.3f}, {tuned['careqa_es/test ci_high']:.3f}]" in markdown
    assert not any(question in markdown for question, _, _ in ROWS)
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_compare_labels_from_settings(runs: dict[str, Path]) -> None:
    run = compare.read_run(runs["tuned"], {}, 50, 0.95, 0)
    assert run.model == f"{runs['model'].name}+spanish_medical_sft"
    assert run.set == "careqa_es/test"
    assert compare.set_name({}, Path("reports/mcqa/headqa_run")) == "headqa_run"


def test_compare_refuses_folders_without_metrics(runs: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    result = CliRunner().invoke(_app(), ["compare", str(runs["real"]), str(empty), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"no metrics.json in: {empty}" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
    same = CliRunner().invoke(_app(), ["compare", str(runs["real"]), str(runs["real"]), "--out-dir", str(tmp_path / "out")])
    assert same.exit_code == 1 and "--label DIR=NAME" in same.output


# --- eval cases report folders next to the MCQ ones ---------------------------------------------------------

CASE_ROWS = [
    ("Mujer de 34 años con fiebre, disuria y dolor lumbar derecho.", "Pielonefritis aguda"),
    ("Varón de 60 años con dolor torácico opresivo y sudoración.", "Infarto agudo de miocardio"),
    ("Niño de 7 años con otalgia y fiebre tras un catarro.", "Otitis media aguda"),
    ("Mujer de 25 años con poliuria, polidipsia y pérdida de peso.", "Diabetes mellitus tipo 1"),
    ("Varón de 70 años con disnea, edemas y crepitantes bibasales.", "Insuficiencia cardiaca"),
]  # fmt: skip
CASE_PREDICTIONS = {
    "base": ["Pielonefritis", "Síndrome coronario agudo", "Otitis externa", "Diabetes tipo 2", "Neumonía"],
    "tuned": ["Pielonefritis aguda derecha", "Infarto agudo de miocardio", "Otitis media", "Diabetes mellitus tipo 1", "Insuficiencia cardiaca congestiva"],
}  # fmt: skip
TUNED_VERDICTS = ["correct", "correct", "acceptable", "correct", "wrong"]


def _case_report(folder: Path, items: Path, model: str, *extra: str) -> Path:
    """One `eval cases --no-judge` report folder for the predictions of ``model`` (LLaMA-Factory's output_dir: saves/<model>_cases);
    without BERTScore unless ``extra`` asks for it."""
    from medfactory.eval.cases import cases_command

    predictions = folder / "saves" / f"{model}_cases" / "generated_predictions.jsonl"
    predictions.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": "p", "predict": predict, "label": reference} for predict, (_, reference) in zip(CASE_PREDICTIONS[model], CASE_ROWS, strict=True)]
    predictions.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    app = typer.Typer()
    app.command()(cases_command)
    out = folder / "reports" / "cases" / f"diagnosis_{model}"
    args = ["--items", str(items), "--predictions", str(predictions), "--out-dir", str(out), "--no-judge", *(extra or ["--no-bertscore"])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def _add_judge(report: Path, verdicts: list[str]) -> None:
    """What a judged run adds: the verdict column of per_item.csv and metrics.json's judge summary (eval cases' own judge_summary)."""
    from medfactory.eval import cases

    items = cases.read_items(Path(json.loads((report / "metrics.json").read_text(encoding="utf-8"))["settings"]["items"]))
    judgements = [{"judge_status": "ok", "verdict": verdict} for verdict in verdicts]
    frame = pd.read_csv(report / "per_item.csv", dtype={"id": str})
    frame["judge_status"], frame["verdict"] = "ok", verdicts
    frame.to_csv(report / "per_item.csv", index=False)
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    metrics["judge"] = {"model": "judge", "rubric_version": cases.RUBRIC_VERSION, **cases.judge_summary(items, judgements)}
    (report / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


@pytest.fixture(scope="module")
def case_runs(runs: dict[str, Path]) -> dict[str, Path]:
    folder = runs["folder"]
    items = folder / "data" / "casos_clinicos_diagnostico" / "test.jsonl"
    items.parent.mkdir(parents=True)
    records = [{"id": f"case-{n}", "case": case, "reference": reference, "task": "diagnosis"} for n, (case, reference) in enumerate(CASE_ROWS)]
    items.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    base, tuned = _case_report(folder, items, "base"), _case_report(folder, items, "tuned")
    _add_judge(tuned, TUNED_VERDICTS)
    return {"base": base, "tuned": tuned}


def test_compare_mcq_and_case_sets_in_one_table(runs: dict[str, Path], case_runs: dict[str, Path]) -> None:
    from sacrebleu.metrics import CHRF

    out = runs["folder"] / "out_mixed"
    base = runs["model"].name
    folders = [str(runs["real"]), str(runs["tuned"]), str(runs["general"]), str(case_runs["base"]), str(case_runs["tuned"])]
    labels = ["--label", f"{runs['tuned']}=tuned", "--label", f"{case_runs['tuned']}=tuned", "--label", f"{case_runs['base']}={base}"]
    result = CliRunner().invoke(_app(), ["compare", *folders, "--out-dir", str(out), "--resamples", "300", "--seed", "5", *labels])
    assert result.exit_code == 0, result.output
    assert "5 runs, 2 models, 3 sets" in result.output
    table = pd.read_csv(out / "compare.csv").set_index("model")
    assert table.index.tolist() == [base, "tuned"]
    name = "casos_clinicos_diagnostico/test"
    fields = ("chrf", "chrf_ci_low", "chrf_ci_high", "rouge_l", "n", "diagnosis_correct_or_acceptable_rate")
    assert [c for c in table.columns if c.startswith(name)] == [f"{name} {f}" for f in fields]
    assert [c for c in table.columns if c.endswith(" accuracy")] == ["careqa_es/test accuracy", "general_es accuracy"]  # MCQ columns as before, first
    references = [reference for _, reference in CASE_ROWS]
    for model, label in (("base", base), ("tuned", "tuned")):
        per_item = pd.read_csv(case_runs[model] / "per_item.csv")
        chrf = np.array([CHRF().sentence_score(p, [r]).score for p, r in zip(CASE_PREDICTIONS[model], references, strict=True)])
        row = table.loc[label]
        assert row[f"{name} chrf"] == pytest.approx(chrf.mean(), abs=1e-9)
        assert row[f"{name} rouge_l"] == pytest.approx(per_item["rouge_l"].mean(), abs=1e-12)
        assert row[f"{name} n"] == len(CASE_ROWS)
        assert (row[f"{name} chrf_ci_low"], row[f"{name} chrf_ci_high"]) == pytest.approx(_independent_mean_ci(per_item["chrf"].to_numpy(), 300, 5), abs=1e-9)
    verdicts = pd.Series(TUNED_VERDICTS)
    assert table.loc["tuned", f"{name} diagnosis_correct_or_acceptable_rate"] == pytest.approx(verdicts.isin(["correct", "acceptable"]).mean())
    assert pd.isna(table.loc[base, f"{name} diagnosis_correct_or_acceptable_rate"])  # --no-judge: no rate
    assert table.loc["tuned", "careqa_es/test accuracy"] == pytest.approx((pd.read_csv(runs["tuned"] / "per_item.csv")["correct"]).mean())
    markdown = (out / "compare.md").read_text(encoding="utf-8")
    tuned = table.loc["tuned"]
    assert f"{name} chrF [95% CI]" in markdown and f"{name} judge correct+acceptable" in markdown
    assert f"{tuned[f'{name} chrf']:.2f} [{tuned[f'{name} chrf_ci_low']:.2f}, {tuned[f'{name} chrf_ci_high']:.2f}]" in markdown
    assert f"{tuned[f'{name} diagnosis_correct_or_acceptable_rate']:.3f}" in markdown
    assert not any(text in markdown for pair in CASE_ROWS for text in pair)
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def _independent_mean_ci(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, values.size, size=values.size)].mean() for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_compare_case_kind_and_labels(case_runs: dict[str, Path], tmp_path: Path) -> None:
    run = compare.read_run(case_runs["base"], {}, 50, 0.95, 0)
    assert (run.kind, run.model, run.set, run.accuracy) == ("cases", "base_cases", "casos_clinicos_diagnostico/test", None)
    assert compare.report_kind({"accuracy": 0.5}) == "mcqa" and compare.report_kind({"means": {"chrf": 1.0, "rouge_l": 0.1}}) == "cases"
    assert compare.report_kind({"means": {"bleu": 1.0}}) is None
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "metrics.json").write_text(json.dumps({"n": 3}), encoding="utf-8")
    with pytest.raises(CorpusError, match="neither `accuracy`"):
        compare.read_run(odd, {}, 50, 0.95, 0)


def test_compare_shows_bertscore_f1_where_a_case_report_has_it(runs: dict[str, Path], case_runs: dict[str, Path], tmp_path: Path) -> None:
    """A run scored with BERTScore (a tiny XLM-R as the encoder) next to one from before BERTScore (no means.bertscore_f1, no settings.bertscore)."""
    from testing_utils.tiny_models import build_tiny_xlmr

    encoder = build_tiny_xlmr([text for pair in CASE_ROWS for text in pair] + [text for texts in CASE_PREDICTIONS.values() for text in texts])
    items = Path(json.loads((case_runs["base"] / "metrics.json").read_text(encoding="utf-8"))["settings"]["items"])
    scored = _case_report(tmp_path, items, "tuned", "--bertscore-model", str(encoder), "--bertscore-layers", "2", "--device", "cpu")
    older = tmp_path / "older_base"
    shutil.copytree(case_runs["base"], older)
    metrics = json.loads((older / "metrics.json").read_text(encoding="utf-8"))
    metrics["settings"].pop("bertscore")  # the shape of a report written before BERTScore
    (older / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    frame = pd.read_csv(older / "per_item.csv").drop(columns=["bertscore_precision", "bertscore_recall", "bertscore_f1"])
    frame.to_csv(older / "per_item.csv", index=False)

    out = tmp_path / "out"
    result = CliRunner().invoke(_app(), ["compare", str(older), str(scored), "--out-dir", str(out), "--resamples", "50", "--label", f"{older}=base"])
    assert result.exit_code == 0, result.output
    name = "casos_clinicos_diagnostico/test"
    table = pd.read_csv(out / "compare.csv").set_index("model")
    expected = pd.read_csv(scored / "per_item.csv")["bertscore_f1"].mean()  # the mean of the per-item scores eval cases wrote
    assert table.loc["tuned_cases", f"{name} bertscore_f1"] == pytest.approx(expected, abs=1e-12)
    assert pd.isna(table.loc["base", f"{name} bertscore_f1"])
    markdown = (out / "compare.md").read_text(encoding="utf-8")
    assert f"{name} BERTScore F1" in markdown and f"{expected:.4f}" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| base "))
    assert row.split("|")[4].strip() == "–"  # | model | chrF | ROUGE-L | BERTScore F1 |: none for the older report

    alone = tmp_path / "alone"
    result = CliRunner().invoke(_app(), ["compare", str(older), "--out-dir", str(alone), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    assert not any("bertscore" in column for column in pd.read_csv(alone / "compare.csv").columns)  # no empty column for older reports
    assert "BERTScore F1 |" not in (alone / "compare.md").read_text(encoding="utf-8")  # nor a column in the table
