"""Fast checks of the CI pieces the slow workflow simulation relies on: the failure report, the build-mode
label, the DVC log reading, the `llmops report --failed` CLI, and the simulator's expression subset."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import offline_env
from workflow_sim import Ctx, evaluate, substitute

from llmops import base_branch, ci_report, report

LOG = """Pulling data for stage: 'base'
Stage 'eval_base' is cached - skipping run, checking out outputs
Running stage 'prepare':
> llmops prepare
error: data/raw/train.jsonl: 60 labelled examples, fewer than prepare.min_examples (100000)
ERROR: failed to reproduce 'prepare': failed to run: llmops prepare, exited with 1
"""


def test_dvc_stages_reads_what_repro_did():
    assert ci_report.dvc_stages(LOG) == {
        "ran": ["prepare"],
        "restored": ["eval_base", "base"],
        "unchanged": [],
        "failed": ["prepare"],
    }


def test_failure_report_names_step_stage_and_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ci_report.BUILD_MODE_ENV, "from scratch: fork PR")
    (tmp_path / "repro.log").write_text(LOG)
    out = ci_report.write_failure(
        tmp_path, "install=success mode=success repro=failure push=skipped gate= report=", tmp_path / "repro.log"
    )
    assert (out["failed_step"], out["failed_stage"]) == ("repro", "prepare")
    text = (tmp_path / "report.md").read_text()
    assert text.startswith(report.MARKER) and "Build: from scratch: fork PR" in text
    assert "Pipeline failed at step `repro`, stage `prepare`" in text
    assert "> error: data/raw/train.jsonl: 60 labelled examples, fewer than prepare.min_examples" in text
    assert "| gate | not run |" in text and "Gate: **" not in text


@pytest.mark.integration
def test_failure_report_cli_without_valid_params(tmp_path):
    """A broken params.yaml is a likely cause of the failure: the CLI must not need it."""
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    proc = subprocess.run(
        ["llmops", "report", "--failed", "install=failure"],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["failed_step"] == "install"
    assert "Pipeline failed at step `install`" in (tmp_path / "reports/report.md").read_text()


def test_build_mode_label_goes_under_the_title(monkeypatch):
    text = f"{report.MARKER}\n# llmops report\n\nGate: **pass**\n"
    assert ci_report.with_build_mode(text) == text
    monkeypatch.setenv(ci_report.BUILD_MODE_ENV, "DVC remote: reused main")
    assert (
        ci_report.with_build_mode(text)
        == f"{report.MARKER}\n# llmops report\n\nBuild: DVC remote: reused main\n\nGate: **pass**\n"
    )


def test_the_build_line_says_which_stages_were_restored_and_which_ran(monkeypatch, tmp_path):
    """Issue #25: a remote build that restored nothing must not read as one that reused the base branch."""
    text = f"{report.MARKER}\n# llmops report\n\nGate: **pass**\n"
    monkeypatch.setenv(ci_report.BUILD_MODE_ENV, "DVC remote")
    log = tmp_path / "repro.log"
    log.write_text("Running stage 'base':\nRunning stage 'prepare':\n")
    assert "Build: DVC remote  \nStages restored none; ran `base`, `prepare`\n" in ci_report.with_build_mode(text, log)
    log.write_text(
        "Stage 'base' is cached - skipping run, checking out outputs\n"
        "Stage 'prepare' didn't change, skipping\nRunning stage 'train':\n"
    )
    assert "Stages restored `base`; ran `train`; unchanged `prepare`\n" in ci_report.with_build_mode(text, log)


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("${{ github.event_name == 'push' && github.ref_name == github.event.repository.default_branch }}", True),
        ("github.base_ref || github.ref_name", "main"),
        ("${{ !cancelled() }}", True),
        ("${{ secrets.AWS_ACCESS_KEY_ID != '' }}", False),
        ("steps.mode.outputs.mode == 'remote'", False),  # a step that has not run: null
        ("format('origin/{0}', github.ref_name)", "origin/main"),
    ],
)
def test_simulator_expressions(expr, expected):
    ctx = {
        "github": Ctx(
            {
                "event_name": "push",
                "ref_name": "main",
                "base_ref": "",
                "event": {"repository": {"default_branch": "main"}},
            }
        ),
        "secrets": Ctx({}),
        "steps": Ctx({}),
        "cancelled": lambda: False,
    }
    assert evaluate(expr, ctx) == expected


def test_simulator_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match="outside the simulated subset"):
        evaluate("fromJSON(github.event)[0]", {"github": Ctx({})})
    assert substitute("a=${{ steps.x.outcome }} b", {"steps": Ctx({"x": {"outcome": "failure"}})}) == "a=failure b"


@pytest.mark.integration
def test_simulator_implies_success_for_conditions_without_a_status_function(tmp_path):
    import os

    from workflow_sim import run_job

    (tmp_path / "wf.yml").write_text("""
on: push
jobs:
  j:
    steps:
      - id: a
        run: echo "mode=remote" >> "$GITHUB_OUTPUT"; exit 1
      - name: implied success
        if: ${{ steps.a.outputs.mode == 'remote' }}
        run: echo ran
      - name: explicit failure
        if: ${{ failure() && steps.a.outputs.mode == 'remote' }}
        run: echo ran
""")
    github = {"event_name": "push", "ref": "refs/heads/main", "ref_name": "main", "repository": "a/b", "sha": "0"}
    result = run_job(
        tmp_path / "wf.yml",
        "j",
        tmp_path,
        github=github,
        secrets={},
        base_env=dict(os.environ),
        skip_ids={},
        path_prepend=[],
    )
    assert [s.outcome for s in result.steps] == ["failure", "skipped", "success"]


@pytest.mark.parametrize(
    "key, bookkeeping",
    [
        # what decides: scores, their statistics, counts of items, losses, the verdict
        ("tasks.triage_gen.tuned", False),
        ("tasks.general_qa.p_value", False),
        ("tasks.triage_mc.gained", False),
        ("tasks.triage_gen.tuned_answers.empty", False),
        ("loss_after", False),
        ("exit_code", False),
        ("rubrics.triage_quality.tuned.mean", False),
        ("failure_rate", False),
        # how it ran: hashes, timings, request and cache counters (an unchanged commit moves these)
        ("adapter_sha256", True),
        ("timing_s.total", True),
        ("attempts", True),
        ("calls", True),
        ("cache_hits", True),
        ("tokens.prompt", True),
        ("phases_s.loop", True),
        ("peak_rss_mb", True),
        ("loop_minor_faults", True),
        ("malloc.MALLOC_TRIM_THRESHOLD_", True),
    ],
)
def test_metrics_diff_keeps_decisions_in_view_and_folds_bookkeeping(key, bookkeeping):
    assert bool(base_branch.BOOKKEEPING.search(key)) == bookkeeping, key
