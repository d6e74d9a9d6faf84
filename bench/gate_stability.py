"""Gate stability: does the verdict survive the training seed, and does forgetting always fail?

Run:  python bench/gate_stability.py               (10 seeds x 2 configs, ~25 min on a 2-core CPU)
      python bench/gate_stability.py --seeds 3     (a smoke run)
      python bench/gate_stability.py --cache-dir .dvc/cache   (reuse this repo's built base via the run-cache)

For each of N training seeds it trains the demo with `dvc repro eval_tuned` in a fresh copy of the repo
(base, prepare and eval_base are built once and reused) and applies the gate's eval rules to the result
(`gate.eval_rules`, the same code `llmops gate` runs; the judge rules are left out: the demo's tiny judge
is uncalibrated, so they are advisory and cannot change the verdict). Two configs:
  - default:    params.yaml as shipped                 target: passes for >= 9 of 10 seeds
  - forgetting: train.learning_rate x10, epochs x3     target: fails for 10 of 10 seeds
Prints one line per run and writes the table into reports/bench.md (section "Gate stability").
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, Row, fresh_repo, sh, summarise  # noqa: E402

SECTION = "## Gate stability"


def configs(raw: dict) -> dict[str, dict]:
    lr, epochs = raw["train"]["learning_rate"], raw["train"]["epochs"]
    return {"default": {}, "forgetting": {"learning_rate": lr * 10, "epochs": epochs * 3}}


def verdict(repo: Path) -> tuple[str, list[str]]:
    """The gate's eval-rule verdict for the repo's current eval_compare.json (no judge rules)."""
    sys.path.insert(0, str(ROOT / "src"))
    import os

    from llmops import gate, schemas
    from llmops.config import load_params

    cwd = os.getcwd()
    os.chdir(repo)
    try:
        params = load_params()
        problems: list[str] = []
        compare = schemas.read(params.paths.report(schemas.EVAL_COMPARE), schemas.EvalComparison)
        rules = gate.eval_rules(params, compare, schemas.EVAL_COMPARE, problems)
    finally:
        os.chdir(cwd)
    failed = [r.rule for r in rules if r.binding and not r.passed]
    return ("error" if problems else "fail" if failed else "pass"), failed or problems


def run(seeds: int, cache_dir: Path | None = None) -> list[Row]:
    repo = fresh_repo("gate-stability-")
    rows: list[Row] = []
    try:
        if cache_dir:  # DVC's run-cache then restores base/prepare/eval_base already built with these inputs
            sh(["dvc", "cache", "dir", str(cache_dir.resolve())], repo)
        sh(["dvc", "repro", "eval_base"], repo)  # base, prepare, eval_base: shared by every run below
        raw = yaml.safe_load((repo / "params.yaml").read_text())
        for name, change in configs(raw).items():
            outcomes, walls = [], []
            for seed in range(seeds):
                params = yaml.safe_load((repo / "params.yaml").read_text())
                params["train"].update(change, seed=seed)
                (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                wall, _ = sh(["dvc", "repro", "eval_tuned"], repo)
                result, why = verdict(repo)
                compare = json.loads((repo / "reports/eval_compare.json").read_text())["tasks"]
                scores = ", ".join(f"{t} {row['tuned']:.3f}" for t, row in compare.items())
                print(f"{name:>10} seed {seed}: {result:<5} {why}  ({scores}; {wall:.0f} s)", flush=True)
                outcomes.append(result)
                walls.append(wall)
            passes = outcomes.count("pass")
            if name == "default":
                rows.append(
                    summarise(
                        "gate",
                        f"default config: passes of {seeds} seeds",
                        [passes],
                        "runs",
                        f">= {0.9 * seeds:g}",
                        lambda v: v >= 0.9 * seeds,
                    )
                )
            else:
                rows.append(
                    summarise(
                        "gate",
                        f"forgetting (lr x10, epochs x3): fails of {seeds} seeds",
                        [seeds - passes],
                        "runs",
                        f"= {seeds}",
                        lambda v: v == seeds,
                    )
                )
            rows.append(summarise("gate", f"{name}: train + eval_tuned per seed", walls, "s"))
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return rows


def write_section(rows: list[Row], path: Path, seeds: int) -> None:
    from run_all import table

    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    section = (
        f"{SECTION}\n\n`python bench/gate_stability.py --seeds {seeds}`: the demo trained under {seeds} "
        "seeds per config, gate eval rules applied to each result.\n\n" + table(rows) + "\n"
    )
    pattern = re.compile(rf"{re.escape(SECTION)}\n.*?(?=\n## |\Z)", re.S)
    text = (
        pattern.sub(lambda _: section.rstrip("\n"), text) if SECTION in text else text.rstrip("\n") + "\n\n" + section
    )
    path.write_text(text if text.endswith("\n") else text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench.md")
    parser.add_argument("--cache-dir", type=Path, help="a DVC cache to share (e.g. .dvc/cache of a built repo)")
    args = parser.parse_args()
    rows = run(args.seeds, args.cache_dir)
    write_section(rows, args.out, args.seeds)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
