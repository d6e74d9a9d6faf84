"""The corners of bench/stats_oc.py's grid, through the same simulation and the gate's own rule functions: the
smallest and largest n, at the margin (pass rate within alpha) and with no loss (the test still passes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import stats_oc  # noqa: E402

pytestmark = pytest.mark.integration  # a few seconds of simulation: not the unit tier's budget

REPS = 600


@pytest.fixture(scope="module")
def params():
    return stats_oc.params()


def margin(base: float) -> float:
    return (1 - stats_oc.RATIO) * base


@pytest.mark.parametrize(
    "rule, n, base, truth, churn, graded",
    [
        ("regression", 1000, 1.0, -margin(1.0), 0.0, False),  # the largest n, nothing gained: exact test
        ("regression", 200, 0.5, -margin(0.5), 0.2, False),  # churn both ways at a base of 0.5
        ("gain", 20, 0.5, 0.0, 0.2, False),  # the smallest n, no true gain, items moving both ways
        ("regression", 1000, 0.5, -margin(0.5), 0.0, True),  # graded metric: the paired t
    ],
)
def test_at_the_margin_the_pass_rate_stays_within_alpha(params, rule, n, base, truth, churn, graded):
    rate, se, _ = stats_oc.cell(params, rule, n, base, truth, churn, REPS, seed=7, graded=graded)
    assert rate <= stats_oc.ALPHA + 3 * max(se, (stats_oc.ALPHA * (1 - stats_oc.ALPHA) / REPS) ** 0.5), (rate, se)


def test_the_smallest_set_cannot_be_judged_and_the_largest_passes_an_unchanged_model(params):
    rate, _, undecided = stats_oc.cell(params, "regression", 20, 1.0, -margin(1.0), 0.0, 50, seed=1)
    assert (rate, undecided) == (0.0, 1.0)  # 20 items cannot show a 5% margin at all: no verdict, never a pass
    rate, _, undecided = stats_oc.cell(params, "regression", 1000, 1.0, 0.0, 0.0, 50, seed=1)
    assert (rate, undecided) == (1.0, 0.0)
    rate, _, _ = stats_oc.cell(params, "regression", 1000, 1.0, -1.5 * margin(1.0), 0.0, 200, seed=1)
    assert rate == 0.0  # a loss of 1.5x the margin on 1000 items never passes
