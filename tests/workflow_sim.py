"""Run a GitHub Actions job's `run:` steps locally, in order, with the env GitHub would give them.

Used by tests/test_workflow_sim.py on .github/workflows/pipeline.yml. What it does, and what it cannot:
- `uses:` steps need GitHub (checkout, setup-python, artifacts): skipped and listed. The caller provides their
  effect: the workspace is a fresh `git clone` (checkout), the test's venv is on PATH (setup-python).
- steps whose `id` is in `skip_ids` (the install step: `make install` would rebuild a 2 GB venv that exists)
  are skipped and listed; their effect is given by `path_prepend` (what the step writes to GITHUB_PATH) and
  PYTHONPATH=<workspace>/src (what the editable install would point at).
- every other step runs as GitHub runs it: `bash --noprofile --norc -eo pipefail` (the workflow's
  `defaults.run.shell: bash`), workflow + job + step `env:` with `${{ }}` evaluated, GITHUB_OUTPUT /
  GITHUB_ENV / GITHUB_PATH / GITHUB_STEP_SUMMARY files honoured, `if:` evaluated with success()/failure()/
  cancelled()/always() and the step outcomes so far.
Expressions: the subset of GitHub's expression language the workflows use (contexts, ==, !=, &&, ||, !,
literals, format()); anything else raises rather than guessing.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class Ctx:
    """A context object: attribute access like GitHub's; a missing property is null (''), never an error."""

    def __init__(self, data: dict | None):
        self._data = data if data is not None else {}

    def __getattr__(self, name: str) -> Any:
        value = self._data.get(name, self._data.get(name.replace("_", "-"), NULL))
        return Ctx(value) if isinstance(value, dict) else value


class _Null(Ctx):
    """null: falsy, equal to '' (GitHub coerces both to 0), and its properties are null too."""

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return other in ("", None) or isinstance(other, _Null)

    def __hash__(self) -> int:
        return 0


NULL = _Null({})


def _format(template: str, *args: Any) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: _str(args[int(m.group(1))]), template)


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, Ctx):
        return ""
    return str(value)


_ALLOWED = re.compile(r"^(?:\s+|and|or|not|==|!=|\(|\)|,|\.|'[^']*'|[A-Za-z_][A-Za-z0-9_-]*|\d+)+$")


def evaluate(expr: str, contexts: dict[str, Any]) -> Any:
    expr = expr.strip()
    if expr.startswith("${{") and expr.endswith("}}"):
        expr = expr[3:-2].strip()
    parts = re.split(r"('[^']*')", expr)  # keep string literals intact while translating operators
    for i in range(0, len(parts), 2):
        p = parts[i].replace("&&", " and ").replace("||", " or ")
        p = re.sub(r"!(?!=)", " not ", p)
        p = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", p)))
        parts[i] = p
    py = "".join(parts)
    if not _ALLOWED.match(py.replace("True", "x").replace("False", "x").replace("None", "x")):
        raise ValueError(f"expression outside the simulated subset: {expr!r}")
    # hyphenated identifiers (step ids, input names) read as attribute names here
    py = re.sub(r"(?<=\.)([A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+)", lambda m: m.group(1).replace("-", "_"), py)
    return eval(py, {"__builtins__": {}}, {**contexts, "format": _format})  # noqa: S307 - checked subset


def substitute(text: str, contexts: dict[str, Any]) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _str(evaluate(m.group(1), contexts)), str(text))


@dataclass
class StepResult:
    name: str
    outcome: str  # success | failure | skipped
    seconds: float = 0.0
    log: str = ""
    reason: str = ""


@dataclass
class JobResult:
    environment: str | None = None  # the deployment environment the job ran in (its secrets were visible)
    written: list[str] = field(default_factory=list)  # set by a caller that watches a remote: what the job wrote
    steps: list[StepResult] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.outcome != "failure" for s in self.steps)

    def step(self, name_part: str) -> StepResult:
        return next(s for s in self.steps if name_part in s.name)

    @property
    def skipped_uses(self) -> list[str]:
        return [s.name for s in self.steps if s.reason.startswith("uses:")]


def _read_kv(path: Path) -> dict[str, str]:
    out, lines, i = {}, path.read_text().splitlines() if path.is_file() else [], 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^([^=<]+)<<(.+)$", line)
        if m:  # name<<DELIM multi-line form
            end = lines.index(m.group(2), i + 1)
            out[m.group(1)] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
        i += 1
    return out


def load_workflow(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    if True in data:  # PyYAML reads `on` as True (YAML 1.1)
        data["on"] = data.pop(True)
    return data


def run_job(
    workflow: Path,
    job_name: str,
    workspace: Path,
    *,
    github: dict,
    secrets: dict[str, str],
    base_env: dict[str, str],
    skip_ids: dict[str, str],
    path_prepend: list[str],
    vars_: dict[str, str] | None = None,
    environment_secrets: dict[str, dict[str, str]] | None = None,
    timeout: float = 900,
) -> JobResult:
    """`secrets` are the repository's; `environment_secrets[name]` those of the deployment environment `name`,
    which a job naming that environment also sees (GitHub: environment secrets override repository ones)."""
    wf = load_workflow(workflow)
    job = wf["jobs"][job_name]
    scratch = Path(tempfile.mkdtemp(prefix="gha-"))
    files = {k: scratch / k.lower() for k in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")}
    steps_ctx: dict[str, dict] = {}
    environment = job.get("environment")
    if isinstance(environment, dict):
        environment = environment.get("name")
    if environment is not None:
        environment = str(evaluate(str(environment), {"github": Ctx(github), "vars": Ctx(vars_ or {})}))
    seen = {**secrets, **(environment_secrets or {}).get(environment or "", {})}
    contexts = {
        "github": Ctx(github),
        "secrets": Ctx(seen),
        "vars": Ctx(vars_ or {}),
        "steps": Ctx(steps_ctx),
        "inputs": Ctx(github.get("event", {}).get("inputs", {})),
        "needs": Ctx({}),
        "env": Ctx({}),
    }
    failed = False
    contexts.update(success=lambda: not failed, failure=lambda: failed, cancelled=lambda: False, always=lambda: True)
    result = JobResult(environment=environment)
    if "if" in job and not evaluate(str(job["if"]), contexts):
        raise AssertionError(f"job {job_name} would not run for this event")
    extra_path = list(path_prepend)
    job_env: dict[str, str] = {}
    start = time.monotonic()
    for raw in job["steps"]:
        name = raw.get("name") or raw.get("uses") or raw.get("run", "").splitlines()[0]
        sid = raw.get("id")
        cond = str(raw.get("if", "success()"))
        if not re.search(r"\b(success|failure|cancelled|always)\(\)", cond):  # GitHub implies success() &&
            cond = f"success() && ({cond.strip().removeprefix('${{').removesuffix('}}')})"
        if not evaluate(cond, contexts):
            result.steps.append(StepResult(name, "skipped", reason=f"if: {cond}"))
            if sid:
                steps_ctx[sid] = {"outcome": "skipped", "conclusion": "skipped", "outputs": {}}
            continue
        if "uses" in raw:
            result.steps.append(StepResult(name, "skipped", reason=f"uses: {raw['uses'].split('@')[0]} (needs GitHub)"))
            continue
        if sid in skip_ids:
            result.steps.append(StepResult(name, "skipped", reason=f"id {sid}: {skip_ids[sid]}"))
            if sid:
                steps_ctx[sid] = {"outcome": "success", "conclusion": "success", "outputs": {}}
            continue
        for f in (files["GITHUB_OUTPUT"], files["GITHUB_ENV"], files["GITHUB_PATH"]):
            f.write_text("")
        env = dict(base_env)
        env.update(
            {
                "CI": "true",
                "GITHUB_ACTIONS": "true",
                "GITHUB_WORKSPACE": str(workspace),
                "GITHUB_EVENT_NAME": github["event_name"],
                "GITHUB_REF": github["ref"],
                "GITHUB_REF_NAME": github["ref_name"],
                "GITHUB_BASE_REF": github.get("base_ref", ""),
                "GITHUB_HEAD_REF": github.get("head_ref", ""),
                "GITHUB_REPOSITORY": github["repository"],
                "GITHUB_SHA": github["sha"],
                "RUNNER_TEMP": str(scratch),
                "PYTHONPATH": str(workspace / "src"),  # the editable install (skipped step) points here
                **{k: str(v) for k, v in files.items()},
            }
        )
        for scope in (wf.get("env") or {}, job.get("env") or {}):
            env.update({k: substitute(v, contexts) for k, v in scope.items()})
        env.update(job_env)
        env.update({k: substitute(v, contexts) for k, v in (raw.get("env") or {}).items()})
        env["PATH"] = os.pathsep.join([*extra_path, base_env["PATH"]])
        script = scratch / "step.sh"
        script.write_text(raw["run"])
        t0 = time.monotonic()
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        outcome = "success" if proc.returncode == 0 else "failure"
        failed = failed or outcome == "failure"
        outputs = _read_kv(files["GITHUB_OUTPUT"])
        job_env.update(_read_kv(files["GITHUB_ENV"]))
        extra_path = [p for p in files["GITHUB_PATH"].read_text().splitlines() if p] + extra_path
        if sid:
            steps_ctx[sid] = {"outcome": outcome, "conclusion": outcome, "outputs": outputs}
        result.steps.append(
            StepResult(name, outcome, round(time.monotonic() - t0, 1), proc.stdout, f"exit {proc.returncode}")
        )
    result.seconds = round(time.monotonic() - start, 1)
    result.outputs = {k: substitute(v, contexts) for k, v in (job.get("outputs") or {}).items()}
    result.summary = files["GITHUB_STEP_SUMMARY"].read_text() if files["GITHUB_STEP_SUMMARY"].is_file() else ""
    return result
