"""Paired statistics for base-vs-tuned comparisons over the same evaluation items (pure functions).

Both models answer the same items, so every comparison is paired: resampling items (not models) keeps
each item's base and tuned score together, which removes the item-difficulty variance an unpaired test
would leave in. Used by `evaluate` (eval_compare.json) and reusable by any stage comparing two runs.

- `bootstrap_indices`: the seeded item resamples every CI in one comparison shares.
- `delta_ci` / `ratio_ci`: percentile CIs of mean(tuned) - mean(base) and mean(tuned) / mean(base).
- `mcnemar_exact`: exact McNemar test for paired 0/1 outcomes (scipy's binomial test on discordant pairs).
- `paired_bootstrap_pvalue`: two-sided p-value of "mean difference = 0" for any per-item metric.
- `compare`: all of the above for one task, in the shape of reports/eval_compare.json, plus the
  sufficient statistics (n, mean and standard deviation of the per-item differences, gained/lost counts)
  the gate's decisions need, so the gate re-decides from eval_compare.json alone when only its own
  thresholds change.
- `gain_pvalue` / `diff_lower_bound` / `noninferiority_pvalue`: the gate's one-sided decisions from those
  sufficient statistics (exact McNemar for 0/1 metrics, the paired t distribution otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

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


def delta_ci(base, tuned, samples: int, seed: int, level: float = CI_LEVEL) -> list[float]:
    """Percentile CI of mean(tuned) - mean(base) over paired item resamples."""
    b, t = _pair(base, tuned)
    idx = bootstrap_indices(b.size, samples, seed)
    return _percentile_ci((t - b)[idx].mean(axis=1), level)


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
        raise ValueError("McNemar needs 0/1 outcomes; use paired_bootstrap_pvalue for other metrics")
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


def paired_bootstrap_pvalue(base, tuned, samples: int, seed: int) -> float:
    """Two-sided p-value of H0 "mean difference = 0" by the paired bootstrap.

    The resampled mean differences are shifted to mean 0 (imposing H0); p is the share of them at least
    as far from 0 as the observed difference, with the +1 correction so p is never exactly 0.
    """
    b, t = _pair(base, tuned)
    diff = t - b
    observed = diff.mean()
    idx = bootstrap_indices(b.size, samples, seed)
    null = diff[idx].mean(axis=1) - observed
    # a tolerance so float noise in a resample equal to the observed value still counts as "as extreme"
    extreme = int((np.abs(null) >= abs(observed) - 1e-12).sum())
    return float((extreme + 1) / (samples + 1))


def is_binary(*scores: Sequence[float]) -> bool:
    return all(np.isin(np.asarray(s, dtype=float), (0, 1)).all() for s in scores)


def compare(base, tuned, *, samples: int, seed: int) -> dict:
    """One task's paired comparison, keys as in reports/eval_compare.json (minus kind/metric).

    The ratio is shown for readers (null when the base scores 0); the gate decides on the paired
    difference's sufficient statistics (`diff_sd`, `gained`/`lost`), never on this file's judgement.
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
        "delta_ci": delta_ci(b, t, samples, seed),
        "ratio": tuned_mean / base_mean if base_mean > 0 else None,
        "ratio_ci": ratio_ci(b, t, samples, seed) if base_mean > 0 else None,
        "diff_sd": float(diff.std(ddof=1)) if b.size > 1 else 0.0,
        "binary": binary,
        "gained": gained,
        "lost": lost,
        "p_value": mcnemar_from_counts(gained, lost) if binary else paired_bootstrap_pvalue(b, t, samples, seed),
        "test": "mcnemar_exact" if binary else "paired_bootstrap",
    }


# ---------------------------------------------------------------- the gate's decisions (one-sided)
# They take sufficient statistics, not items, so they run on reports/eval_compare.json alone.


def _t_scale(n: int, sd: float) -> float:
    return sd / math.sqrt(n)


def gain_pvalue(*, n: int, delta: float, diff_sd: float, gained: int | None, lost: int | None) -> float:
    """One-sided p-value of "tuned is better than base": exact McNemar for 0/1 metrics (gained/lost
    given), else the paired t-test. Identical items carry no evidence: p = 1."""
    if gained is not None and lost is not None:
        return mcnemar_from_counts(gained, lost, alternative="greater")
    if n < 2 or diff_sd == 0:
        return 0.0 if delta > 0 and n >= 2 else 1.0
    return float(sps.t.sf(delta / _t_scale(n, diff_sd), df=n - 1))


def diff_lower_bound(*, n: int, delta: float, diff_sd: float, alpha: float) -> float:
    """One-sided (1 - alpha) lower confidence bound of the mean paired difference (paired t interval).
    With no spread (every item moved alike, e.g. no discordant pair) the bound is the difference itself."""
    if n < 2 or diff_sd == 0:
        return delta
    return float(delta - sps.t.ppf(1 - alpha, df=n - 1) * _t_scale(n, diff_sd))


def noninferiority_pvalue(*, n: int, delta: float, diff_sd: float, margin: float) -> float:
    """One-sided p-value of H0 "tuned is worse than base by `margin` or more" (the paired t-test of
    delta against -margin): below alpha, the drop is shown to be smaller than the margin."""
    if n < 2 or diff_sd == 0:
        return 0.0 if delta > -margin else 1.0
    return float(sps.t.sf((delta + margin) / _t_scale(n, diff_sd), df=n - 1))
