"""The GitHub Actions workflows: zizmor (offline) finds nothing, the GitHub workflow JSON schema accepts them, and
the structure the deploy's safety rests on holds (deploy needs the gated job, default branch only, production)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github/workflows"
BIN = Path(sys.executable).parent
FILES = sorted(WORKFLOWS.glob("*.yml"))


def load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # PyYAML reads the bare key `on` as True (YAML 1.1); GitHub reads it as "on"
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_expected_workflows_exist():
    assert [f.name for f in FILES] == ["ci.yml", "pipeline.yml"]


def test_zizmor_offline_reports_no_findings():
    # --strict-collection: a workflow zizmor cannot parse is an error, not silently skipped
    proc = subprocess.run([str(BIN / "zizmor"), "--offline", "--strict-collection", "--persona", "pedantic",
                           str(WORKFLOWS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout
    for f in FILES:
        assert f"completed {f.relative_to(ROOT)}" in proc.stderr or f"completed {f}" in proc.stderr, proc.stderr


def test_github_workflow_schema():
    proc = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           *map(str, FILES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_runs_tests_on_every_push_and_pr():
    ci = load("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"} and ci["on"]["push"] is None
    runs = " ".join(s.get("run", "") for s in steps(ci["jobs"]["test"]))
    assert "bash .ci/run" in runs  # the README's `make test`


@pytest.mark.parametrize("name", [f.name for f in FILES])
def test_hardening(name):
    wf = load(name)
    text = (WORKFLOWS / name).read_text()
    assert wf["permissions"] == {}, "top-level permissions: {} (each job asks for what it needs)"
    assert "pull_request_target" not in text and "workflow_run" not in text
    for job_name, job in wf["jobs"].items():
        assert "permissions" in job, job_name
        assert set(job["permissions"]) <= {"contents", "pull-requests"}, job_name
        assert job["permissions"].get("contents") == "read", job_name
        for step in steps(job):
            uses = step.get("uses")
            if uses:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), f"{uses}: pin by full commit SHA"
            if uses and uses.startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
            # no expression expansion inside shell: untrusted input goes through env
            assert "${{" not in step.get("run", ""), (job_name, step.get("name"))
    pinned = re.findall(r"uses: (\S+)@([0-9a-f]{40})\s+# (v\d+\.\d+\.\d+)", text)
    assert pinned and len(pinned) == text.count("uses: "), "every pinned action carries its version comment"


def test_only_the_comment_job_may_write_to_the_pr():
    jobs = load("pipeline.yml")["jobs"]
    writers = [n for n, j in jobs.items() if j["permissions"].get("pull-requests") == "write"]
    assert writers == ["comment"]
    comment = jobs["comment"]
    # it runs no pipeline code: no install, no dvc, no llmops CLI; only the stdlib comment module
    runs = " ".join(s.get("run", "") for s in steps(comment))
    assert "make install" not in runs and "dvc" not in runs and "python3 -m llmops.github" in runs
    assert "head.repo.full_name == github.repository" in comment["if"]


def test_pipeline_job_reproduces_gates_reports_and_uploads():
    wf = load("pipeline.yml")
    assert "pull_request" in wf["on"]
    job = wf["jobs"]["pipeline"]
    checkout = steps(job)[0]
    assert checkout["with"]["fetch-depth"] == 0
    runs = [s.get("run", "") for s in steps(job)]
    joined = "\n".join(runs)
    assert "make install" in joined
    assert 'if [ -n "$(dvc remote list)" ]' in joined and "dvc pull" in joined
    assert "dvc repro --pull --allow-missing" in joined
    order = [next(i for i, r in enumerate(runs) if needle in r)
             for needle in ("make install", "dvc repro", "llmops gate", "llmops report")]
    assert order == sorted(order)
    uploads = [s for s in steps(job) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert any(s["with"]["path"].strip() == "reports/" for s in uploads)
    # the job fails when the gate did not exit 0 (after the report was written and uploaded)
    last = steps(job)[-1]
    assert last["env"]["GATE_EXIT_CODE"] == "${{ steps.gate.outputs.exit_code }}" and 'test "$GATE_EXIT_CODE" = "0"' in last["run"]
    assert job["outputs"]["gate_exit_code"] == "${{ steps.gate.outputs.exit_code }}"


def test_deploy_needs_the_gate_runs_on_default_branch_in_production():
    jobs = load("pipeline.yml")["jobs"]
    deploy = jobs["deploy"]
    assert deploy["needs"] == "pipeline" and "llmops gate" in "\n".join(s.get("run", "") for s in steps(jobs["pipeline"]))
    assert deploy["environment"] == "production"
    cond = deploy["if"]
    assert "github.event_name == 'push'" in cond
    assert "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)" in cond
    assert "needs.pipeline.outputs.gate_exit_code == '0'" in cond
    # no always()/failure()/cancelled(): a failed (gate != 0) pipeline job skips deploy
    assert not re.search(r"always\(\)|failure\(\)|cancelled\(\)", cond)
    runs = [s.get("run", "") for s in steps(deploy)]
    gate_at = next(i for i, r in enumerate(runs) if r.strip() == "llmops gate")
    deploy_at = next(i for i, r in enumerate(runs) if "llmops deploy" in r)
    assert gate_at < deploy_at  # re-checked on exactly the files it ships
    assert deploy["permissions"] == {"contents": "read"}
