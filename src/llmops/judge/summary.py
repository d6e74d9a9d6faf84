"""Per-rubric summaries of the judgments (means, bootstrap CIs, pass rates) and the score histogram CSV."""

from __future__ import annotations

import math
from typing import Any

from llmops.artifacts import csv_text
from llmops.config import Judge


def bootstrap_ci(values: list[float], samples: int, seed: int) -> list[float] | None:
    from llmops.stats import mean_ci

    ci = mean_ci(values, samples, seed)
    return None if ci is None else [round(v, 6) for v in ci]


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def item_scores(records: list[dict], kind: str, rubric: str, model: str) -> dict[str, list[float]]:
    """item id -> its valid repeat scores (an item with no valid repeat maps to [])."""
    scores: dict[str, list[float]] = {}
    for r in records:
        if r["kind"] == kind and r["rubric"] == rubric and r["model"] == model:
            scores.setdefault(r["id"], [])
            if r["valid"]:
                scores[r["id"]].append(r["score"])
    return scores


def summarise_model(scores: dict[str, list[float]], cfg: Judge, seed: int) -> dict[str, Any]:
    import numpy as np

    means = [sum(s) / len(s) for s in scores.values() if s]
    multi = [float(np.var(s, ddof=1)) for s in scores.values() if len(s) > 1]
    return {
        "mean": _r(sum(means) / len(means)) if means else None,
        "ci": bootstrap_ci(means, cfg.bootstrap_samples, seed),
        # an item with no valid judgment never passes: the denominator is every item
        "pass_rate": _r(sum(m >= cfg.pass_threshold for m in means) / len(scores)) if scores else 0.0,
        "n": len(scores),
        "n_valid": len(means),
        "repeat_var": _r(sum(multi) / len(multi)) if multi else None,
    }


def histogram_csv(records: list[dict], rubrics: list[str]) -> str:
    """Per rubric and model, how many eval items got each (rounded) score; `invalid` = no valid judgment.
    Long format with a `series` label, so dvc.yaml draws it as horizontal bars like the eval plots."""
    rows = []
    for rubric in rubrics:
        for model in ("tuned", "base"):
            counts: dict[str, int] = {}
            for scores in item_scores(records, "eval", rubric, model).values():
                bucket = str(int(math.floor(sum(scores) / len(scores) + 0.5))) if scores else "invalid"
                counts[bucket] = counts.get(bucket, 0) + 1
            numeric = sorted(int(k) for k in counts if k != "invalid")
            lo, hi = min([1, *numeric]), max([5, *numeric])
            for bucket in [*map(str, range(lo, hi + 1)), "invalid"]:
                label = f"{rubric} {model} {bucket}" if len(rubrics) > 1 else f"{model} {bucket}"
                rows.append([rubric, model, bucket, label, counts.get(bucket, 0)])
    return csv_text(["rubric", "model", "score", "series", "count"], rows)
