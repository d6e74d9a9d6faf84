"""Gate stability: does the verdict survive the training seed, and does forgetting always fail?

Run:  python bench/gate_stability.py               (10 seeds x 2 configs, ~25 min on a 2-core CPU)
      python bench/gate_stability.py --seeds 3     (a smoke run)
      python bench/gate_stability.py --cache-dir .dvc/cache   (reuse this repo's built base via the run-cache)
      python bench/gate_stability.py --profile smollm2 --seeds 3   (the real model, ~45 min; its own section)
      python bench/gate_stability.py --seed-list 2,3,0 --only default --no-write \
          --set base.tiny.pretrain_steps=2000 --set gate.regression_rule=noninferiority \
          --data-args="--fewer-facts --general-eval-size 40"   (a candidate, as in reports/bench.md "attempts")

For each of N training seeds it trains the demo with `dvc repro eval_tuned` in a fresh copy of the repo
(base, prepare and eval_base are built once and reused) and applies the gate's eval rules to the result
(`gate.eval_rules`, the same code `llmops gate` runs; the judge rules are left out: the demo's tiny judge
is uncalibrated, so they are advisory and cannot change the verdict). Two configs:
  - default:    params.yaml as shipped                 target: passes for >= 9 of 10 seeds
  - forgetting: train.learning_rate x10, epochs x3     target: fails for 10 of 10 seeds
Prints one line per run and writes the table into reports/bench.md (section "Gate stability", or
"Gate stability: profile <name>" with --profile, which applies profiles/<name>.yaml to the copy first).
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

from common import ROOT, Row, apply_profile, fresh_repo, set_params, sh, summarise  # noqa: E402

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


def detail(name: str, seed: int, result: str, why: list[str], compare: dict) -> str:
    """One markdown row: config, seed, verdict, and each task's base -> tuned (gained/lost items)."""
    cells = []
    for row in compare.values():
        moved = f" +{row['gained']}/-{row['lost']}" if row.get("gained") is not None else ""
        cells.append(f"{row['base']:.3f} -> {row['tuned']:.3f}{moved}")
    failed = ", ".join(w.split(":", 1)[-1] for w in why) if result != "pass" else ""
    return f"| {name} | {seed} | {result} | {failed} | " + " | ".join(cells) + " |"


def run(
    seeds: list[int],
    cache_dir: Path | None = None,
    overrides: list[str] = (),
    data_args: str = "",
    only: str | None = None,
    profile: str | None = None,
    details: list[str] | None = None,
) -> list[Row]:
    repo = fresh_repo("gate-stability-")
    rows: list[Row] = []
    try:
        if profile:
            apply_profile(repo, profile)
        if overrides:
            set_params(repo / "params.yaml", list(overrides))
        if data_args:  # regrow the demo data in the copy (e.g. larger general sets)
            sh([sys.executable, "data/make_demo_data.py", *data_args.split()], repo)
        if cache_dir:  # DVC's run-cache then restores base/prepare/eval_base already built with these inputs
            sh(["dvc", "cache", "dir", str(cache_dir.resolve())], repo)
        sh(["dvc", "repro", "eval_base"], repo)  # base, prepare, eval_base: shared by every run below
        raw = yaml.safe_load((repo / "params.yaml").read_text())
        for name, change in configs(raw).items():
            if only and name != only:
                continue
            outcomes, walls = [], []
            for seed in seeds:
                params = yaml.safe_load((repo / "params.yaml").read_text())
                params["train"].update(change, seed=seed)
                (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                wall, _ = sh(["dvc", "repro", "eval_tuned"], repo)
                result, why = verdict(repo)
                compare = json.loads((repo / "reports/eval_compare.json").read_text())["tasks"]
                scores = ", ".join(f"{t} {row['tuned']:.3f}" for t, row in compare.items())
                print(f"{name:>10} seed {seed}: {result:<5} {why}  ({scores}; {wall:.0f} s)", flush=True)
                if details is not None:
                    if not details:
                        details += [
                            "| config | seed | verdict | failed rules | " + " | ".join(compare) + " |",
                            "|---" * (4 + len(compare)) + "|",
                        ]
                    details.append(detail(name, seed, result, why, compare))
                outcomes.append(result)
                walls.append(wall)
            passes = outcomes.count("pass")
            if name == "default":
                rows.append(
                    summarise(
                        "gate",
                        f"default config: passes of {len(seeds)} seeds",
                        [passes],
                        "runs",
                        f">= {0.9 * len(seeds):g}",
                        lambda v: v >= 0.9 * len(seeds),
                    )
                )
            else:
                rows.append(
                    summarise(
                        "gate",
                        f"forgetting (lr x10, epochs x3): fails of {len(seeds)} seeds",
                        [len(seeds) - passes],
                        "runs",
                        f"= {len(seeds)}",
                        lambda v: v == len(seeds),
                    )
                )
            rows.append(summarise("gate", f"{name}: train + eval_tuned per seed", walls, "s"))
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return rows


def write_section(rows: list[Row], path: Path, seeds: int, profile: str | None = None, details=()) -> None:
    from run_all import table

    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    heading = f"{SECTION}: profile {profile}" if profile else SECTION
    command = f"python bench/gate_stability.py --seeds {seeds}" + (f" --profile {profile}" if profile else "")
    what = f"profiles/{profile}.yaml" if profile else "the demo"
    section = (
        f"{heading}\n\n`{command}`: {what} trained under {seeds} seeds per config, gate eval rules applied "
        "to each result (base -> tuned per task, items gained/lost).\n\n" + table(rows) + "\n"
    )
    if details:
        section += "\n" + "\n".join(details) + "\n"
    pattern = re.compile(rf"{re.escape(heading)}\n.*?(?=\n## |\Z)", re.S)
    text = (
        pattern.sub(lambda _: section.rstrip("\n"), text)
        if heading + "\n" in text
        else text.rstrip("\n") + "\n\n" + section
    )
    path.write_text(text if text.endswith("\n") else text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench.md")
    parser.add_argument("--cache-dir", type=Path, help="a DVC cache to share (e.g. .dvc/cache of a built repo)")
    parser.add_argument("--seed-list", help="comma-separated training seeds (instead of 0..seeds-1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params override")
    parser.add_argument("--data-args", default="", help="arguments for data/make_demo_data.py in the copy")
    parser.add_argument("--only", choices=["default", "forgetting"], help="run one config")
    parser.add_argument("--profile", help="apply profiles/<name>.yaml first (e.g. smollm2, the real model)")
    parser.add_argument("--no-write", action="store_true", help="print only (for candidates)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    details: list[str] = []
    rows = run(seeds, args.cache_dir, args.set, args.data_args, args.only, args.profile, details)
    if args.no_write or args.set or args.data_args or args.only:  # the section describes the shipped default only
        print("not written: a candidate, not the shipped default")
        return
    write_section(rows, args.out, len(seeds), args.profile, details)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
