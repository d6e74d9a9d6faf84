"""Operating characteristics of the gate's statistics: how often each rule passes, measured by simulation.

Run:  python bench/stats_oc.py               (the full grid, ~5 min on a 2-core CPU; prints a Markdown table)
      python bench/stats_oc.py --reps 500    (a quicker, noisier pass)
      python bench/stats_oc.py --write       (also replace the "Statistics: operating characteristics" section of
                                              reports/bench.md)

Each cell simulates paired per-item outcomes, scores them with the evaluate stage's `stats.compare` and decides
with the gate's own rule functions (`gate.regression_rule`, `gate.gain_rule`, `gate.too_few_items`) under the
shipped params with `gate.regression_min_ratio: 0.95` (the stricter margin) and `gate.alpha: 0.025`. A model whose
true loss is at (or beyond) the margin, or whose true gain is zero, must pass at most alpha of the time: the
`size ok` column checks the pass rate against alpha plus two Monte Carlo standard errors. Cells where the task is
too small for any result to pass count as "could not judge" (never a pass).

The model of an item: the base is right with probability `base`; the tuned model loses each base-right item with
probability q_lost and gains each base-wrong item with probability q_gained ("churn"), so the true difference is
(1 - base) q_gained - base q_lost. Graded (non-0/1) metrics draw base scores uniformly on [0.25, 0.75] and move each by
the true difference plus N(0, 0.1) noise (clipped to [0, 1], which at these values almost never binds).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llmops import gate, stats  # noqa: E402
from llmops.config import load_params  # noqa: E402
from llmops.schemas import TaskComparison  # noqa: E402

SECTION = "## Statistics: operating characteristics"
ALPHA = 0.025
RATIO = 0.95


def params():
    p = load_params(ROOT / "params.yaml")
    g = p.gate.model_copy(update={"alpha": ALPHA, "regression_min_ratio": RATIO, "regression_rule": "noninferiority"})
    return p.model_copy(update={"gate": g})


def draw(rng, n: int, base: float, q_lost: float, q_gained: float, graded: bool, shift: float):
    if graded:
        # scores in [0.25, 0.75] and noise sd 0.1: clipping at 0 or 1 (which would move the mean) is rare
        b = rng.uniform(0.25, 0.75, n)
        return b, np.clip(b + shift + rng.normal(0, 0.1, n), 0, 1)
    b = (rng.random(n) < base).astype(float)
    u = rng.random(n)
    t = np.where(b == 1, (u >= q_lost).astype(float), (u < q_gained).astype(float))
    return b, t


def cell(p, rule: str, n: int, base: float, true_delta: float, churn: float, reps: int, seed: int, graded=False):
    """(pass rate, its standard error, could-not-judge rate) of one rule over `reps` simulated evaluations."""
    rng = np.random.default_rng(seed)
    # solve for the flip probabilities that give the true difference at this churn (gains on base-wrong items)
    q_gained = churn if base < 1 else 0.0
    q_lost = ((1 - base) * q_gained - true_delta) / base if base > 0 else 0.0
    if not 0 <= q_lost <= 1:
        raise ValueError(f"n {n} base {base} delta {true_delta} churn {churn}: no such model (q_lost {q_lost:.3f})")
    kind = "regression" if rule == "regression" else "domain"
    passes = undecided = 0
    for _ in range(reps):
        b, t = draw(rng, n, base, q_lost, q_gained, graded, true_delta)
        task = TaskComparison(kind=kind, metric="m", **stats.compare(b, t, samples=100, seed=0))
        test = "noninferiority" if rule == "regression" else "gain"
        if gate.too_few_items(p, "t", task, test):
            undecided += 1
            continue
        decided = gate.regression_rule(p, "t", task) if rule == "regression" else gate.gain_rule(p, "t", task)
        passes += decided.passed
    rate = passes / reps
    return rate, math.sqrt(max(rate * (1 - rate), 1e-12) / reps), undecided / reps


def grid(quick: bool = False):
    """(rule, n, base, true loss as a multiple of the margin or true gain, churn, graded) rows."""
    ns = [20, 50, 100, 200, 500, 1000] if not quick else [20, 100, 500]
    rows = []
    for n in ns:
        for base in (1.0, 0.8, 0.5):
            for churn in (0.0, 0.2) if base < 1 else (0.0,):
                for at in (1.0, 1.5, 0.5, 0.0):  # at and above the margin (size), below it and no loss (power)
                    rows.append(
                        ("regression", n, base, -at * (1 - RATIO) * base, churn, False, f"loss {at:g} x margin")
                    )
        for base, churn in ((0.0, 0.0), (0.5, 0.2)):
            for gain in (0.0, 0.05, 0.1):
                # a true gain of 0 at base 0 is a model that never moves: nothing to test; start base 0 at 0.05
                if base == 0.0 and gain == 0.0:
                    continue
                rows.append(("gain", n, max(base, 1e-9) if base else 1e-9, gain, churn, False, f"gain {gain:g}"))
    for n in ns:  # graded metrics: the paired t
        for at in (1.0, 0.0):
            rows.append(("regression", n, 0.5, -at * (1 - RATIO) * 0.5, 0.0, True, f"graded, loss {at:g} x margin"))
        rows.append(("gain", n, 0.5, 0.0, 0.0, True, "graded, gain 0"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="fewer sizes")
    ap.add_argument("--write", action="store_true", help="write the table into reports/bench.md")
    args = ap.parse_args()
    p = params()
    lines = [
        "| rule | n | base | truth | churn | pass rate ± MC se | could not judge | size ok |",
        "|---|---:|---:|---|---:|---|---:|---|",
    ]
    worst = 0.0
    for i, (rule, n, base, truth, churn, graded, label) in enumerate(grid(args.quick)):
        if rule == "gain" and not graded and base < 1e-6:
            base_shown = 0.0
            # base 0: every tuned right answer is a gain; the "gain" is P(tuned right)
            rate, se, undecided = cell_gain_from_zero(p, n, truth, args.reps, seed=i)
        else:
            base_shown = base
            rate, se, undecided = cell(p, rule, n, base, truth, churn, args.reps, seed=i, graded=graded)
        null = (rule == "regression" and label.split("loss ")[-1][:3] in ("1 x", "1.5")) or truth == 0.0
        null = null and not (rule == "regression" and "0 x" in label)
        ok = "" if not null else ("yes" if rate <= ALPHA + 2 * se else "**NO**")
        if null:
            worst = max(worst, rate)
        lines.append(
            f"| {rule} | {n} | {base_shown:g} | {label} | {churn:g} | {rate:.4f} ± {se:.4f} | {undecided:.2f} | {ok} |"
        )
        print(lines[-1], flush=True)
    summary = (
        f"\nWorst pass rate where the truth is at or beyond the margin (or no gain): {worst:.4f} (alpha {ALPHA}); "
        f"{args.reps} simulated evaluations a cell."
    )
    print(summary)
    if args.write:
        write_section("\n".join(lines) + "\n" + summary, args.reps)


def cell_gain_from_zero(p, n: int, gain: float, reps: int, seed: int):
    """The gain rule when the base gets nothing right (the demo's triage_gen): tuned right with P = gain."""
    rng = np.random.default_rng(seed)
    passes = undecided = 0
    for _ in range(reps):
        b, t = np.zeros(n), (rng.random(n) < gain).astype(float)
        task = TaskComparison(kind="domain", metric="m", **stats.compare(b, t, samples=100, seed=0))
        if gate.too_few_items(p, "t", task, "gain"):
            undecided += 1
            continue
        passes += gate.gain_rule(p, "t", task).passed
    rate = passes / reps
    return rate, math.sqrt(max(rate * (1 - rate), 1e-12) / reps), undecided / reps


def write_section(table: str, reps: int) -> None:
    path = ROOT / "reports" / "bench.md"
    text = path.read_text()
    body = (
        f"{SECTION}\n\n`python bench/stats_oc.py --reps {reps} --write`: pass rates of the gate's rules on simulated "
        f"paired outcomes (margin {1 - RATIO:.0%} of the base score, alpha {ALPHA}). Rows marked *size ok* are "
        "where the truth is at or beyond the margin (or no gain): the pass rate there must not exceed alpha.\n\n"
        f"{table}\n"
    )
    pattern = re.compile(rf"{re.escape(SECTION)}\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(body, text) if pattern.search(text) else text.rstrip() + "\n\n" + body
    path.write_text(text)


if __name__ == "__main__":
    main()
