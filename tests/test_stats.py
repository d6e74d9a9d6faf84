"""Paired statistics on inputs whose answers can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import gammaln, xlogy
from scipy.stats import binom, norm, ttest_1samp

from llmops import stats


@pytest.mark.parametrize(
    ("base", "tuned", "expected"),
    [
        # 6 items only tuned got right, none the other way: p = 2 * (1/2)^6
        ([0] * 6 + [1] * 4, [1] * 10, 2 / 64),
        # b=5, c=0: 2 * (1/2)^5 = 0.0625 (not significant with 5 discordant pairs)
        ([0] * 5, [1] * 5, 0.0625),
        # b=8, c=2: 2 * (C(10,0)+C(10,1)+C(10,2)) / 2^10 = 2 * 56/1024
        ([0] * 8 + [1] * 2 + [1] * 5, [1] * 8 + [0] * 2 + [1] * 5, 2 * 56 / 1024),
        # symmetric discordance b=c=3: the two-sided p caps at 1
        ([0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0], 1.0),
        # no discordant pairs at all: no evidence of a difference
        ([1, 0, 1], [1, 0, 1], 1.0),
    ],
)
def test_mcnemar_exact_hand_computed(base, tuned, expected):
    assert stats.mcnemar_exact(base, tuned) == pytest.approx(expected)


def test_mcnemar_is_symmetric_in_direction():
    assert stats.mcnemar_exact([0] * 7, [1] * 7) == stats.mcnemar_exact([1] * 7, [0] * 7) == 2 / 128


def test_mcnemar_rejects_non_binary_and_unpaired():
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar_exact([0.5, 1], [1, 1])
    with pytest.raises(ValueError, match="equal-length"):
        stats.mcnemar_exact([0, 1], [1])


def test_ratio_ci_of_a_constant_factor_is_that_factor():
    base = [1.0, 2.0, 3.0, 4.0]
    tuned = [2 * b for b in base]
    assert stats.ratio_ci(base, tuned, samples=500, seed=0) == pytest.approx([2.0, 2.0])
    assert stats.ratio_ci([0, 0], [1, 1], samples=100, seed=0) is None  # base mean 0 in every resample


def test_bootstrap_resamples_are_seeded():
    assert (stats.bootstrap_indices(40, 5, seed=7) == stats.bootstrap_indices(40, 5, seed=7)).all()
    assert (stats.bootstrap_indices(40, 5, seed=7) != stats.bootstrap_indices(40, 5, seed=8)).any()


def test_compare_writes_the_sufficient_statistics_and_one_method_for_interval_and_p():
    row = stats.compare([1, 1, 1, 1], [1, 1, 1, 0], samples=200, seed=0)
    assert row["ratio"] == pytest.approx(0.75) and (row["gained"], row["lost"]) == (0, 1)
    assert row["test"] == "tango_score" and row["p_value"] == pytest.approx(2 * norm.sf(1.0))  # (0 - 1) / sqrt(1)
    assert row["n"] == 4 and row["delta"] == pytest.approx(-0.25)
    assert row["diff_sd"] == pytest.approx(np.std([0, 0, 0, -1], ddof=1))
    assert row["delta_ci"] == pytest.approx(stats.tango_ci(0, 1, 4))

    zero_base = stats.compare([0, 0, 0, 0], [1, 1, 0, 0], samples=200, seed=0)
    assert zero_base["ratio"] is None and zero_base["ratio_ci"] is None and zero_base["delta"] == 0.5

    graded = stats.compare([0.5, 0.2, 0.4], [0.7, 0.4, 0.5], samples=99, seed=0)
    res = ttest_1samp(np.array([0.7, 0.4, 0.5]) - [0.5, 0.2, 0.4], 0.0)
    assert graded["test"] == "paired_t" and graded["p_value"] == pytest.approx(res.pvalue)
    assert graded["delta_ci"] == pytest.approx(list(res.confidence_interval(0.95)))
    assert graded["gained"] is None and graded["binary"] is False
    assert all(math.isfinite(v) for v in graded["delta_ci"] + graded["ratio_ci"])


@pytest.mark.parametrize("seed", range(20))
def test_the_interval_excludes_zero_exactly_when_p_is_below_its_level(seed):
    """The report's interval and its verdict come from one method: they can never disagree."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 200))
    base = (rng.random(n) < rng.uniform(0.2, 0.9)).astype(float)
    tuned = np.where(rng.random(n) < rng.uniform(0, 0.3), 1 - base, base)
    for level in (0.95, 0.9):
        row = stats.compare(base, tuned, samples=100, seed=0, level=level)
        lo, hi = row["delta_ci"]
        assert (lo > 0 or hi < 0) == (row["p_value"] < 1 - level), (row, level)


def numerical_p_lost(gained: int, lost: int, n: int, theta: float) -> float:
    """The restricted maximum likelihood by brute force: maximise the trinomial log-likelihood over P(lost)."""
    from scipy.optimize import minimize_scalar

    lo, hi = max(0.0, -theta), (1 - theta) / 2

    def nll(q):
        p = q + theta  # P(gained)
        return -(xlogy(gained, p) + xlogy(lost, q) + xlogy(n - gained - lost, max(1 - p - q, 0.0)))

    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    return float(min((res.x, lo, hi), key=nll))


@pytest.mark.parametrize(
    "gained, lost, n, theta",
    [(0, 1, 81, -0.05), (0, 0, 81, -0.05), (3, 10, 200, -0.04), (40, 20, 160, 0.1), (5, 5, 30, 0.0), (0, 7, 50, -0.2)],
)
def test_tangos_closed_form_is_the_maximum_likelihood_under_h0(gained, lost, n, theta):
    ours = float(stats._restricted_p_lost(gained, lost, n, theta))
    assert ours == pytest.approx(numerical_p_lost(gained, lost, n, theta), abs=1e-6)


@pytest.mark.parametrize("gained, lost, n", [(0, 1, 81), (3, 10, 200), (40, 20, 160), (0, 0, 146)])
def test_tango_bound_is_where_the_test_rejects_at_alpha(gained, lost, n):
    lower = stats.tango_bound(gained, lost, n, 0.025)
    assert stats.tango_z(gained, lost, n, lower) == pytest.approx(norm.isf(0.025), abs=1e-6)
    upper = stats.tango_bound(gained, lost, n, 0.025, "upper")
    assert lower < (gained - lost) / n < upper or gained == lost == 0


def test_one_lost_of_81_no_longer_clears_a_five_percent_margin():
    """The issue's case: the t bound was -0.037 (pass); the score bound is -0.067, like Newcombe's and
    Clopper-Pearson's; the exact p is the binomial chance that a model that truly lost 5% loses at most one."""
    assert stats.tango_bound(0, 1, 81, 0.025) == pytest.approx(-0.0667, abs=5e-4)
    assert stats.noninferiority_pvalue_binary(0, 1, 81, 0.05) == pytest.approx(binom.cdf(1, 81, 0.05), rel=1e-3)
    # nothing lost: the sup over how many items move is above P(lost = 0 | 81, 0.05) = 0.0157, still below alpha
    assert 0.95**81 <= stats.noninferiority_pvalue_binary(0, 0, 81, 0.05) < 0.025


@pytest.mark.parametrize("n, margin", [(20, 0.05), (50, 0.05), (81, 0.05), (100, 0.025), (146, 0.05)])
def test_exact_noninferiority_never_passes_more_than_alpha_at_the_margin(n, margin):
    """The grid's small corners, exactly: the probability of passing, summed over every possible table, for a
    model that truly lost the margin, at several amounts of churn (the score test alone exceeded alpha here)."""
    g = np.concatenate([np.full(n + 1 - k, k) for k in range(n + 1)])
    lost = np.concatenate([np.arange(n + 1 - k) for k in range(n + 1)])
    passes = np.array(
        [stats.noninferiority_pvalue_binary(int(a), int(b), n, margin) < 0.025 for a, b in zip(g, lost, strict=True)]
    )
    for p_gain in (0.0, 0.01, 0.05, 0.1, 0.2, 0.3):
        p_lost = p_gain + margin
        log_pmf = (
            gammaln(n + 1)
            - gammaln(g + 1)
            - gammaln(lost + 1)
            - gammaln(n - g - lost + 1)
            + xlogy(g, p_gain)
            + xlogy(lost, p_lost)
            + xlogy(n - g - lost, 1 - p_gain - p_lost)
        )
        assert np.exp(log_pmf)[passes].sum() <= 0.025 + 1e-9, (n, margin, p_gain)


@pytest.mark.parametrize("margin, alpha, expected", [(0.05, 0.025, 75), (0.1, 0.025, 36), (0.025, 0.025, 152)])
def test_minimum_items_for_non_inferiority(margin, alpha, expected):
    need = stats.min_items_noninferiority(margin, alpha, binary=True)
    assert need == expected
    assert stats.noninferiority_pvalue_binary(0, 0, need, margin) < alpha
    assert stats.noninferiority_pvalue_binary(0, 0, need - 1, margin) >= alpha
    assert stats.min_items_gain(alpha) == 6 and stats.min_items_gain(0.05) == 5


@pytest.mark.parametrize("gained, lost", [(5, 0), (6, 0), (10, 3), (0, 4), (0, 0), (40, 35)])
def test_mcnemar_equals_scipy_binomtest(gained, lost):
    from scipy.stats import binomtest

    base = [0] * gained + [1] * lost + [1] * 7
    tuned = [1] * gained + [0] * lost + [1] * 7
    for alternative in ("two-sided", "greater"):
        expected = 1.0 if gained + lost == 0 else binomtest(gained, gained + lost, 0.5, alternative=alternative).pvalue
        assert stats.mcnemar_exact(base, tuned, alternative=alternative) == pytest.approx(expected)
    row = stats.compare(base, tuned, samples=100, seed=0)
    assert stats.gain_pvalue(
        n=row["n"], delta=row["delta"], diff_sd=row["diff_sd"], gained=gained, lost=lost
    ) == pytest.approx(stats.mcnemar_exact(base, tuned, alternative="greater"))


def test_graded_metrics_use_scipys_paired_t():
    from scipy import stats as sps

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 50)
    tuned = np.clip(base + rng.normal(0.05, 0.2, 50), 0, 1)
    row = stats.compare(base, tuned, samples=100, seed=0)
    kw = dict(n=row["n"], delta=row["delta"], diff_sd=row["diff_sd"])
    assert stats.gain_pvalue(**kw, gained=None, lost=None) == pytest.approx(
        sps.ttest_rel(tuned, base, alternative="greater").pvalue
    )
    # non-inferiority: H0 "tuned <= base - margin" is scipy's one-sided test of (tuned + margin) vs base
    assert stats.noninferiority_pvalue(**kw, margin=0.1) == pytest.approx(
        sps.ttest_rel(tuned + 0.1, base, alternative="greater").pvalue
    )


def test_no_spread_is_the_sign_flip_bound_not_certainty():
    """Every item moved alike: no t statistic exists, and n such items are worth 2^-n, never p = 0."""
    kw = dict(n=10, diff_sd=0.0)
    assert stats.gain_pvalue(delta=0.0, gained=None, lost=None, **kw) == 1.0
    assert stats.gain_pvalue(delta=0.3, gained=None, lost=None, n=2, diff_sd=0.0) == 0.25
    assert stats.noninferiority_pvalue(delta=0.0, margin=0.05, **kw) == 0.5**10
    assert stats.noninferiority_pvalue(delta=-0.06, margin=0.05, **kw) == 1.0


def test_mean_ci_brackets_the_mean_and_handles_empty():
    from llmops.stats import mean_ci

    assert mean_ci([], 200, 0) is None
    assert mean_ci([3.0] * 10, 200, 0) == [3.0, 3.0]  # no spread, no interval
    lo, hi = mean_ci([1, 2, 3, 4, 5] * 4, 2000, 0)
    assert lo < 3.0 < hi and hi - lo < 2
