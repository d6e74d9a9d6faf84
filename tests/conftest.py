"""Shared fixtures: a shrunken real config, a tiny built base model, and a temporary copy of the repo.

Tests never touch the user's MLflow store, DVC cache or home: every artefact goes under tmp_path and
MLFLOW_TRACKING_URI points into it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# One valid example of each output contract (llmops.schemas.CONTRACTS): a snapshot of the demo's reports/, so
# tests have real-shaped files in a baked repo too, whose reports/ starts empty. test_schemas keeps them valid.
REPORT_EXAMPLES = ROOT / "tests" / "fixtures" / "reports"


def offline_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid",
            "DVC_NO_ANALYTICS": "1",
        }
    )
    env.update(extra)
    return env


# --- test tiers ---------------------------------------------------------------------------------------------
# unit:        no model, no subprocess, no socket: pure functions on small inputs; the whole tier runs in
#              seconds and first (`make test-fast`, and the first step of `make test`).
# integration: a real model, process or server (a built tiny base, the CLI, dvc, git, a loopback HTTP server).
# slow:        end-to-end (dvc repro, accelerate launch, template bakes, S3 round trips).
# A test is unit unless marked otherwise or it uses a fixture that builds a model (HEAVY_FIXTURES). The unit
# guard below makes the rule enforceable: a unit test that starts a process or opens a socket fails, naming it.
TIERS = ("unit", "integration", "slow")
HEAVY_FIXTURES = {"tiny_workdir"}  # builds the tiny base (seconds of pretraining); fixtures using it inherit it


def pytest_collection_modifyitems(config, items):
    """Assign each test its tier; `gpu`-marked tests need CUDA and are skipped, not failed, on CPU machines."""
    for item in items:
        if not any(t in item.keywords for t in TIERS):
            heavy = HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())) or "gpu" in item.keywords
            item.add_marker(pytest.mark.integration if heavy else pytest.mark.unit)
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:  # torch's import costs seconds: only pay it when a GPU test was collected
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu:
        item.add_marker(skip)


class TierViolation(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _unit_guard(request, monkeypatch):
    """Unit tests may not start processes or open sockets: mark such a test `integration` instead."""
    if "unit" not in request.node.keywords:
        return

    def refuse(what):
        def _refused(*args, **kwargs):
            raise TierViolation(
                f"{request.node.nodeid}: a unit test {what}; mark it "
                f"@pytest.mark.integration (tests/conftest.py, test tiers)"
            )

        return _refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a process"))
    monkeypatch.setattr(socket.socket, "connect", refuse("opens a connection"))
    monkeypatch.setattr(socket.socket, "bind", refuse("listens on a socket"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def shrink(raw: dict, steps: int = 30) -> dict:
    """The real params, made tiny: a short pretraining and a few LoRA steps (seconds, not minutes)."""
    # max_position_embeddings: the smaller vocab makes the local judge's prompt (~620 tokens) outgrow 512
    raw["base"]["tiny"].update(
        pretrain_steps=steps, vocab_size=400, seq_len=64, batch_size=8, max_position_embeddings=1024
    )
    raw["train"].update(max_steps=8, logging_steps=2)
    return raw


def make_workdir(dest: Path, raw: dict) -> Path:
    """A working directory with the repo's data, prompts, configs and the given params.yaml."""
    for rel in ("data", "prompts", "configs", "evals"):
        if (ROOT / rel).exists():
            shutil.copytree(ROOT / rel, dest / rel, ignore=shutil.ignore_patterns("prepared"))
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory) -> Path:
    """A workdir whose base model is built (short pretraining) and data prepared: shared, read-only."""
    from llmops import base, prepare
    from llmops.config import load_params

    work = make_workdir(tmp_path_factory.mktemp("tiny"), shrink(raw_params()))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        params = load_params()
        base.run(params)
        prepare.run(params)
    finally:
        os.chdir(cwd)
    return work


@pytest.fixture(scope="session")
def trained_workdir(tiny_workdir, tmp_path_factory) -> Path:
    """tiny_workdir plus a trained adapter (8 LoRA steps) and its MLflow run: one training for the eval, judge
    and serve tests. Shared and read-only: copy it (in_copy_of) to write."""
    from llmops import train
    from llmops.config import load_params

    work = tmp_path_factory.mktemp("trained") / "work"
    shutil.copytree(tiny_workdir, work)
    # the store inside the workdir, so copies take the run along; absolute, because MLflow caches a store per
    # URI string and a relative one would reach whichever mlflow.db an earlier test in this process opened
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        mp.setenv("HF_HUB_OFFLINE", "1")
        train.run(load_params())
    return work


@pytest.fixture
def in_copy_of(tmp_path, monkeypatch):
    """Return a function that copies a prepared workdir into tmp_path and chdirs there."""

    def _copy(src: Path) -> Path:
        dest = tmp_path / "work"
        shutil.copytree(src, dest)
        monkeypatch.chdir(dest)
        return dest

    return _copy


def copy_repo(dest: Path) -> Path:
    """The repository as a clean clone would have it (tracked + unignored files), as a fresh git repo."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    env = offline_env(dest)
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True)
    return dest


@contextlib.contextmanager
def moto_s3(home: Path, bucket: str) -> Iterator[tuple[str, dict[str, str]]]:
    """moto_server on a free loopback port with `bucket` created; yields (endpoint, AWS env without keys).
    The AWS config files point at empty files in `home`, so the user's ~/.aws profiles are never read."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("aws-config", "aws-credentials"):
        (home / name).write_text("")
    with open(home / "moto.log", "w") as fh:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=fh)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                time.sleep(0.1)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
        yield (
            endpoint,
            {
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": str(home / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true",
            },
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def chat_with_registered(model_uri: str, folder: Path, env: dict[str, str], then: str) -> str:
    """Load `model_uri` (models:/<name>@<alias>) the way a serving team would: in the empty `folder`, with no
    repo, no llmops and no PYTHONPATH; peft finds the bundled base from adapter_config. `then` is Python run with
    `tok` and `model` loaded (cwd: the downloaded version); returns its stdout. The folder ends holding only it."""
    import textwrap

    folder.mkdir()
    code = textwrap.dedent(f"""
        import json, os
        from pathlib import Path
        import mlflow
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoTokenizer
        os.chdir(Path(mlflow.artifacts.download_artifacts({model_uri!r}, dst_path="v")))
        tok = AutoTokenizer.from_pretrained("base")
        model = AutoPeftModelForCausalLM.from_pretrained("adapter")
        """) + textwrap.dedent(then)
    clean = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=folder, env=clean, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == ["v"]
    return proc.stdout
