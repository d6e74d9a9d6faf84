"""CI's additions to the report: the build-mode label with the stages restored and run, and the report of a failed
pipeline step (no gate verdict, no stale results: the failed step, the failed stage, its error and the log's tail).

Run:  LLMOPS_BUILD_MODE="from scratch: ..." llmops report
      llmops report --failed "install=success repro=failure gate=skipped" --log reports/ci/repro.log
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llmops.artifacts import clip, md_table, write_text
from llmops.github import MARKER

BUILD_MODE_ENV = "LLMOPS_BUILD_MODE"
# written by `llmops.ci restore --commit` when a trusted build of this very commit (the merge queue's) had published
# its state and this run started from it: the build line says so
COMMIT_NOTE = Path("reports/ci/commit_state.txt")
FAILED_LOG_LINES = 40  # the tail of the step's log shown in the comment: the stage's own error is at its end


def with_build_mode(text: str, repro_log: Path | None = None) -> str:
    """Say how CI built this (remote reuse or from scratch, and why) right under the title, and, from the
    `dvc repro` log CI keeps, which stages were restored and which ran (the label alone says what was tried)."""
    label = os.environ.get(BUILD_MODE_ENV)
    if not label:
        return text
    line = f"Build: {label}"
    if COMMIT_NOTE.is_file():
        line += f"; {COMMIT_NOTE.read_text(encoding='utf-8').strip()}"
    if repro_log is not None and repro_log.is_file():
        stages = dvc_stages(repro_log.read_text(encoding="utf-8", errors="replace"))
        parts = [
            f"{kind} {', '.join(f'`{s}`' for s in stages[kind]) or 'none'}"
            for kind in ("restored", "ran")
            if stages[kind] or kind == "restored"
        ]
        line += f"  \nStages {'; '.join(parts)}" + (
            f"; unchanged {', '.join(f'`{s}`' for s in stages['unchanged'])}" if stages["unchanged"] else ""
        )
    return text.replace("# llmops report\n", f"# llmops report\n\n{line}\n", 1)


def dvc_stages(log: str) -> dict[str, list[str]]:
    """What `dvc repro` did per stage, read from its log: ran, restored (run-cache or pull), unchanged, failed."""

    found: dict[str, list[str]] = {"ran": [], "restored": [], "unchanged": [], "failed": []}
    for kind, pattern in (
        ("ran", r"Running stage '([^']+)'"),
        ("restored", r"Stage '([^']+)' is cached - skipping run"),
        ("restored", r"Pulling data for stage: '([^']+)'"),
        ("unchanged", r"Stage '([^']+)' didn't change, skipping"),
        ("failed", r"failed to reproduce '([^']+)'"),
    ):
        for name in re.findall(pattern, log):
            if name not in found[kind]:
                found[kind].append(name)
    found["ran"] = [s for s in found["ran"] if s not in found["restored"]]
    return found


def write_failure(reports: Path, outcomes: str, log_path: Path | None) -> dict:
    """reports/report.md for a failed CI job: the failed step, the failed stage, its error; no stale results."""
    steps = dict(pair.split("=", 1) for pair in outcomes.split() if "=" in pair)
    failed_steps = [name for name, outcome in steps.items() if outcome == "failure"] or ["unknown"]
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path and log_path.is_file() else ""
    stages = dvc_stages(log)
    errors = [line.strip() for line in log.splitlines() if line.strip().lower().startswith("error")]
    tail = "\n".join(log.splitlines()[-FAILED_LOG_LINES:]).replace("```", "'''")
    stage = stages["failed"][0] if stages["failed"] else None
    lines = [MARKER, "# llmops report", ""]
    if os.environ.get(BUILD_MODE_ENV):
        lines += [f"Build: {os.environ[BUILD_MODE_ENV]}", ""]
    lines += [
        f"## :x: Pipeline failed at step `{failed_steps[0]}`" + (f", stage `{stage}`" if stage else ""),
        "",
        "No gate verdict: nothing was judged, and no results from an earlier run are shown.",
        "",
        md_table(["step", "outcome"], [[n, o or "not run"] for n, o in steps.items()]),
        "",
    ]
    if stage:
        before = [s for s in stages["ran"] if s != stage]
        lines += [
            f"Stages before it: ran {', '.join(before) or 'none'}; restored "
            f"{', '.join(stages['restored']) or 'none'}; unchanged {', '.join(stages['unchanged']) or 'none'}.",
            "",
        ]
    if errors:
        lines += ["Why:", "", *(f"> {clip(e, 500)}" for e in errors[-5:]), ""]
    if tail:
        lines += [
            f"<details><summary>last {FAILED_LOG_LINES} lines of the log</summary>",
            "",
            "```",
            tail,
            "```",
            "",
            "</details>",
            "",
        ]
    out = reports / "report.md"
    write_text(out, "\n".join(lines))
    return {"report": str(out), "failed_step": failed_steps[0], "failed_stage": stage}
