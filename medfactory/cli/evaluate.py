"""``medfactory eval <evaluation>``: the evaluations of ``medfactory.eval``, which sit on top of the core."""

from __future__ import annotations

import typer

from medfactory.eval.bertscore import bertscore_command
from medfactory.eval.mcqa import mcqa_command

eval_app = typer.Typer(help="Evaluations that run after training (scores, tables, figures in reports/).", no_args_is_help=True)
eval_app.command(
    "mcqa", help="Multiple-choice accuracy, macro-F1 and exam points (HEAD-QA, Portuguese exams); letter or log-likelihood protocol."
)(mcqa_command)
eval_app.command("bertscore", help="BERTScore (BERTimbau pt-pt, XLM-R en-pt), chrF, BLEU, ROUGE-L per scenario, with box plots.")(
    bertscore_command
)
