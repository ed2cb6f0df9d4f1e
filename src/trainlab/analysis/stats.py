"""Statistics for study reports: mean ± std with n, t-intervals, Welch's t-test against the best
configuration with Holm–Bonferroni correction, and Spearman rank correlation.

The procedures are written out here (and tested against scipy) so a report can say exactly what
was computed; scipy supplies only the t distribution. Missing values (None, NaN) are dropped and
never counted in n: a diverged run has no metric to average.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as _scipy_stats

from trainlab.experiments.results import best_first, ranking_mean

ALPHA = 0.05

TEST_DESCRIPTION = (
    "Each configuration is compared with the best one (best mean) by Welch's unequal-variance "
    "t-test (two-sided) on the per-run values, with Holm–Bonferroni correction across the "
    f"comparisons at alpha {ALPHA}; configurations with fewer than 2 runs are not tested."
)
CV_DESCRIPTION = (
    "With K-fold cross-validation the folds of a seed train on mostly the same images, so their "
    "spread understates the uncertainty: the variance of each mean is taken as "
    "s²·(1/n + 1/(K−1)) instead of s²/n (Nadeau and Bengio's corrected resampled t-test), in "
    "the tests and the intervals."
)


def comparison_description(folds: int = 0) -> str:
    """What "vs. best" means, for under a table: with cross-validation, its correction too."""
    return f"{TEST_DESCRIPTION} {CV_DESCRIPTION}" if folds else TEST_DESCRIPTION


def fold_overlap(folds: int) -> float:
    """Nadeau and Bengio's correction term for K-fold cross-validation: the validation/train
    size ratio, 1/(K−1); 0 without cross-validation (runs on independent seeds).

    Runs whose training sets overlap are correlated, so ``s²/n`` underestimates the variance
    of their mean; ``s²·(1/n + 1/(K−1))`` does not (Nadeau & Bengio 2003, Machine Learning 52;
    the repeated-K-fold form of Bouckaert & Frank 2004).
    """
    if folds < 0 or folds == 1:
        raise ValueError(f"folds must be 0 (no cross-validation) or at least 2, got {folds}")
    return 1.0 / (folds - 1) if folds else 0.0


def finite_values(values: Sequence[float | None]) -> list[float]:
    """The values that are numbers: None, NaN and ±inf are dropped."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]


# ----------------------------------------------------------------------------- mean ± std, CI


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and t-interval of the mean, with the n behind them."""

    n: int
    mean: float | None  # None when n == 0
    std: float | None  # sample std (ddof=1); None when n < 2
    ci_low: float | None  # two-sided t-interval for the mean at `confidence`; None when n < 2
    ci_high: float | None
    confidence: float = 0.95

    def format(self, digits: int = 4, percent: bool = False) -> str:
        """``0.9712 ± 0.0021 (n=3)``; ``0.9712 (n=1)``; ``–`` without values.

        ``digits`` are the decimal places shown; ``percent=True`` shows the values × 100 with a
        ``%``: ``format(2, percent=True)`` gives ``97.12 ± 0.21% (n=3)``.
        """
        if self.mean is None:
            return "–"
        scale, unit = (100.0, "%") if percent else (1.0, "")
        text = f"{self.mean * scale:.{digits}f}"
        if self.std is not None:
            text += f" ± {self.std * scale:.{digits}f}"
        return f"{text}{unit} (n={self.n})"


def summarize(values: Sequence[float | None], confidence: float = 0.95, folds: int = 0) -> Summary:
    """Mean, sample std and the two-sided Student t confidence interval of the mean.

    The interval is ``mean ± t_{(1+confidence)/2, n-1} · std / sqrt(n)``, as
    ``scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=sem)``; with zero spread it is
    the single point ``[mean, mean]``. None and NaN values are dropped and not counted in n.
    With ``folds`` K (the values are K-fold cross-validation runs) ``1/n`` becomes
    ``1/n + 1/(K−1)`` (:func:`fold_overlap`); the std stays the plain sample std.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    data = finite_values(values)
    n = len(data)
    if n == 0:
        return Summary(0, None, None, None, None, confidence)
    mean = ranking_mean(data)  # exact: a constant sample has exactly its value as mean
    if n == 1:
        return Summary(1, mean, None, None, None, confidence)
    std = statistics.stdev(data)
    scale = math.sqrt(1.0 / n + fold_overlap(folds))
    half = float(_scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * std * scale
    return Summary(n, mean, std, mean - half, mean + half, confidence)


# ----------------------------------------------------------------------------- Welch's t-test


@dataclass(frozen=True)
class WelchResult:
    """Welch's t statistic, its Welch–Satterthwaite degrees of freedom and the two-sided p."""

    t: float
    df: float
    p: float


def welch_t_test(
    a: Sequence[float | None], b: Sequence[float | None], folds: int = 0
) -> WelchResult | None:
    """Welch's unequal-variance t-test of mean(a) == mean(b), two-sided.

    Equals ``scipy.stats.ttest_ind(a, b, equal_var=False)``. None when either side has fewer
    than 2 values (None/NaN dropped). Both sides constant: the means either match (t = 0,
    p = 1) or differ with no noise at all (t = ±inf, p = 0); df is then ``n_a + n_b - 2``.
    With ``folds`` K (K-fold cross-validation runs), each squared standard error is
    ``s²·(1/n + 1/(K−1))`` (:func:`fold_overlap`); the Welch–Satterthwaite df use those.
    """
    xs, ys = finite_values(a), finite_values(b)
    if len(xs) < 2 or len(ys) < 2:
        return None
    overlap = fold_overlap(folds)
    # statistics.mean/variance are exact for a constant sample (numpy's may leave 1e-17 noise).
    mean_a, mean_b = statistics.mean(xs), statistics.mean(ys)
    # squared standard error of each mean
    se2_a = statistics.variance(xs, mean_a) * (1.0 / len(xs) + overlap)
    se2_b = statistics.variance(ys, mean_b) * (1.0 / len(ys) + overlap)
    if se2_a == 0.0 and se2_b == 0.0:
        df = float(len(xs) + len(ys) - 2)
        if mean_a == mean_b:
            return WelchResult(0.0, df, 1.0)
        return WelchResult(math.copysign(math.inf, mean_a - mean_b), df, 0.0)
    se2 = se2_a + se2_b
    t = (mean_a - mean_b) / math.sqrt(se2)
    df = se2**2 / (se2_a**2 / (len(xs) - 1) + se2_b**2 / (len(ys) - 1))
    return WelchResult(t, df, _two_sided_p(t, df))


def _two_sided_p(t: float, df: float) -> float:
    return min(1.0, 2.0 * float(_scipy_stats.t.sf(abs(t), df)))


# ----------------------------------------------------------------------------- Holm–Bonferroni


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    With the m p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``
    (1-based): monotone in the raw p-values and capped at 1. Rejecting where ``p_adj < alpha``
    controls the family-wise error rate at alpha.
    """
    for p in p_values:
        if not 0.0 <= p <= 1.0:  # also rejects NaN
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


# ----------------------------------------------------------------------------- compare to best


@dataclass(frozen=True)
class Comparison:
    """One configuration against the best, as a table cell."""

    name: str
    p: float | None  # raw Welch p vs. the best (None for the best itself or when untestable)
    p_adjusted: float | None  # Holm-adjusted over all comparisons with the best
    distinguishable: bool | None  # p_adjusted < alpha; None when untested or the best itself
    verdict: str  # "best", "worse (p=0.003)", "not distinguishable (p=0.41)", "n<2: untested"


def format_p(p: float, alpha: float = ALPHA) -> str:
    """``p=0.003``, ``p=0.41``, ``p<0.001``: two significant digits are plenty for a table,
    except next to ``alpha``, where the value shown must fall on the same side of it as ``p``
    (the side decides the verdict): ``p=0.0499``, ``p=0.0501``, never ``p=0.05`` for either."""
    if p < 0.001:
        return "p<0.001"
    for digits in range(2, 18):
        text = f"{p:.{digits}g}"
        shown = float(text)
        if (shown < alpha) == (p < alpha) and (shown != alpha or p == alpha):
            break
    return f"p={text}"


def compare_to_best(
    groups: Mapping[str, Sequence[float | None]],
    direction: Literal["maximize", "minimize"],
    alpha: float = ALPHA,
    folds: int = 0,
    best: str | None = None,
) -> list[Comparison]:
    """Is each configuration distinguishable from the best one, beyond seed noise?

    Procedure: Welch's unequal-variance t-test of per-run values against the best
    configuration, Holm–Bonferroni corrected, alpha 0.05 (by default). The best is ``best``
    when given (a caller that ranked the groups already), else the group with the highest
    (``maximize``) or lowest (``minimize``) mean among groups with at least one value, by
    ``results.best_first`` (the same mean and tie rule as every ranking: ties go to the first in
    input order). Groups with fewer than 2 values, or all groups when the best has fewer than 2,
    are not tested and do not count in the correction. The verdict quotes the adjusted p.
    Results come in the input order. ``folds`` K: the values are K-fold cross-validation runs
    (see :func:`welch_t_test`).
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"unknown direction {direction!r}; use 'maximize' or 'minimize'")
    data = {name: finite_values(values) for name, values in groups.items()}
    if best is None:
        best = _best_group(data, direction)
    elif not data.get(best):
        raise ValueError(f"the best group {best!r} is not one of the groups with a value")
    tests = {
        name: welch_t_test(values, data[best], folds)
        for name, values in data.items()
        if best is not None and name != best
    }
    tested = [name for name, result in tests.items() if result is not None]
    adjusted = dict(zip(tested, holm_adjust([tests[name].p for name in tested]), strict=True))
    best_alone = best is not None and len(data[best]) < 2
    return [_comparison(name, name == best, tests.get(name), adjusted, alpha, best_alone)
            for name in data]  # fmt: skip


def _best_group(data: Mapping[str, list[float]], direction: str) -> str | None:
    names = [name for name, values in data.items() if values]
    if not names:
        return None
    order = best_first([ranking_mean(data[name]) for name in names], direction)
    return names[order[0]]  # ties go to the earliest group


def _comparison(
    name: str, is_best: bool, test: WelchResult | None, adjusted: Mapping[str, float],
    alpha: float, best_alone: bool = False,
) -> Comparison:  # fmt: skip
    if is_best:
        return Comparison(
            name, None, None, None, "best (n=1: nothing tested)" if best_alone else "best"
        )
    if test is None:
        why = "the best has n=1" if best_alone else "n<2"
        return Comparison(name, None, None, None, f"{why}: untested")
    p_adj = adjusted[name]
    distinguishable = p_adj < alpha
    verdict = f"{'worse' if distinguishable else 'not distinguishable'} ({format_p(p_adj, alpha)})"
    return Comparison(name, test.p, p_adj, distinguishable, verdict)


# ----------------------------------------------------------------------------- Spearman


@dataclass(frozen=True)
class Correlation:
    """Spearman's rank correlation, its two-sided p (None when undefined) and the pairs used."""

    rho: float
    p: float | None
    n: int


def rank_average(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the average of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: Sequence[float | None], y: Sequence[float | None]) -> Correlation:
    """Spearman's rho: the Pearson correlation of average ranks, as ``scipy.stats.spearmanr``.

    Pairs with a missing value (None/NaN) on either side are dropped. The p-value uses the
    t approximation ``t = rho · sqrt((n - 2) / (1 - rho²))`` with n - 2 degrees of freedom
    (rough for small n, exactly what scipy does). Fewer than 3 pairs, or a constant side:
    rho is NaN and p None.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    pairs = [
        (float(a), float(b))
        for a, b in zip(x, y, strict=True)
        if a is not None and b is not None and not math.isnan(a) and not math.isnan(b)
    ]
    n = len(pairs)
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    if n < 3 or min(xs) == max(xs) or min(ys) == max(ys):
        return Correlation(math.nan, None, n)
    rho = float(np.corrcoef(rank_average(xs), rank_average(ys))[0, 1])
    rho = max(-1.0, min(1.0, rho))
    if abs(rho) == 1.0:
        return Correlation(rho, 0.0, n)
    t = rho * math.sqrt((n - 2) / ((1.0 + rho) * (1.0 - rho)))
    return Correlation(rho, _two_sided_p(t, n - 2), n)
