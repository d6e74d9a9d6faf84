"""The report's sections, one per report file: gate, base vs tuned per task, chart, judge, worst items, data, runtime.

Used by llmops.report (the stage that assembles them); each takes what was read from reports/ (a contract, or why it
is not available) and returns Markdown. A missing or broken input says so in its own section; the rest still renders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmops import schemas
from llmops.artifacts import clip, md_cell, md_table, read_jsonl
from llmops.schemas import DataStats, EvalComparison, EvalResults, GateReport, JudgeReport, Model, Verdict

NA = "_not available_"


def read(path: Path, model: type[Model]) -> tuple[Model | None, str | None]:
    """(the validated model, None) or (None, why it is not available): a field that breaks its contract is
    named, never rendered."""
    if not path.is_file():
        return None, f"{NA} ({path} missing)"
    try:
        return schemas.read(path, model), None
    except schemas.ContractError as exc:
        return None, f"{NA} ({exc})"


def read_plain_json(path: Path) -> Any:
    """A report file with no contract (base.json, train_perf.json: free-form metrics), or None."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def fmt_g(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else fmt(value)


def fmt_ci(pair: list[float] | None) -> str:
    return "" if pair is None else f"[{fmt(pair[0])}, {fmt(pair[1])}]"


def gate_section(gate: GateReport | None, why: str | None) -> str:
    if gate is None:
        return f"**Verdict: not available** ({why}). Without a gate verdict nothing deploys."
    icon = {Verdict.passed: "✅", Verdict.failed: "❌"}.get(gate.verdict, "⚠️")
    lines = [
        f"**Verdict: {icon} {gate.verdict}** (exit code {gate.exit_code}; adapter `{str(gate.adapter_sha256)[:12]}`)",
        "",
    ]
    rows = [
        [
            "✅" if r.passed else "❌" if r.binding else "⚠️",
            r.rule,
            "binding" if r.binding else "advisory",
            fmt_g(r.observed),
            f"{r.op} {fmt_g(r.threshold)}",
            r.reason,
            r.detail,
        ]
        for r in gate.rules
    ]
    lines.append(md_table(["", "rule", "kind", "observed", "threshold", "reason", "statistics"], rows))
    lines += [
        "",
        "`domain_gain:*` is the one-sided p of a gain (exact McNemar for 0/1 items), against the gate's alpha. "
        "`regression:*` is the one-sided p that tuned - base is above minus the allowed margin (`noninferiority`: "
        "exact, ordered by Tango's score for 0/1 items), or the observed delta against it (`point`); the "
        "statistics column gives both. *one item* is what a single eval answer moves a task's score.",
    ]
    if gate.errors:
        lines += ["", "**The gate could not judge:**", *[f"- {md_cell(e, 500)}" for e in gate.errors]]
    return "\n".join(lines)


def tasks_section(compare: EvalComparison | None, why: str | None) -> str:
    if compare is None:
        return why or NA
    rows = []
    for name, t in compare.tasks.items():
        moved = f"+{t.gained} / -{t.lost}" if t.binary else "-"
        rows.append(
            [
                name,
                t.kind,
                t.metric,
                t.n,
                fmt(t.resolution()),
                fmt(t.base),
                fmt(t.tuned),
                f"{fmt(t.delta)} {fmt_ci(t.delta_ci)}",
                f"{fmt(t.ratio)} {fmt_ci(t.ratio_ci)}",
                moved,
                fmt(t.p_value, 4),
                t.test,
            ]
        )
    notes = []
    for name, t in compare.tasks.items():
        if (b := t.baseline) is not None:
            above = "above" if t.tuned > max(b.chance, b.majority) else "**not above**"
            notes.append(
                f"- {name}: input-blind baselines from the eval labels: chance {fmt(b.chance)} "
                f"({b.labels} labels), majority class {fmt(b.majority)}; tuned {fmt(t.tuned)} is {above} both."
            )
    for finding in degenerate_findings(compare):
        notes.append(f"- ⚠️ **Degenerate output**: {finding}.")
    return (
        "95% confidence intervals in brackets, and a two-sided p from the same method (Tango's score test for 0/1 "
        "items, the paired t otherwise; the ratio's interval is a bootstrap); the gate runs its own one-sided tests; "
        "*gained/lost* counts items only one model got right.\n\n"
        + md_table(
            [
                "task",
                "kind",
                "metric",
                "n",
                "one item",
                "base",
                "tuned",
                "delta [CI]",
                "ratio [CI]",
                "gained / lost",
                "p",
                "test",
            ],
            rows,
        )
        + ("\n\n" + "\n".join(notes) if notes else "")
    )


def degenerate_findings(compare: EvalComparison | None) -> list[str]:
    """Plain-words findings about the tuned model's answers (all empty, all alike), per task."""
    if compare is None:
        return []
    return [f"{name}: {finding}" for name, t in compare.tasks.items() if (finding := t.degenerate())]


def chart_section(compare: EvalComparison | None, why: str | None) -> str:
    """A Mermaid xychart GitHub renders: two bar series on alternating slots, so bars never overlap."""
    pairs = [(n, t.base, t.tuned) for n, t in compare.tasks.items()] if compare is not None else []
    if not pairs:
        return why or NA
    labels = ", ".join(
        f'"{md_cell(n, 40).replace(chr(34), "")} {side}"' for n, _, _ in pairs for side in ("base", "tuned")
    )
    base = ", ".join(f"{v:.4f}, 0" for _, v, _ in pairs)
    tuned = ", ".join(f"0, {v:.4f}" for _, _, v in pairs)
    return "\n".join(
        [
            "First bar of each pair: base model; second: tuned adapter.",
            "",
            "```mermaid",
            "xychart-beta",
            '    title "Score per task: base vs tuned"',
            f"    x-axis [{labels}]",
            '    y-axis "score" 0 --> 1',
            f"    bar [{base}]",
            f"    bar [{tuned}]",
            "```",
        ]
    )


def judge_section(judge: JudgeReport | None, why: str | None) -> str:
    if judge is None:
        return why or NA
    rows = [
        [
            name,
            fmt(r.tuned.mean),
            fmt_ci(r.tuned.ci),
            fmt(r.base.mean),
            fmt(r.delta),
            fmt(r.tuned.pass_rate),
            r.tuned.n,
        ]
        for name, r in judge.rubrics.items()
    ]
    cal, tokens = judge.calibration, judge.tokens
    return "\n".join(
        [
            f"Judge `{judge.judge_model}` ({judge.provider}); calibrated: **{cal.calibrated}** "
            f"(kappa {fmt(cal.kappa)} vs min {fmt(cal.min_kappa)} on {cal.n} human labels; "
            f"{md_cell(cal.reason, 200)}). Uncalibrated judge scores are advisory.",
            "",
            md_table(["rubric", "tuned mean", "CI", "base mean", "delta", "tuned pass rate", "n"], rows),
            "",
            f"invalid rate {fmt(judge.invalid_rate)}, failure rate {fmt(judge.failure_rate)}, "
            f"{judge.calls} calls ({fmt(judge.cache_hit_rate)} cache hits), "
            f"tokens {tokens.prompt} in / {tokens.completion} out, cost ${fmt(judge.cost_usd, 4)}",
            *(
                ["", f"Judged the first {judge.items} of {judge.eval_items} eval items (`judge.limit`)."]
                if judge.items < judge.eval_items
                else []
            ),
        ]
    )


def worst_items_section(path: Path, n: int) -> str:
    """The n lowest-scored judgments of the tuned model's eval answers (reports/judge_items.jsonl)."""
    if not path.is_file():
        return f"{NA} ({path} missing)"
    # No contract for these lines (the judge writes one free-form JSON object per judgment, and a bad line must
    # cost one row, not the section), so they are read as plain dicts.
    items = [
        item
        for _, item in read_jsonl(path, strict=False)  # a bad line costs one row, not the comment
        if isinstance(item.get("score"), (int, float))
        and item.get("model") == "tuned"
        and item.get("kind", "eval") == "eval"
    ]
    if not items:
        return f"{NA} (no scored tuned items in {path})"
    items.sort(key=lambda i: (i["score"], str(i.get("id"))))
    rows = [
        [
            i.get("id"),
            i.get("rubric"),
            fmt(float(i["score"]), 2),
            clip(i.get("answer") or "", 200),
            clip(i.get("reference") or "", 120),
            clip(i.get("reasoning") or i.get("error") or "", 200),
        ]
        for i in items[:n]
    ]
    return md_table(["item", "rubric", "score", "tuned answer", "reference", "judge's reasoning"], rows)


def data_section(data: DataStats | None, why: str | None) -> str:
    if data is None:
        return why or NA
    rows = []
    for split, s in (("train", data.train), ("eval", data.eval)):
        rows.append(
            [
                split,
                s.raw,
                s.final,
                s.duplicates_dropped,
                s.dropped_too_long,
                s.truncated,
                fmt(s.tokens.mean if s.tokens else None, 1),
                s.tokens.max if s.tokens else None,
                ", ".join(f"{k}: {v}" for k, v in s.labels.items()),
            ]
        )
    leak = data.leakage
    return (
        md_table(
            ["split", "raw", "final", "duplicates", "too long", "truncated", "mean tokens", "max tokens", "labels"],
            rows,
        )
        + f"\n\nTrain/eval leakage: {data.leaked} pair(s) at or above the threshold"
        + f" (most similar pair {fmt(leak.max_similarity, 2)} vs threshold {fmt(leak.threshold, 2)})"
        + f"; truncation policy: {data.truncation_policy}."
    )


def _seconds(path: Path) -> float | None:
    """The wall seconds a report file records, if it records any."""
    if path.name in schemas.CONTRACTS:
        data, _ = read(path, schemas.CONTRACTS[path.name])
        if isinstance(data, EvalResults):
            return data.runtime_s
        if isinstance(data, JudgeReport):
            return data.timing_s.get("total")  # timing_s holds the phases the judge ran, total among them
        return None
    data = read_plain_json(path)  # no contract (base.json, train_perf.json): free-form metrics
    if not isinstance(data, dict):
        return None
    timing = data.get("timing_s")
    seconds = data.get("runtime_s", timing.get("total") if isinstance(timing, dict) else None)
    return seconds if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None


def runtime_section(reports: Path) -> str:
    rows = [
        [path.stem, fmt(float(seconds), 1)]
        for path in sorted(reports.glob("*.json"))
        if (seconds := _seconds(path)) is not None
    ]
    return md_table(["stage (report file)", "runtime (s)"], rows) if rows else NA
