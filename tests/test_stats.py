"""Paired statistics on inputs whose answers can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


def test_delta_ci_of_a_constant_shift_is_that_shift():
    base = [0.1, 0.4, 0.2, 0.9, 0.5]
    tuned = [b + 0.25 for b in base]  # every item gains exactly 0.25: every resample's mean diff is 0.25
    lo, hi = stats.delta_ci(base, tuned, samples=500, seed=0)
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_ratio_ci_of_a_constant_factor_is_that_factor():
    base = [1.0, 2.0, 3.0, 4.0]
    tuned = [2 * b for b in base]
    assert stats.ratio_ci(base, tuned, samples=500, seed=0) == pytest.approx([2.0, 2.0])
    assert stats.ratio_ci([0, 0], [1, 1], samples=100, seed=0) is None  # base mean 0 in every resample


def test_cis_are_seeded_and_bracket_the_point_estimate():
    base = [0] * 30 + [1] * 10
    tuned = [1] * 20 + [0] * 10 + [1] * 10
    a = stats.delta_ci(base, tuned, samples=1000, seed=7)
    assert a == stats.delta_ci(base, tuned, samples=1000, seed=7)
    assert (stats.bootstrap_indices(40, 5, seed=7) != stats.bootstrap_indices(40, 5, seed=8)).any()
    assert a[0] < 0.5 < a[1]  # observed delta: 30/40 - 10/40 = 0.5
    assert a[0] > 0  # 20 gains and no losses: clearly positive


def test_paired_bootstrap_pvalue_extremes():
    # identical outcomes: the observed difference is 0, every null resample is as extreme -> p = 1
    assert stats.paired_bootstrap_pvalue([0.2, 0.5, 0.7], [0.2, 0.5, 0.7], samples=200, seed=0) == 1.0
    # every item gains exactly 0.1: the centred null is all zeros, none as extreme -> p = 1/(B+1)
    assert stats.paired_bootstrap_pvalue([0.2, 0.5, 0.7], [0.3, 0.6, 0.8], samples=199, seed=0) == 1 / 200


def test_paired_bootstrap_agrees_with_mcnemar_on_a_clear_case():
    base = [0] * 40 + [1] * 20
    tuned = [1] * 15 + [0] * 25 + [1] * 20
    assert stats.mcnemar_exact(base, tuned) < 0.001
    assert stats.paired_bootstrap_pvalue(base, tuned, samples=2000, seed=0) < 0.01


def test_compare_writes_the_sufficient_statistics_and_the_test():
    row = stats.compare([1, 1, 1, 1], [1, 1, 1, 0], samples=200, seed=0)
    assert row["ratio"] == pytest.approx(0.75) and (row["gained"], row["lost"]) == (0, 1)
    assert row["test"] == "mcnemar_exact" and row["p_value"] == 1.0  # 1 discordant pair: 2 * 1/2
    assert row["n"] == 4 and row["delta"] == pytest.approx(-0.25)
    assert row["diff_sd"] == pytest.approx(np.std([0, 0, 0, -1], ddof=1))

    zero_base = stats.compare([0, 0, 0, 0], [1, 1, 0, 0], samples=200, seed=0)
    assert zero_base["ratio"] is None and zero_base["ratio_ci"] is None and zero_base["delta"] == 0.5

    graded = stats.compare([0.5, 0.2], [0.7, 0.4], samples=99, seed=0)
    assert graded["test"] == "paired_bootstrap" and graded["p_value"] == pytest.approx(1 / 100)
    assert graded["gained"] is None and graded["binary"] is False
    assert all(math.isfinite(v) for v in graded["delta_ci"] + graded["ratio_ci"])


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
    assert stats.diff_lower_bound(**kw, alpha=0.05) == pytest.approx(
        sps.ttest_rel(tuned, base, alternative="greater").confidence_interval(0.95).low
    )
    # non-inferiority: H0 "tuned <= base - margin" is scipy's one-sided test of (tuned + margin) vs base
    assert stats.noninferiority_pvalue(**kw, margin=0.1) == pytest.approx(
        sps.ttest_rel(tuned + 0.1, base, alternative="greater").pvalue
    )


def test_no_spread_is_no_evidence_either_way():
    kw = dict(n=10, diff_sd=0.0)
    assert stats.diff_lower_bound(delta=0.0, alpha=0.025, **kw) == 0.0
    assert stats.gain_pvalue(delta=0.0, gained=None, lost=None, **kw) == 1.0
    assert stats.noninferiority_pvalue(delta=0.0, margin=0.05, **kw) == 0.0


def test_mean_ci_brackets_the_mean_and_handles_empty():
    from llmops.stats import mean_ci

    assert mean_ci([], 200, 0) is None
    assert mean_ci([3.0] * 10, 200, 0) == [3.0, 3.0]  # no spread, no interval
    lo, hi = mean_ci([1, 2, 3, 4, 5] * 4, 2000, 0)
    assert lo < 3.0 < hi and hi - lo < 2
