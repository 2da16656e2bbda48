"""The Likert report: tables, Krippendorff's alpha, bootstrap, significance tests, report files.

Expected values are computed here independently (plain numpy / pandas / scipy on the same data),
never through the module's own helpers; alpha is checked against Krippendorff's published
worked example and a brute-force pairwise implementation.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medfactory.eval.likert import CRITERION_KEYS, LONG_COLUMNS
from medfactory.eval.likert.report import (
    agreement_table,
    bootstrap_alpha,
    frequency_table,
    krippendorff_alpha,
    significance_tables,
    summary_table,
    write_report,
)

MODELS = ("clinical-br", "base-7b", "tiny")
HUMANS = ("r1", "r2", "r3")
JUDGE = "judge:tiny"
SECRET_OBSERVATION = "OBSERVACAO-SECRETA-ZX81 paciente Maria da Silva"
N_NOTES = 12

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the example with 4 observers
# x 12 units and missing values; published: nominal .743, ordinal .815, interval .849.
_ = np.nan
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
        [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _],
    ],
    dtype=float,
)


@pytest.fixture(scope="module")
def study() -> tuple[pd.DataFrame, pd.DataFrame]:
    """3 models x 12 notes, 3 human raters and one judge; model quality differs by design."""
    rng = np.random.default_rng(20240607)
    cards = [(note, model) for note in range(N_NOTES) for model in MODELS]
    order = rng.permutation(len(cards))
    key = pd.DataFrame(
        [
            {"card_id": f"c{index:04d}", "note_id": f"note-{cards[position][0]:02d}", "model": cards[position][1]}
            for index, position in enumerate(order)
        ]
    )
    quality = {"clinical-br": 4.2, "base-7b": 3.3, "tiny": 2.2}
    shift = {"format": 0.2, "spelling": 0.4, "coherence": -0.3}
    note_effect = rng.normal(0, 0.5, N_NOTES)
    rows = []
    for card in key.itertuples(index=False):
        note = int(card.note_id.split("-")[1])
        for criterion in CRITERION_KEYS:
            truth = quality[card.model] + shift[criterion] + note_effect[note]
            for rater in (*HUMANS, JUDGE):
                noise = rng.normal(0, 0.9 if rater == JUDGE else 0.6)
                score = float(np.clip(np.rint(truth + noise), 1, 5))
                rows.append({"card_id": card.card_id, "rater": rater, "criterion": criterion, "score": score, "observation": ""})
    ratings = pd.DataFrame(rows, columns=list(LONG_COLUMNS))
    # A few missing scores; one card loses every human coherence score, so note-00 drops out of
    # the coherence significance tests.
    ratings.loc[rng.choice(len(ratings), 6, replace=False), "score"] = np.nan
    lost = key[(key["note_id"] == "note-00") & (key["model"] == "tiny")]["card_id"].iloc[0]
    gone = (ratings["card_id"] == lost) & (ratings["criterion"] == "coherence") & ratings["rater"].isin(HUMANS)
    ratings.loc[gone, "score"] = np.nan
    ratings.loc[3, "observation"] = SECRET_OBSERVATION
    return ratings, key


def _humans(ratings: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    merged = ratings.merge(key, on="card_id")
    return merged[~merged["rater"].str.startswith("judge:")]


# ------------------------------------------------------------------------------ Tables 1 and 2


def test_summary_table_matches_pandas(study: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ratings, key = study
    table = summary_table(ratings, key).set_index(["model", "criterion"])
    assert set(table.index) == {(m, c) for m in MODELS for c in CRITERION_KEYS}
    assert list(table.index.get_level_values("model").unique()) == list(dict.fromkeys(key["model"]))
    humans = _humans(ratings, key).dropna(subset=["score"])
    for (model, criterion), group in humans.groupby(["model", "criterion"]):
        scores = group["score"].to_numpy()
        row = table.loc[(model, criterion)]
        assert row["n"] == len(scores)
        assert row["mean"] == pytest.approx(scores.mean())
        assert row["sd"] == pytest.approx(scores.std(ddof=1))
        assert row["median"] == pytest.approx(np.median(scores))
        assert row["iqr"] == pytest.approx(np.quantile(scores, 0.75) - np.quantile(scores, 0.25))
    # designed quality order survives
    means = table["mean"].groupby(level="model").mean()
    assert means["clinical-br"] > means["base-7b"] > means["tiny"]
    # the judge alone, when asked for
    judge = summary_table(ratings, key, raters=[JUDGE]).set_index(["model", "criterion"])
    merged = ratings.merge(key, on="card_id")
    only = merged[(merged["rater"] == JUDGE) & (merged["model"] == "tiny") & (merged["criterion"] == "format")]
    assert judge.loc[("tiny", "format"), "mean"] == pytest.approx(only["score"].mean())


def test_frequency_table_counts(study: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ratings, key = study
    table = frequency_table(ratings, key).set_index(["model", "criterion"])
    for score in range(1, 6):
        assert f"count_{score}" in table.columns and f"pct_{score}" in table.columns
    humans = _humans(ratings, key)
    for model in MODELS:
        for criterion in CRITERION_KEYS:
            scores = humans[(humans["model"] == model) & (humans["criterion"] == criterion)]["score"].dropna()
            counts = scores.astype(int).value_counts()
            row = table.loc[(model, criterion)]
            assert row["n"] == len(scores)
            for score in range(1, 6):
                assert row[f"count_{score}"] == counts.get(score, 0)
                assert row[f"pct_{score}"] == pytest.approx(100 * counts.get(score, 0) / len(scores))
            assert sum(row[f"pct_{s}"] for s in range(1, 6)) == pytest.approx(100)
    # some score never occurs for some model (the zero columns are still there)
    assert (table[[f"count_{s}" for s in range(1, 6)]] == 0).any().any()


# ------------------------------------------------------------------------------ alpha


@pytest.mark.parametrize(("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_krippendorff_2011_worked_example(level: str, published: float) -> None:
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level), 3) == published


def _brute_alpha(data: np.ndarray, level: str) -> float:
    """Alpha from its definition with explicit pairable-value loops (no coincidence shortcut)."""
    units = [col[~np.isnan(col)] for col in data.T]
    units = [u for u in units if len(u) >= 2]
    pooled = np.concatenate(units)
    values = np.unique(pooled)
    freq = {v: np.sum(pooled == v) for v in values}

    def delta2(c: float, k: float) -> float:
        if level == "nominal":
            return float(c != k)
        if level == "interval":
            return (c - k) ** 2
        lo, hi = min(c, k), max(c, k)
        return (sum(freq[g] for g in values if lo <= g <= hi) - (freq[c] + freq[k]) / 2) ** 2

    n = len(pooled)
    observed = sum(
        sum(delta2(u[i], u[j]) for i in range(len(u)) for j in range(len(u)) if i != j) / (len(u) - 1) for u in units
    ) / n
    expected = sum(delta2(c, k) for c in pooled for k in pooled) / (n * (n - 1))
    return 1 - observed / expected


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_matches_brute_force(level: str) -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(1, 6, size=(4, 25)).astype(float)
    data[1] = np.where(rng.random(25) < 0.6, data[0], data[1])
    data[rng.random(data.shape) < 0.2] = np.nan
    assert krippendorff_alpha(data, level) == pytest.approx(_brute_alpha(data, level))


def test_alpha_simple_cases() -> None:
    identical = np.array([[1, 2, 3, 4, 5, 2], [1, 2, 3, 4, 5, 2], [1, 2, 3, 4, 5, 2]], dtype=float)
    for level in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha(identical, level) == pytest.approx(1.0)
    # a unit rated by a single observer is ignored
    with_single = np.array([[1, 2, 3, 5], [1, 2, 3, np.nan]])
    assert krippendorff_alpha(with_single) == pytest.approx(1.0)
    # two observers, two units, total disagreement: hand computation gives nominal alpha = -0.5
    # (o_12 = o_21 = 2, n = 4, D_o = 1, D_e = 2 * 2 * 2 / (4 * 3) = 2/3)
    assert krippendorff_alpha(np.array([[1, 2], [2, 1]], dtype=float), "nominal") == pytest.approx(-0.5)
    # undefined: a single value throughout, or no pairable unit
    assert np.isnan(krippendorff_alpha(np.full((2, 4), 3.0)))
    assert np.isnan(krippendorff_alpha(np.array([[1, np.nan], [np.nan, 2]])))
    with pytest.raises(ValueError):
        krippendorff_alpha(identical, "ratio")


def test_bootstrap_alpha_ci_and_determinism() -> None:
    alpha, low, high = bootstrap_alpha(KRIPPENDORFF_2011, "ordinal", n_boot=500, seed=3)
    assert alpha == pytest.approx(krippendorff_alpha(KRIPPENDORFF_2011, "ordinal"))
    assert low <= alpha <= high
    assert bootstrap_alpha(KRIPPENDORFF_2011, "ordinal", n_boot=500, seed=3) == (alpha, low, high)
    assert bootstrap_alpha(KRIPPENDORFF_2011, "ordinal", n_boot=500, seed=4) != (alpha, low, high)


def test_bootstrap_alpha_is_fast() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(1, 6, size=500)
    data = np.vstack([np.clip(base + rng.integers(-1, 2, size=500), 1, 5) for _ in range(3)]).astype(float)
    start = time.perf_counter()
    alpha, low, high = bootstrap_alpha(data, "ordinal", n_boot=1000, seed=0)
    assert time.perf_counter() - start < 5
    assert low <= alpha <= high and high - low < 0.2


# ------------------------------------------------------------------------------ agreement


def test_agreement_table(study: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ratings, key = study
    table = agreement_table(ratings, key, n_boot=200, seed=1)
    assert list(table["criterion"]) == [c for c in CRITERION_KEYS for _ in range(2)]
    cards = list(key["card_id"])
    for criterion in CRITERION_KEYS:
        rows = table[table["criterion"] == criterion].set_index("comparison")
        wide = ratings[ratings["criterion"] == criterion].pivot(index="rater", columns="card_id", values="score")
        humans = wide.loc[list(HUMANS), cards].to_numpy()
        human_row = rows.loc["humans"]
        assert human_row["alpha"] == pytest.approx(krippendorff_alpha(humans, "ordinal"))
        assert human_row["ci_low"] <= human_row["alpha"] <= human_row["ci_high"]
        assert human_row["alpha"] > 0.3  # raters share the designed signal
        median = wide.loc[list(HUMANS), cards].median(axis=0, skipna=True).to_numpy()
        pair = np.vstack([wide.loc[JUDGE, cards].to_numpy(), median])
        judge_row = rows.loc[f"{JUDGE} vs human median"]
        assert judge_row["alpha"] == pytest.approx(krippendorff_alpha(pair, "ordinal"))
        assert judge_row["n_units"] == int((~np.isnan(pair)).all(axis=0).sum())
    # identical raters agree perfectly
    copy = ratings[ratings["rater"] == "r1"].dropna(subset=["score"])
    same = pd.concat([copy.assign(rater=r) for r in HUMANS], ignore_index=True)
    perfect = agreement_table(same, key, n_boot=50)
    assert perfect["alpha"].tolist() == pytest.approx([1.0] * 3)
    assert perfect["ci_low"].tolist() == pytest.approx([1.0] * 3)
    # explicit rater subset
    two = agreement_table(ratings, key, raters=["r1", "r2"], n_boot=20)
    wide = ratings[ratings["criterion"] == "format"].pivot(index="rater", columns="card_id", values="score")
    assert two.iloc[0]["alpha"] == pytest.approx(krippendorff_alpha(wide.loc[["r1", "r2"], cards].to_numpy()))


# ------------------------------------------------------------------------------ significance


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down, written out: sorted p_(i) * (m - i), running maximum, capped at 1."""
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def test_significance_tables(study: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ratings, key = study
    tables = significance_tables(ratings, key)
    assert set(tables) == {"friedman", *(f"wilcoxon_{c}" for c in CRITERION_KEYS)}
    friedman = tables["friedman"].set_index("criterion")
    humans = _humans(ratings, key)
    for criterion in CRITERION_KEYS:
        subset = humans[humans["criterion"] == criterion]
        matrix = subset.pivot_table(index="note_id", columns="model", values="score", aggfunc="mean").dropna()
        expected_notes = N_NOTES - 1 if criterion == "coherence" else N_NOTES
        assert len(matrix) == expected_notes
        reference = stats.friedmanchisquare(*(matrix[m].to_numpy() for m in MODELS))
        row = friedman.loc[criterion]
        assert row["n_notes"] == expected_notes
        assert row["statistic"] == pytest.approx(reference.statistic)
        assert row["p"] == pytest.approx(reference.pvalue)
        assert row["p"] < 0.05  # quality differs by design

        pairs = tables[f"wilcoxon_{criterion}"]
        models_in_order = list(dict.fromkeys(key["model"]))
        assert list(zip(pairs["model_a"], pairs["model_b"])) == list(itertools.combinations(models_in_order, 2))
        raw = []
        for pair in pairs.itertuples(index=False):
            ref = stats.wilcoxon(matrix[pair.model_a], matrix[pair.model_b], zero_method="wilcox", alternative="two-sided")
            assert pair.statistic == pytest.approx(ref.statistic)
            assert pair.p == pytest.approx(ref.pvalue)
            assert pair.median_diff == pytest.approx(np.median(matrix[pair.model_a] - matrix[pair.model_b]))
            assert pair.n == expected_notes
            raw.append(ref.pvalue)
        assert pairs["p_holm"].to_numpy() == pytest.approx(_holm(np.array(raw)))

    # the judge is excluded by default, included on request
    with_judge = significance_tables(ratings, key, raters=[*HUMANS, JUDGE])["friedman"].set_index("criterion")
    merged = ratings.merge(key, on="card_id")
    fmt = merged[merged["criterion"] == "format"]
    matrix = fmt.pivot_table(index="note_id", columns="model", values="score", aggfunc="mean").dropna()
    reference = stats.friedmanchisquare(*(matrix[m].to_numpy() for m in MODELS))
    assert with_judge.loc["format", "statistic"] == pytest.approx(reference.statistic)


# ------------------------------------------------------------------------------ report


def test_write_report(study: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    ratings, key = study
    out = tmp_path / "likert" / "pilot"
    report = write_report(ratings, key, out, title="Pilot Likert study")
    assert report == out / "report.md"
    expected = [
        "report.md",
        "table1_summary.csv",
        "table2_frequencies.csv",
        "agreement.csv",
        *(f"wilcoxon_{c}.csv" for c in CRITERION_KEYS),
        "figures/stacked_bars.png",
    ]
    for name in expected:
        assert (out / name).is_file(), name
    assert (out / "figures/stacked_bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in out.rglob("*.tmp")]

    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Pilot Likert study")
    assert "](figures/stacked_bars.png)" in text
    for name in (*MODELS, *CRITERION_KEYS, "Friedman", "Holm", "Krippendorff", JUDGE):
        assert name in text, name
    for bit in ("OBSERVACAO", "SECRETA", "ZX81", "Maria"):
        assert bit not in text
        for csv in out.glob("*.csv"):
            assert bit not in csv.read_text(encoding="utf-8")
    assert re.search(r"^\|(:?-{3,}:?\|)+$", text, re.MULTILINE)  # Markdown tables: a header separator row

    summary = pd.read_csv(out / "table1_summary.csv")
    assert len(summary) == len(MODELS) * len(CRITERION_KEYS)
    humans = _humans(ratings, key)
    spelling = humans[(humans["model"] == "tiny") & (humans["criterion"] == "spelling")]["score"].mean()
    assert f"{spelling:.2f}" in text
    row = summary[(summary["model"] == "tiny") & (summary["criterion"] == "spelling")].iloc[0]
    assert row["mean"] == pytest.approx(spelling)
    assert len(pd.read_csv(out / "agreement.csv")) == 2 * len(CRITERION_KEYS)


def test_unknown_card_is_rejected(study: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ratings, key = study
    stray = pd.concat(
        [ratings, pd.DataFrame([{"card_id": "zzz", "rater": "r1", "criterion": "format", "score": 3, "observation": ""}])],
        ignore_index=True,
    )
    with pytest.raises(ValueError, match="missing from the key"):
        summary_table(stray, key)


def test_nullable_int_scores_as_ratings_module_writes_them(study: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ratings, key = study
    nullable = ratings.assign(score=ratings["score"].astype("Int64"))
    pd.testing.assert_frame_equal(summary_table(nullable, key), summary_table(ratings, key))
    pd.testing.assert_frame_equal(frequency_table(nullable, key), frequency_table(ratings, key))
