"""Side by side: every model on every set, from ``eval mcqa`` report folders, as one table and one figure.

``medfactory eval compare reports/mcqa/* --out-dir reports/compare`` reads each folder's
``metrics.json`` (accuracy, macro-F1, settings) and ``per_item.csv`` (for the bootstrap CI of the
accuracy) and writes ``compare.md`` and ``compare.csv`` (rows: models, columns: sets) and
``compare.png`` (accuracy with CI error bars per set, one marker and colour per model).
docs/evaluation.md#side-by-side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.atomic import atomic_write
from medfactory.base.errors import CorpusError
from medfactory.base.tables import markdown_table
from medfactory.eval.paired_stats import CONFIDENCE, RESAMPLES, accuracy_ci, read_per_item

METRICS_JSON = "metrics.json"
PER_ITEM_CSV = "per_item.csv"
COMPARE_MD = "compare.md"
COMPARE_CSV = "compare.csv"
COMPARE_PNG = "compare.png"
GENERIC_STEMS = ("test", "validation", "dev", "train", "items")
MARKERS = "osD^vP*Xhp<>"


@dataclass(frozen=True)
class RunResult:
    """One report folder: which model on which set, its accuracy (with CI when per_item.csv is there) and macro-F1."""

    folder: Path
    model: str
    set: str
    n: int
    accuracy: float
    macro_f1: float | None
    ci_low: float | None
    ci_high: float | None


def _short(reference: str) -> str:
    return Path(reference.rstrip("/")).name or reference


def model_label(settings: dict[str, Any]) -> str:
    """``<model folder or hub name>`` or ``<model>+<adapter>`` (last path parts) from metrics.json's settings."""
    model, adapter = settings.get("model"), settings.get("adapter")
    if not model:
        return "(unknown model)"
    return f"{_short(model)}+{_short(adapter)}" if adapter else _short(model)


def set_name(settings: dict[str, Any], folder: Path) -> str:
    """The items file's stem (``<folder>/<stem>`` for test.jsonl and the like); the report folder's name without one."""
    items = settings.get("items")
    if not items:
        return folder.name
    path = Path(items)
    return f"{path.parent.name}/{path.stem}" if path.stem in GENERIC_STEMS and path.parent.name else path.stem


def parse_labels(values: list[str]) -> dict[Path, str]:
    """``--label DIR=NAME`` options as {resolved folder: name}."""
    labels = {}
    for value in values:
        folder, sep, name = value.rpartition("=")
        if not sep or not folder or not name.strip():
            raise CorpusError(f"--label {value!r}: write DIR=NAME (e.g. reports/mcqa/base=BioMistral-7B)")
        labels[Path(folder).resolve()] = name.strip()
    return labels


def read_run(folder: Path, labels: dict[Path, str], resamples: int, confidence: float, seed: int) -> RunResult:
    """The RunResult of one report folder; refuses one without a readable metrics.json with an accuracy."""
    path = Path(folder) / METRICS_JSON
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: not readable JSON ({type(error).__name__}). Fix: rerun the evaluation for {folder}.") from error
    if not isinstance(metrics, dict) or not isinstance(metrics.get("accuracy"), int | float):
        raise CorpusError(f"{path}: no `accuracy` (not an `eval mcqa` report). Fix: give MCQ report folders only.")
    settings = metrics.get("settings") if isinstance(metrics.get("settings"), dict) else {}
    low = high = None
    n = int(metrics.get("n", 0))
    if (Path(folder) / PER_ITEM_CSV).is_file():
        interval = accuracy_ci(read_per_item(Path(folder) / PER_ITEM_CSV)["correct"].to_numpy(dtype=bool), resamples, confidence, seed)
        low, high, n = interval["ci_low"], interval["ci_high"], interval["n"]
    macro = metrics.get("macro_f1")
    return RunResult(
        Path(folder), labels.get(Path(folder).resolve(), model_label(settings)), set_name(settings, Path(folder)), n,
        float(metrics["accuracy"]), float(macro) if isinstance(macro, int | float) else None, low, high,
    )  # fmt: skip


def read_runs(folders: list[Path], labels: dict[Path, str], resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> list[RunResult]:
    """Every folder's RunResult; refuses folders without metrics.json (all named), unknown --label folders and repeated model × set."""
    if not folders:
        raise CorpusError("no report folders given. Fix: medfactory eval compare reports/mcqa/* --out-dir reports/compare")
    missing = [str(folder) for folder in folders if not (Path(folder) / METRICS_JSON).is_file()]
    if missing:
        raise CorpusError(f"no {METRICS_JSON} in: {', '.join(missing)}. Fix: give report folders of `eval mcqa` (or drop these).")
    given = {Path(folder).resolve() for folder in folders}
    unknown = [str(folder) for folder in labels if folder not in given]
    if unknown:
        raise CorpusError(f"--label names folder(s) not among the runs: {', '.join(unknown)}")
    runs = [read_run(Path(folder), labels, resamples, confidence, seed) for folder in folders]
    seen: dict[tuple[str, str], Path] = {}
    for run in runs:
        key = (run.model, run.set)
        if key in seen:
            raise CorpusError(f"{seen[key]} and {run.folder} are both model {run.model!r} on set {run.set!r}. Fix: tell them apart with --label DIR=NAME.")
        seen[key] = run.folder
    return runs


def _order(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def wide_frame(runs: list[RunResult]):
    """Rows: models (first-seen order); per set the columns ``<set> accuracy / ci_low / ci_high / macro_f1 / n``."""
    import pandas as pd

    models, sets = _order([run.model for run in runs]), _order([run.set for run in runs])
    by_key = {(run.model, run.set): run for run in runs}
    rows = []
    for model in models:
        row: dict[str, Any] = {"model": model}
        for name in sets:
            run = by_key.get((model, name))
            for field in ("accuracy", "ci_low", "ci_high", "macro_f1", "n"):
                row[f"{name} {field}"] = getattr(run, field) if run else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    for name in sets:
        frame[f"{name} n"] = frame[f"{name} n"].astype("Int64")
    return frame


def _cell(run: RunResult | None) -> tuple[str, str]:
    if run is None:
        return "–", "–"
    accuracy = f"{run.accuracy:.3f}" + (f" [{run.ci_low:.3f}, {run.ci_high:.3f}]" if run.ci_low is not None else "")
    return accuracy, f"{run.macro_f1:.3f}" if run.macro_f1 is not None else "–"


def render_markdown(runs: list[RunResult], confidence: float) -> str:
    """compare.md: one row per model, per set the accuracy [CI] and the macro-F1."""
    models, sets = _order([run.model for run in runs]), _order([run.set for run in runs])
    by_key = {(run.model, run.set): run for run in runs}
    header = ["model"] + [part for name in sets for part in (f"{name} acc [{round(100 * confidence)}% CI]", f"{name} macro-F1")]
    rows = [[model] + [part for name in sets for part in _cell(by_key.get((model, name)))] for model in models]
    sources = "\n".join(f"- {run.model} × {run.set} (n={run.n}): `{run.folder}`" for run in runs)
    return (
        "# Models side by side\n\nAccuracy with a percentile bootstrap CI over items (per_item.csv); macro-F1 over answer positions.\n\n"
        f"{markdown_table(header, rows)}\n\n## Runs\n\n{sources}\n"
    )


def write_figure(runs: list[RunResult], path: Path) -> None:
    """Accuracy per set (x) with CI error bars, one marker and colour per model, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, sets = _order([run.model for run in runs]), _order([run.set for run in runs])
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(sets) + 2), 4.0))
    width = 0.6 / max(1, len(models))
    for index, model in enumerate(models):
        points = [(sets.index(run.set), run) for run in runs if run.model == model]
        xs = [x - 0.3 + width * (index + 0.5) for x, _ in points]
        ys = [run.accuracy for _, run in points]
        errors = [
            [run.accuracy - run.ci_low if run.ci_low is not None else 0 for _, run in points],
            [run.ci_high - run.accuracy if run.ci_high is not None else 0 for _, run in points],
        ]
        axes.errorbar(xs, ys, yerr=errors, fmt=MARKERS[index % len(MARKERS)], color=f"C{index % 10}", capsize=3, label=model)
    axes.set_xticks(range(len(sets)), sets, rotation=20, ha="right")
    axes.set_ylabel("accuracy")
    axes.set_xlim(-0.5, len(sets) - 0.5)
    axes.set_ylim(0, 1)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=150)
    plt.close(figure)


def compare(folders: list[Path], out_dir: Path, labels: dict[Path, str] | None = None, resamples: int = RESAMPLES, seed: int = 0) -> list[RunResult]:
    """Read the runs and write compare.md, compare.csv and compare.png into ``out_dir``."""
    runs = read_runs(folders, labels or {}, resamples, CONFIDENCE, seed)
    out_dir = Path(out_dir)
    with atomic_write(out_dir / COMPARE_CSV) as handle:
        wide_frame(runs).to_csv(handle, index=False)
    with atomic_write(out_dir / COMPARE_MD) as handle:
        handle.write(render_markdown(runs, CONFIDENCE))
    write_figure(runs, out_dir / COMPARE_PNG)
    return runs


def compare_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="eval mcqa report folders (each with metrics.json); shell globs welcome")],
    out_dir: Annotated[Path, typer.Option(help="Output folder: compare.md, compare.csv, compare.png")],
    label: Annotated[list[str] | None, typer.Option(help="DIR=NAME: the model name shown for that folder; repeatable")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the accuracy CIs")] = RESAMPLES,
    seed: Annotated[int, typer.Option(help="Bootstrap seed")] = 0,
) -> None:
    """One table and one figure of every model on every set, accuracy with bootstrap CIs and macro-F1."""
    try:
        runs = compare(list(run_dirs), out_dir, parse_labels(list(label or [])), resamples, seed)
    except (CorpusError, ValueError, OSError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    typer.echo(f"{len(runs)} runs, {len({run.model for run in runs})} models, {len({run.set for run in runs})} sets")
    typer.echo(f"written: {Path(out_dir) / COMPARE_MD}, {Path(out_dir) / COMPARE_CSV}, {Path(out_dir) / COMPARE_PNG}")
