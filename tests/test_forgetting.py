"""Forgetting check (``medfactory.eval.forgetting``) and its statistics (``medfactory.eval.paired_stats``).

McNemar is checked against statsmodels on constructed tables in both regimes, the bootstrap against
an independent numpy loop with the same seed; the end-to-end run scores two tiny random Mistral models
(different seeds) on a tiny general and a tiny medical set through the typer command.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import typer
from statsmodels.stats.contingency_tables import mcnemar
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.corpus.mcq import McqItem, write_items
from medfactory.eval import forgetting, mcqa, paired_stats
from medfactory.run.tiny_model import build_tiny_model


def _arrays(both_right: int, before_only: int, after_only: int, both_wrong: int) -> tuple[np.ndarray, np.ndarray]:
    before = [True] * both_right + [True] * before_only + [False] * after_only + [False] * both_wrong
    after = [True] * both_right + [False] * before_only + [True] * after_only + [False] * both_wrong
    order = np.random.default_rng(7).permutation(len(before))  # pairs stay together, order does not matter
    return np.array(before)[order], np.array(after)[order]


@pytest.mark.parametrize(
    ("table", "exact"),
    [((30, 3, 9, 8), True), ((10, 12, 12, 5), True), ((10, 0, 0, 4), True), ((20, 24, 0, 3), True), ((40, 25, 10, 12), False), ((5, 13, 12, 9), False)],
)
def test_mcnemar_equals_statsmodels_in_both_regimes(table: tuple[int, int, int, int], exact: bool) -> None:
    before, after = _arrays(*table)
    result = paired_stats.mcnemar_test(before, after)
    expected = mcnemar([[table[0], table[1]], [table[2], table[3]]], exact=exact, correction=True)
    assert result["test"] == (paired_stats.EXACT_TEST if exact else paired_stats.CHI2_TEST)
    assert result["statistic"] == pytest.approx(float(expected.statistic), rel=1e-12, abs=1e-12)
    assert result["pvalue"] == pytest.approx(float(expected.pvalue), rel=1e-12, abs=1e-15)
    assert (result["both_right"], result["right_before_only"], result["right_after_only"], result["both_wrong"]) == table
    if not exact:  # the continuity-corrected statistic written out
        b, c = table[1], table[2]
        assert result["statistic"] == pytest.approx((abs(b - c) - 1) ** 2 / (b + c))


def _independent_percentile_ci(values: np.ndarray, resamples: int, seed: int, confidence: float = 0.95) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, values.size, size=values.size)].mean() for _ in range(resamples)]
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def test_bootstrap_ci_contains_the_estimate_and_equals_an_independent_loop() -> None:
    correct = np.random.default_rng(1).random(57) < 0.6
    result = paired_stats.accuracy_ci(correct, resamples=2000, seed=11)
    assert result["accuracy"] == pytest.approx(correct.mean())
    assert result["ci_low"] <= result["accuracy"] <= result["ci_high"]
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(_independent_percentile_ci(correct.astype(float), 2000, 11), abs=1e-12)
    assert paired_stats.accuracy_ci(correct, seed=11) == result  # seeded: the same interval again


def test_paired_difference_ci_resamples_pairs() -> None:
    rng = np.random.default_rng(2)
    before = rng.random(40) < 0.5
    after = before ^ (rng.random(40) < 0.2)
    result = paired_stats.paired_difference_ci(before, after, resamples=500, seed=3)
    draw = np.random.default_rng(3)
    differences = []
    for _ in range(500):
        index = draw.integers(0, 40, size=40)
        differences.append(after[index].mean() - before[index].mean())
    assert result["difference"] == pytest.approx(after.mean() - before.mean())
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((np.percentile(differences, 2.5), np.percentile(differences, 97.5)), abs=1e-12)
    assert result["ci_low"] <= result["difference"] <= result["ci_high"]


def _per_item(path: Path, ids: list[str], correct: list[bool]) -> Path:
    pd.DataFrame({"id": ids, "answer": ["A"] * len(ids), "prediction": ["A" if c else "B" for c in correct], "correct": correct}).to_csv(path, index=False)
    return path


def test_paired_join_refuses_mismatched_ids_and_reader_refuses_duplicates(tmp_path: Path) -> None:
    before = paired_stats.read_per_item(_per_item(tmp_path / "before.csv", ["a", "b", "c"], [True, False, True]))
    after = paired_stats.read_per_item(_per_item(tmp_path / "after.csv", ["a", "b", "d"], [True, True, True]))
    with pytest.raises(CorpusError, match=r"1 id\(s\) only in before.csv \('c'\), 1 only in after.csv \('d'\)"):
        paired_stats.join_paired(before, after, "before.csv", "after.csv")
    reordered = paired_stats.read_per_item(_per_item(tmp_path / "again.csv", ["c", "a", "b"], [False, True, True]))
    joined = paired_stats.join_paired(before, reordered)
    assert joined.to_dict("list") == {"id": ["a", "b", "c"], "before": [True, False, True], "after": [True, True, False]}
    duplicate = _per_item(tmp_path / "dup.csv", ["a", "a", "b"], [True, True, False])
    with pytest.raises(CorpusError, match=r"dup\.csv: 1 repeated item id\(s\) \('a'\)"):
        paired_stats.read_per_item(duplicate)
    pd.DataFrame({"id": ["a"], "correct": [True]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(CorpusError, match=r"short\.csv: lacks column\(s\) answer, prediction"):
        paired_stats.read_per_item(tmp_path / "short.csv")


def test_model_spec_parsing(tmp_path: Path) -> None:
    assert forgetting.parse_model_spec("base+saves/run", None, "--after") == forgetting.ModelSpec("base", "saves/run")
    assert forgetting.parse_model_spec("base", "saves/run", "--after") == forgetting.ModelSpec("base", "saves/run")
    assert forgetting.parse_model_spec("base", None, "--before") == forgetting.ModelSpec("base", None)
    plus = tmp_path / "model+v2"
    plus.mkdir()
    assert forgetting.parse_model_spec(str(plus), None, "--before") == forgetting.ModelSpec(str(plus), None)
    with pytest.raises(mcqa.McqaError, match="give the adapter once"):
        forgetting.parse_model_spec("base+a", "b", "--after")
    with pytest.raises(mcqa.McqaError, match="MODEL\\+ADAPTER"):
        forgetting.parse_model_spec("base+", None, "--after")


GENERAL = [
    ("¿Cuál es la capital de Francia?", ["Madrid", "París", "Roma", "Berlín"], 1),
    ("¿Cuántos días tiene una semana?", ["Cinco", "Seis", "Siete", "Ocho"], 2),
    ("¿De qué color es el cielo despejado?", ["Azul", "Verde", "Rojo", "Negro"], 0),
    ("¿Qué animal ladra?", ["El gato", "El perro", "La vaca", "El pez"], 1),
    ("¿Cuál es el planeta más cercano al Sol?", ["Marte", "Venus", "Mercurio", "Júpiter"], 2),
    ("¿Qué idioma se habla en Brasil?", ["Español", "Portugués", "Francés", "Inglés"], 1),
    ("¿Cuántos meses tiene un año?", ["Diez", "Once", "Doce", "Trece"], 2),
    ("¿Qué se usa para escribir en la pizarra?", ["Tiza", "Cuchara", "Martillo", "Toalla"], 0),
    ("¿En qué estación caen las hojas?", ["Primavera", "Verano", "Otoño", "Invierno"], 2),
    ("¿Cuál es el océano más grande?", ["Atlántico", "Índico", "Ártico", "Pacífico"], 3),
    ("¿Qué instrumento tiene teclas blancas y negras?", ["Piano", "Guitarra", "Tambor", "Flauta"], 0),
    ("¿Cuántas patas tiene una araña?", ["Seis", "Ocho", "Diez", "Cuatro"], 1),
]  # fmt: skip
MEDICAL = [
    ("El antídoto de la intoxicación por paracetamol es:", ["Flumazenilo", "Naloxona", "N-acetilcisteína", "Atropina"], 2),
    ("La hemoglobina glicosilada refleja la glucemia media de los últimos:", ["Dos días", "Dos o tres meses", "Cinco años", "Diez minutos"], 1),
    ("El nervio que inerva el diafragma es:", ["Vago", "Frénico", "Facial", "Hipogloso"], 1),
    ("La unidad funcional del riñón es:", ["Alvéolo", "Nefrona", "Hepatocito", "Sarcómero"], 1),
    ("¿Cuál es el pH normal de la sangre arterial?", ["6,8", "7,0", "7,35 a 7,45", "7,8"], 2),
    ("La escala de Glasgow valora:", ["Dolor", "Nivel de consciencia", "Riesgo de úlceras", "Ansiedad"], 1),
    ("La vitamina K es necesaria para la síntesis de:", ["Factores de coagulación", "Insulina", "Hemoglobina", "Colágeno"], 0),
    ("Una taquicardia se define por una frecuencia mayor de:", ["40", "60", "100 latidos por minuto", "200"], 2),
    ("El fármaco de elección en la anafilaxia es:", ["Adrenalina", "Paracetamol", "Omeprazol", "Metformina"], 0),
    ("La insulina se produce en las células:", ["Alfa", "Beta", "Delta", "Épsilon"], 1),
    ("El signo de Murphy sugiere:", ["Apendicitis", "Colecistitis aguda", "Pancreatitis", "Diverticulitis"], 1),
    ("La vacuna BCG protege contra formas graves de:", ["Sarampión", "Hepatitis B", "Tuberculosis", "Tétanos"], 2),
    ("El principal electrolito intracelular es:", ["Sodio", "Potasio", "Cloro", "Calcio"], 1),
    ("La arteria más grande del cuerpo es:", ["Femoral", "Carótida", "Aorta", "Radial"], 2),
]  # fmt: skip


def _items(prefix: str, rows: list[tuple[str, list[str], int]]) -> list[McqItem]:
    return [McqItem(f"{prefix}-{i}", q, options, answer, list("ABCD"), None, None, None, False, "es") for i, (q, options, answer) in enumerate(rows)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("forgetting")
    general, medical = _items("gen", GENERAL), _items("med", MEDICAL)
    write_items(folder / "general_es.jsonl", general)
    write_items(folder / "medical_es.jsonl", medical)
    texts = [mcqa.letter_prompt(item) + f" {item.answer_letter}" for item in general + medical] * 3
    return {
        "general": folder / "general_es.jsonl",
        "medical": folder / "medical_es.jsonl",
        "before": build_tiny_model("mistral", texts, vocab_size=500, seed=0),
        "after": build_tiny_model("mistral", texts, vocab_size=500, seed=1),
        "folder": folder,
    }


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Local test app: `forgetting` as in `medfactory eval forgetting`."""

    app.command("forgetting")(forgetting.forgetting_command)
    return app


def test_forgetting_end_to_end(setup: dict[str, Path]) -> None:
    out = setup["folder"] / "report"
    args = ["forgetting", "--before", str(setup["before"]), "--after", str(setup["after"]), "--general", str(setup["general"]),
            "--medical", str(setup["medical"]), "--out-dir", str(out), "--dtype", "fp32", "--seed", "5", "--resamples", "500"]  # fmt: skip
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "general_es (general, n=12)" in result.output and "medical_es (medical, n=14)" in result.output
    for side in ("before", "after"):
        for name in ("general_es", "medical_es"):
            assert {"per_item.csv", "metrics.json", "report.md"} <= {path.name for path in (out / side / name).iterdir()}
    report = json.loads((out / "forgetting.json").read_text(encoding="utf-8"))
    assert [(row["set"], row["kind"], row["n"]) for row in report["sets"]] == [("general_es", "general", 12), ("medical_es", "medical", 14)]
    for row in report["sets"]:
        before = pd.read_csv(out / "before" / row["set"] / "per_item.csv", dtype={"id": str})
        after = pd.read_csv(out / "after" / row["set"] / "per_item.csv", dtype={"id": str})
        joined = before.merge(after, on="id", suffixes=("_b", "_a"))
        b = int((joined.correct_b & ~joined.correct_a).sum())
        c = int((~joined.correct_b & joined.correct_a).sum())
        table = [[int((joined.correct_b & joined.correct_a).sum()), b], [c, int((~joined.correct_b & ~joined.correct_a).sum())]]
        expected = mcnemar(table, exact=b + c < 25, correction=True)
        assert row["mcnemar"]["pvalue"] == pytest.approx(float(expected.pvalue), abs=1e-15)
        assert row["mcnemar"]["statistic"] == pytest.approx(float(expected.statistic))
        assert row["before"]["accuracy"] == pytest.approx(joined.correct_b.mean())
        assert row["after"]["accuracy"] == pytest.approx(joined.correct_a.mean())
        assert row["difference"]["difference"] == pytest.approx(joined.correct_a.mean() - joined.correct_b.mean())
        assert row["before"]["ci_low"] <= row["before"]["accuracy"] <= row["before"]["ci_high"]
        metrics = json.loads((out / "before" / row["set"] / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["accuracy"] == pytest.approx(row["before"]["accuracy"])
        assert row["verdict"] == paired_stats.verdict(row["difference"]["difference"], float(expected.pvalue))
    markdown = (out / "forgetting.md").read_text(encoding="utf-8")
    assert re.search(r"\|\s*general_es\s*\|\s*general\s*\|\s*12\s*\|", markdown) and "McNemar" in markdown
    written = markdown + (out / "forgetting.json").read_text(encoding="utf-8")
    assert not any(question in written for question, _, _ in GENERAL + MEDICAL)  # ids and counts only


def test_forgetting_refuses_a_missing_set(setup: dict[str, Path]) -> None:
    args = ["forgetting", "--before", str(setup["before"]), "--after", str(setup["after"]), "--general", str(setup["folder"] / "nope.jsonl"),
            "--out-dir", str(setup["folder"] / "x")]  # fmt: skip
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 1
    assert "--general" in result.output and "nope.jsonl does not exist" in result.output
