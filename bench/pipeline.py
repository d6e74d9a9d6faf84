"""Pipeline cost: `dvc repro` from scratch, the no-op rerun, a gate-threshold change, a training-param change.

Run:  python bench/pipeline.py [--repeats 2]

Targets on a 2-core CPU: from scratch < 480 s (base pretrains 4000 steps, ~5 min), no-op < 1.5 s, gate change < 10 s (only gate and report
rerun), second experiment (one train param) < 60% of the first run (eval_base must come from cache).
"""

from __future__ import annotations

import argparse
import shutil

from common import Row, fresh_repo, sh, stages_run, summarise


def run(repeats: int) -> list[Row]:
    scratch, noop, gate, exp, ratio, reran_gate, reran_exp = [], [], [], [], [], set(), set()
    for i in range(repeats):
        repo = fresh_repo()
        try:
            wall, _ = sh(["dvc", "repro"], repo)
            scratch.append(wall)
            for _ in range(3):
                noop.append(sh(["dvc", "repro"], repo)[0])
            # a reviewer tightening one threshold: edit params.yaml, dvc repro
            params = repo / "params.yaml"
            params.write_text(params.read_text().replace("  domain_min: ", f"  domain_min: 0.1{i}  # was ", 1))
            wall, proc = sh(["dvc", "repro"], repo)
            gate.append(wall)
            reran_gate |= set(stages_run(proc.stdout))
            wall, proc = sh(["dvc", "exp", "run", "-S", f"train.learning_rate=0.00{2 + i}"], repo)
            exp.append(wall)
            ratio.append(wall / scratch[-1])
            reran_exp |= set(stages_run(proc.stdout))
        finally:
            shutil.rmtree(repo, ignore_errors=True)
    rows = [
        summarise("pipeline", "dvc repro from scratch", scratch, "s", "< 480 s", lambda v: v < 480),
        summarise("pipeline", "no-op dvc repro", noop, "s", "< 1.5 s", lambda v: v < 1.5),
        summarise(
            "pipeline",
            f"gate threshold change (reran: {', '.join(sorted(reran_gate))})",
            gate,
            "s",
            "< 10 s, only gate+report",
            lambda v: v < 10 and reran_gate <= {"gate", "report"},
        ),
        summarise(
            "pipeline",
            f"train param change (reran: {', '.join(sorted(reran_exp))})",
            exp,
            "s",
            "eval_base cached",
            lambda v: "eval_base" not in reran_exp and "base" not in reran_exp,
        ),
        summarise("pipeline", "second experiment / first run", ratio, "ratio", "< 0.60", lambda v: v < 0.6),
    ]
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    run(parser.parse_args().repeats)
