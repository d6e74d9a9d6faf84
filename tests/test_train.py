"""LoRA behaviour on the tiny model: the base is frozen, the adapter learns, the loss goes down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmops import launcher, schemas, train
from llmops.artifacts import dumps, sha256_file
from llmops.config import load_params
from llmops.perf import MALLOC_THRESHOLDS
from llmops.tracking import mlflow


def test_lora_trains_adapter_only(tiny_workdir, in_copy_of):
    work = in_copy_of(tiny_workdir)
    base_hash = sha256_file(work / "models/base/model.safetensors")
    params = load_params()
    metrics = train.run(params)

    assert metrics["loss_after"] < metrics["loss_before"]
    assert 0 < metrics["trainable_share"] < 1 and metrics["steps"] == 8
    # honest names: the mean over training and the last logged window are different figures
    assert metrics["train_loss_last_step"] == 8 and "final_train_loss" not in metrics
    assert metrics["train_loss_last"] < metrics["train_loss_mean"]
    assert metrics["loss_eval_examples"] == min(params.train.loss_eval_examples, metrics["examples"])
    assert sha256_file(work / "models/base/model.safetensors") == base_hash  # base never written

    adapter = load_file(work / "models/adapter/adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(t) > 0 for t in lora_b)  # B starts at zero: it moved
    config = json.loads((work / "models/adapter/adapter_config.json").read_text())
    assert config["r"] == params.train.lora.r and set(config["target_modules"]) == set(params.train.lora.target_modules)

    # the adapter loads onto the untouched base and changes its outputs
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(work / "models/base").eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, work / "models/adapter").eval()
    assert not torch.allclose(before, tuned(ids).logits)

    perf = json.loads((work / "reports/train_perf.json").read_text())
    assert perf["tokens_per_s"] > 0 and "torch" in perf["environment"]["packages"]
    phases = perf["phases_s"]
    assert set(phases) >= {"import", "setup", "loss_before", "loop", "loss_after", "save", "mlflow", "process"}
    assert (
        phases["loop"] == perf["runtime_s"]
        and phases["process"] >= sum(v for k, v in phases.items() if k != "process") - 0.01
    )
    curve = (work / "reports/train_loss.csv").read_text().splitlines()
    assert curve[0] == "step,loss,learning_rate" and len(curve) == 1 + 8 // 2

    written = work / "reports" / schemas.MLFLOW_RUN  # its contract, and written the way artifacts.dumps writes
    recorded = schemas.read(written, schemas.MlflowRun)
    assert dumps(recorded.model_dump(mode="json")) == written.read_text(encoding="utf-8")
    run = mlflow().get_run(recorded.run_id)  # the test's own store (MLFLOW_TRACKING_URI under tmp_path)
    assert run.data.params["train.lora.r"] == str(params.train.lora.r)
    assert run.data.metrics["train.loss_after"] == metrics["loss_after"]


def test_unknown_target_module_is_named(tiny_workdir, in_copy_of):
    import yaml

    from llmops.errors import StageError

    work = in_copy_of(tiny_workdir)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["train"]["lora"]["target_modules"] = ["q_proj", "query_key_value"]
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(StageError, match="query_key_value"):
        train.run(load_params())
    assert not (work / "models/adapter").exists()


def test_last_logged_loss_and_curve():
    history = [
        {"loss": 2.0, "step": 2, "learning_rate": 0.1},
        {"eval_loss": 1.0, "step": 2},
        {"loss": 1.5, "step": 4, "learning_rate": 0.05},
        {"train_loss": 1.75, "step": 4},
    ]
    assert train.last_logged_loss(history) == (1.5, 4)
    assert train.last_logged_loss([{"train_loss": 1.0, "step": 1}]) == (None, None)
    assert train.loss_curve_csv(history).splitlines() == ["step,loss,learning_rate", "2,2.0,0.1", "4,1.5,0.05"]


def test_accelerate_command_keeps_the_config(tmp_path):
    cmd = launcher.accelerate_command(tmp_path / "cpu.yaml")
    assert cmd[1:3] == ["-c", launcher.ACCELERATE_LAUNCH]
    assert "from accelerate.commands.launch import main" in cmd[2]  # the command `accelerate launch` runs
    assert cmd[3:] == ["--config_file", str(tmp_path / "cpu.yaml"), "-m", "llmops.train"]


EXIT_CHILD = """
import atexit, sys
from pathlib import Path
from llmops.runner import exit_now

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))


class TornDown:  # a module global: only the interpreter's teardown calls its __del__
    def __del__(self):
        (out / "teardown").write_text("ran")


keep = TornDown()
sys.stdout.write("metrics, no newline")  # block-buffered into a pipe: lost unless flushed
if sys.argv[2] == "exit_now":
    exit_now(3)
sys.exit(3)
"""


@pytest.mark.integration
@pytest.mark.parametrize("how", ["exit_now", "sys.exit"])
def test_exit_now_skips_only_the_teardown(tmp_path, how):
    """What the trainer, accelerate's launch process and the launcher leave through: same exit code, atexit
    handlers and buffered output as sys.exit, but no module teardown (the ~1.3 s after torch was imported)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as under dvc
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_CHILD, str(tmp_path), how], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "metrics, no newline"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "teardown").exists() == (how == "sys.exit")


# A training step in miniature: activations allocated together (12 x 4 MiB, under glibc's 32 MiB mmap ceiling),
# written, freed together at the step's end. glibc's default thresholds settle at the block size (trim at 2x), so the
# 48 MiB freed at the heap's top goes back to the kernel every step and every page faults in again next step.
KEEP_CHILD = """
import ctypes, json, resource
from llmops.perf import keep_freed_memory

kept = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]


def step():
    blocks = [libc.malloc(4 << 20) for _ in range(12)]
    for block in blocks:
        ctypes.memset(block, 1, 4 << 20)
    for block in blocks:
        libc.free(block)


step(), step()  # the heap grows (and glibc's default thresholds settle): faults that any allocator pays once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
pages = 5 * 12 * (4 << 20) // resource.getpagesize()
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "pages": pages}))
"""


@pytest.mark.integration  # a child process: the setting lasts the process's life
@pytest.mark.parametrize(
    "env, kept",
    [
        ({}, True),
        ({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"}, True),  # tunables, but none of malloc's
        ({"GLIBC_TUNABLES": "glibc.malloc.perturb=0"}, False),  # a no-op malloc tunable: glibc's defaults
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, False),
        ({"MALLOC_MMAP_THRESHOLD_": "131072"}, False),
    ],
    ids=["no-settings", "other-tunables", "malloc-tunable", "trim-env", "mmap-env"],
)
def test_freed_memory_is_reused_not_faulted_in_again(env, kept):
    """The trainer fixes glibc's thresholds for itself (keep_freed_memory) so a step's freed activations are reused
    by the next step; unless the environment sets malloc's thresholds itself, which then wins."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    proc = subprocess.run(
        [sys.executable, "-c", KEEP_CHILD], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    out = json.loads(proc.stdout)
    assert out["kept"] == (MALLOC_THRESHOLDS if kept else None)
    if kept:
        assert out["faults"] < out["pages"] // 100, out
    else:
        assert out["faults"] >= out["pages"] * 0.9, out  # every freed page mapped in again


def test_dvc_stage_shows_the_accelerate_config():
    import yaml
    from conftest import ROOT

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    assert stage["cmd"] == "exec llmops train-launch --config_file configs/accelerate/${train.accelerate_config}.yaml"


def test_second_launch_refuses_while_lock_is_held(tiny_workdir, in_copy_of):
    from llmops.errors import StageError

    work = in_copy_of(tiny_workdir)
    params = load_params()
    held = launcher.take_lock(launcher.lock_path(params))  # what a surviving trainer of an earlier run holds
    try:
        os.pwrite(held, b"4242", 0)
        with pytest.raises(StageError, match=r"adapter\.lock.*process group 4242.*kill -- -4242"):
            launcher.launch(params, work / "configs/accelerate/cpu.yaml")
    finally:
        os.close(held)
    assert not (work / "models/adapter").exists()


def test_missing_accelerate_config_is_named(tiny_workdir, in_copy_of):
    from llmops.errors import StageError

    work = in_copy_of(tiny_workdir)
    with pytest.raises(StageError, match="configs/accelerate/nope.yaml"):
        launcher.launch(load_params(), work / "configs/accelerate/nope.yaml")


@pytest.mark.slow
def test_launcher_trains_and_logs_the_run(tiny_workdir, tmp_path):
    """What dvc.yaml runs: accelerate launch under the launcher; the trainer writes the outputs and the launcher
    (which imported MLflow while the trainer started) logs one run from them."""
    import shutil

    from conftest import offline_env

    work = tmp_path / "work"
    shutil.copytree(tiny_workdir, work)
    proc = subprocess.run(
        ["llmops", "train-launch", "--config_file", "configs/accelerate/cpu.yaml"],
        cwd=work,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((work / "reports/train.json").read_text())
    # the trainer and accelerate skip the interpreter's teardown (runner.exit_now): what they printed still arrives
    assert json.loads(proc.stdout[proc.stdout.rindex("\n{") :]) == metrics
    assert "`accelerate launch`" in proc.stderr  # accelerate's own launch command ran (its defaults notice)
    assert metrics["steps"] == 8 and (work / "models/adapter/adapter_model.safetensors").is_file()
    perf = json.loads((work / "reports/train_perf.json").read_text())
    assert "mlflow" not in perf["phases_s"]  # not paid by the trainer
    assert perf["malloc"] == MALLOC_THRESHOLDS and perf["loop_minor_faults"] > 0  # keep_freed_memory ran
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = json.loads((work / "reports/mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.metrics["train.loss_after"] == metrics["loss_after"]
    assert run.data.metrics["train.train_loss_last"] == metrics["train_loss_last"]
    steps = [m.step for m in client.get_metric_history(run_id, "train.step_loss")]
    assert steps == [2, 4, 6, 8]
    experiment = run.info.experiment_id
    assert [r.info.run_id for r in client.search_runs([experiment])] == [run_id]  # the trainer logged none


def tagged_pids(token: str, training_only: bool = False) -> list[int]:
    """Live processes whose environment carries `token` (every descendant of the run inherits it); with
    training_only, those running llmops or accelerate (not e.g. a detached DVC updater daemon)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"LLMOPS_TEST_RUN={token}".encode() not in (proc / "environ").read_bytes().split(b"\0"):
                    continue
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:  # gone, or a zombie
                continue
            if not training_only or b"llmops" in cmdline or b"accelerate" in cmdline:
                found.append(int(proc.name))
    return found


def cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("victim,shell", [("dvc", None), ("dvc", "/bin/bash"), ("launcher", None)])
def test_sigkill_leaves_no_orphaned_trainer(tiny_workdir, tmp_path, victim, shell):
    """SIGKILL `dvc repro -s train` (or the launcher itself) mid-training: every trainer process is gone within
    seconds, and nothing it would have written (adapter, metrics, an MLflow run) appears afterwards. dvc runs the
    cmd through $SHELL -c; unset (CI runners) means /bin/sh, which on Debian is dash and does not exec."""
    import shutil

    import yaml
    from conftest import ROOT, offline_env

    repo = tmp_path / "repo"
    shutil.copytree(tiny_workdir, repo)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["train"].update(max_steps=100_000)  # long enough to be killed mid-loop
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    # the stage depends on every module train.py imports (dvc.yaml): they must exist for dvc to run it
    shutil.copytree(ROOT / "src/llmops", repo / "src/llmops", ignore=shutil.ignore_patterns("__pycache__"))
    token, scratch = uuid.uuid4().hex, tmp_path / "tmp"
    scratch.mkdir()
    env = offline_env(tmp_path, LLMOPS_TEST_RUN=token, TMPDIR=str(scratch))
    env.pop("SHELL", None)
    if shell:
        env["SHELL"] = shell
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    log = (tmp_path / "dvc.log").open("w")
    dvc = subprocess.Popen(["dvc", "repro", "-s", "train"], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not list(scratch.glob("llmops-train-*")):  # the trainer makes its scratch dir right before the loop
            assert dvc.poll() is None, (tmp_path / "dvc.log").read_text()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        time.sleep(1.0)
        if victim == "dvc":
            dvc.kill()
        else:
            launcher = [p for p in tagged_pids(token) if b"train-launch" in Path(f"/proc/{p}/cmdline").read_bytes()]
            assert len(launcher) == 1
            os.kill(launcher[0], signal.SIGKILL)
        dvc.wait(timeout=60)
        deadline = time.monotonic() + 5
        while tagged_pids(token, training_only=True) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = tagged_pids(token, training_only=True)
        assert survivors == [], f"survived their parent: {cmdlines(survivors)}"
        time.sleep(3)  # would a survivor still write something?
        assert not (repo / "models/adapter").exists()
        assert not (repo / "reports/train.json").exists() and not (repo / "reports/mlflow_run.json").exists()
        db = tmp_path / "mlflow.db"
        if db.exists():
            from mlflow.tracking import MlflowClient

            client = MlflowClient(f"sqlite:///{db}")
            assert all(not client.search_runs([e.experiment_id]) for e in client.search_experiments())
    finally:
        for pid in tagged_pids(token):  # never leave a process behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
        log.close()
