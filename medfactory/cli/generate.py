"""``medfactory generate <step>``: generation steps that send text to an OpenAI-compatible endpoint (loopback by default)."""

from __future__ import annotations

import typer

from medfactory.cli.predict import predict_command
from medfactory.cli.qa import qa_command
from medfactory.cli.translate import translate_command

generate_app = typer.Typer(
    help="Translate datasets and generate Q&A through a served model (vLLM or `llamafactory-cli api` on this machine).", no_args_is_help=True
)
generate_app.command("translate", help="Translate MCQ sets, Q&A pairs or documents into Spanish or Portuguese, with quality gates.")(translate_command)
generate_app.command("qa", help="Questions with answers (or MCQ) from document chunks: schema, grounding, de-duplication and contamination checks.")(
    qa_command
)
generate_app.command(
    "predict", help="Answer a registered predict set through a served model (vLLM, llamafactory-cli api): generated_predictions.jsonl as predict writes it."
)(predict_command)
