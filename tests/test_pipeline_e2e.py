"""The real pipeline in a temporary copy of the repo: dvc repro, a no-op rerun, an experiment, and
byte-identical results from a second from-scratch training."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import copy_repo, offline_env

from llmops.artifacts import sha256_tree

pytestmark = pytest.mark.slow


def dvc(repo, *args, check=True):
    proc = subprocess.run(["dvc", *args], cwd=repo, env=offline_env(repo), capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("e2e"))
    # The mechanics (stages, no-op rerun, determinism) do not need the demo's 4000-step base, which this module
    # would pretrain twice (~5 min each on 2 cores); the shipped figures are checked by the relock and make demo.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["base"]["tiny"]["pretrain_steps"] = 1000
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "commit", "-qam", "shorter pretraining"], cwd=repo, env=offline_env(repo), check=True)
    dvc(repo, "repro")
    return repo


def test_repro_builds_every_stage_output(repo):
    assert (repo / "models/base/config.json").is_file()
    assert (repo / "models/adapter/adapter_model.safetensors").is_file()
    train = json.loads((repo / "reports/train.json").read_text())
    assert train["loss_after"] < train["loss_before"]
    data = json.loads((repo / "reports/data.json").read_text())
    assert data["train"]["final"] >= 50 and data["eval"]["final"] >= 40
    assert (repo / "mlflow.db").is_file()  # default local store inside the repo


def test_second_repro_is_a_noop(repo):
    out = dvc(repo, "repro").stdout
    assert "Data and pipelines are up to date" in out, out
    assert "Running stage" not in out


def test_from_scratch_rerun_is_byte_identical(repo):
    before = {
        p: (repo / p).read_bytes()
        for p in (
            "reports/train.json",
            "reports/data.json",
            "models/base/model.safetensors",
            "data/prepared/train.jsonl",
        )
    }
    adapter = sha256_tree(repo / "models/adapter")
    dvc(repo, "repro", "--force", "train")  # train and everything upstream, from scratch
    assert sha256_tree(repo / "models/adapter") == adapter
    for path, content in before.items():
        assert (repo / path).read_bytes() == content, path


def test_experiment_with_changed_rank_is_listed(repo):
    dvc(repo, "exp", "run", "-S", "train.lora.r=8", "-n", "rank8")
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    exps = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    found = [e for e in exps if e.get("name") == "rank8"]
    assert found, shown
    data = found[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lora"]["r"] == 8
    assert data["metrics"]["reports/train.json"]["data"]["trainable_params"] > 0
