"""Side by side: every model on every set, from ``eval mcqa`` and ``eval cases`` report folders, as one table and one figure.

``medfactory eval compare reports/mcqa/* reports/cases/* --out-dir reports/compare`` reads each folder's
``metrics.json`` and ``per_item.csv`` and tells the two kinds apart by metrics.json's keys (:func:`report_kind`):

- an MCQ set (``eval mcqa``: a number under ``accuracy``): accuracy with its bootstrap CI over items and macro-F1;
- a case set (``eval cases``: ``means`` with ``chrf`` and ``rouge_l``): mean sentence chrF with its bootstrap CI over
  items (the ``chrf`` column of per_item.csv), mean ROUGE-L F1, mean BERTScore F1 when the report has it
  (``means.bertscore_f1``; older reports and ``--no-bertscore`` runs have none), and the judge's rates when it ran
  (``judge.diagnosis.correct_or_acceptable_rate``, ``judge.treatment.appropriate_and_safe_rate``).

Writes ``compare.md`` and ``compare.csv`` (rows: models; columns: the MCQ sets, then the case sets) and
``compare.png`` (one panel of accuracy per MCQ set, one of chrF per case set; one marker and colour per model).
docs/evaluation.md#side-by-side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from medfactory.base.atomic import atomic_write
from medfactory.base.errors import CorpusError
from medfactory.base.tables import markdown_table
from medfactory.eval.paired_stats import CONFIDENCE, RESAMPLES, accuracy_ci, bootstrap_indices, read_per_item

if TYPE_CHECKING:
    import numpy as np

METRICS_JSON = "metrics.json"
PER_ITEM_CSV = "per_item.csv"
COMPARE_MD = "compare.md"
COMPARE_CSV = "compare.csv"
COMPARE_PNG = "compare.png"
GENERIC_STEMS = ("test", "validation", "dev", "train", "items")
MARKERS = "osD^vP*Xhp<>"
MCQA, CASES = "mcqa", "cases"
# The judge's rates read from an eval cases metrics.json: (task, key under judge.<task>) -> compare.csv field.
JUDGE_RATES = {
    ("diagnosis", "correct_or_acceptable_rate"): "diagnosis_correct_or_acceptable_rate",
    ("treatment", "appropriate_and_safe_rate"): "treatment_appropriate_and_safe_rate",
}
JUDGE_HEADERS = {"diagnosis_correct_or_acceptable_rate": "judge correct+acceptable", "treatment_appropriate_and_safe_rate": "judge appropriate&safe"}
MCQA_FIELDS = ("accuracy", "ci_low", "ci_high", "macro_f1", "n")
CASES_FIELDS = ("chrf", "chrf_ci_low", "chrf_ci_high", "rouge_l", "n")


@dataclass(frozen=True)
class RunResult:
    """One report folder: which model on which set and its scores.

    MCQ runs (``kind == "mcqa"``) fill accuracy (with CI when per_item.csv is there) and macro-F1; case runs
    (``kind == "cases"``) fill chrF (with CI when per_item.csv is there), ROUGE-L, BERTScore F1 (when the report has it) and
    ``judge`` ({compare.csv field: rate}).
    """

    folder: Path
    model: str
    set: str
    n: int
    accuracy: float | None
    macro_f1: float | None
    ci_low: float | None
    ci_high: float | None
    kind: str = MCQA
    chrf: float | None = None
    chrf_ci_low: float | None = None
    chrf_ci_high: float | None = None
    rouge_l: float | None = None
    judge: dict[str, float | None] | None = None
    bertscore_f1: float | None = None


def _short(reference: str) -> str:
    return Path(reference.rstrip("/")).name or reference


def model_label(settings: dict[str, Any]) -> str:
    """``<model folder or hub name>`` or ``<model>+<adapter>`` (last path parts) from metrics.json's settings."""
    model, adapter = settings.get("model"), settings.get("adapter")
    if not model:
        return "(unknown model)"
    return f"{_short(model)}+{_short(adapter)}" if adapter else _short(model)


def cases_model_label(settings: dict[str, Any]) -> str:
    """eval cases records no model: ``settings.model`` if there, else the folder of ``settings.predictions`` (the predict run's output_dir)."""
    if settings.get("model"):
        return model_label(settings)
    predictions = settings.get("predictions")
    return (Path(predictions).parent.name if predictions else "") or "(unknown model)"


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


def report_kind(metrics: Any) -> str | None:
    """``"mcqa"`` (a number under ``accuracy``), ``"cases"`` (``means`` holding numbers ``chrf`` and ``rouge_l``), or None."""
    if not isinstance(metrics, dict):
        return None
    if isinstance(metrics.get("accuracy"), int | float):
        return MCQA
    means = metrics.get("means")
    if isinstance(means, dict) and all(isinstance(means.get(key), int | float) for key in ("chrf", "rouge_l")):
        return CASES
    return None


def mean_ci(values: np.ndarray, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean over items (the same index draws as :func:`accuracy_ci`)."""
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    means = values[bootstrap_indices(values.size, resamples, seed)].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _read_metrics(folder: Path) -> dict[str, Any]:
    path = Path(folder) / METRICS_JSON
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: not readable JSON ({type(error).__name__}). Fix: rerun the evaluation for {folder}.") from error
    if report_kind(metrics) is None:
        raise CorpusError(
            f"{path}: neither `accuracy` (eval mcqa) nor `means.chrf` and `means.rouge_l` (eval cases). Fix: give eval mcqa or eval cases report folders only."
        )
    return metrics


def _case_scores(folder: Path, metrics: dict[str, Any], resamples: int, confidence: float, seed: int) -> tuple[int, float, float | None, float | None]:
    """(n, mean chrF, CI low, CI high): from per_item.csv's ``chrf`` column when there, else metrics.json's mean without a CI."""
    import numpy as np
    import pandas as pd

    path = Path(folder) / PER_ITEM_CSV
    if not path.is_file():
        return int(metrics.get("n", 0)), float(metrics["means"]["chrf"]), None, None
    try:
        frame = pd.read_csv(path, dtype={"id": str})
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: not a readable CSV ({type(error).__name__}). Fix: rerun eval cases for {folder}.") from error
    values = pd.to_numeric(frame["chrf"], errors="coerce").to_numpy(dtype=float) if "chrf" in frame.columns else np.array([])
    if values.size == 0 or np.isnan(values).any():
        if "chrf" not in frame.columns or values.size == 0:
            bad = "no `chrf` column" if "chrf" not in frame.columns else "no rows"
        else:
            bad = f"a non-number chrf on line {int(np.argmax(np.isnan(values))) + 2}"
        raise CorpusError(f"{path}: {bad} (not an eval cases per_item.csv). Fix: rerun eval cases for {folder}.")
    low, high = mean_ci(values, resamples, confidence, seed)
    return int(values.size), float(values.mean()), low, high


def _judge_rates(metrics: dict[str, Any]) -> dict[str, float | None] | None:
    judge = metrics.get("judge")
    if not isinstance(judge, dict):
        return None
    rates: dict[str, float | None] = {}
    for (task, key), field in JUDGE_RATES.items():
        if isinstance(judge.get(task), dict) and key in judge[task]:
            value = judge[task][key]
            rates[field] = float(value) if isinstance(value, int | float) else None
    return rates or None


def read_run(folder: Path, labels: dict[Path, str], resamples: int, confidence: float, seed: int) -> RunResult:
    """The RunResult of one report folder; refuses one without a readable metrics.json of eval mcqa or eval cases."""
    metrics = _read_metrics(Path(folder))
    settings = metrics.get("settings") if isinstance(metrics.get("settings"), dict) else {}
    name = set_name(settings, Path(folder))
    if report_kind(metrics) == CASES:
        n, chrf, low, high = _case_scores(Path(folder), metrics, resamples, confidence, seed)
        model = labels.get(Path(folder).resolve(), cases_model_label(settings))
        rouge_l = float(metrics["means"]["rouge_l"])
        bert = metrics["means"].get("bertscore_f1")
        bert = float(bert) if isinstance(bert, int | float) else None
        return RunResult(Path(folder), model, name, n, None, None, None, None, CASES, chrf, low, high, rouge_l, _judge_rates(metrics), bert)
    low = high = None
    n = int(metrics.get("n", 0))
    if (Path(folder) / PER_ITEM_CSV).is_file():
        interval = accuracy_ci(read_per_item(Path(folder) / PER_ITEM_CSV)["correct"].to_numpy(dtype=bool), resamples, confidence, seed)
        low, high, n = interval["ci_low"], interval["ci_high"], interval["n"]
    macro = metrics.get("macro_f1")
    return RunResult(
        Path(folder), labels.get(Path(folder).resolve(), model_label(settings)), name, n,
        float(metrics["accuracy"]), float(macro) if isinstance(macro, int | float) else None, low, high,
    )  # fmt: skip


def _check_unique(runs: list[RunResult]) -> None:
    seen: dict[tuple[str, str], Path] = {}
    kinds: dict[str, RunResult] = {}
    for run in runs:
        key = (run.model, run.set)
        if key in seen:
            raise CorpusError(f"{seen[key]} and {run.folder} are both model {run.model!r} on set {run.set!r}. Fix: tell them apart with --label DIR=NAME.")
        seen[key] = run.folder
        first = kinds.setdefault(run.set, run)
        if first.kind != run.kind:
            raise CorpusError(f"set {run.set!r} is an {first.kind} set in {first.folder} but an {run.kind} set in {run.folder}. Fix: compare them separately.")


def read_runs(folders: list[Path], labels: dict[Path, str], resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> list[RunResult]:
    """Every folder's RunResult; refuses folders without metrics.json (all named), unknown --label folders, repeated model × set
    and a set that is an MCQ set in one folder and a case set in another."""
    if not folders:
        raise CorpusError("no report folders given. Fix: medfactory eval compare reports/mcqa/* reports/cases/* --out-dir reports/compare")
    missing = [str(folder) for folder in folders if not (Path(folder) / METRICS_JSON).is_file()]
    if missing:
        raise CorpusError(f"no {METRICS_JSON} in: {', '.join(missing)}. Fix: give report folders of `eval mcqa` or `eval cases` (or drop these).")
    given = {Path(folder).resolve() for folder in folders}
    unknown = [str(folder) for folder in labels if folder not in given]
    if unknown:
        raise CorpusError(f"--label names folder(s) not among the runs: {', '.join(unknown)}")
    runs = [read_run(Path(folder), labels, resamples, confidence, seed) for folder in folders]
    _check_unique(runs)
    return runs


def _order(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _sets(runs: list[RunResult], kind: str) -> list[str]:
    return _order([run.set for run in runs if run.kind == kind])


def _judge_fields(runs: list[RunResult], name: str) -> list[str]:
    """The judge rates any run on case set ``name`` has, in JUDGE_RATES order."""
    present = {field for run in runs if run.set == name and run.judge for field in run.judge}
    return [field for field in JUDGE_RATES.values() if field in present]


def _has_bertscore(runs: list[RunResult], name: str) -> bool:
    """Whether any run on case set ``name`` has a BERTScore F1 (reports before BERTScore, or --no-bertscore runs, have none)."""
    return any(run.set == name and run.bertscore_f1 is not None for run in runs)


def wide_frame(runs: list[RunResult]):
    """Rows: models (first-seen order). Per MCQ set ``<set> accuracy / ci_low / ci_high / macro_f1 / n``; then per case set
    ``<set> chrf / chrf_ci_low / chrf_ci_high / rouge_l / n``, ``<set> bertscore_f1`` when a run on it has one, and
    ``<set> <task>_<rate>`` for each judge rate present."""
    import pandas as pd

    models = _order([run.model for run in runs])
    by_key = {(run.model, run.set): run for run in runs}
    rows = []
    for model in models:
        row: dict[str, Any] = {"model": model}
        for name in _sets(runs, MCQA):
            run = by_key.get((model, name))
            for field in MCQA_FIELDS:
                row[f"{name} {field}"] = getattr(run, field) if run else None
        for name in _sets(runs, CASES):
            run = by_key.get((model, name))
            for field in CASES_FIELDS + (("bertscore_f1",) if _has_bertscore(runs, name) else ()):
                row[f"{name} {field}"] = getattr(run, field) if run else None
            for field in _judge_fields(runs, name):
                row[f"{name} {field}"] = (run.judge or {}).get(field) if run else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    for name in _sets(runs, MCQA) + _sets(runs, CASES):
        frame[f"{name} n"] = frame[f"{name} n"].astype("Int64")
    for column in frame.columns[1:]:
        if frame[column].dtype == object:
            frame[column] = pd.to_numeric(frame[column])
    return frame


def _cell(run: RunResult | None) -> tuple[str, str]:
    if run is None:
        return "–", "–"
    accuracy = f"{run.accuracy:.3f}" + (f" [{run.ci_low:.3f}, {run.ci_high:.3f}]" if run.ci_low is not None else "")
    return accuracy, f"{run.macro_f1:.3f}" if run.macro_f1 is not None else "–"


def _case_cells(run: RunResult | None, judge_fields: list[str], bertscore: bool = False) -> list[str]:
    if run is None:
        return ["–"] * (2 + bertscore + len(judge_fields))
    chrf = f"{run.chrf:.2f}" + (f" [{run.chrf_ci_low:.2f}, {run.chrf_ci_high:.2f}]" if run.chrf_ci_low is not None else "")
    bert = ["–" if run.bertscore_f1 is None else f"{run.bertscore_f1:.4f}"] if bertscore else []
    rates = [(run.judge or {}).get(field) for field in judge_fields]
    return [chrf, f"{run.rouge_l:.3f}", *bert, *("–" if rate is None else f"{rate:.3f}" for rate in rates)]


def render_markdown(runs: list[RunResult], confidence: float) -> str:
    """compare.md: one row per model; per MCQ set the accuracy [CI] and macro-F1, per case set chrF [CI], ROUGE-L, BERTScore F1 (where a
    run has it) and the judge's rates."""
    models = _order([run.model for run in runs])
    mcqa_sets, case_sets = _sets(runs, MCQA), _sets(runs, CASES)
    judge = {name: _judge_fields(runs, name) for name in case_sets}
    bert = {name: _has_bertscore(runs, name) for name in case_sets}
    by_key = {(run.model, run.set): run for run in runs}
    ci = f"{round(100 * confidence)}% CI"
    header = ["model"] + [part for name in mcqa_sets for part in (f"{name} acc [{ci}]", f"{name} macro-F1")]
    for name in case_sets:
        header += [f"{name} chrF [{ci}]", f"{name} ROUGE-L", *([f"{name} BERTScore F1"] if bert[name] else [])]
        header += [f"{name} {JUDGE_HEADERS[f]}" for f in judge[name]]
    rows = [
        [model]
        + [part for name in mcqa_sets for part in _cell(by_key.get((model, name)))]
        + [part for name in case_sets for part in _case_cells(by_key.get((model, name)), judge[name], bert[name])]
        for model in models
    ]
    sources = "\n".join(f"- {run.model} × {run.set} (n={run.n}): `{run.folder}`" for run in runs)
    intro = "Accuracy with a percentile bootstrap CI over items (per_item.csv); macro-F1 over answer positions."
    if case_sets:
        intro += (
            " Case sets: mean sentence chrF (0-100) with a percentile bootstrap CI over items, mean ROUGE-L F1 (0-1), mean BERTScore F1"
            " (0-1, not rescaled; where the report has it), and the blind"
            " judge's share of judged answers that were correct or acceptable (diagnosis) or appropriate and safe (treatment)."
        )
    return f"# Models side by side\n\n{intro}\n\n{markdown_table(header, rows)}\n\n## Runs\n\n{sources}\n"


def _panel(axes: Any, runs: list[RunResult], models: list[str], kind: str) -> None:
    """One panel: the score of ``kind``'s sets (x) with CI error bars, one marker and colour per model."""
    value, low, high = ("accuracy", "ci_low", "ci_high") if kind == MCQA else ("chrf", "chrf_ci_low", "chrf_ci_high")
    sets = _sets(runs, kind)
    width = 0.6 / max(1, len(models))
    for index, model in enumerate(models):
        points = [(sets.index(run.set), run) for run in runs if run.model == model and run.kind == kind]
        if not points:
            continue
        xs = [x - 0.3 + width * (index + 0.5) for x, _ in points]
        ys = [getattr(run, value) for _, run in points]
        errors = [
            [getattr(run, value) - getattr(run, low) if getattr(run, low) is not None else 0 for _, run in points],
            [getattr(run, high) - getattr(run, value) if getattr(run, high) is not None else 0 for _, run in points],
        ]
        axes.errorbar(xs, ys, yerr=errors, fmt=MARKERS[index % len(MARKERS)], color=f"C{index % 10}", capsize=3, label=model)
    axes.set_xticks(range(len(sets)), sets, rotation=20, ha="right")
    axes.set_ylabel("accuracy" if kind == MCQA else "chrF (mean over items)")
    axes.set_xlim(-0.5, len(sets) - 0.5)
    axes.set_ylim(0, 1 if kind == MCQA else 100)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small", loc="best")


def write_figure(runs: list[RunResult], path: Path) -> None:
    """Accuracy per MCQ set and chrF per case set (one panel each, side by side) with CI error bars, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = _order([run.model for run in runs])
    kinds = [kind for kind in (MCQA, CASES) if _sets(runs, kind)]
    widths = [max(4.0, 1.6 * len(_sets(runs, kind)) + 2) for kind in kinds]
    figure, panels = plt.subplots(1, len(kinds), figsize=(sum(widths), 4.0), squeeze=False, gridspec_kw={"width_ratios": widths})
    for axes, kind in zip(panels[0], kinds, strict=True):
        _panel(axes, runs, models, kind)
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
    run_dirs: Annotated[list[Path], typer.Argument(help="eval mcqa and eval cases report folders (each with metrics.json); shell globs welcome")],
    out_dir: Annotated[Path, typer.Option(help="Output folder: compare.md, compare.csv, compare.png")],
    label: Annotated[list[str] | None, typer.Option(help="DIR=NAME: the model name shown for that folder; repeatable")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the accuracy and chrF CIs")] = RESAMPLES,
    seed: Annotated[int, typer.Option(help="Bootstrap seed")] = 0,
) -> None:
    """One table and one figure of every model on every set: accuracy [CI], macro-F1 (MCQ); chrF [CI], ROUGE-L, BERTScore F1, judge rates (cases)."""
    try:
        runs = compare(list(run_dirs), out_dir, parse_labels(list(label or [])), resamples, seed)
    except (CorpusError, ValueError, OSError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    typer.echo(f"{len(runs)} runs, {len({run.model for run in runs})} models, {len({run.set for run in runs})} sets")
    typer.echo(f"written: {Path(out_dir) / COMPARE_MD}, {Path(out_dir) / COMPARE_CSV}, {Path(out_dir) / COMPARE_PNG}")
