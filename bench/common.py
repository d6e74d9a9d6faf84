"""Shared bits of the benchmarks: run a measurement several times, report median and spread.

These machines are shared and noisy, so every script prints median and min-max over repeats, and the
headline figures are ratios measured in the same run (ours vs the plain-library baseline).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Row:
    bench: str
    measure: str
    median: float
    low: float
    high: float
    unit: str
    repeats: int
    target: str = ""
    met: bool | None = None

    def show(self) -> str:
        verdict = "" if self.met is None else ("  [met]" if self.met else "  [NOT met]")
        return (
            f"{self.bench:>10} | {self.measure:<46} {self.median:10.3f} {self.unit:<6} "
            f"(min {self.low:.3f}, max {self.high:.3f}, n={self.repeats}) {self.target}{verdict}"
        )


def summarise(
    bench: str,
    measure: str,
    values: list[float],
    unit: str,
    target: str = "",
    ok: Callable[[float], bool] | None = None,
) -> Row:
    med = statistics.median(values)
    row = Row(
        bench, measure, med, min(values), max(values), unit, len(values), target, None if ok is None else bool(ok(med))
    )
    print(row.show(), flush=True)
    return row


def env(workdir: Path, **extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        {
            "PATH": f"{BIN}{os.pathsep}{out.get('PATH', '')}",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@example.invalid",
            "DVC_NO_ANALYTICS": "1",
        }
    )
    out.update(extra)
    return out


@dataclass
class Result:
    stdout: str
    stderr: str
    peak_rss_mb: float  # of the command and every descendant it waited for (e.g. accelerate's worker)


def sh(cmd: list[str], cwd: Path, **extra: str) -> tuple[float, Result]:
    """Run a command, return (wall seconds, result); raise with its output if it fails."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(cwd, **extra), stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own peak memory, not the whole session's
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = Result(out.read(), err.read(), usage.ru_maxrss / 1024)
    if proc.returncode:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return wall, result


def fresh_repo(prefix: str = "bench-") -> Path:
    """The repository as a clean clone has it, as a new git repo in a temp folder (nothing generated)."""
    dest = Path(tempfile.mkdtemp(prefix=prefix))
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("bench/", "template/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        sh(cmd, dest)
    return dest


def stages_run(dvc_output: str) -> list[str]:
    """Stage names DVC actually executed, from `dvc repro` / `dvc exp run` output."""
    return [line.split("'")[1] for line in dvc_output.splitlines() if line.startswith("Running stage '")]


def save_rows(rows: list[Row], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


def set_params(path: Path, overrides: list[str]) -> None:
    """Apply dotted KEY=VALUE overrides (VALUE parsed as YAML) to a params.yaml."""
    params = yaml.safe_load(path.read_text())
    for item in overrides:
        key, _, value = item.partition("=")
        *head, last = key.split(".")
        node = params
        for part in head:
            node = node[part]
        if last not in node:
            raise SystemExit(f"--set {item}: params.yaml has no key {key}")
        node[last] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def apply_profile(repo: Path, name: str) -> None:
    """Write profiles/<name>.yaml's overrides into the copy's params.yaml (checked as `llmops profile` checks them)."""
    sys.path.insert(0, str(ROOT / "src"))
    from llmops import profiles

    cwd = os.getcwd()
    os.chdir(repo)
    try:
        overrides = profiles.load(name)
    finally:
        os.chdir(cwd)
    set_params(repo / "params.yaml", [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
