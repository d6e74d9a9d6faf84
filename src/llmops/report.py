"""Stage `report`: the one Markdown document a reviewer reads on the pull request (reports/report.md).

Run:  llmops report                          (diffs against params report.base_ref)
      llmops report --base-ref origin/main   (or LLMOPS_REPORT_BASE_REF=...; CI passes the PR's base branch)
      llmops comment --repo owner/name --pr 7 --file reports/report.md   (the sticky PR comment, see github.py)

Sections: gate verdict table with reasons, base vs tuned per task with CIs, a Mermaid chart GitHub renders,
DVC's own `dvc params diff` / `dvc metrics diff` against the base branch, judge summary with the worst-scored
items, data stats, runtime per stage, the MLflow run id. The report is not the gate: any missing input makes
its section say "not available" and the rest still renders. It never exceeds report.max_chars (GitHub caps a
comment at 65,536): the least important sections are dropped first and the document says which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llmops import schemas
from llmops.artifacts import write_text
from llmops.base_branch import dvc_diff, metrics_diff_section, vs_base_section
from llmops.ci_report import with_build_mode
from llmops.config import Params
from llmops.github import MARKER
from llmops.report_sections import (
    chart_section,
    data_section,
    degenerate_findings,
    gate_section,
    judge_section,
    read,
    runtime_section,
    tasks_section,
    worst_items_section,
)
from llmops.schemas import DataStats, EvalComparison, GateReport, JudgeReport, MlflowRun, Verdict

BASE_REF_ENV = "LLMOPS_REPORT_BASE_REF"


@dataclass
class Section:
    title: str
    body: str
    keep: int  # trimming drops the lowest `keep` first; 100 = never dropped

    def render(self) -> str:
        return f"## {self.title}\n\n{self.body.rstrip()}\n"


def build(params: Params, base_ref: str) -> str:
    """The whole document, already trimmed to params.report.max_chars."""
    paths, cfg = params.paths, params.report
    gate, gate_why = read(paths.report(schemas.GATE), GateReport)
    compare, compare_why = read(paths.report(schemas.EVAL_COMPARE), EvalComparison)
    judge, judge_why = read(paths.report(schemas.JUDGE), JudgeReport)
    data, data_why = read(paths.report(schemas.DATA), DataStats)
    run, _ = read(paths.report(schemas.MLFLOW_RUN), MlflowRun)
    head = "\n".join(
        [
            MARKER,
            "# llmops report",
            "",
            f"Gate: **{gate.verdict if gate else 'not available'}** · base ref `{base_ref}` · "
            f"MLflow run `{run.run_id if run else 'not available'}`"
            + (f" (experiment {run.experiment_id})" if run else ""),
            "",
            *[f"> ⚠️ **Degenerate output**: {finding}." for finding in degenerate_findings(compare)],
            "",
        ]
    )
    sections = [
        Section("Quality gate", gate_section(gate, gate_why), keep=100),
        Section("Base vs tuned per task", tasks_section(compare, compare_why), keep=90),
        Section("Chart", chart_section(compare, compare_why), keep=60),
        Section(f"Params diff against `{base_ref}`", dvc_diff("params", base_ref), keep=80),
        Section(f"Change or noise? Against `{base_ref}`", vs_base_section(params, base_ref), keep=85),
        Section(f"Metrics diff against `{base_ref}`", metrics_diff_section(base_ref, params), keep=70),
        Section("LLM judge", judge_section(judge, judge_why), keep=50),
        Section(
            f"Worst-scored items (tuned, lowest {cfg.worst_items})",
            worst_items_section(paths.report(schemas.JUDGE_ITEMS), cfg.worst_items),
            keep=10,
        ),
        Section("Data", data_section(data, data_why), keep=30),
        Section("Runtime per stage", runtime_section(paths.reports), keep=20),
    ]
    return fit(head, sections, cfg.max_chars)


def fit(head: str, sections: list[Section], max_chars: int) -> str:
    """Drop the least important sections until the document fits; say which ones went, and why."""
    kept, dropped = list(sections), []

    def doc() -> str:
        note = (
            ""
            if not dropped
            else f"> **Trimmed** to stay under {max_chars:,} characters (GitHub's comment limit): omitted "
            + ", ".join(f"'{s.title}' ({len(s.render()):,} chars)" for s in dropped)
            + ". The full reports are in the workflow's `reports` artifact.\n\n"
        )
        return head + note + "\n".join(s.render() for s in kept)

    while len(doc()) > max_chars and any(s.keep < 100 for s in kept):
        victim = min((s for s in kept if s.keep < 100), key=lambda s: s.keep)
        kept.remove(victim)
        dropped.append(victim)
    text = doc()
    if len(text) > max_chars:  # only the never-dropped sections are left and they are still too long
        tail = "\n\n> **Truncated** here to stay under the comment limit.\n"
        text = text[: max_chars - len(tail)] + tail
    return text


def run_summary(gate: GateReport | None, why: str | None, report: Path) -> list[str]:
    """What a person reads when `dvc repro` ends: the verdict, the failed rules, where the report is, what next.
    `dvc repro` itself exits 0 whatever the verdict (the gate stage runs with --no-fail so the report is always
    written); what ships is decided by `llmops gate`'s exit code, which CI reads."""
    if gate is None:
        lines = [
            f"Gate: no verdict: reports/gate.json is {why}",
            "Next: run `dvc repro` and read the failing stage's error.",
        ]
    else:
        failed = [r for r in gate.rules if r.binding and not r.passed]
        lines = [f"Gate: {gate.verdict.upper()} (`llmops gate` exits {gate.exit_code}; {gate.summary})"]
        lines += [f"  failed {r.rule}: {r.reason}" for r in failed[:8]]
        lines += [f"  could not judge: {e}" for e in gate.errors[:5]]
        if gate.verdict == Verdict.passed:
            lines.append(
                "Next: record this run as the baseline the next experiment is compared with: "
                "git add dvc.lock reports/ && git commit (and `dvc push` with a remote); then open a PR."
            )
        elif gate.verdict == Verdict.failed:
            lines.append(
                "Next: read the failed rules in the report, change the data or train params, and try it as an "
                "experiment: dvc exp run -S train.<key>=<value> (make exps compares them)."
            )
        else:
            lines.append("Next: fix what the gate could not judge (above), then dvc repro.")
    lines.append(f"Report: {report}")
    lines.append("Note: dvc repro exits 0 whatever the verdict; CI ships only when `llmops gate` exits 0.")
    return lines


def run(params: Params, base_ref: str | None = None) -> dict:
    ref = base_ref or os.environ.get(BASE_REF_ENV) or params.report.base_ref
    text = with_build_mode(build(params, ref), params.paths.reports / "ci" / "repro.log")
    out = params.paths.report(schemas.REPORT)
    write_text(out, text)
    gate, why = read(params.paths.report(schemas.GATE), GateReport)
    return {
        "report": str(out),
        "chars": len(text),
        "base_ref": ref,
        "trimmed": "**Trimmed**" in text,
        "summary": run_summary(gate, why, out),
    }
