"""Deploy check cost: the item-by-item check `llmops deploy` runs (llmops.deploy_check) against the eval_tuned stage.

Run:  python bench/deploy_check_cost.py [--repeats 3]
      python bench/deploy_check_cost.py --repo /tmp/real --repeats 1   (a repo bench/real_model.py --keep built)

Both are timed on the same repo, one after the other: `llmops eval-tuned` (the whole stage: every domain and
regression task) and the check of the adapter form on a staged copy of the version deploy registers (a folder
holding the adapter and the bundled base, loaded from there): the domain task through lm-eval, plus one forward
pass per item for the evaluated model and the copy. Target: the check stays a small fraction (<= 0.25) of the stage.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common import Row, apply_profile, fresh_repo, sh, summarise

CHECK = """
import json, tempfile, time
from pathlib import Path
from llmops import deploy_check, registry
from llmops.config import load_params
params = load_params()
with tempfile.TemporaryDirectory() as tmp:
    version = registry.load_version(registry.stage_version(params, "card", Path(tmp)))
    start = time.perf_counter()
    result = deploy_check.run(params, [("adapter", version, version.adapter_dir)])
    wall = time.perf_counter() - start
(form,) = result.forms
print(json.dumps({"wall": wall, "items": form.items, "identical": form.identical_answers, "passed": result.passed}))
"""


def run(repeats: int, repo: Path | None = None, profile: str | None = None) -> list[Row]:
    own = repo is None
    repo = repo or fresh_repo()
    try:
        if profile:
            apply_profile(repo, profile)
        sh(["dvc", "repro", "eval_tuned"], repo)
        stage, check, items = [], [], 0
        for _ in range(repeats):
            stage.append(sh(["llmops", "eval-tuned"], repo)[0])
            _, proc = sh(["python", "-c", CHECK], repo)
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            assert got["passed"] and got["identical"] == got["items"], got  # same weights, same answers
            check.append(got["wall"])
            items = got["items"]
        return [
            summarise("deploy", "eval_tuned stage (all tasks)", stage, "s"),
            summarise("deploy", f"deploy check, adapter form ({items} domain items)", check, "s"),
            summarise(
                "deploy",
                "deploy check / eval_tuned stage",
                [c / s for c, s in zip(check, stage, strict=True)],
                "ratio",
                "<= 0.25",
                lambda v: v <= 0.25,
            ),
        ]
    finally:
        if own:
            shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repo", type=Path, help="a repo whose pipeline ran (default: a fresh copy, dvc repro)")
    parser.add_argument("--profile", help="apply profiles/<name>.yaml to the fresh copy first (e.g. smollm2)")
    opts = parser.parse_args()
    run(opts.repeats, opts.repo, opts.profile)
