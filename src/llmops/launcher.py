"""`llmops train-launch` (what dvc.yaml runs): `accelerate launch -m llmops.train` as one process group tied to its
caller's life, with MLflow logged by this otherwise idle process.

Run:  llmops train-launch --config_file configs/accelerate/cpu.yaml

A SIGKILLed `dvc repro` cannot clean up: its children are re-parented and would finish, log a stray MLflow run
and write outputs while the rerun trains. So the launcher (1) dies with its parent (PR_SET_PDEATHSIG), (2) runs
accelerate and the trainer in their own process group and takes the whole group down when it stops, and
(3) holds an flock on <adapter_dir>.lock that every descendant inherits: a rerun refuses to start while any
survivor of an earlier run (e.g. one whose launcher was killed with -9) still holds it.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from llmops.artifacts import read_json
from llmops.config import Params
from llmops.errors import StageError
from llmops.runner import set_parent_death_signal
from llmops.tracking import MLFLOW_BY_ENV
from llmops.train import log_mlflow

STOP_GRACE_S = 10.0  # SIGTERM to the group, then SIGKILL: enough for torch to exit, short enough for a rerun


# accelerate's `launch` command itself (what `accelerate launch` runs), then leave without tearing down the torch it
# imported (after the trainer has already exited); a failed launch raises and exits as usual
ACCELERATE_LAUNCH = (
    "from accelerate.commands.launch import main; from llmops.runner import exit_now; main(); exit_now(0)"
)


def accelerate_command(config_file: Path) -> list[str]:
    """`accelerate launch --config_file <file> -m llmops.train`, run by this interpreter (same venv). The launch
    command's own entry point rather than the `accelerate` CLI: the CLI also imports its other subcommands
    (`estimate` pulls in transformers): startup spent before the trainer even starts."""
    return [sys.executable, "-c", ACCELERATE_LAUNCH, "--config_file", str(config_file), "-m", "llmops.train"]


def lock_path(params: Params) -> Path:
    adapter = params.paths.adapter_dir
    return adapter.parent / f"{adapter.name}.lock"


def take_lock(path: Path) -> int:
    """Open and flock `path` (non-blocking); the fd is inherited by the training processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StageError(
            f"{path}: another training (process group {holder}) still runs and writes "
            f"{path.with_suffix('')}; stop it (kill -- -{holder}) or wait for it, then rerun"
        ) from None
    return fd


def launch(params: Params, config_file: Path) -> int:
    """Run accelerate + trainer as one process group that lives no longer than this process; return its exit code.

    While the trainer imports and trains, this otherwise idle process imports MLflow (seconds, on a core the
    trainer's single-threaded startup leaves free); once the trainer succeeded it logs the run from the files the
    trainer wrote. So MLflow costs the user only the logging calls, not its import."""
    if not config_file.is_file():
        raise StageError(f"{config_file}: accelerate config not found (train.accelerate_config in params.yaml)")
    parent = os.getppid()
    set_parent_death_signal(signal.SIGTERM)  # our caller (dvc) died -> SIGTERM -> handler below stops the group
    if os.getppid() != parent:  # it died before prctl took effect
        return 128 + signal.SIGTERM
    lock_fd = take_lock(lock_path(params))
    group: list[int] = []

    def stop(signum, _frame) -> None:
        """Ask the group to stop, then leave whatever we were doing (waiting, importing MLflow, logging)."""
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group[0], signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    proc = None
    try:
        proc = subprocess.Popen(
            accelerate_command(config_file),
            start_new_session=True,
            pass_fds=(lock_fd,),
            env={**os.environ, MLFLOW_BY_ENV: "launcher"},
            preexec_fn=lambda: set_parent_death_signal(signal.SIGKILL),
        )
        group.append(proc.pid)  # the session leader's pid is the group id
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, str(proc.pid).encode(), 0)
        warm_tracking_store()
        code = proc.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a second signal must not skip the cleanup
            signal.signal(sig, signal.SIG_IGN)
        group.clear()
        if proc is not None:
            stop_group(proc)
        os.close(lock_fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)  # group is empty now: a signal while logging just exits
    if code == 0:
        paths = params.paths
        log_mlflow(
            params,
            read_json(paths.report("train.json")),
            read_json(paths.report("train_perf.json")),
            read_loss_curve(paths.report("train_loss.csv")),
        )
    return code


def warm_tracking_store() -> None:
    """Import MLflow and open its store while the trainer runs (seconds, otherwise paid after the
    loop). A sqlite store is opened only if its file exists: opening a new one creates its tables, and a kill
    mid-creation would leave a half-built store, so a first run pays the creation after training instead."""
    from llmops.tracking import mlflow, tracking_uri

    ml = mlflow()
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return
    with contextlib.suppress(Exception):  # an unreachable server fails the same way when the run is logged
        ml.MlflowClient().search_experiments(max_results=1)  # MLflow caches the opened store per URI


def stop_group(proc: subprocess.Popen) -> None:
    """Give a stopping group leader STOP_GRACE_S, then SIGKILL whatever is left of its group (a trainer outlives
    accelerate if that was killed; a no-op when everything already exited)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def read_loss_curve(path: Path) -> list[dict[str, Any]]:
    """reports/train_loss.csv back into log-history entries (step, loss) for MLflow."""
    with open(path, encoding="utf-8", newline="") as fh:
        return [{"step": int(row["step"]), "loss": float(row["loss"])} for row in csv.DictReader(fh)]
