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

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops import schemas
from llmops.artifacts import clip, md_cell, md_table, read_jsonl, write_text
from llmops.config import Params
from llmops.errors import DataError
from llmops.github import MARKER
from llmops.schemas import DataStats, EvalComparison, EvalResults, GateReport, JudgeReport, MlflowRun, Model, Verdict

BASE_REF_ENV = "LLMOPS_REPORT_BASE_REF"
NA = "_not available_"


@dataclass
class Section:
    title: str
    body: str
    keep: int  # trimming drops the lowest `keep` first; 100 = never dropped

    def render(self) -> str:
        return f"## {self.title}\n\n{self.body.rstrip()}\n"


def _read(path: Path, model: type[Model]) -> tuple[Model | None, str | None]:
    """(the validated model, None) or (None, why it is not available): a field that breaks its contract is
    named, never rendered."""
    if not path.is_file():
        return None, f"{NA} ({path} missing)"
    try:
        return schemas.read(path, model), None
    except schemas.ContractError as exc:
        return None, f"{NA} ({exc})"


def _read_plain_json(path: Path) -> Any:
    """A report file with no contract (base.json, train_perf.json: free-form metrics), or None."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _f(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def _g(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _f(value)


def _ci(pair: list[float] | None) -> str:
    return "" if pair is None else f"[{_f(pair[0])}, {_f(pair[1])}]"


def _dvc_diff(kind: str, base_ref: str) -> str:
    """DVC's own Markdown diff of the workspace against base_ref (`dvc params diff` / `dvc metrics diff`)."""
    try:
        proc = subprocess.run(["dvc", kind, "diff", base_ref, "--md"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{NA} (`dvc {kind} diff` could not run: {exc})"
    if proc.returncode:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{NA} (`dvc {kind} diff {base_ref}` failed: {md_cell(why, 200)}){_ref_hint(base_ref)}"
    table = proc.stdout.strip()
    # with nothing changed DVC still prints the table's header and separator rows: say it in words instead
    if sum(line.startswith("|") for line in table.splitlines()) <= 2:
        return f"No {kind} changed against `{base_ref}`."
    return table


# ---------------------------------------------------------------- change vs noise against the base branch
# Keys of `dvc metrics diff` that say how, not how well: hashes, timings, token, cache and page-fault counters.
# They move on every run, so they go in a collapsed block under the decision metrics.
BOOKKEEPING = re.compile(
    r"sha256|runtime|timing|_s$|_s\.|seconds|tokens|cache|calls|attempts|cost|per_s|memory|rss|peak|"
    r"environment|packages|threads|retries|experiment|run_id|n_items|steps_per|samples_per|faults|malloc"
)
DECISION_FILES = ("gate.json", "eval_compare.json", "judge.json", "train.json", "data.json")


def _metrics_diff(base_ref: str) -> tuple[dict | None, str | None]:
    try:
        proc = subprocess.run(
            ["dvc", "metrics", "diff", base_ref, "--json"], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{NA} (`dvc metrics diff` could not run: {exc})"
    if proc.returncode:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{NA} (`dvc metrics diff {base_ref}` failed: {md_cell(why, 200)}){_ref_hint(base_ref)}"
    try:
        return json.loads(proc.stdout or "{}"), None
    except json.JSONDecodeError as exc:
        return None, f"{NA} (`dvc metrics diff` printed no JSON: {exc})"


def _ref_hint(base_ref: str) -> str:
    return (
        f". Is `{base_ref}` fetched? In CI check out with `fetch-depth: 0`; locally `git fetch origin`, or "
        f"set LLMOPS_REPORT_BASE_REF / report.base_ref to a branch that exists here."
    )


def metrics_diff_section(base_ref: str) -> str:
    """Decision metrics first (scores, ratios, verdict); hashes, runtimes and counters collapsed below."""
    diff, why = _metrics_diff(base_ref)
    if diff is None:
        return why or NA
    decision, bookkeeping = [], []
    order = {name: i for i, name in enumerate(DECISION_FILES)}
    # `dvc metrics diff --json`: {file: {dotted key: {old, new, diff}}}, DVC's output, so read as plain JSON
    for path in sorted(diff, key=lambda p: (order.get(Path(p).name, len(order)), p)):
        for key, change in sorted((diff[path] or {}).items()):
            if not isinstance(change, dict):
                continue
            row = [f"{Path(path).name}:{key}", _g(change.get("old")), _g(change.get("new")), _g(change.get("diff"))]
            (bookkeeping if BOOKKEEPING.search(key) else decision).append(row)
    header = ["metric", base_ref, "this PR", "change"]
    if not decision and not bookkeeping:
        return f"No metric changed against `{base_ref}`."
    out = [md_table(header, decision) if decision else f"No decision metric changed against `{base_ref}`."]
    if bookkeeping:
        out += [
            "",
            f"<details><summary>{len(bookkeeping)} bookkeeping metrics changed (hashes, runtimes, "
            "tokens, cache counters)</summary>",
            "",
            md_table(header, bookkeeping),
            "",
            "</details>",
        ]
    return "\n".join(out)


def _base_ref_file(base_ref: str, path: Path) -> bytes:
    """A DVC-tracked file as of base_ref, from the local DVC cache or the remote (dvc.api)."""
    import dvc.api

    with dvc.api.open(path.as_posix(), rev=base_ref, mode="rb") as fh:
        return fh.read()


def _scores(samples: dict[str, list[dict]], results: dict, task: str) -> dict[tuple, dict]:
    from llmops.evaluate import leaves, per_sample_scores, primary_metric

    out: dict[tuple, dict] = {}
    for leaf in leaves(results, task):
        metric, filt = primary_metric(results, leaf)
        out.update(per_sample_scores(samples.get(leaf, []), leaf, metric, filt))
    return out


def _load_tuned_samples(params: Params, read) -> tuple[dict[str, list[dict]], dict]:
    folder = params.paths.report("eval_samples") / "tuned"
    results = json.loads(read(folder / "results.json"))
    from llmops.evaluate import leaves

    samples = {}
    for leaf in (leaf for task in params.eval.tasks for leaf in leaves(results, task)):
        path = folder / f"{leaf}.jsonl"
        samples[leaf] = [row for _, row in read_jsonl(path, data=read(path))]
    return samples, results


def _environment(path_text: str | None) -> str | None:
    """The hardware path a train_perf.json records. No contract: it is free-form, and the base branch's copy may
    predate the environment record or have another shape."""
    try:
        env = json.loads(path_text or "").get("environment") or {}
    except (json.JSONDecodeError, AttributeError):
        return None
    from llmops.artifacts import numerics_path

    return env.get("numerics_path") or (numerics_path(env) if env else None)


def _git_show(base_ref: str, path: Path) -> str | None:
    proc = subprocess.run(["git", "show", f"{base_ref}:{path.as_posix()}"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def vs_base_section(params: Params, base_ref: str) -> str:
    """Per-item paired comparison of this PR's tuned model with the base branch's: change or noise."""
    from llmops import stats

    try:
        ours, our_results = _load_tuned_samples(params, lambda p: p.read_bytes())
    except (OSError, json.JSONDecodeError, DataError) as exc:
        return f"{NA} (this run's tuned eval samples: {exc})"
    try:
        theirs, their_results = _load_tuned_samples(params, lambda p: _base_ref_file(base_ref, p))
    except Exception as exc:  # noqa: BLE001 - dvc.api raises many kinds: missing rev, not cached, no remote
        return (
            f"{NA}: the tuned eval samples of `{base_ref}` are neither in the local DVC cache nor in a "
            f"DVC remote ({type(exc).__name__}: {md_cell(exc, 160)}). Push them from the base branch "
            "(`dvc push`, CI does on the default branch) to compare item by item."
        )
    alpha = params.gate.alpha * 2  # the gate's one-sided alpha as a two-sided level
    rows, notes = [], []
    for task in params.eval.tasks:
        a, b = _scores(theirs, their_results, task), _scores(ours, our_results, task)
        keys = sorted(k for k in a.keys() & b.keys() if a[k]["doc_hash"] == b[k]["doc_hash"])
        if len(keys) < max(len(a), len(b)):
            notes.append(
                f"{task}: {max(len(a), len(b)) - len(keys)} items differ between the branches "
                f"(eval set changed); compared the {len(keys)} shared ones"
            )
        if not keys:
            rows.append([task, 0, "-", "-", "-", "-", "no shared items"])
            continue
        row = stats.compare(
            [a[k]["score"] for k in keys],
            [b[k]["score"] for k in keys],
            samples=params.eval.bootstrap_samples,
            seed=params.eval.seed,
            level=1 - alpha,
        )
        # one method for both (stats.compare): the interval excludes 0 exactly when p < alpha
        verdict = "within noise" if row["p_value"] >= alpha else ("better" if row["delta"] > 0 else "worse")
        moved = f"+{row['gained']} / -{row['lost']}" if row["binary"] else "-"
        rows.append(
            [
                task,
                row["n"],
                _f(row["base"]),
                _f(row["tuned"]),
                f"{row['delta']:+.3f} [{row['delta_ci'][0]:+.3f}, {row['delta_ci'][1]:+.3f}]",
                moved,
                f"p {row['p_value']:.2g}, {verdict}",
            ]
        )
    lines = [
        f"The tuned model of this PR against the tuned model of `{base_ref}`, item by item (paired; "
        f"two-sided p against {alpha:g}; interval and p from one method: Tango's score test for 0/1 items, the "
        "paired t otherwise).",
        "",
        md_table(["task", "n", base_ref, "this PR", f"delta [{1 - alpha:.0%} CI]", "gained / lost", "verdict"], rows),
    ]
    ours_env = _environment(
        params.paths.report("train_perf.json").read_text(encoding="utf-8")
        if params.paths.report("train_perf.json").is_file()
        else None
    )
    theirs_env = _environment(_git_show(base_ref, params.paths.report("train_perf.json")))
    if ours_env and theirs_env and ours_env != theirs_env:
        lines += [
            "",
            f"⚠️ **Different hardware paths**: `{base_ref}` trained on `{theirs_env}`, this PR on "
            f"`{ours_env}`. Float rounding differs across CPU kernel paths, so a few items can move "
            "with no change to the code or data.",
        ]
    elif not theirs_env:
        lines += [
            "",
            f"The environment of `{base_ref}` is unknown (no environment record), so a hardware "
            "difference cannot be ruled out.",
        ]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


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
            _g(r.observed),
            f"{r.op} {_g(r.threshold)}",
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
                _f(t.resolution()),
                _f(t.base),
                _f(t.tuned),
                f"{_f(t.delta)} {_ci(t.delta_ci)}",
                f"{_f(t.ratio)} {_ci(t.ratio_ci)}",
                moved,
                _f(t.p_value, 4),
                t.test,
            ]
        )
    notes = []
    for name, t in compare.tasks.items():
        if (b := t.baseline) is not None:
            above = "above" if t.tuned > max(b.chance, b.majority) else "**not above**"
            notes.append(
                f"- {name}: input-blind baselines from the eval labels: chance {_f(b.chance)} "
                f"({b.labels} labels), majority class {_f(b.majority)}; tuned {_f(t.tuned)} is {above} both."
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
            _f(r.tuned.mean),
            _ci(r.tuned.ci),
            _f(r.base.mean),
            _f(r.delta),
            _f(r.tuned.pass_rate),
            r.tuned.n,
        ]
        for name, r in judge.rubrics.items()
    ]
    cal, tokens = judge.calibration, judge.tokens
    return "\n".join(
        [
            f"Judge `{judge.judge_model}` ({judge.provider}); calibrated: **{cal.calibrated}** "
            f"(kappa {_f(cal.kappa)} vs min {_f(cal.min_kappa)} on {cal.n} human labels; "
            f"{md_cell(cal.reason, 200)}). Uncalibrated judge scores are advisory.",
            "",
            md_table(["rubric", "tuned mean", "CI", "base mean", "delta", "tuned pass rate", "n"], rows),
            "",
            f"invalid rate {_f(judge.invalid_rate)}, failure rate {_f(judge.failure_rate)}, "
            f"{judge.calls} calls ({_f(judge.cache_hit_rate)} cache hits), "
            f"tokens {tokens.prompt} in / {tokens.completion} out, cost ${_f(judge.cost_usd, 4)}",
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
            _f(float(i["score"]), 2),
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
                _f(s.tokens.mean if s.tokens else None, 1),
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
        + f" (most similar pair {_f(leak.max_similarity, 2)} vs threshold {_f(leak.threshold, 2)})"
        + f"; truncation policy: {data.truncation_policy}."
    )


def _seconds(path: Path) -> float | None:
    """The wall seconds a report file records, if it records any."""
    if path.name in schemas.CONTRACTS:
        data, _ = _read(path, schemas.CONTRACTS[path.name])
        if isinstance(data, EvalResults):
            return data.runtime_s
        if isinstance(data, JudgeReport):
            return data.timing_s.get("total")  # timing_s holds the phases the judge ran, total among them
        return None
    data = _read_plain_json(path)  # no contract (base.json, train_perf.json): free-form metrics
    if not isinstance(data, dict):
        return None
    timing = data.get("timing_s")
    seconds = data.get("runtime_s", timing.get("total") if isinstance(timing, dict) else None)
    return seconds if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None


def runtime_section(reports: Path) -> str:
    rows = [
        [path.stem, _f(float(seconds), 1)]
        for path in sorted(reports.glob("*.json"))
        if (seconds := _seconds(path)) is not None
    ]
    return md_table(["stage (report file)", "runtime (s)"], rows) if rows else NA


def build(params: Params, base_ref: str) -> str:
    """The whole document, already trimmed to params.report.max_chars."""
    paths, cfg = params.paths, params.report
    gate, gate_why = _read(paths.report(schemas.GATE), GateReport)
    compare, compare_why = _read(paths.report(schemas.EVAL_COMPARE), EvalComparison)
    judge, judge_why = _read(paths.report(schemas.JUDGE), JudgeReport)
    data, data_why = _read(paths.report(schemas.DATA), DataStats)
    run, _ = _read(paths.report(schemas.MLFLOW_RUN), MlflowRun)
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
        Section(f"Params diff against `{base_ref}`", _dvc_diff("params", base_ref), keep=80),
        Section(f"Change or noise? Against `{base_ref}`", vs_base_section(params, base_ref), keep=85),
        Section(f"Metrics diff against `{base_ref}`", metrics_diff_section(base_ref), keep=70),
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
    gate, why = _read(params.paths.report(schemas.GATE), GateReport)
    return {
        "report": str(out),
        "chars": len(text),
        "base_ref": ref,
        "trimmed": "**Trimmed**" in text,
        "summary": run_summary(gate, why, out),
    }


# --- CI: the build-mode label, and the report of a failed pipeline step ----------------------------------------
# Run:  LLMOPS_BUILD_MODE="from scratch: ..." llmops report
#       llmops report --failed "install=success repro=failure gate=skipped" --log reports/ci/repro.log
BUILD_MODE_ENV = "LLMOPS_BUILD_MODE"
FAILED_LOG_LINES = 40  # the tail of the step's log shown in the comment: the stage's own error is at its end


def with_build_mode(text: str, repro_log: Path | None = None) -> str:
    """Say how CI built this (remote reuse or from scratch, and why) right under the title, and, from the
    `dvc repro` log CI keeps, which stages were restored and which ran (the label alone says what was tried)."""
    label = os.environ.get(BUILD_MODE_ENV)
    if not label:
        return text
    line = f"Build: {label}"
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
    import re

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
