"""Paired statistics for base-vs-tuned comparisons over the same evaluation items (pure functions).

Both models answer the same items, so every comparison is paired: it works on the per-item differences, which
removes the item-difficulty variance an unpaired test would leave in. Used by `evaluate` (eval_compare.json), the
gate and the report's comparison with the base branch. Which method and why: docs/evaluation.md#statistics.

- `compare`: one task's two-sided interval and p-value of tuned - base from one method (Tango's score interval
  for 0/1 metrics, the paired t otherwise), plus the sufficient statistics (n, mean and sd of the differences,
  gained/lost counts) the gate's decisions need, so the gate re-decides from eval_compare.json alone.
- `mcnemar_from_counts`: exact McNemar (scipy's binomial test on the discordant pairs).
- `tango_z` / `tango_bound` / `tango_ci`: Tango's score statistic for the difference of paired proportions.
- `gain_pvalue` / `noninferiority_pvalue`: the gate's one-sided decisions, with error rates that hold at small
  counts (exact McNemar; exact unconditional non-inferiority), and `min_items_*`: the fewest items on which
  any result could pass, below which the gate cannot judge.
- `bootstrap_indices` / `mean_ci` / `ratio_ci`: percentile bootstrap intervals for readers (judge means, ratios).

Why one module (~310 lines): the paired methods and the exact tests behind every verdict, each beside the
reference it implements.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq
from scipy.special import gammaln, xlogy

CI_LEVEL = 0.95


def _pair(base: Sequence[float], tuned: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    b, t = np.asarray(base, dtype=float), np.asarray(tuned, dtype=float)
    if b.shape != t.shape or b.ndim != 1:
        raise ValueError(f"paired scores need two equal-length 1-D sequences, got {b.shape} and {t.shape}")
    if b.size == 0:
        raise ValueError("paired scores are empty")
    if not (np.isfinite(b).all() and np.isfinite(t).all()):
        raise ValueError("paired scores contain NaN or infinity")
    return b, t


def bootstrap_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n) item indices drawn with replacement; the same seed gives the same resamples."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _percentile_ci(values: np.ndarray, level: float = CI_LEVEL) -> list[float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def mean_ci(values, samples: int, seed: int, level: float = CI_LEVEL) -> list[float] | None:
    """Percentile CI of the mean of one sample (e.g. judge scores); None when there are no values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    return _percentile_ci(x[bootstrap_indices(x.size, samples, seed)].mean(axis=1), level)


def ratio_ci(base, tuned, samples: int, seed: int, level: float = CI_LEVEL) -> list[float] | None:
    """Percentile CI of mean(tuned) / mean(base); resamples whose base mean is 0 are left out (the ratio
    is undefined there). None when every resample has a zero base (use the delta instead)."""
    b, t = _pair(base, tuned)
    idx = bootstrap_indices(b.size, samples, seed)
    b_means, t_means = b[idx].mean(axis=1), t[idx].mean(axis=1)
    keep = b_means != 0
    if not keep.any():
        return None
    return _percentile_ci(t_means[keep] / b_means[keep], level)


def discordant(base, tuned) -> tuple[int, int]:
    """(gained, lost): items only the tuned model got right, items only the base got right (0/1 scores)."""
    b_arr, t_arr = _pair(base, tuned)
    if not is_binary(b_arr, t_arr):
        raise ValueError("McNemar needs 0/1 outcomes; other metrics use the paired t")
    return int(((b_arr == 0) & (t_arr == 1)).sum()), int(((b_arr == 1) & (t_arr == 0)).sum())


def mcnemar_from_counts(gained: int, lost: int, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value from the discordant counts: under "no difference" each discordant item is a
    fair coin, so this is scipy's exact binomial test of `gained` successes in gained + lost tosses.
    alternative "greater" asks "did tuned gain?" (one-sided); no discordant item is no evidence (p = 1)."""
    if gained + lost == 0:
        return 1.0
    return float(sps.binomtest(gained, gained + lost, 0.5, alternative=alternative).pvalue)


def mcnemar_exact(base, tuned, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value for paired 0/1 outcomes (see mcnemar_from_counts)."""
    return mcnemar_from_counts(*discordant(base, tuned), alternative=alternative)


def is_binary(*scores: Sequence[float]) -> bool:
    return all(np.isin(np.asarray(s, dtype=float), (0, 1)).all() for s in scores)


def _no_spread(diff: np.ndarray) -> bool:
    """Every item moved alike (to float rounding: 0.6 - 0.1 and 1.0 - 0.5 differ in the last bit)."""
    return diff.size < 2 or float(np.ptp(diff)) <= 1e-12


def paired_t_ci(diff: np.ndarray, level: float = CI_LEVEL) -> list[float]:
    """Two-sided paired t interval of the mean difference (the difference itself when there is no spread)."""
    mean = float(diff.mean())
    if _no_spread(diff):
        return [mean, mean]
    half = float(sps.t.ppf(0.5 + level / 2, df=diff.size - 1) * diff.std(ddof=1) / math.sqrt(diff.size))
    return [mean - half, mean + half]


def paired_t_pvalue(diff: np.ndarray) -> float:
    """Two-sided paired t p-value of "no difference" (the sign-flip bound 2^(1-n) when every item moved alike)."""
    if _no_spread(diff):
        return 1.0 if not diff.any() else min(1.0, 2 * 0.5**diff.size)
    return float(sps.ttest_1samp(diff, 0.0).pvalue)


def compare(base, tuned, *, samples: int, seed: int, level: float = CI_LEVEL) -> dict:
    """One task's paired comparison, keys as in reports/eval_compare.json (minus kind/metric).

    The interval and the p-value come from one method, so they always agree (the p is below 1 - level exactly
    when the interval excludes 0): Tango's score interval and test for 0/1 metrics, the paired t otherwise. The
    ratio is shown for readers (a bootstrap interval; null when the base scores 0). The gate decides on the
    sufficient statistics (`diff_sd`, `gained`/`lost`) with its own one-sided tests, never on this file's p.
    """
    b, t = _pair(base, tuned)
    base_mean, tuned_mean = float(b.mean()), float(t.mean())
    binary = is_binary(b, t)
    gained, lost = discordant(b, t) if binary else (None, None)
    diff = t - b
    return {
        "n": int(b.size),
        "base": base_mean,
        "tuned": tuned_mean,
        "delta": tuned_mean - base_mean,
        "delta_ci": tango_ci(gained, lost, b.size, level) if binary else paired_t_ci(diff, level),
        "ratio": tuned_mean / base_mean if base_mean > 0 else None,
        "ratio_ci": ratio_ci(b, t, samples, seed) if base_mean > 0 else None,
        "diff_sd": 0.0 if _no_spread(diff) else float(diff.std(ddof=1)),
        "binary": binary,
        "gained": gained,
        "lost": lost,
        "p_value": tango_pvalue(gained, lost, b.size) if binary else paired_t_pvalue(diff),
        "test": "tango_score" if binary else "paired_t",
    }


# ---------------------------------------------------------------- paired 0/1 outcomes: Tango's score statistic
# A paired t interval on 0/1 differences is too narrow when few items move: with the base right on every item and
# one of 81 lost it bounds the drop at -0.037, where a model that truly lost 5% shows that result 8% of the time.
# Tango's score statistic (Stat Med 1998;17:891-908) takes the variance of the paired difference under the
# hypothesis tested (restricted maximum likelihood), which keeps it honest when few items move. No maintained Python
# library has it (statsmodels 0.15: McNemar and Newcombe's interval, no score test of a non-zero paired difference),
# so it is written out here and checked against a numerical maximum likelihood in tests/test_stats.py.


def _restricted_p_lost(gained, lost, n: int, theta: float):
    """Maximum-likelihood P(lost) among trinomials with P(gained) - P(lost) = theta (Tango's closed form);
    elementwise over arrays of counts."""
    a = 2 * n
    b = -gained - lost + (2 * n - gained + lost) * theta
    c = -lost * theta * (1 - theta)
    return (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0.0))) / (2 * a)


def tango_z(gained, lost, n: int, theta: float):
    """Tango's score statistic of H0 "P(tuned right) - P(base right) = theta" from the discordant counts
    (gained: only tuned right, lost: only base right): (gained - lost - n theta) / its sd under H0. Large values
    say the true difference is above theta. Elementwise over arrays of counts; a float for scalars."""
    if not -1 <= theta <= 1:
        raise ValueError(f"theta {theta} outside [-1, 1]")
    g, l_ = np.asarray(gained, dtype=float), np.asarray(lost, dtype=float)
    var = n * (2 * _restricted_p_lost(g, l_, n, theta) + theta * (1 - theta))
    num = g - l_ - n * theta
    with np.errstate(divide="ignore", invalid="ignore"):
        # no variance under H0 happens only on its boundary (theta -1, 0 or 1 with no item moved that way)
        edge = np.where(np.abs(num) < 1e-12, 0.0, np.sign(num) * np.inf)
        z = np.where(var > 1e-300, num / np.sqrt(np.maximum(var, 1e-300)), edge)
    return float(z) if z.ndim == 0 else z


def tango_bound(gained: int, lost: int, n: int, alpha: float, side: str = "lower") -> float:
    """One-sided (1 - alpha) confidence bound of P(tuned right) - P(base right) by inverting Tango's test:
    the theta at which the one-sided score test rejects at exactly alpha."""
    if side == "upper":
        return -tango_bound(lost, gained, n, alpha, "lower")
    estimate, z, lo = (gained - lost) / n, float(sps.norm.isf(alpha)), -1.0 + 1e-12
    if estimate <= lo or tango_z(gained, lost, n, lo) < z:
        return -1.0
    return float(brentq(lambda t: tango_z(gained, lost, n, t) - z, lo, estimate, xtol=1e-10))


def tango_ci(gained: int, lost: int, n: int, level: float = CI_LEVEL) -> list[float]:
    """Two-sided Tango score interval of the paired difference."""
    tail = (1 - level) / 2
    return [tango_bound(gained, lost, n, tail, "lower"), tango_bound(gained, lost, n, tail, "upper")]


def tango_pvalue(gained: int, lost: int, n: int) -> float:
    """Two-sided score p-value of "no difference" (at theta 0 Tango's statistic is McNemar's (g - l)/sqrt(g + l)):
    below 1 - level exactly when tango_ci excludes 0."""
    if gained + lost == 0:
        return 1.0
    return float(2 * sps.norm.sf(abs(tango_z(gained, lost, n, 0.0))))


# The score test is asymptotic: at the margin it passes more often than alpha at small n with many items moving
# both ways (measured by enumeration: reports/bench.md, bench/stats_oc.py). The gate's non-inferiority decision therefore takes the
# exact unconditional p-value (Suissa & Shuster's construction): the probability, maximised over the nuisance
# parameter (how many items move) on the null boundary, of a table at least as extreme by Tango's statistic.
# It holds alpha at every n; the enumeration is O(n^2) tables, so above EXACT_MAX_N the asymptotic p is used
# (where the excess has vanished).
EXACT_MAX_N = 1000
NUISANCE_GRID = 41


@functools.lru_cache(maxsize=64)
def _exact_tail(n: int, theta0: float) -> tuple[np.ndarray, np.ndarray]:
    """(Tango statistics of every table sorted descending, sup over the nuisance of P(Z >= that statistic))."""
    g = np.concatenate([np.full(n + 1 - k, k) for k in range(n + 1)]).astype(float)
    lost = np.concatenate([np.arange(n + 1 - k) for k in range(n + 1)]).astype(float)
    z = tango_z(g, lost, n, theta0)
    order = np.argsort(-z, kind="stable")
    g, lost, z = g[order], lost[order], z[order]
    log_coef = gammaln(n + 1) - gammaln(g + 1) - gammaln(lost + 1) - gammaln(n - g - lost + 1)
    sup = np.zeros_like(z)
    # on the null boundary P(gained) - P(lost) = theta0: P(gained) = p, P(lost) = p - theta0, p + P(lost) <= 1
    p_lo, p_hi = max(0.0, theta0), (1 + theta0) / 2
    for p in np.linspace(p_lo, p_hi, NUISANCE_GRID):
        q = p - theta0
        rest = max(1 - p - q, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = log_coef + xlogy(g, p) + xlogy(lost, q) + xlogy(n - g - lost, rest)
        np.maximum(sup, np.cumsum(np.exp(logp)), out=sup)
    return z, sup


def grid_margin(margin: float) -> float:
    """The margin rounded down to 1e-4, so that nearby margins (a relative margin moves with the base score) share
    one cached null distribution: a smaller margin is the stricter test."""
    return math.floor(margin * 1e4 + 1e-9) / 1e4


def noninferiority_pvalue_binary(gained: int, lost: int, n: int, margin: float) -> float:
    """One-sided p-value of H0 "P(tuned right) - P(base right) <= -margin" for paired 0/1 outcomes: exact
    unconditional (Tango-ordered) up to EXACT_MAX_N items, the asymptotic score test above."""
    if n > EXACT_MAX_N:
        return float(sps.norm.sf(tango_z(gained, lost, n, -margin)))
    theta0 = -grid_margin(margin)  # the observed table is ordered by the same statistic as every other one
    z, sup = _exact_tail(n, theta0)
    z_obs = tango_z(gained, lost, n, theta0)
    # every table at least as extreme as the observed one (ties included)
    k = int(np.searchsorted(-z, -z_obs + 1e-9, side="right"))
    return float(min(1.0, sup[k - 1])) if k else 1.0


# ---------------------------------------------------------------- the gate's decisions (one-sided)
# They take sufficient statistics, not items, so they run on reports/eval_compare.json alone. 0/1 metrics use the
# discordant counts (exact McNemar for a gain, exact Tango-ordered test for non-inferiority); other metrics the
# paired t distribution. A result with no spread has no t statistic: there the sign-flip test's p = 2^-n stands in
# (every item moved the same way: the smallest p any distribution-free paired test can give n items).


def _t_scale(n: int, sd: float) -> float:
    return sd / math.sqrt(n)


def gain_pvalue(*, n: int, delta: float, diff_sd: float, gained: int | None, lost: int | None) -> float:
    """One-sided p-value of "tuned is better than base": exact McNemar for 0/1 metrics (gained/lost given),
    else the paired t-test. Identical items carry no evidence: p = 1."""
    if gained is not None and lost is not None:
        return mcnemar_from_counts(gained, lost, alternative="greater")
    if n < 2 or diff_sd == 0:
        return 0.5**n if delta > 0 else 1.0
    return float(sps.t.sf(delta / _t_scale(n, diff_sd), df=n - 1))


def noninferiority_pvalue(
    *, n: int, delta: float, diff_sd: float, margin: float, gained: int | None = None, lost: int | None = None
) -> float:
    """One-sided p-value of H0 "tuned is worse than base by `margin` or more": below alpha, the drop is shown to
    be smaller than the margin. 0/1 metrics: noninferiority_pvalue_binary; others: paired t of delta vs -margin."""
    if gained is not None and lost is not None:
        return noninferiority_pvalue_binary(gained, lost, n, margin)
    if n < 2 or diff_sd == 0:
        return 0.5**n if delta > -margin else 1.0
    return float(sps.t.sf((delta + margin) / _t_scale(n, diff_sd), df=n - 1))


def min_items_gain(alpha: float) -> int:
    """Fewest items on which a gain can be significant at all: every item gained gives p = 2^-n."""
    return math.floor(math.log2(1 / alpha)) + 1


@functools.lru_cache(maxsize=256)
def min_items_noninferiority(margin: float, alpha: float, binary: bool, start: int = 1) -> int:
    """Fewest items on which an unchanged model (no item moved) is shown non-inferior at this margin: below it,
    no result can pass, so the gate cannot judge. 0/1: about z^2 (1 - margin) / margin (73 at 5%, 150 at 2.5%)."""
    if not binary:
        return min_items_gain(alpha)
    if margin <= 0:
        raise ValueError(f"margin {margin} must be > 0")
    guess = sps.norm.isf(alpha) ** 2 * (1 - margin) / margin  # the asymptotic answer; the exact one is near it
    n = max(start, math.floor(guess * 0.9))
    while noninferiority_pvalue_binary(0, 0, n, margin) >= alpha:
        n += 1
    return n
