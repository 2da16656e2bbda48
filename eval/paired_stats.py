"""Confidence intervals and paired tests over per-item correctness (``eval mcqa``'s ``per_item.csv``).

- :func:`accuracy_ci`: accuracy with a percentile bootstrap interval over items;
- :func:`paired_difference_ci`: the difference after − before on the same items, resampling item
  pairs (one index draw serves both models, so the pairing is kept);
- :func:`mcnemar_test`: McNemar's test on the 2 × 2 table of paired outcomes (statsmodels): the exact
  binomial test when fewer than 25 pairs are discordant, else chi-square with continuity correction;
- :func:`read_per_item` / :func:`join_paired`: the reader of ``per_item.csv`` and the join by item id.

Every draw comes from ``numpy.random.default_rng(seed)``, so the same inputs and seed give the same
interval. Only ids and counts appear in messages, never item text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfactory.base.errors import CorpusError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05
EXACT_BELOW = 25  # discordant pairs under which McNemar's exact binomial test is used
PER_ITEM_COLUMNS = ("id", "answer", "prediction", "correct")
EXACT_TEST = "exact binomial"
CHI2_TEST = "chi-square, continuity corrected"


def _as_bool_array(correct: Sequence[bool] | np.ndarray, what: str) -> np.ndarray:
    import numpy as np

    values = np.asarray(correct)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{what}: needs a non-empty 1-D sequence of per-item correctness, got shape {values.shape}")
    if values.dtype != bool:
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"{what}: per-item correctness must be True/False (or 1/0)")
        values = values.astype(bool)
    return values


def _bounds(estimates: np.ndarray, confidence: float) -> tuple[float, float]:
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    tail = (1 - confidence) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``resamples`` × ``n`` item indices drawn with replacement: one draw of ``default_rng(seed).integers(0, n)``."""
    import numpy as np

    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def accuracy_ci(correct: Sequence[bool], resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """``{n, correct, accuracy, ci_low, ci_high}``: the percentile bootstrap interval of the mean over items."""
    values = _as_bool_array(correct, "accuracy_ci")
    means = values[bootstrap_indices(values.size, resamples, seed)].mean(axis=1)
    low, high = _bounds(means, confidence)
    return {"n": int(values.size), "correct": int(values.sum()), "accuracy": float(values.mean()), "ci_low": low, "ci_high": high}


def paired_difference_ci(
    before: Sequence[bool], after: Sequence[bool], resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0
) -> dict[str, Any]:
    """``{n, difference, ci_low, ci_high}`` of accuracy(after) − accuracy(before); ``before[i]`` and ``after[i]`` are one item."""
    first, second = _as_bool_array(before, "before"), _as_bool_array(after, "after")
    if first.size != second.size:
        raise ValueError(f"paired difference: {first.size} items before but {second.size} after; join them by id first")
    indices = bootstrap_indices(first.size, resamples, seed)
    differences = second[indices].mean(axis=1) - first[indices].mean(axis=1)
    low, high = _bounds(differences, confidence)
    return {"n": int(first.size), "difference": float(second.mean() - first.mean()), "ci_low": low, "ci_high": high}


def paired_table(before: Sequence[bool], after: Sequence[bool]) -> list[list[int]]:
    """``[[both right, right before only], [right after only, both wrong]]`` (rows: before, columns: after)."""
    first, second = _as_bool_array(before, "before"), _as_bool_array(after, "after")
    if first.size != second.size:
        raise ValueError(f"paired table: {first.size} items before but {second.size} after")
    return [
        [int((first & second).sum()), int((first & ~second).sum())],
        [int((~first & second).sum()), int((~first & ~second).sum())],
    ]


def mcnemar_test(before: Sequence[bool], after: Sequence[bool]) -> dict[str, Any]:
    """McNemar's test of paired correctness (statsmodels); which test was used is recorded in ``test``.

    Fewer than 25 discordant pairs: the exact binomial test (statistic = the smaller discordant count);
    else the chi-square statistic with continuity correction, ``(|b − c| − 1)² / (b + c)``.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    table = paired_table(before, after)
    discordant = table[0][1] + table[1][0]
    exact = discordant < EXACT_BELOW
    result = mcnemar(table, exact=exact, correction=True)
    return {
        "test": EXACT_TEST if exact else CHI2_TEST,
        "statistic": float(result.statistic),
        "pvalue": float(result.pvalue),
        "discordant": discordant,
        "right_before_only": table[0][1],
        "right_after_only": table[1][0],
        "both_right": table[0][0],
        "both_wrong": table[1][1],
    }


def verdict(difference: float, pvalue: float, alpha: float = ALPHA) -> str:
    """``loss`` / ``gain`` when McNemar's p < alpha (by the sign of the difference), else ``no significant change``."""
    if pvalue < alpha and difference < 0:
        return "loss"
    if pvalue < alpha and difference > 0:
        return "gain"
    return "no significant change"


def read_per_item(path: Path) -> pd.DataFrame:
    """``per_item.csv`` of ``eval mcqa`` (ids as strings, ``correct`` as bool); refuses missing columns and repeated ids."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file. Fix: give an `eval mcqa` report folder (it writes per_item.csv).")
    try:
        frame = pd.read_csv(path, dtype={"id": str, "answer": str, "prediction": str}, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: not a readable CSV ({type(error).__name__}). Fix: rerun `eval mcqa` for this folder.") from error
    missing = [column for column in PER_ITEM_COLUMNS if column not in frame.columns]
    if missing:
        raise CorpusError(f"{path}: lacks column(s) {', '.join(missing)}. Fix: give per_item.csv as `eval mcqa` writes it.")
    if frame.empty:
        raise CorpusError(f"{path}: no items. Fix: rerun `eval mcqa` for this folder.")
    correct = frame["correct"].astype(str).str.strip().str.lower()
    bad = ~correct.isin(("true", "false", "1", "0"))
    if bad.any():
        line = int(bad.to_numpy().nonzero()[0][0]) + 2  # header is line 1
        raise CorpusError(f"{path}, line {line}: `correct` must be True or False. Fix: give per_item.csv as `eval mcqa` writes it.")
    frame["correct"] = correct.isin(("true", "1"))
    duplicated = frame["id"][frame["id"].duplicated()].unique().tolist()
    if duplicated:
        shown = ", ".join(repr(value) for value in duplicated[:5])
        raise CorpusError(f"{path}: {len(duplicated)} repeated item id(s) ({shown}). Fix: one row per item; rerun `eval mcqa`.")
    return frame


def join_paired(before: pd.DataFrame, after: pd.DataFrame, before_name: str = "before", after_name: str = "after") -> pd.DataFrame:
    """``id, before, after`` (correctness) on exactly the same item ids, in ``before``'s order; refuses any mismatch."""
    first, second = set(before["id"]), set(after["id"])
    if first != second:
        only_before, only_after = sorted(first - second), sorted(second - first)
        raise CorpusError(
            f"{before_name} and {after_name} score different items: {len(only_before)} id(s) only in {before_name} "
            f"({', '.join(map(repr, only_before[:3]))}), {len(only_after)} only in {after_name} ({', '.join(map(repr, only_after[:3]))}). "
            "Fix: evaluate both models on the same file with the same --limit and image setting."
        )
    joined = (
        before[["id", "correct"]]
        .rename(columns={"correct": "before"})
        .merge(after[["id", "correct"]].rename(columns={"correct": "after"}), on="id", how="inner", validate="one_to_one")
    )
    return joined.reset_index(drop=True)


def paired_summary(joined: pd.DataFrame, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0, alpha: float = ALPHA) -> dict[str, Any]:
    """Accuracy before / after with CIs, the paired difference with its CI, McNemar and the verdict, of one joined set."""
    before, after = joined["before"].to_numpy(dtype=bool), joined["after"].to_numpy(dtype=bool)
    difference = paired_difference_ci(before, after, resamples, confidence, seed)
    test = mcnemar_test(before, after)
    return {
        "n": int(before.size),
        "before": accuracy_ci(before, resamples, confidence, seed),
        "after": accuracy_ci(after, resamples, confidence, seed),
        "difference": difference,
        "mcnemar": test,
        "verdict": verdict(difference["difference"], test["pvalue"], alpha),
    }
