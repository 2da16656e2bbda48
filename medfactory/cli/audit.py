"""``medfactory audit memorization``: the typer command over :mod:`medfactory.eval.audit` (which docs/audit.md explains)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

audit_app = typer.Typer(help="Audit a trained model for what it memorised of its training data (canaries, notes).", no_args_is_help=True)


def _bits(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _echo_summary(metrics: dict[str, Any], output: Path) -> None:
    """One line per model: exposure per repetition count, extractions, regurgitation and membership (numbers only)."""
    for label, result in metrics["models"].items():
        canaries = result["canaries"]
        by_repetition = ", ".join(f"{repetitions}x {_bits(group['exposure_mean'])}" for repetitions, group in canaries["per_repetition"].items())
        typer.echo(
            f"{label}: exposure (bits) by repetitions {by_repetition}; greedy extraction {canaries['greedy_extracted']}/{canaries['canaries']} canaries, "
            f"sampled {canaries['sampled_extractions']}/{canaries['samples']}"
        )
        notes = result["notes"]
        if notes:
            splits, auc = notes["splits"], notes["membership"]["auc"]
            typer.echo(
                f"{label}: notes reproducing >= {notes['verbatim_tokens']} tokens: training {splits['train']['reproduced']}/{splits['train']['notes']}, "
                f"held-out {splits['heldout']['reproduced']}/{splits['heldout']['notes']}; membership AUC {_bits(auc)}"
            )
    calibrated = metrics["comparison"].get("calibrated_membership")
    if calibrated:
        typer.echo(f"calibrated membership AUC (loss minus the base's): {_bits(calibrated['auc'])}")
    for split, notes in metrics["notes"].items():
        if notes["audited"] < metrics["settings"]["notes"]:
            typer.secho(f"note: {split}: {notes['audited']} notes audited (fewer than --notes {metrics['settings']['notes']} are long enough)",
                        fg=typer.colors.YELLOW, err=True)  # fmt: skip
    typer.echo(f"report written to {output / 'report.md'}")


@audit_app.command("memorization")
def memorization_command(
    canaries: Annotated[Path, typer.Option("--canaries", help="The canary file `prepare --canaries` wrote (kept by the study lead, outside data/).")],
    model: Annotated[str | None, typer.Option("--model", help="Base or merged model folder (default with --adapter: the adapter's base).")] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="LoRA adapter folder (saves/<run>), applied unmerged on --model.")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Control model, audited side by side (default with --adapter: --model without it).")] = None,
    train: Annotated[Path | None, typer.Option("--train", help="Training notes, data/<name>/train.jsonl: regurgitation and membership.")] = None,
    heldout: Annotated[Path | None, typer.Option("--heldout", help="Held-out notes of the same corpus, data/<name>/test.jsonl: the control.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Report folder (default reports/audit/<adapter or model folder name>).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a non-empty --output.")] = False,
    candidates: Annotated[int, typer.Option("--candidates", help="Other fillings of each secret's shape to rank it among (all when fewer).")] = 2000,
    samples: Annotated[int, typer.Option("--samples", help="Sampled extraction attempts per canary (temperature 1, top-k 40).")] = 8,
    notes: Annotated[int, typer.Option("--notes", help="Training and held-out notes to audit, each (drawn at random, seeded).")] = 200,
    prefix_tokens: Annotated[int, typer.Option("--prefix-tokens", help="Tokens of a note given as the prompt.")] = 32,
    continuation_tokens: Annotated[int, typer.Option("--continuation-tokens", help="Tokens generated and compared with the note's own.")] = 64,
    loss_tokens: Annotated[int, typer.Option("--loss-tokens", help="First tokens of each note whose mean loss is the membership score.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass / generation batch.")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto (cuda when available), cuda, cuda:N or cpu.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto (bf16 on a GPU, fp32 on CPU), bf16, fp16 or fp32 (exact ranks: fp32).")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the candidate draws, the note draws and the sampled continuations.")] = 0,
) -> None:
    """Canary exposure and extraction, verbatim regurgitation and membership inference of a model and its base; writes reports/audit/<run>/."""
    from medfactory.eval.audit import AuditSettings, run_memorization_audit

    settings = AuditSettings(candidates=candidates, samples=samples, notes=notes, prefix_tokens=prefix_tokens, continuation_tokens=continuation_tokens,
                             loss_tokens=loss_tokens, batch_size=batch_size, seed=seed)  # fmt: skip
    try:
        metrics, folder = run_memorization_audit(canaries, model=model, adapter=adapter, base=base, train=train, heldout=heldout, output=output,
                                                 replace=replace, settings=settings, device=device, dtype=dtype)  # fmt: skip
    except (ValueError, OSError) as error:  # AuditError, McqaError, an unreadable file
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    _echo_summary(metrics, folder)
