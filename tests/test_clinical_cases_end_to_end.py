"""Open-ended clinical cases end to end on tiny models: the published ClinDiagnosES layout -> `prepare clinical_cases`
-> the real predict recipe through `llamafactory-cli` (4-bit, greedy) -> `eval cases` with the blind judge served by
`llamafactory-cli api` and BERTScore on a tiny XLM-R (the Spanish encoder's architecture) -> per-item metrics, judge
distribution and report -> physicians' cards of the same answers and the judge's agreement with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from test_clinical_cases import CASES, published_folder

from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.run.tiny_model import build_tiny_model
from testing_utils.served_models import served
from testing_utils.tiny_models import build_constant_answer_model, build_tiny_xlmr


@pytest.mark.slow
def test_cases_predict_metrics_judge_and_report(repo_copy: Path, llamafactory_train, medfactory_cli) -> None:
    root = repo_copy
    medfactory_cli(root, "prepare", "clinical_cases", "--source", str(published_folder(root)), "--task", "diagnosis")
    items = [json.loads(line) for line in (root / "data/casos_clinicos_diagnostico/test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [item["reference"] for item in items] == [answer for _, answer, _ in CASES]

    model = build_tiny_model("mistral", [*generate_notes(60, seed=3), *(case for case, _, _ in CASES)])
    predict = llamafactory_train(root, "recipes/clinical_cases_predict.yaml", model_name_or_path=model, adapter_name_or_path="null",
                                 bf16="false", max_new_tokens=8, per_device_eval_batch_size=2, output_dir=root / "saves" / "cases")  # fmt: skip
    predictions = predict / "generated_predictions.jsonl"
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(CASES) and [row["label"].strip() for row in rows] == [answer for _, answer, _ in CASES]  # case order kept

    out = root / "reports" / "cases"
    judge = build_constant_answer_model(root / "judge", '{"verdict": "wrong"}')
    encoder = build_tiny_xlmr([text for row in CASES for text in row[:2]] + [row["predict"] for row in rows])
    with served({"judge": judge}, root) as endpoints:
        medfactory_cli(root, "eval", "cases", "--items", "data/casos_clinicos_diagnostico/test.jsonl", "--predictions", str(predictions),
                       "--out-dir", str(out), "--endpoint", endpoints["judge"], "--model", "judge",
                       "--bertscore-model", str(encoder), "--bertscore-layers", "2", "--device", "cpu")  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["judge"]["diagnosis"]["distribution"] == {"correct": 0, "acceptable": 0, "wrong": len(CASES)}
    per_item = pd.read_csv(out / "per_item.csv")
    expected = [sacrebleu.sentence_chrf(row["predict"], [item["reference"]]).score for row, item in zip(rows, items, strict=True)]
    assert per_item["chrf"].tolist() == pytest.approx(expected, abs=1e-6)  # an independent chrF of the tiny model's own answers
    from bert_score import BERTScorer

    direct = BERTScorer(model_type=str(encoder), num_layers=2, batch_size=4)  # the tiny XLM-R has a real max length: no fix needed
    # bert-score alone cannot encode an empty answer under transformers 5 (test_bertscore.py): those score 0, the rest as bert-score does
    said = [position for position, row in enumerate(rows) if row["predict"].strip()]
    f1 = direct.score([rows[p]["predict"] for p in said], [items[p]["reference"] for p in said], batch_size=4)[2].double().numpy() if said else []
    np.testing.assert_allclose(per_item["bertscore_f1"].to_numpy(float)[said], f1, atol=1e-6, rtol=0)
    assert all(per_item["bertscore_f1"][p] == 0 for p in range(len(rows)) if p not in said)
    assert metrics["means"]["bertscore_f1"] == pytest.approx(per_item["bertscore_f1"].mean(), abs=1e-9)
    assert metrics["settings"]["bertscore"]["encoders"][0]["model"] == str(encoder)
    assert "| BERTScore F1 |" in (out / "report.md").read_text(encoding="utf-8")
    assert (out / "report.md").is_file() and not any(case in (out / "metrics.json").read_text(encoding="utf-8") for case, _, _ in CASES)

    # Physicians' cards of the same answers, filled as two raters would, and the served judge's agreement with them.
    study = root / "reports" / "case_study"
    medfactory_cli(root, "eval", "cases-cards", "--items", "data/casos_clinicos_diagnostico/test.jsonl", "--predictions", f"tiny={predictions}",
                   "--raters", "ana,bruno", "--out-dir", str(study))  # fmt: skip
    cards = [json.loads(line) for line in (study / "cards.jsonl").read_text(encoding="utf-8").splitlines()]
    verdicts = {"ana": ["wrong", "acceptable", "wrong"], "bruno": ["wrong", "correct", "correct"]}
    returned = [_fill_verdicts(study, rater, {card["card_id"]: verdicts[rater][n] for n, card in enumerate(cards)}) for rater in verdicts]
    medfactory_cli(root, "eval", "cases-agreement", "--study", str(study), *(a for path in returned for a in ("--ratings", str(path))),
                   "--judge", f"tiny={out}", "--n-boot", "50")  # fmt: skip
    agreement = json.loads((study / "agreement" / "agreement.json").read_text(encoding="utf-8"))
    rows = {(r["comparison"], r["statistic"]): r for r in agreement["criteria"]["verdict"]["rows"]}
    judge = "judge:judge"  # the served model's name, as metrics.json records it
    assert rows[(f"{judge} vs ana", "percent_agreement")]["value"] == pytest.approx(100 * 2 / 3)  # percent; the judge said "wrong" to all three
    assert rows[(f"{judge} vs bruno", "percent_agreement")]["value"] == pytest.approx(100 / 3)
    written = (study / "agreement" / "agreement.md").read_text(encoding="utf-8")
    assert not any(case in written or answer in written for case, answer, _ in CASES)


def _fill_verdicts(study: Path, rater: str, verdict_by_card: dict[str, str]) -> Path:
    """A rater's workbook with the verdict column filled (openpyxl, as the drop-down would write it)."""
    from openpyxl import load_workbook

    workbook = load_workbook(study / "raters" / f"{rater}.xlsx")
    sheet = workbook["Cards"]
    header = [cell.value for cell in sheet[1]]
    for row in range(2, sheet.max_row + 1):
        sheet.cell(row=row, column=header.index("verdict") + 1, value=verdict_by_card[sheet.cell(row=row, column=1).value])
    path = study.parent / f"{rater}_returned.xlsx"
    workbook.save(path)
    return path
