"""``medfactory eval lm-eval-parity``: the items of an ``eval mcqa`` report scored again by lm-evaluation-harness.

An independent check of ``eval mcqa``'s log-likelihoods: the report's exact contexts and continuations (the same items,
protocol, shots, few-shot draw and BOS rule, rebuilt from its ``metrics.json``) go through lm-eval's own ``HFLM``
model as ``loglikelihood`` requests, and every option's log-likelihood is compared with the report's ``per_item.csv``.
Written: ``parity.json`` and ``parity.md`` (counts and differences; no item text). The command exits 1 when the
largest difference exceeds ``--tolerance``.

lm-eval is an optional dependency (``pip install ".[lm-eval]"``; the test extra installs it). Only raw prompts are
compared: a report scored through a chat template (``settings.chat_template``) is refused, since lm-eval would apply
its own template handling. docs/evaluation.md#lm-eval-parity has the details.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.tables import markdown_table
from medfactory.eval import mcqa

PARITY_JSON = "parity.json"
PARITY_MD = "parity.md"
DEFAULT_TOLERANCE = 1e-3  # nats; float32 on CPU agrees to ~1e-5, bf16 on a GPU to ~1e-2
SCORE_COLUMN = {"letter": "logprob", "loglik_norm": "loglik"}


class ParityError(CorpusError):
    """The report cannot be re-scored: the message names the file and the setting."""


@dataclass(frozen=True)
class ParityRequests:
    """The report's (context, continuation) pairs in per_item.csv order, with each pair's item row and option position."""

    pairs: list[tuple[str, str]]
    rows: list[int]
    positions: list[int]
    add_bos: bool


def lm_eval_version() -> str | None:
    """lm-eval's installed version, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None


def read_report(report_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """metrics.json and per_item.csv of an ``eval mcqa`` report; refuses chat-template reports."""
    metrics_path, per_item_path = report_dir / "metrics.json", report_dir / "per_item.csv"
    for path in (metrics_path, per_item_path):
        if not path.is_file():
            raise ParityError(f"{path} does not exist: pass an `eval mcqa` report folder as --report")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ParityError(f"{metrics_path} is not JSON ({error.__class__.__name__})") from None
    settings = metrics.get("settings") if isinstance(metrics, dict) else None
    if not isinstance(settings, dict) or settings.get("protocol") not in SCORE_COLUMN:
        raise ParityError(f"{metrics_path} has no settings.protocol of eval mcqa ({', '.join(SCORE_COLUMN)})")
    if settings.get("chat_template"):
        raise ParityError(
            f"{metrics_path}: scored through the chat template {settings['chat_template']!r}; parity compares raw prompts only "
            "(rerun eval mcqa with --chat-template none for a parity report)"
        )
    return metrics, pd.read_csv(per_item_path, dtype={"id": str})


def _report_items(settings: dict[str, Any], per_item: pd.DataFrame, report_dir: Path) -> list[mcqa.McqItem]:
    items, _ = mcqa.select_items(mcqa.load_items(Path(settings["items"])), bool(settings.get("include_images")), settings.get("limit"))
    if [item.id for item in items] != per_item["id"].tolist():
        raise ParityError(
            f"{report_dir / 'per_item.csv'}: its ids are not those of {settings['items']} as the report selected them "
            "(the items file changed since the report was written); rerun eval mcqa"
        )
    return items


def build_requests(metrics: dict[str, Any], per_item: pd.DataFrame, report_dir: Path) -> ParityRequests:
    """Every option's (context, continuation) exactly as ``eval mcqa`` built it for this report."""
    settings = metrics["settings"]
    items = _report_items(settings, per_item, report_dir)
    shots = int(settings.get("shots") or 0)
    sampler = None
    if shots:
        sampler = mcqa.FewShotSampler(mcqa.load_items(Path(settings["fewshot_from"])), int(settings.get("seed") or 0))
    pairs, rows, positions = [], [], []
    for row, item in enumerate(items):
        context = mcqa.build_prompt(item, settings["protocol"], sampler.sample(item, shots) if sampler else ())
        for position, continuation in enumerate(mcqa.continuations(item, settings["protocol"])):
            pairs.append((context, continuation))
            rows.append(row)
            positions.append(position)
    add_bos = metrics.get("scoring", {}).get("bos_prepended") is True
    return ParityRequests(pairs, rows, positions, add_bos)


def lm_eval_logliks(model: str, adapter: str | None, requests: ParityRequests, batch_size: int, dtype: str, device: str) -> list[float]:
    """lm-eval ``HFLM.loglikelihood`` of every pair (its own loading, tokenisation and batching)."""
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:
        raise ParityError('lm-evaluation-harness is not installed: pip install ".[lm-eval]" (or lm_eval==0.4.13)') from error
    lm = HFLM(pretrained=model, peft=adapter, batch_size=batch_size, dtype=dtype, device=device, add_bos_token=requests.add_bos)
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=index) for index, pair in enumerate(requests.pairs)]
    return [float(logprob) for logprob, _ in lm.loglikelihood(instances)]


def _argmaxes(values: pd.DataFrame) -> list[int]:
    return [int(row.dropna().to_numpy().argmax()) for _, row in values.iterrows()]


def compare(per_item: pd.DataFrame, protocol: str, requests: ParityRequests, theirs: list[float]) -> dict[str, Any]:
    """Per-option differences (lm-eval − eval mcqa) and the argmax each gives, per item."""
    column = SCORE_COLUMN[protocol]
    letters = mcqa.POSITIONS
    ours = [float(per_item.iloc[row][f"{column}_{letters[position]}"]) for row, position in zip(requests.rows, requests.positions, strict=True)]
    differences = [abs(a - b) for a, b in zip(theirs, ours, strict=True)]
    table = pd.DataFrame({"row": requests.rows, "position": requests.positions, "ours": ours, "theirs": theirs})
    ours_wide = table.pivot(index="row", columns="position", values="ours")
    theirs_wide = table.pivot(index="row", columns="position", values="theirs")
    ours_argmax, theirs_argmax = _argmaxes(ours_wide), _argmaxes(theirs_wide)
    answers = [letters.index(answer) for answer in per_item["answer"]]
    n = len(answers)
    return {
        "n_items": n,
        "n_options_scored": len(differences),
        "max_abs_difference": max(differences),
        "mean_abs_difference": sum(differences) / len(differences),
        "options_over_1e-4": sum(d > 1e-4 for d in differences),
        "same_argmax": sum(a == b for a, b in zip(ours_argmax, theirs_argmax, strict=True)),
        "accuracy_unnormalised": {
            "eval_mcqa": sum(a == g for a, g in zip(ours_argmax, answers, strict=True)) / n,
            "lm_eval": sum(a == g for a, g in zip(theirs_argmax, answers, strict=True)) / n,
        },
    }


def render(parity: dict[str, Any]) -> str:
    """parity.md: the settings compared and the differences."""
    result = parity["result"]
    rows = [
        ["items", result["n_items"]],
        ["options scored", result["n_options_scored"]],
        ["max |Δ log-likelihood| (nats)", f"{result['max_abs_difference']:.3g}"],
        ["mean |Δ log-likelihood| (nats)", f"{result['mean_abs_difference']:.3g}"],
        ["options with |Δ| > 1e-4", result["options_over_1e-4"]],
        ["items with the same argmax", f"{result['same_argmax']} of {result['n_items']}"],
        ["accuracy (unnormalised argmax), eval mcqa", f"{result['accuracy_unnormalised']['eval_mcqa']:.4f}"],
        ["accuracy (unnormalised argmax), lm-eval", f"{result['accuracy_unnormalised']['lm_eval']:.4f}"],
    ]
    verdict = "within" if parity["within_tolerance"] else "OVER"
    return "\n".join([
        f"# lm-eval parity: {parity['report']}", "",
        f"Protocol `{parity['protocol']}`, lm-eval {parity['lm_eval_version']} `HFLM` (add_bos_token={parity['add_bos_token']}, "
        f"dtype {parity['dtype']}, device {parity['device']}); {verdict} the tolerance of {parity['tolerance']:g} nats.", "",
        markdown_table(["", "value"], rows), "",
    ])  # fmt: skip


def run_parity(report_dir: Path, batch_size: int = 8, dtype: str | None = None, device: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
               out_dir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Re-score the report with lm-eval; write parity.json and parity.md into ``out_dir`` (default the report)."""
    report_dir = Path(report_dir)
    metrics, per_item = read_report(report_dir)
    settings = metrics["settings"]
    requests = build_requests(metrics, per_item, report_dir)
    dtype = dtype or settings.get("dtype") or "float32"
    device = device or settings.get("device") or "cpu"
    theirs = lm_eval_logliks(settings["model"], settings.get("adapter"), requests, batch_size, dtype, device)
    result = compare(per_item, settings["protocol"], requests, theirs)
    parity = {
        "report": str(report_dir), "protocol": settings["protocol"], "model": settings["model"], "adapter": settings.get("adapter"),
        "lm_eval_version": lm_eval_version(), "add_bos_token": requests.add_bos, "dtype": dtype, "device": device,
        "tolerance": tolerance, "within_tolerance": bool(math.isfinite(result["max_abs_difference"]) and result["max_abs_difference"] <= tolerance),
        "result": result,
    }  # fmt: skip
    out_dir = Path(out_dir) if out_dir else report_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / PARITY_JSON, parity)
    with atomic_write(out_dir / PARITY_MD) as handle:
        handle.write(render(parity))
    return parity


def lm_eval_parity_command(
    report: Annotated[Path, typer.Option("--report", help="An eval mcqa report folder (metrics.json, per_item.csv), scored without a chat template")],
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Where parity.json and parity.md go (default: the report folder)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="lm-eval's batch size")] = 8,
    dtype: Annotated[str | None, typer.Option("--dtype", help="lm-eval's dtype (default: the report's, e.g. float32)")] = None,
    device: Annotated[str | None, typer.Option("--device", help="lm-eval's device (default: the report's)")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Largest allowed |Δ log-likelihood| in nats; exit 1 above it")] = DEFAULT_TOLERANCE,
) -> None:
    """Score an eval mcqa report's items again with lm-evaluation-harness's HFLM and compare every option's log-likelihood."""
    with exit_on_corpus_error():
        parity = run_parity(report, batch_size, dtype, device, tolerance, out_dir)
    result = parity["result"]
    typer.echo(
        f"{result['n_options_scored']} options of {result['n_items']} items: max |Δ| {result['max_abs_difference']:.3g} nats, "
        f"same argmax on {result['same_argmax']} -> {out_dir or report}"
    )
    if not parity["within_tolerance"]:
        typer.secho(f"max |Δ| is over --tolerance {tolerance:g}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
