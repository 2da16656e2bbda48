"""Stage 4 of the Likert study: ratings + key -> tables, figure, agreement and significance.

Reproduces what the Clinical-BR paper reported for its blind Likert study (Table 1: mean scores
per model and criterion; Table 2: score frequencies; Fig. 3: stacked bars) and adds what it
lacked: Krippendorff's alpha with bootstrap confidence intervals (among the human raters, and
between each LLM judge and the humans' median), a Friedman test per criterion and Holm-corrected
pairwise Wilcoxon signed-rank tests between models.

Inputs are the two tables of the earlier stages:

* ``ratings``: the long table (``card_id, rater, criterion, score, observation``); ``score`` is
  1-5 or NaN for a missing rating; raters named ``judge:<model>`` are LLM judges.
* ``key``: ``card_id, note_id, model`` (one card = one completion of one note by one model).

Only counts, model, rater and criterion names reach the report: no note text, and none of the
raters' free-text observations.
"""

from __future__ import annotations

import io
import itertools
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medfactory.base.atomic import atomic_write
from medfactory.base.tables import markdown_table

from . import CRITERIA, CRITERION_KEYS, SCORES

JUDGE_PREFIX = "judge:"
LEVELS = ("nominal", "ordinal", "interval")
FIGURE_FILE = "figures/stacked_bars.png"
REPORT_FILE = "report.md"
SUMMARY_CSV = "table1_summary.csv"
FREQUENCIES_CSV = "table2_frequencies.csv"
AGREEMENT_CSV = "agreement.csv"
FRIEDMAN_CSV = "friedman.csv"
KEY_COLUMNS = ("card_id", "note_id", "model")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def is_judge(rater: str) -> bool:
    """True for an LLM judge (rater named ``judge:<model>``)."""
    return str(rater).startswith(JUDGE_PREFIX)


def _check_columns(frame: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {list(frame.columns)}")


def _merged(ratings: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Validated ratings joined with the key: card_id, note_id, model, rater, criterion, score."""
    _check_columns(ratings, ("card_id", "rater", "criterion", "score"), "ratings")
    _check_columns(key, KEY_COLUMNS, "key")
    if key["card_id"].astype(str).duplicated().any():
        raise ValueError("key lists some card_id more than once")
    # observation (the raters' free text) is deliberately never read.
    frame = ratings.loc[:, ["card_id", "rater", "criterion", "score"]].copy()
    frame["card_id"] = frame["card_id"].astype(str)  # ids read from CSV/XLSX may come as numbers
    frame["rater"] = frame["rater"].astype(str)
    frame["criterion"] = frame["criterion"].astype(str)
    frame["score"] = pd.to_numeric(frame["score"], errors="raise").astype(float)
    unknown = sorted(set(frame["criterion"]) - set(CRITERION_KEYS))
    if unknown:
        raise ValueError(f"unknown criteria {unknown}; expected {list(CRITERION_KEYS)}")
    bad = frame["score"].notna() & ~frame["score"].isin([float(s) for s in SCORES])
    if bad.any():
        raise ValueError(f"{int(bad.sum())} score(s) outside {SCORES}: {sorted(frame.loc[bad, 'score'].unique())}")
    if frame.duplicated(["card_id", "rater", "criterion"]).any():
        raise ValueError("ratings hold more than one row for some (card_id, rater, criterion)")
    keyed = key.loc[:, list(KEY_COLUMNS)].copy()
    keyed["card_id"] = keyed["card_id"].astype(str)
    merged = frame.merge(keyed, on="card_id", how="left", validate="many_to_one")
    orphans = merged["model"].isna()
    if orphans.any():
        sample = sorted(map(str, merged.loc[orphans, "card_id"].unique()))[:5]
        raise ValueError(f"{int(orphans.sum())} rating(s) refer to cards missing from the key, e.g. {sample}")
    return merged


def _models(key: pd.DataFrame) -> list[str]:
    """Model names in the order they first appear in the key."""
    return list(dict.fromkeys(key["model"].astype(str)))


def _resolve_raters(ratings: pd.DataFrame, raters: Sequence[str] | None) -> list[str]:
    """The raters asked for; by default every human rater (all raters when there is no human)."""
    present = list(dict.fromkeys(ratings["rater"].astype(str)))
    if raters is None:
        humans = [rater for rater in present if not is_judge(rater)]
        return humans or present
    chosen = [str(rater) for rater in raters]
    absent = sorted(set(chosen) - set(present))
    if absent:
        raise ValueError(f"rater(s) {absent} have no ratings; present: {present}")
    return chosen


def _selected(ratings: pd.DataFrame, key: pd.DataFrame, raters: Sequence[str] | None) -> pd.DataFrame:
    merged = _merged(ratings, key)
    chosen = _resolve_raters(merged, raters)
    merged = merged[merged["rater"].isin(chosen)].copy()
    merged["model"] = merged["model"].astype(str)
    return merged


# --------------------------------------------------------------------------------------------
# Tables 1 and 2
# --------------------------------------------------------------------------------------------


def summary_table(ratings: pd.DataFrame, key: pd.DataFrame, raters: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 1: mean, SD (ddof=1), median, IQR (q75 - q25) and n per model x criterion.

    Missing scores are left out. ``raters`` defaults to the human raters (no ``judge:``).
    """
    merged = _selected(ratings, key, raters)
    rows = []
    for model in _models(key):
        for criterion in CRITERION_KEYS:
            scores = merged.loc[(merged["model"] == model) & (merged["criterion"] == criterion), "score"].dropna()
            values = scores.to_numpy(dtype=float)
            n = int(values.size)
            q25, median, q75 = np.percentile(values, [25, 50, 75]) if n else (np.nan,) * 3
            rows.append(
                {
                    "model": model,
                    "criterion": criterion,
                    "mean": float(values.mean()) if n else np.nan,
                    "sd": float(values.std(ddof=1)) if n > 1 else np.nan,
                    "median": float(median),
                    "iqr": float(q75 - q25),
                    "n": n,
                }
            )
    return pd.DataFrame(rows, columns=["model", "criterion", "mean", "sd", "median", "iqr", "n"])


def frequency_table(ratings: pd.DataFrame, key: pd.DataFrame, raters: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 2: per model x criterion, the count and percentage of each score 1..5.

    Columns ``count_1..count_5`` and ``pct_1..pct_5`` (percent of the non-missing scores), all
    present even when zero. ``raters`` defaults to the human raters.
    """
    merged = _selected(ratings, key, raters)
    rows = []
    for model in _models(key):
        for criterion in CRITERION_KEYS:
            scores = merged.loc[(merged["model"] == model) & (merged["criterion"] == criterion), "score"].dropna()
            counts = {score: int((scores == score).sum()) for score in SCORES}
            n = int(scores.size)
            row: dict[str, object] = {"model": model, "criterion": criterion, "n": n}
            row.update({f"count_{score}": counts[score] for score in SCORES})
            row.update({f"pct_{score}": (100.0 * counts[score] / n if n else np.nan) for score in SCORES})
            rows.append(row)
    columns = ["model", "criterion", "n", *(f"count_{s}" for s in SCORES), *(f"pct_{s}" for s in SCORES)]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# Krippendorff's alpha
# --------------------------------------------------------------------------------------------
# Implemented here from Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability",
# rather than taken from the `krippendorff` PyPI package: that package is GPL-3.0 and this
# project is Apache-2.0, so it can be neither a dependency nor a source to copy from.
#
# With the reliability data as observers x units (NaN = missing), each unit u with m_u >= 2
# values adds n_uc * n_uk / (m_u - 1) (n_uc * (n_uc - 1) / (m_u - 1) on the diagonal) to the
# coincidence matrix o_ck; n_c are its marginals and n their total. Then
#     alpha = 1 - (n - 1) * sum_ck o_ck delta2_ck / sum_ck n_c n_k delta2_ck
# with delta2 = [c != k] (nominal), (c - k)^2 (interval) or, ordinal,
# (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2, which equals (mid_k - mid_c)^2 for the
# "mid-ranks" mid_c = cumsum(n)_c - n_c / 2, so it vectorises over bootstrap resamples.


def _unit_coincidences(reliability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values present and each pairable unit's contribution to the coincidence matrix.

    Returns ``(values, contributions)`` with ``contributions`` of shape (units, V, V); units with
    fewer than two values are dropped (they cannot be paired).
    """
    data = np.asarray(reliability, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"reliability data must be 2-D (observers x units), got shape {data.shape}")
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    data = data[:, pairable]
    values = np.unique(data[~np.isnan(data)])
    # counts[u, c]: how many observers gave unit u the value values[c] (NaN equals nothing)
    counts = (data[:, :, None] == values[None, None, :]).sum(axis=0).astype(float)
    m_u = counts.sum(axis=1)
    pairs = counts[:, :, None] * counts[:, None, :]
    pairs[:, np.arange(values.size), np.arange(values.size)] -= counts
    contributions = pairs / (m_u - 1.0)[:, None, None] if counts.shape[0] else pairs
    return values, contributions


def _alpha_from_coincidences(coincidences: np.ndarray, values: np.ndarray, level: str) -> np.ndarray:
    """Alpha for one (V x V) or a batch (B x V x V) of coincidence matrices."""
    o = np.asarray(coincidences, dtype=float)
    single = o.ndim == 2
    if single:
        o = o[None]
    n_c = o.sum(axis=2)
    n = n_c.sum(axis=1)
    if level == "nominal":
        delta2 = np.broadcast_to(1.0 - np.eye(values.size), o.shape)
    elif level == "interval":
        delta2 = np.broadcast_to((values[:, None] - values[None, :]) ** 2, o.shape)
    elif level == "ordinal":
        mid = np.cumsum(n_c, axis=1) - n_c / 2.0
        delta2 = (mid[:, :, None] - mid[:, None, :]) ** 2
    else:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    observed = (o * delta2).sum(axis=(1, 2))
    expected = (n_c[:, :, None] * n_c[:, None, :] * delta2).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where((expected > 0) & (n > 1), 1.0 - (n - 1.0) * observed / expected, np.nan)
    return alpha[0] if single else alpha


def krippendorff_alpha(reliability: np.ndarray, level: str = "ordinal") -> float:
    """Krippendorff's alpha of observers x units data (NaN = missing) at a measurement level.

    ``level`` is ``"nominal"``, ``"ordinal"`` or ``"interval"``. Units with fewer than two values
    are ignored. NaN when alpha is undefined (no pairable unit, or a single value throughout).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    values, contributions = _unit_coincidences(reliability)
    if contributions.shape[0] == 0:
        return float("nan")
    return float(_alpha_from_coincidences(contributions.sum(axis=0), values, level))


def bootstrap_alpha(
    reliability: np.ndarray,
    level: str = "ordinal",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(alpha, low, high): alpha with a percentile bootstrap interval over units.

    Units (columns) are resampled with replacement; as units with fewer than two values add
    nothing to alpha, the resampling is over the pairable units. Resamples where alpha is
    undefined are dropped. Deterministic for a given ``seed``.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    values, contributions = _unit_coincidences(reliability)
    units = contributions.shape[0]
    if units == 0:
        return (float("nan"),) * 3
    alpha = float(_alpha_from_coincidences(contributions.sum(axis=0), values, level))
    if n_boot < 1:
        return alpha, float("nan"), float("nan")
    flat = contributions.reshape(units, -1)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 2_000_000 // units))  # bounds the (chunk x units) weight matrix
    alphas = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        draws = rng.integers(0, units, size=(size, units))
        offsets = (np.arange(size) * units)[:, None]
        weights = np.bincount((draws + offsets).ravel(), minlength=size * units).reshape(size, units)
        batch = (weights @ flat).reshape(size, values.size, values.size)
        alphas.append(_alpha_from_coincidences(batch, values, level))
    samples = np.concatenate(alphas)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return alpha, float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return alpha, float(low), float(high)


# --------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------


def _reliability_matrix(frame: pd.DataFrame, raters: Sequence[str], cards: Sequence[object]) -> np.ndarray:
    """raters x cards scores (NaN where absent) for one criterion."""
    wide = frame.pivot(index="rater", columns="card_id", values="score")
    return wide.reindex(index=list(raters), columns=list(cards)).to_numpy(dtype=float)


def agreement_table(
    ratings: pd.DataFrame,
    key: pd.DataFrame,
    raters: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Ordinal Krippendorff's alpha with a bootstrap interval, per criterion (units = cards).

    One row ``comparison="humans"`` for the human raters (``raters``; default: every rater
    without the ``judge:`` prefix) and, for each ``judge:`` rater present, one row comparing
    that judge with the per-card median of those human raters.
    """
    merged = _merged(ratings, key)
    present = list(dict.fromkeys(merged["rater"]))
    humans = [r for r in present if not is_judge(r)] if raters is None else _resolve_raters(merged, raters)
    judges = [r for r in present if is_judge(r) and r not in humans]
    cards = list(dict.fromkeys(key["card_id"].astype(str)))
    rows = []
    for criterion in CRITERION_KEYS:
        frame = merged[merged["criterion"] == criterion]
        panel = _reliability_matrix(frame, humans, cards)
        comparisons: list[tuple[str, str, np.ndarray]] = [("humans", ", ".join(humans), panel)]
        if judges:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cards -> NaN median
                median = np.nanmedian(panel, axis=0) if len(humans) else np.full(len(cards), np.nan)
            for judge in judges:
                pair = np.vstack([_reliability_matrix(frame, [judge], cards), median])
                comparisons.append((f"{judge} vs human median", judge, pair))
        for comparison, who, data in comparisons:
            alpha, low, high = bootstrap_alpha(data, "ordinal", n_boot=n_boot, seed=seed, confidence=confidence)
            pairable = int(((~np.isnan(data)).sum(axis=0) >= 2).sum())
            rows.append(
                {
                    "criterion": criterion,
                    "comparison": comparison,
                    "raters": who,
                    "n_units": pairable,
                    "alpha": alpha,
                    "ci_low": low,
                    "ci_high": high,
                    "level": "ordinal",
                    "confidence": confidence,
                    "n_boot": n_boot,
                }
            )
    columns = ["criterion", "comparison", "raters", "n_units", "alpha", "ci_low", "ci_high", "level", "confidence", "n_boot"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# Significance
# --------------------------------------------------------------------------------------------


def note_model_matrix(
    ratings: pd.DataFrame, key: pd.DataFrame, criterion: str, raters: Sequence[str] | None = None
) -> pd.DataFrame:
    """notes x models matrix of scores averaged over raters; notes missing any model dropped."""
    if criterion not in CRITERION_KEYS:
        raise ValueError(f"unknown criterion {criterion!r}; expected {list(CRITERION_KEYS)}")
    merged = _selected(ratings, key, raters)
    frame = merged[(merged["criterion"] == criterion) & merged["score"].notna()]
    means = frame.groupby(["note_id", "model"])["score"].mean().unstack("model")
    return means.reindex(columns=_models(key)).dropna(axis=0, how="any")


def _friedman_row(matrix: pd.DataFrame, models: list[str], criterion: str) -> dict[str, object]:
    """Friedman test across models over the notes of ``matrix`` (NaN with fewer than 3 models or 2 notes)."""
    from scipy import stats

    n_notes = int(matrix.shape[0])
    statistic = p = float("nan")
    if len(models) >= 3 and n_notes >= 2:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.friedmanchisquare(*(matrix[model].to_numpy() for model in models))
        statistic, p = float(result.statistic), float(result.pvalue)
    return {"criterion": criterion, "statistic": statistic, "p": p, "n_notes": n_notes, "n_models": len(models)}


def _wilcoxon_table(matrix: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Pairwise two-sided Wilcoxon signed-rank tests, Holm-corrected over the pairs that have a p."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    rows = []
    for model_a, model_b in itertools.combinations(models, 2):
        diff = (matrix[model_a] - matrix[model_b]).to_numpy(dtype=float)
        w_stat = w_p = float("nan")
        if np.any(diff != 0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # small-sample / ties notices
                result = stats.wilcoxon(
                    matrix[model_a].to_numpy(), matrix[model_b].to_numpy(),
                    zero_method="wilcox", alternative="two-sided",
                )
            w_stat, w_p = float(result.statistic), float(result.pvalue)
        rows.append(
            {
                "model_a": model_a,
                "model_b": model_b,
                "statistic": w_stat,
                "p": w_p,
                "p_holm": float("nan"),
                "median_diff": float(np.median(diff)) if diff.size else float("nan"),
                "n": int(diff.size),
            }
        )
    table = pd.DataFrame(rows, columns=["model_a", "model_b", "statistic", "p", "p_holm", "median_diff", "n"])
    valid = table["p"].notna().to_numpy()
    if valid.any():
        table.loc[valid, "p_holm"] = multipletests(table.loc[valid, "p"].to_numpy(), method="holm")[1]
    return table


def significance_tables(
    ratings: pd.DataFrame, key: pd.DataFrame, raters: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Friedman test and Holm-corrected pairwise Wilcoxon signed-rank tests per criterion.

    Scores are averaged over ``raters`` (default: human raters only, no ``judge:``) per
    (note, model); only notes scored for every model are used. Returns ``"friedman"`` (one row
    per criterion: statistic, p, n_notes, n_models) and ``"wilcoxon_<criterion>"`` (one row per
    pair of models: statistic, p, p_holm, median_diff = median(model_a - model_b), n). A test that
    cannot be computed (fewer than 3 models, or no non-zero difference) gives NaN and is left out
    of the Holm correction.
    """
    models = _models(key)
    friedman_rows = []
    tables: dict[str, pd.DataFrame] = {}
    for criterion in CRITERION_KEYS:
        matrix = note_model_matrix(ratings, key, criterion, raters)
        friedman_rows.append(_friedman_row(matrix, models, criterion))
        tables[f"wilcoxon_{criterion}"] = _wilcoxon_table(matrix, models)
    return {"friedman": pd.DataFrame(friedman_rows), **tables}


# --------------------------------------------------------------------------------------------
# Figure 3
# --------------------------------------------------------------------------------------------


def stacked_bars(
    ratings: pd.DataFrame, key: pd.DataFrame, path: Path, raters: Sequence[str] | None = None
) -> Path:
    """Fig. 3: one panel per criterion, one horizontal bar per model stacked by score share.

    Rendered with the Agg canvas (no display, no pyplot state) at dpi 150 and written atomically
    as PNG. ``raters`` defaults to the human raters.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frequencies = frequency_table(ratings, key, raters)
    models = _models(key)
    colors = matplotlib.colormaps["RdYlGn"](np.linspace(0.05, 0.95, len(SCORES)))
    figure = Figure(figsize=(4.2 * len(CRITERIA), 0.55 * len(models) + 1.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(CRITERIA), sharey=True, squeeze=False)[0]
    positions = np.arange(len(models))
    for ax, criterion in zip(axes, CRITERIA):
        shares = (
            frequencies[frequencies["criterion"] == criterion.key]
            .set_index("model")
            .reindex(models)[[f"pct_{s}" for s in SCORES]]
            .fillna(0.0)
            .to_numpy()
        )
        left = np.zeros(len(models))
        for column, score in enumerate(SCORES):
            width = shares[:, column]
            ax.barh(positions, width, left=left, color=colors[column], edgecolor="white", linewidth=0.5, label=str(score))
            for y, (x0, w) in enumerate(zip(left, width)):
                if w >= 8:
                    ax.text(x0 + w / 2, y, f"{w:.0f}", ha="center", va="center", fontsize=7)
            left += width
        ax.set_title(criterion.name, fontsize=9)
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of ratings")
        ax.set_yticks(positions, models)
    axes[0].invert_yaxis()  # first model on top; the axes share y, so this flips every panel
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, title="score", loc="outside lower center", ncols=len(SCORES), fontsize=8)
    path = Path(path)
    with atomic_write(path, mode="wb") as handle:
        figure.savefig(handle, format="png", dpi=150)
    return path


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _fmt_number(value: object, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.{decimals}f}"


def _fmt_p(value: object) -> str:
    """p-values with 3 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.3g}"


def _markdown(frame: pd.DataFrame) -> str:
    """A frame of already formatted cells as a Markdown table, newline-terminated."""
    return markdown_table([str(column) for column in frame.columns], frame.itertuples(index=False)) + "\n"


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def _summary_markdown(summary: pd.DataFrame) -> str:
    shown = pd.DataFrame(
        {
            "model": summary["model"],
            "criterion": summary["criterion"],
            "mean": summary["mean"].map(lambda v: _fmt_number(v, 2)),
            "SD": summary["sd"].map(lambda v: _fmt_number(v, 2)),
            "median": summary["median"].map(lambda v: _fmt_number(v, 1)),
            "IQR": summary["iqr"].map(lambda v: _fmt_number(v, 2)),
            "n": summary["n"].astype(int),
        }
    )
    return _markdown(shown)


def _counts_section(title: str, key: pd.DataFrame, merged: pd.DataFrame, humans: list[str], judges: list[str]) -> list[str]:
    """The title, the counts table and the criteria legend."""
    models = _models(key)
    n_cards = int(key["card_id"].nunique())
    scored = int(merged["score"].notna().sum())
    expected = n_cards * (len(humans) + len(judges)) * len(CRITERION_KEYS)
    counts = pd.DataFrame(
        [
            ("cards", n_cards),
            ("notes", int(key["note_id"].nunique())),
            ("models", f"{len(models)} ({', '.join(models)})"),
            ("human raters", f"{len(humans)} ({', '.join(humans)})" if humans else "0"),
            ("LLM judges", f"{len(judges)} ({', '.join(judges)})" if judges else "0"),
            ("ratings (scores given)", scored),
            ("missing (of cards × raters × criteria)", f"{expected - scored} of {expected}"),
        ],
        columns=["", "count"],
    )
    return [
        f"# {title}\n\n",
        "## Counts\n\n",
        _markdown(counts),
        "\nCriteria: " + "; ".join(f"`{c.key}` = {c.name}" for c in CRITERIA) + ".\n",
    ]


def _tables_section(summary: pd.DataFrame, frequencies: pd.DataFrame, panel: list[str]) -> list[str]:
    """Table 1 (scores) and Table 2 (frequencies, count and percentage per score)."""
    freq_shown = frequencies[["model", "criterion", "n"]].copy()
    for score in SCORES:
        freq_shown[str(score)] = [
            f"{count} ({_fmt_number(pct, 1)}%)" for count, pct in zip(frequencies[f"count_{score}"], frequencies[f"pct_{score}"])
        ]
    return [
        f"\n## Table 1 — scores per model and criterion (raters: {', '.join(panel)})\n\n",
        _summary_markdown(summary),
        "\n## Table 2 — score frequencies, count (% of the model's ratings)\n\n",
        _markdown(freq_shown),
    ]


def _agreement_section(agreement: pd.DataFrame) -> list[str]:
    """Krippendorff's alpha per criterion and comparison, with its bootstrap interval."""
    agree_shown = pd.DataFrame(
        {
            "criterion": agreement["criterion"],
            "comparison": agreement["comparison"],
            "units": agreement["n_units"],
            "alpha (ordinal)": agreement["alpha"].map(lambda v: _fmt_number(v, 3)),
            f"{round(100 * agreement['confidence'].iloc[0]) if len(agreement) else 95}% CI": [
                f"[{_fmt_number(lo, 3)}, {_fmt_number(hi, 3)}]" for lo, hi in zip(agreement["ci_low"], agreement["ci_high"])
            ],
        }
    )
    n_boot = int(agreement["n_boot"].iloc[0]) if len(agreement) else 0
    return [
        "\n## Inter-rater agreement\n\n",
        (
            f"Krippendorff's alpha (ordinal) over cards, percentile bootstrap over cards ({n_boot} resamples). "
            "Judge rows compare each LLM judge with the per-card median of the human raters.\n\n"
        ),
        _markdown(agree_shown),
    ]


def _wilcoxon_markdown(pairs: pd.DataFrame) -> str:
    return _markdown(
        pd.DataFrame(
            {
                "model A": pairs["model_a"],
                "model B": pairs["model_b"],
                "W": pairs["statistic"].map(lambda v: _fmt_number(v, 1)),
                "p": pairs["p"].map(_fmt_p),
                "p (Holm)": pairs["p_holm"].map(_fmt_p),
                "median diff": pairs["median_diff"].map(lambda v: _fmt_number(v, 2)),
                "n": pairs["n"],
            }
        )
    )


def _significance_section(significance: dict[str, pd.DataFrame], panel: list[str]) -> list[str]:
    """Per criterion: the Friedman test, then the Holm-corrected pairwise Wilcoxon table."""
    parts = [
        "\n## Significance tests\n\n",
        (
            f"Scores averaged over raters ({', '.join(panel)}) per note and model; notes scored for every "
            "model only. Friedman test across models; pairwise two-sided Wilcoxon signed-rank tests "
            "(zero_method=wilcox), Holm-corrected within each criterion. "
            "median diff = median(model A − model B).\n"
        ),
    ]
    friedman = significance["friedman"].set_index("criterion")
    for criterion in CRITERIA:
        row = friedman.loc[criterion.key]
        parts.append(f"\n### {criterion.key} — {criterion.name}\n\n")
        parts.append(
            f"Friedman χ² = {_fmt_number(row['statistic'], 2)}, p = {_fmt_p(row['p'])}, "
            f"n_notes = {int(row['n_notes'])}, models = {int(row['n_models'])}.\n\n"
        )
        parts.append(_wilcoxon_markdown(significance[f"wilcoxon_{criterion.key}"]))
    return parts


def _judges_section(ratings: pd.DataFrame, key: pd.DataFrame, judges: list[str]) -> list[str]:
    """Each LLM judge's own Table 1."""
    parts = ["\n## LLM judges — scores per model and criterion\n"]
    for judge in judges:
        parts += [f"\n### {judge}\n\n", _summary_markdown(summary_table(ratings, key, [judge]))]
    return parts


def _write_csv_tables(
    out_dir: Path, summary: pd.DataFrame, frequencies: pd.DataFrame, agreement: pd.DataFrame, significance: dict[str, pd.DataFrame]
) -> None:
    """A CSV copy of every table of the report."""
    _write_csv(summary, out_dir / SUMMARY_CSV)
    _write_csv(frequencies, out_dir / FREQUENCIES_CSV)
    _write_csv(agreement, out_dir / AGREEMENT_CSV)
    _write_csv(significance["friedman"], out_dir / FRIEDMAN_CSV)
    for criterion in CRITERION_KEYS:
        _write_csv(significance[f"wilcoxon_{criterion}"], out_dir / f"wilcoxon_{criterion}.csv")


def write_report(ratings: pd.DataFrame, key: pd.DataFrame, out_dir: Path, title: str = "Likert study") -> Path:
    """Write ``out_dir/report.md`` with its CSV tables and ``figures/stacked_bars.png``.

    Contents: counts, Table 1 (human raters), Table 2, Fig. 3, inter-rater agreement (and
    judge-human agreement), and per criterion the Friedman test and the Holm-corrected pairwise
    Wilcoxon table; LLM judges' own score summaries when present. Every file is written
    atomically; ``report.md`` last. No note text and no rater observations are written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = _merged(ratings, key)
    present = list(dict.fromkeys(merged["rater"]))
    humans = [r for r in present if not is_judge(r)]
    judges = [r for r in present if is_judge(r)]
    panel = humans or present

    summary = summary_table(ratings, key, panel)
    frequencies = frequency_table(ratings, key, panel)
    agreement = agreement_table(ratings, key)
    significance = significance_tables(ratings, key, panel)
    figure = stacked_bars(ratings, key, out_dir / FIGURE_FILE, panel)
    _write_csv_tables(out_dir, summary, frequencies, agreement, significance)

    rel_figure = figure.relative_to(out_dir).as_posix()
    parts = [
        *_counts_section(title, key, merged, humans, judges),
        *_tables_section(summary, frequencies, panel),
        "\n## Figure 3 — share of each score\n\n",
        f"![Share of each score per model and criterion]({rel_figure})\n",
        *_agreement_section(agreement),
        *_significance_section(significance, panel),
    ]
    if judges and humans:
        parts += _judges_section(ratings, key, judges)

    report = out_dir / REPORT_FILE
    with atomic_write(report) as handle:
        handle.write("".join(parts))
    return report


__all__ = [
    "agreement_table",
    "bootstrap_alpha",
    "frequency_table",
    "is_judge",
    "krippendorff_alpha",
    "note_model_matrix",
    "significance_tables",
    "stacked_bars",
    "summary_table",
    "write_report",
]
