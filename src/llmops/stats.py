"""Paired statistics for base-vs-tuned comparisons over the same evaluation items (pure functions).

Both models answer the same items, so every comparison is paired: resampling items (not models) keeps
each item's base and tuned score together, which removes the item-difficulty variance an unpaired test
would leave in. Used by `evaluate` (eval_compare.json) and reusable by any stage comparing two runs.

- `bootstrap_indices`: the seeded item resamples every CI in one comparison shares.
- `delta_ci` / `ratio_ci`: percentile CIs of mean(tuned) - mean(base) and mean(tuned) / mean(base).
- `mcnemar_exact`: exact two-sided McNemar test for paired 0/1 outcomes (binomial on discordant pairs).
- `paired_bootstrap_pvalue`: two-sided p-value of "mean difference = 0" for any per-item metric.
- `compare`: all of the above for one task, in the shape of reports/eval_compare.json.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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


def mcnemar_exact(base, tuned) -> float:
    """Exact two-sided McNemar p-value for paired 0/1 outcomes.

    Only discordant items carry information: b = items only tuned got right, c = items only base got
    right. Under "no difference" each discordant item is a fair coin, so p = P(Binomial(b + c, 1/2) as
    or more extreme than observed), two-sided = 2 * the smaller tail, capped at 1.
    """
    b_arr, t_arr = _pair(base, tuned)
    if not np.isin(b_arr, (0, 1)).all() or not np.isin(t_arr, (0, 1)).all():
        raise ValueError("McNemar needs 0/1 outcomes; use paired_bootstrap_pvalue for other metrics")
    b = int(((b_arr == 0) & (t_arr == 1)).sum())
    c = int(((b_arr == 1) & (t_arr == 0)).sum())
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


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


def compare(base, tuned, *, samples: int, seed: int, near_zero_base: float) -> dict:
    """One task's paired comparison, keys as in reports/eval_compare.json (minus kind/metric).

    rule "ratio": base >= near_zero_base, forgetting is judged on tuned/base. rule "abs_delta": base is
    near 0, where a ratio explodes or is undefined, so ratio/ratio_ci are null and the delta decides.
    """
    b, t = _pair(base, tuned)
    base_mean, tuned_mean = float(b.mean()), float(t.mean())
    use_ratio = base_mean >= near_zero_base and base_mean > 0
    binary = is_binary(b, t)
    return {
        "n": int(b.size),
        "base": base_mean,
        "tuned": tuned_mean,
        "delta": tuned_mean - base_mean,
        "delta_ci": delta_ci(b, t, samples, seed),
        "ratio": tuned_mean / base_mean if use_ratio else None,
        "ratio_ci": ratio_ci(b, t, samples, seed) if use_ratio else None,
        "rule": "ratio" if use_ratio else "abs_delta",
        "p_value": mcnemar_exact(b, t) if binary else paired_bootstrap_pvalue(b, t, samples, seed),
        "test": "mcnemar_exact" if binary else "paired_bootstrap",
    }
