"""The GitHub Actions workflows: zizmor (offline) finds nothing, the GitHub workflow JSON schema accepts them, and
the structure the deploy's safety rests on holds (deploy needs the gated job, default branch only, production)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_sim import Ctx, evaluate

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


@pytest.mark.integration
def test_zizmor_offline_reports_no_findings():
    # --strict-collection: a workflow zizmor cannot parse is an error, not silently skipped
    proc = subprocess.run(
        # auditor: the strictest persona (it also wants every secret inside a deployment environment)
        [str(BIN / "zizmor"), "--offline", "--strict-collection", "--persona", "auditor", str(WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout
    for f in FILES:
        assert f"completed {f.relative_to(ROOT)}" in proc.stderr or f"completed {f}" in proc.stderr, proc.stderr


@pytest.mark.integration
def test_github_workflow_schema():
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, FILES)],
        capture_output=True,
        text=True,
    )
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
    # it runs no code from the PR: the base branch's commit is checked out, nothing installed, stdlib only
    assert steps(comment)[0]["with"]["ref"] == "${{ github.event.pull_request.base.sha }}"
    runs = " ".join(s.get("run", "") for s in steps(comment))
    assert "make install" not in runs and "dvc" not in runs and "python3 -m llmops.github" in runs
    assert "head.repo.full_name == github.repository" in comment["if"]


def secret_refs(step: dict) -> set[str]:
    return set(re.findall(r"secrets\.(\w+)", yaml.safe_dump(step)))


def test_pipeline_job_builds_what_is_missing_and_pushes_in_remote_mode():
    wf = load("pipeline.yml")
    assert "pull_request" in wf["on"] and wf["defaults"]["run"]["shell"] == "bash"  # -eo pipefail
    job = wf["jobs"]["pipeline"]
    checkout, setup = steps(job)[:2]
    assert checkout["with"]["fetch-depth"] == 0
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "requirements/*.lock"
    by_id = {s["id"]: s for s in steps(job) if "id" in s}
    joined = "\n".join(s.get("run", "") for s in steps(job))
    assert "--allow-missing" not in joined  # outputs absent means build them, never "skip"
    assert "dvc repro --pull" in by_id["repro"]["run"] and "dvc repro 2>&1" in by_id["repro"]["run"]
    assert "dvc push --run-cache" in by_id["push"]["run"] and "llmops.ci publish" in by_id["push"]["run"]
    # only reviewed code writes the remote and holds the write environment: a push to the default branch, or the
    # merge queue's build for it (issue #25: PR code never holds keys that write what main or other PRs read)
    for event, ref_name, queue_base, trusted in [
        ("push", "main", "", True),
        ("push", "release", "", False),
        ("pull_request", "7/merge", "", False),
        ("merge_group", "gh-readonly-queue/main/pr-7-abc", "refs/heads/main", True),
        ("merge_group", "gh-readonly-queue/release/pr-7-abc", "refs/heads/release", False),
    ]:
        github = {
            "event_name": event,
            "ref_name": ref_name,
            "event": {"repository": {"default_branch": "main"}, "merge_group": {"base_ref": queue_base}},
        }
        ctx = {"github": Ctx(github), "steps": Ctx({"mode": {"outputs": {"mode": "remote"}}})}
        assert evaluate(job["environment"], ctx) == ("dvc-write" if trusted else "dvc-read"), (event, ref_name)
        assert bool(evaluate(by_id["push"]["if"], ctx)) is trusted, (event, ref_name)
    assert "merge_group" in wf["on"]
    assert "rm -f reports/report.md reports/gate.json" in by_id["mode"]["run"]  # nor main's committed verdict
    # secrets: never in the install step nor at job/workflow level; the mode step only learns whether one is set
    assert "env" not in job and "secrets" not in yaml.safe_dump(wf.get("env"))
    assert not secret_refs(by_id["install"]) and by_id["install"].get("env") is None
    assert by_id["mode"]["env"] == {
        "HAS_CREDENTIALS": "${{ secrets.AWS_ACCESS_KEY_ID != '' }}",
        "DVC_S3_ENDPOINT_URL": "${{ vars.DVC_S3_ENDPOINT_URL }}",  # variables, not secrets: no key among them
        "DVC_S3_REGION": "${{ vars.DVC_S3_REGION }}",
    }
    assert {n for s in steps(job) for n in secret_refs(s)} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    order = [
        next(i for i, s in enumerate(steps(job)) if s.get("id") == k)
        for k in ("install", "mode", "repro", "push", "gate", "report")
    ]
    assert order == sorted(order)
    failure = next(s for s in steps(job) if s.get("if") == "${{ failure() }}")
    assert "llmops report --failed" in failure["run"] and "steps.repro.outcome" in failure["env"]["OUTCOMES"]
    uploads = [s for s in steps(job) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert any(s["with"]["path"].strip() == "reports/" and s["if"] == "${{ !cancelled() }}" for s in uploads)
    # the job fails when the gate did not exit 0 (after the report was written and uploaded)
    last = steps(job)[-1]
    assert (
        last["env"]["GATE_EXIT_CODE"] == "${{ steps.gate.outputs.exit_code }}"
        and 'test "$GATE_EXIT_CODE" = "0"' in last["run"]
    )
    assert job["outputs"]["gate_exit_code"] == "${{ steps.gate.outputs.exit_code }}"


def test_deploy_needs_the_gate_runs_on_default_branch_in_production():
    jobs = load("pipeline.yml")["jobs"]
    deploy = jobs["deploy"]
    assert deploy["needs"] == "pipeline" and "llmops gate" in "\n".join(
        s.get("run", "") for s in steps(jobs["pipeline"])
    )
    assert deploy["environment"] == "production"
    cond = deploy["if"]
    assert "github.event_name == 'push'" in cond
    assert "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)" in cond
    assert "needs.pipeline.outputs.gate_exit_code == '0'" in cond
    # no always()/failure()/cancelled(): a failed (gate != 0) pipeline job skips deploy
    assert not re.search(r"always\(\)|failure\(\)|cancelled\(\)", cond)
    assert deploy["permissions"] == {"contents": "read"} and "env" not in deploy
    # the MLflow secrets reach the deploy step only (which re-evaluates the gate rules itself), not the install
    with_secrets = [s for s in steps(deploy) if secret_refs(s)]
    assert len(with_secrets) == 1 and with_secrets[0]["run"].strip() == "llmops deploy"
    assert secret_refs(with_secrets[0]) == {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    }


def test_rollback_and_redeploy_from_the_actions_tab():
    wf = load("pipeline.yml")
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert inputs["action"]["options"] == ["rollback", "redeploy"] and inputs["version"]["type"] == "string"
    job = wf["jobs"]["registry"]
    assert job["environment"] == "production" and "github.event_name == 'workflow_dispatch'" in job["if"]
    assert wf["jobs"]["pipeline"]["if"] == "${{ github.event_name != 'workflow_dispatch' }}"
    last = steps(job)[-1]
    assert last["env"]["ACTION"] == "${{ inputs.action }}" and last["env"]["VERSION"] == "${{ inputs.version }}"
    assert "llmops rollback" in last["run"] and 'llmops deploy --version "$VERSION"' in last["run"]
    assert [s for s in steps(job) if secret_refs(s)] == [last]


@pytest.mark.integration
def test_progress_bars_redraw_at_most_every_30_s_in_the_pipeline_log():
    """Issue #26 item 6: lm-eval's tqdm bars would put a redraw per batch into the CI log; the workflow's env
    caps them, and tqdm (which reads TQDM_* defaults from the environment when imported) honours it."""
    value = load("pipeline.yml")["env"]["TQDM_MININTERVAL"]
    assert float(value) >= 30
    code = "from tqdm import tqdm\nwith tqdm(total=1) as bar: print(bar.mininterval)"
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "TQDM_MININTERVAL": value}, capture_output=True, text=True
    )
    assert float(proc.stdout) == float(value), proc.stderr
