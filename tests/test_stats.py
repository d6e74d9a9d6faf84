"""Paired statistics on inputs whose answers can be worked out by hand."""

from __future__ import annotations

import math

import pytest

from llmops import stats


@pytest.mark.parametrize(("base", "tuned", "expected"), [
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
])
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
    assert a[0] > 0           # 20 gains and no losses: clearly positive


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


def test_compare_picks_the_rule_and_the_test():
    ratio = stats.compare([1, 1, 1, 1], [1, 1, 1, 0], samples=200, seed=0, near_zero_base=0.05)
    assert ratio["rule"] == "ratio" and ratio["ratio"] == pytest.approx(0.75)
    assert ratio["test"] == "mcnemar_exact" and ratio["p_value"] == 1.0  # 1 discordant pair: 2 * 1/2
    assert ratio["n"] == 4 and ratio["delta"] == pytest.approx(-0.25)

    near_zero = stats.compare([0, 0, 0, 0], [1, 1, 0, 0], samples=200, seed=0, near_zero_base=0.05)
    assert near_zero["rule"] == "abs_delta" and near_zero["ratio"] is None and near_zero["ratio_ci"] is None
    assert near_zero["delta"] == 0.5

    graded = stats.compare([0.5, 0.2], [0.7, 0.4], samples=99, seed=0, near_zero_base=0.05)
    assert graded["test"] == "paired_bootstrap" and graded["p_value"] == pytest.approx(1 / 100)
    assert all(math.isfinite(v) for v in graded["delta_ci"] + graded["ratio_ci"])


def test_mean_ci_brackets_the_mean_and_handles_empty():
    from llmops.stats import mean_ci

    assert mean_ci([], 200, 0) is None
    assert mean_ci([3.0] * 10, 200, 0) == [3.0, 3.0]  # no spread, no interval
    lo, hi = mean_ci([1, 2, 3, 4, 5] * 4, 2000, 0)
    assert lo < 3.0 < hi and hi - lo < 2
