"""Growth: stage time and peak memory as the training set (50, 200, 1000) and eval set (40, 200, 1000) grow.

Run:  python bench/growth.py [--train-sizes 50 200 1000] [--eval-sizes 40 200 1000]

Data comes from data/make_demo_data.py with bigger sizes; only raw train/eval files are swapped, so the base
model (built from the unlabelled corpus) stays cached and each size reruns prepare and the stages downstream.
The per-item cost (seconds per example) should stay flat: linear growth, not worse.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from common import ROOT, Row, fresh_repo, sh, summarise

EVAL_CMDS = {"eval_base": ["llmops", "eval-base"], "eval_tuned": ["llmops", "eval-tuned"]}


def swap_data(repo: Path, train_size: int, eval_size: int) -> None:
    gen = Path(tempfile.mkdtemp(prefix="growth-data-"))
    sh(
        [
            sys.executable,
            str(ROOT / "data/make_demo_data.py"),
            "--train-size",
            str(train_size),
            "--eval-size",
            str(eval_size),
            "--out",
            str(gen),
        ],
        repo,
    )
    for name in ("train.jsonl", "eval.jsonl"):
        shutil.copy(gen / "raw" / name, repo / "data/raw" / name)
    shutil.rmtree(gen, ignore_errors=True)


def timed_stage(repo: Path, cmd: list[str]) -> tuple[float, float]:
    wall, result = sh(cmd, repo)
    return wall, result.peak_rss_mb


def run(train_sizes: list[int], eval_sizes: list[int]) -> list[Row]:
    rows: list[Row] = []
    repo = fresh_repo()
    try:
        sh(["dvc", "repro", "prepare"], repo)  # builds the base once
        train_cmd = ["accelerate", "launch", "--config_file", "configs/accelerate/cpu.yaml", "-m", "llmops.train"]
        per_item = []
        for n in train_sizes:
            swap_data(repo, n, min(eval_sizes))
            sh(["llmops", "prepare"], repo)
            wall, mem = timed_stage(repo, train_cmd)
            per_item.append(wall / n)
            rows.append(summarise("growth", f"train stage, {n} examples (peak {mem:.0f} MB)", [wall], "s"))
        rows.append(
            summarise(
                "growth",
                "train s/example, largest vs smallest set",
                [per_item[-1] / per_item[0]],
                "ratio",
                "<= 1 (linear or better)",
                lambda v: v <= 1.0,
            )
        )
        per_item = []
        for n in eval_sizes:
            swap_data(repo, min(train_sizes), n)
            sh(["llmops", "prepare"], repo)
            sh(train_cmd, repo)
            base_wall, base_mem = timed_stage(repo, EVAL_CMDS["eval_base"])  # eval_tuned pairs with its samples
            wall, mem = timed_stage(repo, EVAL_CMDS["eval_tuned"])
            per_item.append(wall / n)
            rows.append(
                summarise("growth", f"eval_base stage, {n} eval items (peak {base_mem:.0f} MB)", [base_wall], "s")
            )
            rows.append(summarise("growth", f"eval_tuned stage, {n} eval items (peak {mem:.0f} MB)", [wall], "s"))
        rows.append(
            summarise(
                "growth",
                "eval s/item, largest vs smallest set",
                [per_item[-1] / per_item[0]],
                "ratio",
                "<= 1 (linear or better)",
                lambda v: v <= 1.0,
            )
        )
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--eval-sizes", type=int, nargs="+", default=[40, 200, 1000])
    args = parser.parse_args()
    run(args.train_sizes, args.eval_sizes)
