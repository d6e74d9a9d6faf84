"""The locked environment (requirements/*.lock, `make lock`): every dependency pyproject.toml declares is pinned
with hashes, the CPU lock is resolved against the torch `make install` puts first, and the installed venv is the
lock's (so the package versions a run records are the lock's).

Run:  pytest tests/test_lock.py
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from llmops.artifacts import environment

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
# name==version [; marker] \  (uv's --generate-hashes layout: the hashes follow on continuation lines)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*;\s*(.+?))?\s*\\$")


def pins(lock: Path, applies_here: bool = False) -> dict[str, list[tuple[str, str | None, int]]]:
    """Canonical name -> [(version, marker, number of hashes)]; a universal lock may pin a package once per marker."""
    out: dict[str, list[tuple[str, str | None, int]]] = {}
    current: list | None = None
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            name, version, marker = match.groups()
            current = [version, marker, 0]
            if not applies_here or marker is None or Marker(marker).evaluate():
                out.setdefault(canonicalize_name(name), []).append(current)  # type: ignore[arg-type]
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            current[2] += 1
    return {name: [tuple(p) for p in entries] for name, entries in out.items()}  # type: ignore[misc]


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def torch_constraint() -> Version:
    (line,) = [
        line for line in (REQ / "constraints.txt").read_text().splitlines() if line.strip().startswith("torch==")
    ]
    return Version(line.split("==", 1)[1].strip())


@pytest.mark.parametrize(("lock", "extras"), [("cpu.lock", ("dev", "s3")), ("gpu.lock", ("dev", "s3", "vllm"))])
def test_every_declared_dependency_is_pinned_with_hashes_and_satisfies_pyproject(lock, extras):
    locked = pins(REQ / lock)
    assert len(locked) > 100, f"{lock}: only {len(locked)} packages parsed"
    for name, entries in locked.items():
        for version, _marker, hashes in entries:
            assert hashes >= 1, f"{lock}: {name}=={version} has no --hash (pip --require-hashes refuses it)"
    for req in declared(*extras):
        name = canonicalize_name(req.name)
        if lock == "cpu.lock" and name == "torch":  # left out on purpose: installed first, per host (Makefile TORCH)
            assert req.specifier.contains(torch_constraint(), prereleases=True), (req, torch_constraint())
            assert name not in locked, f"{lock} pins torch: a CPU host would get the CUDA build"
            continue
        assert name in locked, f"{lock}: {req.name} (pyproject.toml) is not pinned: run make lock"
        for version, _marker, _ in locked[name]:
            assert req.specifier.contains(version, prereleases=True), f"{lock}: {name}=={version} violates {req}"


def test_the_cpu_lock_has_no_cuda_packages_and_matches_the_torch_make_install_puts_first():
    locked = pins(REQ / "cpu.lock")
    cuda = sorted(n for n in locked if n.startswith(("nvidia-", "cuda-")) or n == "triton")
    assert not cuda, f"cpu.lock pins CUDA packages {cuda}: resolve against the +cpu torch (make lock)"
    makefile = (ROOT / "Makefile").read_text()
    (torch,) = re.findall(r"^TORCH \?= torch==(\S+)$", makefile, re.M)
    assert Version(torch) == Version(torch_constraint().public), (torch, torch_constraint())
    gpu = pins(REQ / "gpu.lock")
    assert "torch" in gpu and "vllm" in gpu  # the GPU lock carries its own (CUDA) torch, installed with TORCH=


def test_nodeps_lock_pins_what_nodeps_in_names():
    wanted = {
        canonicalize_name(Requirement(line).name): Requirement(line)
        for line in (REQ / "nodeps.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    locked = pins(REQ / "nodeps.lock")
    assert set(locked) == set(wanted)
    for name, req in wanted.items():
        ((version, _, hashes),) = locked[name]
        assert req.specifier.contains(version) and hashes >= 1


def installed_from() -> Path:
    """The lock this venv was built from: `make install` writes its path into <venv>/.installed."""
    marker = Path(sys.prefix) / ".installed"
    text = marker.read_text().strip() if marker.is_file() else ""
    if not text:
        pytest.skip(f"{sys.prefix} was not built by `make install` from a lock (no lock named in {marker})")
    return ROOT / text


@pytest.mark.integration  # environment() imports torch and asks the platform module (a process)
def test_the_installed_environment_is_the_lock_and_runs_record_its_versions():
    lock = installed_from()
    wrong = []
    for name, entries in pins(lock, applies_here=True).items():
        (version, _, _) = entries[0]
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have is None or Version(have) != Version(version):
            wrong.append(f"{name}: lock {version}, installed {have}")
    assert not wrong, f"{sys.prefix} differs from {lock.name} (make install rebuilds it): {wrong}"
    recorded = environment()["packages"]  # what train_perf.json, eval and the MLflow run record
    assert {"transformers", "peft", "accelerate", "mlflow", "dvc"} <= set(recorded)
    locked = pins(lock, applies_here=True)
    for name, version in recorded.items():
        if canonicalize_name(name) in locked:
            assert Version(version) == Version(locked[canonicalize_name(name)][0][0]), name
