"""Forgetting check: a model before and after (continued) training, on general-domain and medical MCQ sets.

``medfactory eval forgetting --before M --after M+ADAPTER --general FILE --medical FILE --out-dir DIR``
runs ``eval mcqa`` (:func:`medfactory.eval.mcqa.evaluate`) for each model on each set into
``DIR/<before|after>/<set>/`` (ordinary mcqa reports), joins the per-item correctness by id and writes
``DIR/forgetting.json`` and ``DIR/forgetting.md``: per set, accuracy before / after with bootstrap CIs,
the paired difference with its CI, McNemar's test and a verdict (loss / gain / no significant change
at alpha 0.05). Ids and counts only, never item text. docs/evaluation.md#forgetting.
"""

from __future__ import annotations

import gc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.errors import CorpusError
from medfactory.base.tables import markdown_table
from medfactory.eval import mcqa
from medfactory.eval.paired_stats import ALPHA, CONFIDENCE, RESAMPLES, join_paired, paired_summary, read_per_item

FORGETTING_JSON = "forgetting.json"
FORGETTING_MD = "forgetting.md"
SIDES = ("before", "after")


@dataclass(frozen=True)
class ModelSpec:
    """A base model and an optional LoRA adapter on it."""

    model: str
    adapter: str | None

    @property
    def label(self) -> str:
        return f"{self.model}+{self.adapter}" if self.adapter else self.model


@dataclass(frozen=True)
class McqSet:
    """One MCQ file, its kind (general / medical) and the folder name its reports get."""

    name: str
    kind: str
    path: Path


def parse_model_spec(spec: str, adapter: str | None, flag: str) -> ModelSpec:
    """``MODEL`` or ``MODEL+ADAPTER`` (a path holding ``+`` that exists is taken whole); ``--<flag>-adapter`` adds one."""
    spec = spec.strip()
    model, inline = spec, None
    if "+" in spec and not Path(spec).expanduser().exists():
        model, inline = (part.strip() for part in spec.split("+", 1))
        if not model or not inline:
            raise mcqa.McqaError(f"{flag} {spec!r}: write MODEL or MODEL+ADAPTER (both parts non-empty)")
    if inline and adapter:
        raise mcqa.McqaError(f"{flag} {spec!r} names an adapter and {flag}-adapter {adapter!r} another. Fix: give the adapter once.")
    return ModelSpec(model, inline or adapter or None)


def name_sets(general: list[Path], medical: list[Path]) -> list[McqSet]:
    """Report folder names: the file stem, or ``<folder>-<stem>`` where stems repeat (data/*/test.jsonl)."""
    pairs = [("general", Path(path)) for path in general] + [("medical", Path(path)) for path in medical]
    if not pairs:
        raise mcqa.McqaError("no MCQ sets: give at least one --general or --medical file")
    resolved = Counter(path.resolve() for _, path in pairs)
    repeated = [str(path) for path, count in resolved.items() if count > 1]
    if repeated:
        raise mcqa.McqaError(f"set(s) given twice: {', '.join(repeated)}. Fix: name each file once, as --general or as --medical.")
    stems = Counter(path.stem for _, path in pairs)
    sets = [McqSet(path.stem if stems[path.stem] == 1 else f"{path.parent.name}-{path.stem}", kind, path) for kind, path in pairs]
    names = Counter(item.name for item in sets)
    clash = [name for name, count in names.items() if count > 1]
    if clash:
        raise mcqa.McqaError(f"two sets would share the report folder {clash[0]!r}. Fix: rename one of the files.")
    for item in sets:
        if not item.path.is_file():
            flag = "--general" if item.kind == "general" else "--medical"
            raise mcqa.McqaError(f"{flag} {item.path} does not exist or is not a file")
    return sets


def run_side(side: str, spec: ModelSpec, sets: list[McqSet], out_dir: Path, options: dict[str, Any]) -> None:
    """Load the model once and run ``evaluate`` on every set into ``out_dir/<side>/<set>/``; free it afterwards."""
    loaded = mcqa.load_model(spec.model, spec.adapter, options["dtype"], options.get("device"))
    try:
        for item in sets:
            typer.echo(f"{side}: {spec.label} on {item.name} ({item.kind})", err=True)
            mcqa.evaluate(
                item.path, spec.model, out_dir / side / item.name, adapter=spec.adapter, protocol=options["protocol"],
                seed=options["seed"], batch_size=options["batch_size"], dtype=options["dtype"], limit=options["limit"],
                chat_template=options["chat_template"], loaded=loaded, progress=options.get("progress", True),
            )  # fmt: skip
    finally:
        del loaded
        gc.collect()


def set_summary(item: McqSet, out_dir: Path, resamples: int, confidence: float, seed: int, alpha: float) -> dict[str, Any]:
    """The paired statistics of one set from the two per_item.csv files written under ``out_dir``."""
    paths = {side: out_dir / side / item.name / mcqa.PER_ITEM_CSV for side in SIDES}
    frames = {side: read_per_item(path) for side, path in paths.items()}
    joined = join_paired(frames["before"], frames["after"], str(paths["before"]), str(paths["after"]))
    return {
        "set": item.name,
        "kind": item.kind,
        "items": str(item.path),
        **paired_summary(joined, resamples, confidence, seed, alpha),
        "reports": {side: str(paths[side].parent) for side in SIDES},
    }


def _pct(value: float, sign: str = "") -> str:
    return f"{100 * value:{sign}.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    """forgetting.md: the settings and one row per set."""
    level = round(100 * report["confidence"])
    header = [
        "set", "kind", "n", f"before % [{level}% CI]", f"after % [{level}% CI]", f"after − before (pp) [{level}% CI]",
        "McNemar test", "statistic", "p", "verdict",
    ]  # fmt: skip
    rows = []
    for row in report["sets"]:
        before, after, diff, test = row["before"], row["after"], row["difference"], row["mcnemar"]
        rows.append([
            row["set"], row["kind"], row["n"],
            f"{_pct(before['accuracy'])} [{_pct(before['ci_low'])}, {_pct(before['ci_high'])}]",
            f"{_pct(after['accuracy'])} [{_pct(after['ci_low'])}, {_pct(after['ci_high'])}]",
            f"{_pct(diff['difference'], '+')} [{_pct(diff['ci_low'], '+')}, {_pct(diff['ci_high'], '+')}]",
            test["test"], f"{test['statistic']:.3f}", f"{test['pvalue']:.4g}", row["verdict"],
        ])  # fmt: skip
    return (
        "# Forgetting check\n\n"
        f"- before: `{report['before']['label']}`\n- after: `{report['after']['label']}`\n"
        f"- protocol `{report['protocol']}`, chat template `{report['chat_template']}`, limit {report['limit']}\n"
        f"- percentile bootstrap over items, {report['resamples']} resamples, seed {report['seed']}; paired difference resamples item pairs\n"
        f"- McNemar: exact binomial when fewer than 25 discordant pairs, else chi-square with continuity correction; "
        f"verdict at alpha {report['alpha']}\n\n"
        f"{markdown_table(header, rows)}\n"
    )


def forgetting_report(
    sets: list[McqSet], out_dir: Path, before: ModelSpec, after: ModelSpec, settings: dict[str, Any],
    resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0, alpha: float = ALPHA,
) -> dict[str, Any]:  # fmt: skip
    """forgetting.json / forgetting.md from the reports already under ``out_dir/<before|after>/<set>/``."""
    report = {
        "before": {"model": before.model, "adapter": before.adapter, "label": before.label},
        "after": {"model": after.model, "adapter": after.adapter, "label": after.label},
        **settings,
        "resamples": resamples,
        "confidence": confidence,
        "seed": seed,
        "alpha": alpha,
        "sets": [set_summary(item, out_dir, resamples, confidence, seed, alpha) for item in sets],
    }
    write_json_atomic(out_dir / FORGETTING_JSON, report)
    with atomic_write(out_dir / FORGETTING_MD) as handle:
        handle.write(render_markdown(report))
    return report


def forgetting_command(
    before: Annotated[str, typer.Option(help="Model before training: MODEL or MODEL+ADAPTER (folder or hub id)")],
    after: Annotated[str, typer.Option(help="Model after training: MODEL or MODEL+ADAPTER (e.g. base+saves/<run>)")],
    out_dir: Annotated[Path, typer.Option(help="Output folder: before/<set>/, after/<set>/, forgetting.json, forgetting.md")],
    general: Annotated[list[Path] | None, typer.Option(help="General-domain MCQ JSONL (same language); repeatable")] = None,
    medical: Annotated[list[Path] | None, typer.Option(help="Medical MCQ JSONL; repeatable")] = None,
    before_adapter: Annotated[str | None, typer.Option(help="LoRA adapter on --before (instead of +ADAPTER)")] = None,
    after_adapter: Annotated[str | None, typer.Option(help="LoRA adapter on --after (instead of +ADAPTER)")] = None,
    protocol: Annotated[str, typer.Option(help="letter or loglik_norm, as eval mcqa")] = "letter",
    chat_template: Annotated[str, typer.Option(help="none, auto or a LLaMA-Factory template, as eval mcqa")] = mcqa.NO_TEMPLATE,
    limit: Annotated[int | None, typer.Option(help="Score only the first N items of each set")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap (and of eval mcqa)")] = 0,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples")] = RESAMPLES,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass")] = 8,
    dtype: Annotated[str, typer.Option(help="auto, bf16, fp16 or fp32")] = "auto",
) -> None:
    """Accuracy before vs after training on general and medical MCQ sets, with bootstrap CIs and McNemar's test."""
    try:
        if protocol not in mcqa.PROTOCOLS:
            raise mcqa.McqaError(f"unknown protocol {protocol!r}; choose one of {', '.join(mcqa.PROTOCOLS)}")
        specs = {"before": parse_model_spec(before, before_adapter, "--before"), "after": parse_model_spec(after, after_adapter, "--after")}
        sets = name_sets(list(general or []), list(medical or []))
        options = {"protocol": protocol, "seed": seed, "batch_size": batch_size, "dtype": dtype, "limit": limit, "chat_template": chat_template}
        for side in SIDES:
            run_side(side, specs[side], sets, Path(out_dir), options)
        settings = {"protocol": protocol, "chat_template": chat_template, "limit": limit}
        report = forgetting_report(sets, Path(out_dir), specs["before"], specs["after"], settings, resamples, CONFIDENCE, seed)
    except (CorpusError, ValueError, OSError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    for row in report["sets"]:
        diff = row["difference"]
        typer.echo(
            f"{row['set']} ({row['kind']}, n={row['n']}): {row['before']['accuracy']:.4f} -> {row['after']['accuracy']:.4f} "
            f"({diff['difference']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]), McNemar p={row['mcnemar']['pvalue']:.4g}: {row['verdict']}"
        )
    typer.echo(f"report written to {Path(out_dir) / FORGETTING_MD}")
