"""Evaluation overhead: the `eval_tuned` stage against calling lm-eval's CLI directly on the same tasks.

Run:  python bench/eval_overhead.py [--repeats 3]
      python bench/eval_overhead.py --profile smollm2 --repeats 2   (the real model, real benchmarks; ~15 min)
      python bench/eval_overhead.py --repo /tmp/real --repeats 1      (a repo bench/real_model.py --keep built)

Both evaluate base + the unmerged adapter on the same rendered suite with the same batch size; the stage
also reads eval_base's samples and computes paired bootstrap statistics. Target: ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import yaml
from common import Row, apply_profile, fresh_repo, sh, summarise


def run(repeats: int, repo: Path | None = None, profile: str | None = None) -> list[Row]:
    own = repo is None
    repo = repo or fresh_repo()
    try:
        if profile:
            apply_profile(repo, profile)
        sh(["dvc", "repro", "eval_base", "train"], repo)
        params = yaml.safe_load((repo / "params.yaml").read_text())["eval"]
        suite = Path(tempfile.mkdtemp(prefix="suite-"))
        sh(["python", "-c", f"from llmops.eval_suite import render_suite; render_suite({str(suite)!r})"], repo)
        tasks = ",".join(params["domain_tasks"] + params["regression_tasks"])
        limit = ["--limit", str(params["limit"])] if params["limit"] else []
        ours, ref = [], []
        for _ in range(repeats):
            ours.append(sh(["llmops", "eval-tuned"], repo)[0])
            out = Path(tempfile.mkdtemp(prefix="lm-eval-out-"))
            ref.append(
                sh(
                    [
                        "lm_eval",
                        "--model",
                        "hf",
                        "--model_args",
                        "pretrained=models/base,peft=models/adapter,dtype=auto",
                        "--device",
                        "cpu",
                        "--include_path",
                        str(suite),
                        "--tasks",
                        tasks,
                        "--batch_size",
                        str(params["batch_size"]),
                        "--log_samples",
                        "--output_path",
                        str(out),
                        "--seed",
                        str(params["seed"]),
                        *limit,
                    ],
                    repo,
                )[0]
            )
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(suite, ignore_errors=True)
        return [
            summarise("eval", "ours: eval_tuned stage wall", ours, "s"),
            summarise("eval", "reference: lm_eval CLI wall", ref, "s"),
            summarise(
                "eval",
                "ratio ours/reference",
                [a / b for a, b in zip(ours, ref, strict=True)],
                "ratio",
                "<= 1.1",
                lambda v: v <= 1.1,
            ),
        ]
    finally:
        if own:
            shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", help="apply profiles/<name>.yaml to the copy first (e.g. smollm2)")
    parser.add_argument("--repo", type=Path, help="reuse a built repo (e.g. bench/real_model.py --keep DIR)")
    args = parser.parse_args()
    run(args.repeats, args.repo, args.profile)
