"""The study statistics against scipy's results and hand-checked values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from trainlab.analysis.stats import (
    ALPHA,
    TEST_DESCRIPTION,
    Summary,
    WelchResult,
    compare_to_best,
    comparison_description,
    fold_overlap,
    format_p,
    holm_adjust,
    rank_average,
    spearman,
    summarize,
    welch_t_test,
)

SEEDS = range(8)


# ----------------------------------------------------------------------------- summarize


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_summarize_matches_numpy_and_scipy_t_interval(seed, confidence):
    rng = np.random.default_rng(seed)
    values = rng.normal(0.9, 0.02, size=int(rng.integers(2, 12)))
    found = summarize(values.tolist(), confidence)
    sem = scipy_stats.sem(values)
    low, high = scipy_stats.t.interval(confidence, len(values) - 1, loc=values.mean(), scale=sem)
    assert found.n == len(values) and found.confidence == confidence
    assert found.mean == pytest.approx(values.mean(), rel=1e-12)
    assert found.std == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert found.ci_low == pytest.approx(low, rel=1e-12)
    assert found.ci_high == pytest.approx(high, rel=1e-12)


def test_summarize_small_and_empty_samples():
    assert summarize([]) == Summary(0, None, None, None, None)
    assert summarize([0.5]) == Summary(1, 0.5, None, None, None)
    two = summarize([1.0, 3.0])
    assert (two.n, two.mean, two.std) == (2, 2.0, pytest.approx(math.sqrt(2)))
    low, high = scipy_stats.t.interval(0.95, 1, loc=2.0, scale=1.0)
    assert (two.ci_low, two.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_summarize_drops_none_and_nan_without_counting_them():
    found = summarize([0.9, None, math.nan, 0.92, 0.94])
    assert found.n == 3
    assert found.mean == pytest.approx(0.92)
    assert summarize([None, math.nan]).n == 0


def test_summarize_constant_values_give_a_point_interval():
    found = summarize([0.1, 0.1, 0.1])
    assert (found.mean, found.std, found.ci_low, found.ci_high) == (0.1, 0.0, 0.1, 0.1)


def test_summarize_rejects_a_confidence_outside_0_1():
    with pytest.raises(ValueError, match="confidence"):
        summarize([1.0, 2.0], confidence=95)


def test_summary_format():
    three = Summary(3, 0.97123, 0.00214, 0.96, 0.98)
    assert three.format() == "0.9712 ± 0.0021 (n=3)"
    assert three.format(2, percent=True) == "97.12 ± 0.21% (n=3)"
    assert three.format(1) == "1.0 ± 0.0 (n=3)"
    assert Summary(1, 0.97123, None, None, None).format() == "0.9712 (n=1)"
    assert Summary(1, 0.97123, None, None, None).format(1, percent=True) == "97.1% (n=1)"
    assert Summary(0, None, None, None, None).format() == "–"
    assert summarize([3, 5, 7]).format(1) == "5.0 ± 2.0 (n=3)"


# ----------------------------------------------------------------------------- Welch


def scipy_welch(a, b):
    return scipy_stats.ttest_ind(a, b, equal_var=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_welch_matches_scipy_on_random_samples(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.90, rng.uniform(0.001, 0.05), size=int(rng.integers(2, 10)))
    b = rng.normal(0.91, rng.uniform(0.001, 0.05), size=int(rng.integers(2, 10)))
    found, expected = welch_t_test(a.tolist(), b.tolist()), scipy_welch(a, b)
    assert found.t == pytest.approx(expected.statistic, rel=1e-9)
    assert found.df == pytest.approx(expected.df, rel=1e-9)
    assert found.p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1.0, 2.0], [3.0, 5.0]),  # n = 2 on both sides: df can be as low as 1
        ([0.5, 0.5, 0.5], [0.4, 0.6, 0.5]),  # one side constant: df = n_b - 1
        ([0.9, 0.91, 0.92], [0.91, 0.9, 0.92]),  # identical means: t = 0, p = 1
        ([1, 2, 3, 4, 5, 6, 7, 8], [100.0, 101.0]),  # far apart: a tiny p
    ],
)
@pytest.mark.filterwarnings("ignore:Precision loss")  # scipy, on the constant side
def test_welch_matches_scipy_on_edge_cases(a, b):
    found, expected = welch_t_test(a, b), scipy_welch(a, b)
    assert found.t == pytest.approx(expected.statistic, rel=1e-9, abs=1e-12)
    assert found.df == pytest.approx(expected.df, rel=1e-9)
    assert found.p == pytest.approx(expected.pvalue, rel=1e-9)


def test_welch_needs_two_values_per_side():
    assert welch_t_test([0.9], [0.8, 0.85]) is None
    assert welch_t_test([0.9, 0.91], []) is None
    assert welch_t_test([0.9, math.nan, None], [0.8, 0.85]) is None  # NaN/None do not count


def test_welch_drops_nan_like_scipy_omit():
    a, b = [0.9, math.nan, 0.92, 0.95], [0.8, 0.84, None, 0.83]
    expected = scipy_stats.ttest_ind([0.9, 0.92, 0.95], [0.8, 0.84, 0.83], equal_var=False)
    assert welch_t_test(a, b).p == pytest.approx(expected.pvalue, rel=1e-9)


def test_welch_zero_variance_on_both_sides():
    equal = welch_t_test([0.1, 0.1, 0.1], [0.1, 0.1])
    assert (equal.t, equal.df, equal.p) == (0.0, 3.0, 1.0)
    worse = welch_t_test([0.1, 0.1, 0.1], [0.2, 0.2])
    assert (worse.t, worse.df, worse.p) == (-math.inf, 3.0, 0.0)
    assert welch_t_test([0.3, 0.3], [0.2, 0.2]).t == math.inf


# ----------------------------------------------------------------------------- Holm


def test_holm_known_example():
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_keeps_order_and_is_monotone():
    p = [0.5, 0.001, 0.2, 0.3, 0.04]
    adjusted = holm_adjust(p)
    # m = 5: 0.001·5, 0.04·4, 0.2·3, max(0.3·2, 0.6), min(0.5·1 → max 0.6)
    assert adjusted == pytest.approx([0.6, 0.005, 0.6, 0.6, 0.16])
    order = np.argsort(p)
    assert all(np.diff(np.array(adjusted)[order]) >= 0)
    assert holm_adjust([0.6, 0.7]) == [1.0, 1.0]


def test_holm_edge_cases():
    assert holm_adjust([]) == []
    assert holm_adjust([0.03]) == [0.03]
    assert holm_adjust([0.02, 0.02]) == [0.04, 0.04]  # ties share a value
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.1, math.nan])


@pytest.mark.parametrize("seed", SEEDS)
def test_holm_matches_a_direct_step_down(seed):
    """Step-down: reject the sorted hypotheses while p(i) <= alpha / (m - i + 1); the adjusted
    p-values must reject exactly the same ones at every alpha."""
    p = np.random.default_rng(seed).uniform(0, 0.1, size=7).tolist()
    adjusted = holm_adjust(p)
    for alpha in (0.01, 0.02, 0.05, 0.1):
        rejected = set()
        for rank, index in enumerate(np.argsort(p)):
            if p[index] > alpha / (len(p) - rank):
                break
            rejected.add(int(index))
        assert {i for i, q in enumerate(adjusted) if q <= alpha} == rejected


# ----------------------------------------------------------------------------- compare to best


def test_compare_to_best_maximize():
    groups = {
        "lr=0.1": [0.80, 0.81, 0.79, 0.80],
        "lr=0.01": [0.90, 0.91, 0.905, 0.895],  # best
        "lr=0.02": [0.899, 0.905, 0.90, 0.893],
        "lr=1": [0.5],
    }
    found = {c.name: c for c in compare_to_best(groups, "maximize")}
    assert list(found) == list(groups)  # input order
    assert found["lr=0.01"].verdict == "best" and found["lr=0.01"].p is None
    raw = {
        name: scipy_stats.ttest_ind(groups[name], groups["lr=0.01"], equal_var=False).pvalue
        for name in ("lr=0.1", "lr=0.02")
    }
    adjusted = holm_adjust([raw["lr=0.1"], raw["lr=0.02"]])
    worse, close = found["lr=0.1"], found["lr=0.02"]
    assert worse.p == pytest.approx(raw["lr=0.1"])
    assert worse.p_adjusted == pytest.approx(adjusted[0])
    assert worse.distinguishable is True and worse.verdict == f"worse ({format_p(adjusted[0])})"
    assert close.p_adjusted == pytest.approx(adjusted[1]) and close.distinguishable is False
    assert close.verdict.startswith("not distinguishable (p=")
    untested = found["lr=1"]
    assert (untested.p, untested.p_adjusted, untested.distinguishable) == (None, None, None)
    assert untested.verdict == "n<2: untested"


def test_compare_to_best_minimize_picks_the_lowest_mean():
    found = compare_to_best({"a": [0.30, 0.31, 0.29], "b": [0.20, 0.21, 0.19]}, "minimize")
    assert [c.verdict for c in found][1] == "best"
    assert found[0].distinguishable is True


def test_compare_to_best_holm_changes_the_decision():
    """Raw p just under alpha, but two comparisons: Holm doubles the smaller one."""
    best = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95]
    groups = {"best": best, "x": [0.9, 0.95, 0.92, 0.9, 0.95, 0.93], "y": [0.9, 1.0, 1.05, 0.95]}
    found = {c.name: c for c in compare_to_best(groups, "maximize")}
    raw_x = scipy_stats.ttest_ind(groups["x"], best, equal_var=False).pvalue
    assert 0.025 < raw_x < 0.05  # significant alone, not after correction over 2 tests
    assert found["x"].p == pytest.approx(raw_x)
    assert found["x"].p_adjusted == pytest.approx(2 * raw_x)
    assert found["x"].distinguishable is False


def test_compare_to_best_edge_cases():
    assert compare_to_best({}, "maximize") == []
    none = compare_to_best({"a": [], "b": [math.nan]}, "maximize")
    assert [c.verdict for c in none] == ["n<2: untested", "n<2: untested"]
    # The best has one run: nothing can be tested against it.
    single = compare_to_best({"a": [0.9], "b": [0.5, 0.6]}, "maximize")
    assert [c.verdict for c in single] == [
        "best (n=1: nothing tested)",
        "the best has n=1: untested",
    ]
    # Equal means: the first is the best, the other is indistinguishable (p = 1).
    tie = compare_to_best({"a": [0.5, 0.5], "b": [0.5, 0.5]}, "maximize")
    assert [c.verdict for c in tie] == ["best", "not distinguishable (p=1)"]
    # Constant and different: distinguishable with p = 0.
    exact = compare_to_best({"a": [0.5, 0.5], "b": [0.6, 0.6]}, "maximize")
    assert exact[0].verdict == "worse (p<0.001)" and exact[0].p == 0.0
    with pytest.raises(ValueError, match="direction"):
        compare_to_best({"a": [1.0]}, "max")


def test_format_p_and_description():
    assert (format_p(0.003), format_p(0.41), format_p(0.0004), format_p(1.0)) == (
        "p=0.003",
        "p=0.41",
        "p<0.001",
        "p=1",
    )
    assert "Welch" in TEST_DESCRIPTION and "Holm" in TEST_DESCRIPTION
    assert "0.05" in TEST_DESCRIPTION
    assert comparison_description(0) == TEST_DESCRIPTION
    assert "Nadeau and Bengio" in comparison_description(5) and "1/(K−1)" in comparison_description(
        5
    )


# ----------------------------------------------------------------------------- cross-validation


def test_fold_overlap_is_the_validation_to_train_ratio():
    assert (fold_overlap(0), fold_overlap(2), fold_overlap(5), fold_overlap(10)) == (
        0.0, 1.0, 0.25, 1 / 9,
    )  # fmt: skip
    for bad in (1, -2):
        with pytest.raises(ValueError, match="folds"):
            fold_overlap(bad)


def test_cross_validation_runs_widen_the_interval_and_the_test():
    # 2 seeds × 5 folds: Nadeau–Bengio's variance of the mean is s²·(1/10 + 1/4), not s²/10.
    a = [0.91, 0.92, 0.90, 0.93, 0.91, 0.92, 0.91, 0.90, 0.92, 0.93]
    b = [value - 0.015 for value in a[::-1]]
    plain, corrected = summarize(a), summarize(a, folds=5)
    assert (corrected.mean, corrected.std) == (plain.mean, plain.std)  # the spread is the spread
    half = scipy_stats.t.ppf(0.975, 9) * np.std(a, ddof=1) * math.sqrt(1 / 10 + 1 / 4)
    assert corrected.ci_high - corrected.mean == pytest.approx(half)
    assert (corrected.ci_high - corrected.ci_low) / (plain.ci_high - plain.ci_low) == pytest.approx(
        math.sqrt((1 / 10 + 1 / 4) / (1 / 10))
    )
    naive, fair = welch_t_test(a, b), welch_t_test(a, b, folds=5)
    se2 = (np.var(a, ddof=1) + np.var(b, ddof=1)) * (1 / 10 + 1 / 4)
    assert fair.t == pytest.approx((np.mean(a) - np.mean(b)) / math.sqrt(se2))
    assert fair.t == pytest.approx(naive.t / math.sqrt(3.5))
    assert fair.p > naive.p
    # The same 1.5 points: "worse" on folds taken as independent runs, not with the correction.
    groups = {"a": a, "b": b}
    assert compare_to_best(groups, "maximize")[1].distinguishable is True
    assert compare_to_best(groups, "maximize", folds=5)[1].distinguishable is False


# ----------------------------------------------------------------------------- Spearman


def test_rank_average_matches_scipy_rankdata():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0]
    assert rank_average(values) == scipy_stats.rankdata(values).tolist()
    assert rank_average([]) == []


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_spearman_matches_scipy(seed, ties):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 40))
    x = rng.normal(size=n)
    y = -0.7 * x + rng.normal(size=n)
    if ties:  # few distinct values on both sides
        x, y = np.round(x), np.round(y * 2) / 2
    expected = scipy_stats.spearmanr(x, y)
    if np.isnan(expected.statistic):  # rounding made a side constant
        pytest.skip("constant after rounding")
    found = spearman(x.tolist(), y.tolist())
    assert found.n == n
    assert found.rho == pytest.approx(expected.statistic, rel=1e-9, abs=1e-12)
    assert found.p == pytest.approx(expected.pvalue, rel=1e-7, abs=1e-12)


def test_spearman_drops_nan_pairs():
    x = [0.1, 0.2, math.nan, 0.4, 0.5, 0.6, None]
    y = [1.0, 0.8, 0.7, math.nan, 0.9, 0.3, 0.2]
    found = spearman(x, y)
    expected = scipy_stats.spearmanr([0.1, 0.2, 0.5, 0.6], [1.0, 0.8, 0.9, 0.3])
    assert found.n == 4
    assert found.rho == pytest.approx(expected.statistic)
    assert found.p == pytest.approx(expected.pvalue)


def test_spearman_perfect_and_undefined():
    perfect = spearman([1, 2, 3, 4], [10, 20, 30, 40])
    assert (perfect.rho, perfect.p, perfect.n) == (1.0, 0.0, 4)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]).rho == -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(scipy_stats.spearmanr([1, 2, 3], [5, 5, 5]).statistic)
    for x, y in [([1, 2, 3], [5, 5, 5]), ([1, 2], [3, 4]), ([], []), ([1, math.nan, 3], [1, 2, 3])]:
        found = spearman(x, y)
        assert math.isnan(found.rho) and found.p is None
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2, 3], [1, 2])


@pytest.mark.parametrize("p", [0.0499, 0.0501, 0.04951, 0.0504, 0.049999, 0.050001])
def test_a_p_value_near_alpha_is_shown_on_its_side_of_alpha(p):
    shown = float(format_p(p).removeprefix("p="))
    assert (shown < ALPHA) == (p < ALPHA)
    assert shown != ALPHA or p == ALPHA  # "p=0.05" only for exactly 0.05


def test_the_verdict_and_the_p_it_shows_agree_near_alpha():
    assert format_p(0.0499) == "p=0.0499" and format_p(0.0501) == "p=0.0501"
    assert format_p(0.5012) == "p=0.5" and format_p(0.012) == "p=0.012"  # far away: two digits
    from trainlab.analysis.stats import _comparison

    for p_adj in (0.04990, 0.05049):
        test = WelchResult(2.0, 4.0, p_adj)
        verdict = _comparison("a", False, test, {"a": p_adj}, ALPHA).verdict
        shown = float(verdict.split("p=")[1].rstrip(")"))
        assert verdict.startswith("worse") == (shown < ALPHA), verdict
