"""The `pipeline` job of .github/workflows/pipeline.yml, executed here step by step in fresh clones (slow tier).

Run:  pytest -m slow tests/test_workflow_sim.py -s     (-s prints the per-situation table: stages, wall time)

tests/workflow_sim.py runs every `run:` step as GitHub would (bash -eo pipefail, GitHub's env, secrets only
where the workflow maps them); `uses:` steps and the install step are skipped and listed (the clone is the
checkout, this test's venv is the install). The simulated origin's "main" is this repository with a shrunk
params.yaml (conftest.shrink) and relaxed gate thresholds committed, so a full build takes seconds, not minutes,
and the tiny model passes its gate (the gate's own rules are tested in test_gate.py). Situations:
  no remote        PR on the template as shipped: every stage builds, the job is green
  remote (moto)    main push builds and pushes outputs + run-cache + its state; a PR changing a train param
                   reruns train..report only; a PR changing a gate threshold reruns gate + report only;
                   a PR whose prepare stage fails gets a report naming the stage and the error
  merge queue      the queue's build of a reviewed PR (write environment) pushes the run-cache and its commit's
                   state, not main's; a PR stacked on it restores train from the run-cache; main's build of the
                   queued commit restores every stage and reruns none
  fork PR          remote configured, no secrets: builds from scratch, labelled, never touches credentials
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, copy_repo, moto_s3, offline_env, shrink
from workflow_sim import JobResult, run_job

pytestmark = pytest.mark.slow

WORKFLOW = ROOT / ".github/workflows/pipeline.yml"
REPO = "acme/llm"
BUCKET = "llmops-sim"
STAGES = ["base", "prepare", "train", "eval_base", "eval_tuned", "judge", "gate", "report"]
TIMINGS: dict[str, dict] = {}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env=offline_env(cwd), capture_output=True, text=True)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def edit_params(repo: Path, change) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    change(raw)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def relax_gate(raw: dict) -> dict:
    # The shrunk model (8 LoRA steps) learns little: thresholds it passes, so the CI mechanics are what is tested.
    raw["gate"].update(domain_min=0.0, domain_min_lift=None, domain_gain_significant=False, regression_min_ratio=0.01)
    return raw


def sim_size(raw: dict) -> dict:
    raw["eval"].update(
        limit=8, bootstrap_samples=100, max_gen_toks=12, domain_tasks=["triage_gen"], regression_tasks=["general_qa"]
    )
    raw["judge"].update(bootstrap_samples=100, max_tokens=16)
    return raw


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """The simulated GitHub repository: this checkout, with a shrunk params.yaml committed on main."""
    repo = copy_repo(tmp_path_factory.mktemp("origin"))
    edit_params(repo, lambda raw: relax_gate(sim_size(shrink(raw))))
    # 16 held-out items instead of 60: eval and judge cost scale with it
    lines = (repo / "data/raw/eval.jsonl").read_text().splitlines()[:16]
    (repo / "data/raw/eval.jsonl").write_text("\n".join(lines) + "\n")
    git(repo, "commit", "-qam", "simulation: shrunk params, relaxed gate")
    return repo


def branch(origin: Path, name: str, change=None, base: str = "main") -> None:
    git(origin, "checkout", "-q", "-B", name, base)
    if change:
        edit_params(origin, change)
        git(origin, "commit", "-qam", f"{name}: params change")
    git(origin, "checkout", "-q", "main")


def runner_env(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in offline_env(tmp).items() if not k.startswith(("AWS_", "GITHUB_", "MLFLOW_", "PYTHONPATH"))}
    # a runner has no MLflow store configured: the pipeline's default (sqlite in the workspace) applies
    env.update(extra or {})
    return env


def run_event(
    origin: Path,
    tmp: Path,
    *,
    event: str,
    ref_branch: str,
    secrets: dict[str, str],
    fork: bool = False,
    env_extra: dict[str, str] | None = None,
    local_config: str = "",
    vars_: dict[str, str] | None = None,
    environment_secrets: dict[str, dict[str, str]] | None = None,
) -> tuple[Path, JobResult]:
    """A fresh runner: clone (the checkout step, fetch-depth 0), then the job's steps."""
    ws = tmp / f"runner-{event}-{ref_branch}"
    subprocess.run(["git", "clone", "-q", "-b", ref_branch, str(origin), str(ws)], check=True, env=offline_env(tmp))
    if local_config:  # the moto endpoint: runner configuration, git-ignored, never committed
        (ws / ".dvc/config.local").write_text(local_config)
    sha = git(ws, "rev-parse", "HEAD")
    github = {
        "event_name": event,
        "repository": REPO,
        "sha": sha,
        "token": "not-used",
        "event": {"repository": {"default_branch": "main"}},
    }
    if event == "push":
        github.update(ref=f"refs/heads/{ref_branch}", ref_name=ref_branch, base_ref="")
    elif event == "merge_group":  # GitHub's queue branch gh-readonly-queue/main/pr-<n>-<sha>: main + the PR
        github.update(ref=f"refs/heads/{ref_branch}", ref_name=ref_branch, base_ref="")
        github["event"]["merge_group"] = {
            "base_ref": "refs/heads/main",
            "base_sha": git(ws, "rev-parse", "origin/main"),
            "head_ref": f"refs/heads/{ref_branch}",
            "head_sha": sha,
        }
    else:
        github.update(ref="refs/pull/7/merge", ref_name="7/merge", base_ref="main", head_ref=ref_branch)
        github["event"]["pull_request"] = {
            "number": 7,
            "head": {"repo": {"full_name": "someone/llm" if fork else REPO}},
            "base": {"sha": git(ws, "rev-parse", "origin/main")},
        }
    result = run_job(
        WORKFLOW,
        "pipeline",
        ws,
        github=github,
        secrets=secrets,
        base_env=runner_env(tmp, env_extra),
        skip_ids={"install": "make install skipped: this test's venv is on PATH (its GITHUB_PATH)"},
        path_prepend=[str(BIN)],
        vars_=vars_,
        environment_secrets=environment_secrets,
    )
    return ws, result


def stages_of(ws: Path) -> dict[str, list[str]]:
    from llmops.ci_report import dvc_stages

    return dvc_stages((ws / "reports/ci/repro.log").read_text())


def record(name: str, ws: Path, result: JobResult) -> dict[str, list[str]]:
    st = stages_of(ws) if (ws / "reports/ci/repro.log").is_file() else {}
    TIMINGS[name] = {
        "wall_s": result.seconds,
        "green": result.ok,
        **st,
        "skipped": [f"{s.name} ({s.reason})" for s in result.steps if s.outcome == "skipped"],
    }
    print(
        f"\n[{name}] {result.seconds:.0f}s green={result.ok} ran={st.get('ran')} restored={st.get('restored')} "
        f"unchanged={st.get('unchanged')} failed={st.get('failed')}"
    )
    return st


def explain(result: JobResult) -> str:
    return "\n".join(
        f"--- {s.name}: {s.outcome} {s.reason}\n{s.log[-3000:]}" for s in result.steps if s.outcome == "failure"
    )


def test_no_remote_pull_request_builds_everything_and_is_green(origin, tmp_path):
    branch(origin, "pr-docs")
    ws, result = run_event(origin, tmp_path, event="pull_request", ref_branch="pr-docs", secrets={})
    st = record("no remote (PR)", ws, result)
    assert result.ok, explain(result)
    assert result.outputs["gate_exit_code"] == "0"
    assert st["ran"] == STAGES and not st["restored"] and not st["failed"]
    report = (ws / "reports/report.md").read_text()
    assert "Build: from scratch: no DVC remote configured" in report and "Gate: **pass**" in report
    assert report in result.summary  # the job summary carries it too
    # the steps that need GitHub are listed, not silently dropped
    assert {"actions/checkout", "actions/setup-python", "actions/upload-artifact"} <= {
        s.reason.split()[1] for s in result.steps if s.reason.startswith("uses:")
    }
    assert result.step("install").reason.startswith("id install")
    assert result.step("failure report").outcome == "skipped"


# --- S3 remote (moto_server on loopback) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3(tmp_path_factory.mktemp("moto"), BUCKET) as server:
        yield server


SECRETS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Credentials live in deployment environments, not the repository: `dvc-read` (pull requests; read-only keys in a
# real setup, which moto cannot enforce: the tests check that a PR job writes nothing) and `dvc-write` (main only)
ENVIRONMENTS = {"dvc-read": SECRETS, "dvc-write": SECRETS}


@pytest.fixture(scope="module")
def remote_main(origin, s3, tmp_path_factory):
    """A team adds an S3 remote on main; main's push run builds everything and pushes it."""
    endpoint, env = s3
    git(origin, "checkout", "-q", "-B", "main-remote", "main")
    subprocess.run(
        ["dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc"],
        cwd=origin,
        check=True,
        env=offline_env(origin),
        capture_output=True,
    )
    git(origin, "add", ".dvc/config")
    git(origin, "commit", "-qm", "dvc remote")
    git(origin, "checkout", "-q", "main")
    git(origin, "reset", "-q", "--hard", "main-remote")
    tmp = tmp_path_factory.mktemp("remote")
    # the moto endpoint reaches the runner as repository variables (MinIO, R2, Ceph): nothing in git, no local config
    repo_vars = {"DVC_S3_ENDPOINT_URL": endpoint, "DVC_S3_REGION": "us-east-1"}
    ws, result = run_event(
        origin,
        tmp,
        event="push",
        ref_branch="main",
        secrets={},
        environment_secrets=ENVIRONMENTS,
        env_extra=env,
        vars_=repo_vars,
    )
    return {"tmp": tmp, "env": env, "vars": repo_vars, "ws": ws, "result": result}


def bucket_objects(endpoint: str) -> dict[str, str]:
    """key -> ETag of every object on the simulated remote: what a job changed, not only what it added."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    return {
        o["Key"]: o["ETag"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    }


def remote_run(origin: Path, tmp: Path, remote_main: dict, s3, *, event: str, ref_branch: str, **kw):
    """run_event on a runner configured for the moto remote; result.written = the objects the job added or changed."""
    before = bucket_objects(s3[0])
    kw.setdefault("environment_secrets", ENVIRONMENTS)
    ws, result = run_event(
        origin,
        tmp,
        event=event,
        ref_branch=ref_branch,
        secrets={},
        env_extra=remote_main["env"],
        vars_=remote_main["vars"],
        **kw,
    )
    after = bucket_objects(s3[0])
    result.written = sorted(k for k in after if before.get(k) != after[k])
    return ws, result


def test_main_push_builds_and_fills_the_remote(remote_main, s3):
    ws, result = remote_main["ws"], remote_main["result"]
    st = record("remote: main push (first)", ws, result)
    assert result.ok, explain(result)
    assert result.environment == "dvc-write"  # the one job holding write keys: the default branch's, reviewed code
    assert st["ran"] == STAGES
    keys = list(bucket_objects(s3[0]))
    assert any(k.startswith("dvc/files/md5/") for k in keys)
    assert any(k.startswith("dvc/runs/") for k in keys), "dvc push --run-cache"
    assert "dvc/llmops-state/main.tar.gz" in keys
    built = (ws / "reports/report.md").read_text()
    assert "Build: DVC remote" in built and "Stages restored none; ran `base`" in built  # nothing to reuse yet


@pytest.fixture(scope="module")
def pr(origin, remote_main, s3):
    def _run(name: str, change, environments=ENVIRONMENTS, fork=False, base="main"):
        branch(origin, name, change, base=base)
        return remote_run(
            origin,
            remote_main["tmp"],
            remote_main,
            s3,
            event="pull_request",
            ref_branch=name,
            environment_secrets=environments,
            fork=fork,
        )

    return _run


def test_pr_changing_a_train_param_reruns_train_to_report_only(pr):
    ws, result = pr("pr-train", lambda raw: raw["train"].update(learning_rate=0.002))
    st = record("remote: PR train.learning_rate", ws, result)
    assert result.ok, explain(result)
    # PR code never holds write keys: the job ran in `dvc-read`, pushed nothing, and the remote is as main left it
    assert result.environment == "dvc-read" and result.step("dvc push").outcome == "skipped"
    assert result.written == [], result.written
    # the report compares with what main's CI built and published (not main's committed dvc.lock): item by item,
    # and the metrics against main's published ones
    report = (ws / "reports/report.md").read_text()
    noise = report.split("## Change or noise?", 1)[1].split("\n## ", 1)[0]
    assert "`origin/main` as its CI last built it" in noise and "| triage_gen | " in noise, noise
    metrics = report.split("## Metrics diff against", 1)[1].split("\n## ", 1)[0]
    assert "not available" not in metrics and "train.json:" in metrics, metrics
    assert st["ran"] == ["train", "eval_tuned", "judge", "gate", "report"]
    assert sorted(st["restored"] + st["unchanged"]) == ["base", "eval_base", "prepare"]
    # the judge reran on main's cache (pulled, a persist output): the calibration set was judged already
    judge = json.loads((ws / "reports/judge.json").read_text())
    assert judge["cache_hits"] >= judge["calibration"]["n"] > 0, judge


def test_pr_changing_only_a_gate_threshold_reruns_gate_and_report_only(pr):
    """Tightening domain_min above what the shrunk model scores: only gate and report rerun, and the new
    threshold decides (the job goes red at its last step, after the report was written and summarised)."""
    ws, result = pr("pr-gate", lambda raw: raw["gate"].update(domain_min=0.01))
    st = record("remote: PR gate.domain_min", ws, result)
    assert st["ran"] == ["gate", "report"]
    assert sorted(st["restored"] + st["unchanged"]) == sorted(set(STAGES) - {"gate", "report"})
    assert result.outputs["gate_exit_code"] == "1"
    assert [s.name for s in result.steps if s.outcome == "failure"] == [result.steps[-1].name]
    report = (ws / "reports/report.md").read_text()
    assert "Gate: **fail**" in report and "domain_min 0.01" in report and "Build: DVC remote" in report


def test_fork_pr_without_secrets_rebuilds_labelled_and_a_failed_stage_is_reported(pr):
    """A fork PR (remote configured, no secrets) whose change breaks prepare: scratch mode, no credential
    errors, base rebuilt on the runner, and the report names the failed stage and its error."""
    ws, result = pr(
        "pr-fork-broken", lambda raw: raw["prepare"].update(min_examples=100000), environments={}, fork=True
    )
    st = record("fork PR, prepare fails", ws, result)
    assert not result.ok and result.step("dvc repro").outcome == "failure"
    assert st["ran"] == ["base", "prepare"] and st["failed"] == ["prepare"] and not st["restored"]
    assert result.step("dvc push").outcome == "skipped"  # scratch mode never talks to the remote
    log = "\n".join(s.log for s in result.steps).lower()
    assert "unable to locate credentials" not in log and "nocredentialserror" not in log
    assert result.step("gate (").outcome == "skipped" and result.step("failure report").outcome == "success"
    report = (ws / "reports/report.md").read_text()
    print("\n--- the comment a reviewer sees after the failed stage ---\n" + report)
    assert report.startswith("<!-- llmops-report -->")
    assert "Build: from scratch: a DVC remote is configured but this run has no credentials" in report
    assert "Pipeline failed at step `repro`, stage `prepare`" in report
    assert "min_examples" in report and "Gate: **" not in report
    assert report in result.summary
    assert not (ws / "reports/gate.json").exists()  # main's committed verdict never reaches this run's artifact


QUEUE = "gh-readonly-queue/main/pr-8-queued"


@pytest.fixture(scope="module")
def queued(origin, remote_main, s3):
    """A reviewed PR changing a train param enters the merge queue: GitHub builds main + the PR on a queue branch."""
    branch(origin, QUEUE, lambda raw: raw["train"].update(learning_rate=0.003))
    return remote_run(origin, remote_main["tmp"], remote_main, s3, event="merge_group", ref_branch=QUEUE)


def test_merge_queue_build_writes_the_run_cache_and_its_commits_state_not_mains(queued):
    ws, result = queued
    st = record("merge queue (train param)", ws, result)
    assert result.ok, explain(result)
    assert result.environment == "dvc-write" and result.step("dvc push").outcome == "success"
    assert "train" in st["ran"]
    sha = git(ws, "rev-parse", "HEAD")
    assert f"dvc/llmops-state/commits/{sha}.tar.gz" in result.written
    assert any(k.startswith("dvc/runs/") for k in result.written), "its run-cache entries"
    assert "dvc/llmops-state/main.tar.gz" not in result.written  # main's state moves only when main has the commit


def test_pr_stacked_on_the_queued_commit_restores_train_from_the_run_cache(pr, queued):
    """Same train inputs as the queued build, main's published lock still the old one: train and eval_tuned come
    from the run-cache the queue pushed. Before `llmops.ci restore` fetched the run-cache entries, `dvc repro
    --pull` consulted only the runner's empty local run-cache and retrained: why main once missed a PR's training."""
    ws, result = pr("pr-stacked", lambda raw: raw["report"].update(worst_items=6), base=QUEUE)  # report only
    st = record("remote: PR stacked on the queue", ws, result)
    assert result.ok, explain(result)
    assert result.written == [], result.written
    assert {"train", "eval_tuned"} <= set(st["restored"]) and "train" not in st["ran"], st
    log = result.step("dvc repro").log
    assert "Stage 'train' is cached - skipping run" in log and "run-cache entries" in log


def test_main_after_the_merge_reuses_the_queued_build_and_reruns_nothing(origin, remote_main, queued, s3):
    """The queue merges: main fast-forwards to the queued commit. Its build restores that commit's state (the
    judge's persist output included) and reruns no stage; then it publishes main's state."""
    git(origin, "checkout", "-q", "main")
    git(origin, "merge", "-q", "--ff-only", QUEUE)
    tmp = remote_main["tmp"] / "after-merge"  # a fresh runner: the first main push's workspace stays
    tmp.mkdir()
    ws, result = remote_run(origin, tmp, remote_main, s3, event="push", ref_branch="main")
    st = record("remote: main after the merge", ws, result)
    assert result.ok, explain(result)
    assert st["ran"] == [], st
    assert {"train", "eval_tuned", "judge"} <= set(st["restored"] + st["unchanged"]), st
    report = (ws / "reports/report.md").read_text()
    assert "started from the state a trusted build of this very commit" in report, report[:600]
    assert "dvc/llmops-state/main.tar.gz" in result.written  # main's state moves now


def test_zz_print_timings():
    """Printed with -s: the table docs/gate-ci-deploy.md quotes."""
    for name, t in TIMINGS.items():
        print(
            f"{name:32s} {t['wall_s']:6.1f}s green={t['green']} ran={t.get('ran')} "
            f"restored/unchanged={sorted(t.get('restored', []) + t.get('unchanged', []))}"
        )
    out = os.environ.get("LLMOPS_SIM_TIMINGS")
    if out:
        Path(out).write_text(json.dumps(TIMINGS, indent=2))
