"""A newcomer's own domain on the real offline model: bake, drop in our own records, `make demo-real`, measure.

Run:  python bench/newcomer_domain.py                        (~16 min on a 2-core CPU; run it alone)
      python bench/newcomer_domain.py --exp "-S train.learning_rate=0.0005" --exp "..."   (then each experiment,
                                                             as `dvc exp run` in the bake; ~7 min each)

What a new user does (issue #26): bake this repository's committed HEAD for a 7-label bank ticket-routing domain
(answers "Route: <label>" then "Reply: <one sentence>", base smollm2-135m-instruct), replace the placeholder
train/eval data with bench/newcomer/*.jsonl (84 + 42 records of ordinary English we wrote, not the demo's), delete
the placeholder generator, commit, then `make demo-real` as the baked README says. Prints and writes (reports/
bench.md, section below) base -> tuned per task, items gained/lost and the gate's verdict, per experiment.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import BIN, ROOT, env
from real_model import stage_times, timed_lines, write_section

SECTION = "## A newcomer's domain: bank routing on SmolLM2"
DATA = ROOT / "bench/newcomer"
ANSWERS = {
    "project_name": "Bank Routing",
    "domain_name": "bank support tickets",
    "domain_description": "Route each customer message to the team that handles it and draft a one-sentence reply.",
    "labels": "card_lost,transfer_failed,card_declined,loan_inquiry,account_access,fraud_report,fee_dispute",
    "label_prefix": "Route",
    "detail_prefix": "Reply",
    "task_kind": "classify_and_act",
    "base_model": "smollm2-135m-instruct",
}


def bake(clone: Path, out: Path) -> Path:
    """cookiecutter with the answers above, our data in place of the placeholders, committed as a user would."""
    cmd = [str(BIN / "cookiecutter"), str(clone), "--directory", "template", "--no-input", "-o", str(out)]
    subprocess.run(cmd + [f"{k}={v}" for k, v in ANSWERS.items()], check=True, env=env(out))
    repo = out / "bank-routing"
    for name in ("train.jsonl", "eval.jsonl"):
        shutil.copy(DATA / name, repo / "data/raw" / name)
    for args in (["rm", "-q", "data/make_example_data.py"], ["add", "-A"], ["commit", "-qm", "Our own data"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env(repo))
    return repo


def scores(repo: Path, name: str) -> list[str]:
    """One markdown row per task: experiment, task, base -> tuned, gained / lost; then the verdict row."""
    compare = json.loads((repo / "reports/eval_compare.json").read_text())["tasks"]
    gate = json.loads((repo / "reports/gate.json").read_text())
    train = json.loads((repo / "reports/train.json").read_text())
    rows = [
        f"| {name} | `{task}` ({r['kind']}, n {r['n']}) | {r['base']:.3f} | {r['tuned']:.3f} | "
        f"+{r['gained']} / -{r['lost']} |"
        for task, r in compare.items()
    ]
    failed = [r["rule"] for r in gate["rules"] if r["binding"] and not r["passed"]]
    rules = f"failed: {', '.join(failed)}" if failed else f"{len(gate['rules'])} rules"
    rows.append(
        f"| {name} | **gate** ({train['steps']} steps, loss {train['loss_before']:.2f} -> {train['loss_after']:.2f}) "
        f"| | **{gate['verdict']}** | {rules} |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", action="append", default=[], help="a follow-up dvc exp run's -S options")
    parser.add_argument("--keep", type=Path, help="bake here and keep it (default: a temp folder, removed)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="newcomer-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        clone = work / "template"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True)
        repo = bake(clone, work / "baked")
        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        os.environ.clear()
        os.environ.update(clean)  # the bake's own .venv from here on
        install, _ = timed_lines(["make", "install"], repo)
        demo, lines = timed_lines(["make", "demo-real"], repo)
        stages = stage_times(lines, demo)
        print(f"make install {install:.0f} s; make demo-real {demo:.0f} s: {stages}", flush=True)
        rows = scores(repo, "`make demo-real`")
        venv = {"PATH": f"{repo / '.venv/bin'}{os.pathsep}{os.environ['PATH']}"}
        for i, options in enumerate(args.exp, 1):
            cmd = ["dvc", "exp", "run", "-n", f"followup-{i}", *shlex.split(options)]
            wall, _ = timed_lines(["env", *(f"{k}={v}" for k, v in venv.items()), *cmd], repo)
            print(f"{' '.join(cmd)}: {wall:.0f} s", flush=True)
            rows += scores(repo, f"`{options}`")
        out = [
            SECTION,
            "",
            f"`python bench/newcomer_domain.py{''.join(f' --exp {shlex.quote(o)}' for o in args.exp)}` (commit "
            f"{head.stdout.strip()}, {time.strftime('%Y-%m-%d')}): bake for bank ticket routing (7 labels, `Route:` "
            "/ `Reply:`, base smollm2-135m-instruct), our own 84 + 42 records (bench/newcomer/), `make install` "
            f"{install:.0f} s, `make demo-real` {demo:.0f} s; follow-ups are `dvc exp run` on top of it.",
            "",
            "| experiment | task | base | tuned | gained / lost |",
            "|---|---|---|---|---|",
            *rows,
        ]
        print("\n".join(out), flush=True)
        if not args.no_write:
            write_section(out, args.out)
            print(f"wrote {args.out}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
