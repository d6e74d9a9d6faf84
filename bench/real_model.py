"""The real model from a fresh clone: `make install` then `make demo-real`, timed, with each stage's wall time.

Run:  python bench/real_model.py              (~15 min on a 2-core CPU; run it alone: nothing else on the machine)
      python bench/real_model.py --keep DIR   (clone into DIR and leave it, e.g. to deploy from it afterwards)

Clones this repository's committed HEAD (what a user gets), installs it the way the README says, runs the
real-model profile (profiles/smollm2.yaml) and reads DVC's output as it arrives: a stage's time runs from its
"Running stage" line to the next one, so it includes the stage's process start and DVC's own bookkeeping.
Target: install + demo-real <= 15 min (issue #23). Writes reports/bench.md section "Real model: make demo-real",
with base -> tuned per task and the gate's verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, env

SECTION = "## Real model: make demo-real"
TARGET_S = 15 * 60


def timed_lines(cmd: list[str], cwd: Path) -> tuple[float, list[tuple[float, str]]]:
    """Run cmd, return (wall, [(seconds since start, line)]) for every output line; raise if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    wall = time.perf_counter() - start
    if proc.wait():
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n" + "\n".join(t for _, t in lines[-60:]))
    return wall, lines


def stage_times(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """{stage: seconds} from DVC's "Running stage 'x':" lines (the last stage runs until the command ends)."""
    marks = [(t, m.group(1)) for t, text in lines if (m := re.match(r"Running stage '([^']+)'", text))]
    ends = [t for t, _ in marks[1:]] + [wall]
    return {name: end - t for (t, name), end in zip(marks, ends, strict=True)}


def results(repo: Path) -> tuple[list[str], str]:
    """Markdown rows base -> tuned per task, and the gate's verdict line."""
    compare = json.loads((repo / "reports/eval_compare.json").read_text())["tasks"]
    gate = json.loads((repo / "reports/gate.json").read_text())
    rows = [
        "| task | kind | n | metric | base | tuned | gained / lost | p (two-sided) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, r in compare.items():
        moved = f"+{r['gained']} / -{r['lost']}" if r.get("gained") is not None else ""
        p = f"{r['p_value']:.2g}" if r.get("p_value") is not None else ""
        rows.append(
            f"| `{task}` | {r['kind']} | {r['n']} | {r['metric']} | {r['base']:.3f} | {r['tuned']:.3f} | {moved} | {p} |"
        )
    failed = [r["rule"] for r in gate["rules"] if r["binding"] and not r["passed"]]
    verdict = f"gate: **{gate['verdict']}** (exit {gate['exit_code']}), {len(gate['rules'])} rules" + (
        f", failed: {', '.join(failed)}" if failed else ""
    )
    return rows, verdict


def write_section(text_rows: list[str], path: Path) -> None:
    """Replace the section whose heading is text_rows[0] in bench.md (or append it)."""
    heading = text_rows[0]
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    section = "\n".join(text_rows) + "\n"
    pattern = re.compile(rf"{re.escape(heading)}\n.*?(?=\n## |\Z)", re.S)
    text = (
        pattern.sub(lambda _: section.rstrip("\n"), text)
        if heading + "\n" in text
        else text.rstrip("\n") + "\n\n" + section
    )
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone here and keep it (default: a temp folder, removed)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    repo = args.keep or Path(tempfile.mkdtemp(prefix="real-model-")) / "repo"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        os.environ.clear()
        os.environ.update(clean)  # the clone's own .venv, not this one's
        install, _ = timed_lines(["make", "install"], repo)
        print(f"make install: {install:.0f} s", flush=True)
        demo, lines = timed_lines(["make", "demo-real"], repo)
        stages = stage_times(lines, demo)
        print(f"make demo-real: {demo:.0f} s; " + ", ".join(f"{s} {t:.0f} s" for s, t in stages.items()), flush=True)
        rows, verdict = results(repo)
        total = install + demo
        out = [
            SECTION,
            "",
            f"`python bench/real_model.py` (commit {head.stdout.strip()}, {time.strftime('%Y-%m-%d')}): a fresh "
            "clone, `make install`, `make demo-real` (profiles/smollm2.yaml), alone on the machine.",
            "",
            "| step | wall |",
            "|---|---|",
            f"| make install | {install:.0f} s |",
            *(f"| stage `{s}` | {t:.0f} s |" for s, t in stages.items()),
            f"| make demo-real (all stages) | {demo:.0f} s |",
            f"| **install + demo-real** | **{total / 60:.1f} min** (target <= {TARGET_S // 60} min: "
            f"{'met' if total <= TARGET_S else 'NOT met'}) |",
            "",
            *rows,
            "",
            verdict + ".",
        ]
        print("\n".join(out), flush=True)
        if not args.no_write:
            write_section(out, args.out)
            print(f"wrote {args.out}")
    finally:
        if not args.keep:
            shutil.rmtree(repo.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
