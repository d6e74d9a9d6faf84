"""The caching claim with the real dvc CLI: a train-only experiment reruns train and eval_tuned but reuses
eval_base's cached result (eval_base depends on the base model and the eval suite, never on train.*)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import copy_repo, offline_env, raw_params, shrink

pytestmark = pytest.mark.slow


def dvc(repo, *args):
    proc = subprocess.run(["dvc", *args], cwd=repo, env=offline_env(repo), capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("eval_e2e"))
    (repo / "params.yaml").write_text(yaml.safe_dump(shrink(raw_params()), sort_keys=False))
    env = offline_env(repo)
    subprocess.run(["git", "commit", "-qam", "shrunken params"], cwd=repo, env=env, check=True)
    out = dvc(repo, "repro", "eval_tuned")  # the eval stages and everything upstream of them
    assert "Running stage 'eval_base'" in out and "Running stage 'eval_tuned'" in out, out
    subprocess.run(["git", "add", "-A"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "repro"], cwd=repo, env=env, check=True)
    return repo


def test_repro_writes_the_eval_outputs(repo):
    compare = json.loads((repo / "reports/eval_compare.json").read_text())
    assert compare["domain_task"] == "triage_gen" and set(compare["tasks"]) >= {"general_qa", "triage_gen"}
    for name in ("eval_base.json", "eval_tuned.json", "eval_tasks.csv", "eval_categories.csv"):
        assert (repo / "reports" / name).is_file(), name
    assert any((repo / "reports/eval_samples/base").glob("*.jsonl"))
    status = dvc(repo, "status", "eval_tuned")
    assert "up to date" in status, status


def test_train_only_experiment_reuses_eval_base(repo):
    base_before = (repo / "reports/eval_base.json").read_bytes()
    out = dvc(repo, "exp", "run", "-S", "train.learning_rate=0.002", "eval_tuned")
    assert "Running stage 'train'" in out, out
    assert "Running stage 'eval_tuned'" in out, out
    assert "Running stage 'eval_base'" not in out, out
    assert "Stage 'eval_base' didn't change, skipping" in out, out
    assert (repo / "reports/eval_base.json").read_bytes() == base_before
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["learning_rate"] == 0.002  # the experiment really changed a train knob
