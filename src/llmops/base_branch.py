"""The report's comparison with the base branch: DVC's params and metrics diffs, and "change or noise?", this
branch's tuned model against the base branch's item by item (paired statistics on the per-item eval samples).

Used by llmops.report. What the base branch is: in CI's remote mode, what its CI last built and published, kept by
`python -m llmops.ci restore --keep reports/ci/base` (its dvc.lock, metrics and tuned eval samples: `snapshot`);
otherwise the base ref as committed, read with dvc.api.read (git-tracked files like train_perf.json and DVC-tracked
ones like the eval samples, from the local cache or the remote, alike). When the published state was wanted but
is unavailable, the sections say why and compare with the committed state.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from llmops.artifacts import md_cell, md_table, read_jsonl
from llmops.config import Params
from llmops.errors import DataError
from llmops.lm_eval_results import leaves, per_sample_scores, primary_metric
from llmops.report_sections import NA, fmt, fmt_g
from llmops.tracking import flatten

UNAVAILABLE = "UNAVAILABLE"  # in the snapshot folder: why the base branch's published state could not be kept


def dvc_diff(kind: str, base_ref: str) -> str:
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


def metrics_diff_section(base_ref: str, params: Params | None = None) -> str:
    """Decision metrics first (scores, ratios, verdict); hashes, runtimes and counters collapsed below. Against the
    published snapshot when there is one (`snapshot`), else `dvc metrics diff` against the committed base ref."""
    base = snapshot(params) if params is not None else None
    note = ""
    if isinstance(base, str):
        note, base = base + "\n\n", None
    diff, why = snapshot_metrics_diff(base) if base is not None else _metrics_diff(base_ref)
    if diff is None:
        return note + (why or NA)
    return note + _render_metrics_diff(diff, base_ref)


def _render_metrics_diff(diff: dict, base_ref: str) -> str:
    decision, bookkeeping = [], []
    order = {name: i for i, name in enumerate(DECISION_FILES)}
    # `dvc metrics diff --json`: {file: {dotted key: {old, new, diff}}}, DVC's output, so read as plain JSON
    for path in sorted(diff, key=lambda p: (order.get(Path(p).name, len(order)), p)):
        for key, change in sorted((diff[path] or {}).items()):
            if not isinstance(change, dict):
                continue
            row = [
                f"{Path(path).name}:{key}",
                fmt_g(change.get("old")),
                fmt_g(change.get("new")),
                fmt_g(change.get("diff")),
            ]
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


def snapshot(params: Params) -> Path | str | None:
    """The folder holding what the base branch's CI last published (`python -m llmops.ci restore --keep`): its
    path; a line saying why it is unavailable when CI wanted it and could not get it; None outside CI's remote
    mode (then the committed base ref is compared)."""
    folder = params.paths.reports / "ci" / "base"
    if not folder.is_dir():
        return None
    missing = folder / UNAVAILABLE
    if missing.is_file():
        return (
            f"What the base branch's CI last built is unavailable ({missing.read_text(encoding='utf-8').strip()}); "
            "compared with the base branch as committed instead."
        )
    return folder


def snapshot_metrics_diff(base: Path) -> tuple[dict | None, str | None]:
    """`dvc metrics diff --json`'s shape ({file: {key: {old, new, diff}}}) between the published snapshot's metric
    files and this run's: DVC can only diff against a git revision, and CI never commits what it built."""
    out: dict[str, dict] = {}
    for old_file in sorted(base.rglob("*.json")):
        rel = old_file.relative_to(base)
        if rel.parts[0] != "reports" or "eval_samples" in rel.parts:
            continue
        try:
            old = flatten(json.loads(old_file.read_text(encoding="utf-8")))
            new = flatten(json.loads(Path(rel).read_text(encoding="utf-8"))) if Path(rel).is_file() else {}
        except (OSError, json.JSONDecodeError):
            continue
        changed = {}
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key), new.get(key)
            if a == b or isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
                continue
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
            changed[key] = {"old": a, "new": b, **({"diff": b - a} if numeric else {})}
        if changed:
            out[rel.as_posix()] = changed
    return out, None


def at_ref(base_ref: str, path: Path) -> bytes:
    """A file as of base_ref: git-tracked (train_perf.json) or DVC-tracked (the eval samples, from the local DVC
    cache or the remote), both through dvc.api.read."""
    import dvc.api

    return dvc.api.read(path.as_posix(), rev=base_ref, mode="rb")


def _scores(samples: dict[str, list[dict]], results: dict, task: str) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for leaf in leaves(results, task):
        metric, filt = primary_metric(results, leaf)
        out.update(per_sample_scores(samples.get(leaf, []), leaf, metric, filt))
    return out


def _load_tuned_samples(params: Params, read) -> tuple[dict[str, list[dict]], dict]:
    folder = params.paths.report("eval_samples") / "tuned"
    results = json.loads(read(folder / "results.json"))
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


def _text_at_ref(base_ref: str, path: Path) -> str | None:
    try:
        return at_ref(base_ref, path).decode("utf-8")
    except Exception:  # noqa: BLE001 - dvc.api raises many kinds (missing rev or file): the record is unknown then
        return None


def vs_base_section(params: Params, base_ref: str) -> str:
    """Per-item paired comparison of this PR's tuned model with the base branch's: change or noise."""
    from llmops import stats

    try:
        ours, our_results = _load_tuned_samples(params, lambda p: p.read_bytes())
    except (OSError, json.JSONDecodeError, DataError) as exc:
        return f"{NA} (this run's tuned eval samples: {exc})"
    base = snapshot(params)
    note = [base, ""] if isinstance(base, str) else []
    if isinstance(base, Path):  # what the base branch's CI built and published (its dvc.lock, pulled samples)
        read_theirs, where = (lambda p: (base / p).read_bytes()), f"`{base_ref}` as its CI last built it"
    else:
        read_theirs, where = (lambda p: at_ref(base_ref, p)), f"`{base_ref}` as committed"
    try:
        theirs, their_results = _load_tuned_samples(params, read_theirs)
    except Exception as exc:  # noqa: BLE001 - dvc.api raises many kinds: missing rev, not cached, no remote
        return "\n".join(note) + (
            f"{NA}: the tuned eval samples of {where} are neither in the local DVC cache nor in a "
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
                fmt(row["base"]),
                fmt(row["tuned"]),
                f"{row['delta']:+.3f} [{row['delta_ci'][0]:+.3f}, {row['delta_ci'][1]:+.3f}]",
                moved,
                f"p {row['p_value']:.2g}, {verdict}",
            ]
        )
    lines = [
        *note,
        f"The tuned model of this PR against the tuned model of {where}, item by item (paired; "
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
    perf = params.paths.report("train_perf.json")
    theirs_env = _environment(
        ((base / perf).read_text(encoding="utf-8") if (base / perf).is_file() else None)
        if isinstance(base, Path)
        else _text_at_ref(base_ref, perf)
    )
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
