"""Agreement of the judge with human scores on data/judge_calibration.jsonl, which decides `calibrated`.

Quadratic-weighted Cohen's kappa (scikit-learn's `cohen_kappa_score(weights="quadratic")`) over the items
the judge scored validly, plus exact / adjacent agreement over all items (an unscored item agrees with
nobody). Calibrated needs all of: kappa >= judge.min_calibration_kappa, at least
judge.min_calibration_valid valid items, and at least judge.min_calibration_valid_share of them valid;
a kappa from a handful of items is too noisy to let judge rules bind (4 of 20 gave kappa 0.67 for a judge
that never read the answers).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from llmops.artifacts import read_jsonl
from llmops.config import Judge
from llmops.errors import DataError
from llmops.judge.items import Item
from llmops.judge.rubric import Rubric


def quadratic_kappa(a: list[int], b: list[int], lo: int, hi: int) -> float | None:
    """Cohen's kappa with quadratic weights on the scale lo..hi; None when undefined (no variation)."""
    import warnings

    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b) or len(a) < 2:
        return None
    with warnings.catch_warnings():  # 0/0 when neither rater varies: sklearn warns and returns nan
        warnings.simplefilter("ignore")
        kappa = float(cohen_kappa_score(a, b, weights="quadratic", labels=list(range(lo, hi + 1))))
    return None if math.isnan(kappa) else kappa


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def calibration_summary(records: list[dict], rubrics: dict[str, Rubric], cfg: Judge) -> dict[str, Any]:
    by_item: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["kind"] == "calibration":
            entry = by_item.setdefault((r["rubric"], r["id"]), {"human": r["human_score"], "scores": []})
            if r["valid"]:
                entry["scores"].append(r["score"])
    n = len(by_item)
    human, judged = [], []
    for entry in by_item.values():
        if entry["scores"]:
            human.append(entry["human"])
            judged.append(int(math.floor(sum(entry["scores"]) / len(entry["scores"]) + 0.5)))
    lo = min(r.spec.scale.min for r in rubrics.values())
    hi = max(r.spec.scale.max for r in rubrics.values())
    kappa = quadratic_kappa(human, judged, lo, hi)
    exact = sum(h == j for h, j in zip(human, judged, strict=True)) / n if n else 0.0
    adjacent = sum(abs(h - j) <= 1 for h, j in zip(human, judged, strict=True)) / n if n else 0.0
    valid, share = len(human), (len(human) / n if n else 0.0)
    counts = f"{valid}/{n} valid calibration judgments"
    if valid < cfg.min_calibration_valid or share < cfg.min_calibration_valid_share:
        reason = (
            f"{counts}: fewer than judge.min_calibration_valid {cfg.min_calibration_valid} or below "
            f"judge.min_calibration_valid_share {cfg.min_calibration_valid_share}, too few to trust an "
            f"agreement figure (kappa {_fmt(kappa)}); judge rules are advisory"
        )
    elif kappa is None:
        reason = f"{counts} but no variation to compare: agreement is unknown, so judge rules are advisory"
    elif kappa < cfg.min_calibration_kappa:
        reason = (
            f"weighted kappa {kappa:.2f} < judge.min_calibration_kappa {cfg.min_calibration_kappa} ({counts}, "
            f"exact {exact:.0%}, adjacent {adjacent:.0%}): the judge disagrees with humans, so judge rules "
            "are advisory"
        )
    else:
        reason = (
            f"weighted kappa {kappa:.2f} >= judge.min_calibration_kappa {cfg.min_calibration_kappa} on "
            f"{counts}: judge rules can bind"
        )
    return {
        "n": n,
        "n_valid": valid,
        "valid_share": _r(share),
        "kappa": _r(kappa),
        "exact": _r(exact),
        "adjacent": _r(adjacent),
        "min_kappa": cfg.min_calibration_kappa,
        "min_valid": cfg.min_calibration_valid,
        "min_valid_share": cfg.min_calibration_valid_share,
        "calibrated": reason.endswith("can bind"),
        "reason": reason,
    }


def _fmt(kappa: float | None) -> str:
    return "undefined" if kappa is None else f"{kappa:.2f}"


def load_calibration(path: Path, rubrics: dict[str, Rubric]) -> list[Item]:
    items, seen = [], {}
    default = next(iter(rubrics))
    for lineno, row in read_jsonl(path):
        for name in ("id", "prompt", "answer"):
            if not isinstance(row.get(name), (str, int)) or (
                isinstance(row[name], str) and not row[name].strip() and name != "answer"
            ):
                raise DataError(path, "missing or not a string", lineno, name)
        rubric = rubrics.get(row.get("rubric", default))
        if rubric is None:
            raise DataError(
                path, f"rubric {row.get('rubric')!r} is not in judge.rubrics {list(rubrics)}", lineno, "rubric"
            )
        human = row.get("human_score")
        if not isinstance(human, int) or isinstance(human, bool) or not rubric.valid_score(human):
            raise DataError(
                path, f"must be an integer in {rubric.spec.scale.min}..{rubric.spec.scale.max}", lineno, "human_score"
            )
        if str(row["id"]) in seen:
            raise DataError(path, f"duplicate id {row['id']!r} (first on line {seen[str(row['id'])]})", lineno, "id")
        seen[str(row["id"])] = lineno
        items.append(
            Item(
                "calibration",
                str(row["id"]),
                "calibration",
                rubric,
                str(row["prompt"]),
                str(row["answer"]),
                row.get("reference"),
                human,
            )
        )
    return items
