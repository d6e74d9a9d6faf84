"""Training overhead: the `train` stage (accelerate launch, validation, metrics, MLflow) against
bench/reference_train.py (plain Trainer + peft) on the same model, data, steps and seed.

Run:  python bench/train_overhead.py [--repeats 3]

Two ratios: whole process (what a user waits for, fixed costs included: launcher, imports, MLflow) and the
training loop alone (Trainer runtime of each). Target: ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common import Row, fresh_repo, sh, summarise


def run(repeats: int, repo: Path | None = None) -> list[Row]:
    own = repo is None
    repo = repo or fresh_repo()
    try:
        sh(["dvc", "repro", "prepare"], repo)
        ours_wall, ref_wall, ours_loop, ref_loop, ours_tps, ref_tps, ours_mem, ref_mem = ([] for _ in range(8))
        for _ in range(repeats):
            wall, _ = sh(["accelerate", "launch", "--config_file", "configs/accelerate/cpu.yaml", "-m", "llmops.train"],
                         repo)
            perf = json.loads((repo / "reports/train_perf.json").read_text())
            ours_wall.append(wall)
            ours_loop.append(perf["runtime_s"])
            ours_tps.append(perf["tokens_per_s"])
            ours_mem.append(perf["peak_rss_mb"])
            out = tempfile.mkdtemp(prefix="ref-train-")
            wall, proc = sh(["python", str(Path(__file__).parent / "reference_train.py"), "--base", "models/base",
                             "--data", "data/prepared/train.jsonl", "--out", out], repo)
            shutil.rmtree(out, ignore_errors=True)
            ref = json.loads(proc.stdout.strip().splitlines()[-1])
            ref_wall.append(wall)
            ref_loop.append(ref["train_runtime_s"])
            ref_tps.append(ref["tokens"] / ref["train_runtime_s"])
            ref_mem.append(ref["peak_rss_mb"])
        return [
            summarise("train", "ours: stage wall (accelerate launch)", ours_wall, "s"),
            summarise("train", "reference: script wall", ref_wall, "s"),
            summarise("train", "wall ratio ours/reference", [a / b for a, b in zip(ours_wall, ref_wall)], "ratio",
                      "<= 1.1", lambda v: v <= 1.1),
            summarise("train", "training-loop ratio ours/reference", [a / b for a, b in zip(ours_loop, ref_loop)],
                      "ratio", "<= 1.1", lambda v: v <= 1.1),
            summarise("train", "ours: tokens/s (loop)", ours_tps, "tok/s"),
            summarise("train", "reference: tokens/s (loop)", ref_tps, "tok/s"),
            summarise("train", "ours: peak RSS", ours_mem, "MB"),
            summarise("train", "reference: peak RSS", ref_mem, "MB"),
        ]
    finally:
        if own:
            shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    run(parser.parse_args().repeats)
