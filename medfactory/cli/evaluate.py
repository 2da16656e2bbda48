"""``medfactory eval <evaluation>``: the evaluations of ``medfactory.eval``, which sit on top of the core."""

from __future__ import annotations

import typer

from medfactory.eval.bertscore import bertscore_command
from medfactory.eval.cases import cases_command
from medfactory.eval.cases_study import case_agreement_command, case_cards_command
from medfactory.eval.compare import compare_command
from medfactory.eval.forgetting import forgetting_command
from medfactory.eval.lm_eval_parity import lm_eval_parity_command
from medfactory.eval.mcqa import mcqa_command
from medfactory.eval.mcqa_generate import mcqa_generate_command

eval_app = typer.Typer(help="Evaluations that run after training (scores, tables, figures in reports/).", no_args_is_help=True)
eval_app.command(
    "mcqa", help="Multiple-choice accuracy, macro-F1 and exam points (HEAD-QA, Portuguese exams); letter or log-likelihood protocol."
)(mcqa_command)
eval_app.command("bertscore", help="BERTScore (BERTimbau pt-pt, XLM-R en-pt), chrF, BLEU, ROUGE-L per scenario, with box plots.")(
    bertscore_command
)
eval_app.command(
    "forgetting", help="Forgetting check: accuracy before vs after training on general and medical MCQ sets, bootstrap CIs and McNemar per set."
)(forgetting_command)
eval_app.command("compare", help="Every model on every set from eval mcqa report folders: one table (md + csv) and one figure, accuracy with CIs.")(
    compare_command
)
eval_app.command(
    "mcqa-generate", help="Multiple-choice accuracy from the model's greedy answer: letter by a regex cascade (option-text fallback), eval mcqa's outputs."
)(mcqa_generate_command)
eval_app.command(
    "cases",
    help="Open-ended clinical cases: chrF, BLEU, ROUGE-L and BERTScore per item and a blind LLM judge "
    "(es, pt; diagnosis correct/acceptable/wrong; treatment appropriate/safe).",
)(cases_command)
eval_app.command(
    "lm-eval-parity", help="Score an eval mcqa report's items again with lm-evaluation-harness (HFLM) and compare every option's log-likelihood."
)(lm_eval_parity_command)
eval_app.command(
    "cases-cards", help="Blind rating cards of the models' answers to the clinical cases, for physicians (XLSX per rater, long CSV, Label Studio)."
)(case_cards_command)
eval_app.command(
    "cases-agreement", help="Judge-human agreement on the clinical cases: Krippendorff's alpha, Cohen's kappa, percent agreement, confusion tables."
)(case_agreement_command)
