"""Compare experiments on one screen: the base model's scores, then per experiment the gate verdict, each task's
tuned score and the params that differ between the rows.

Run:  llmops exps                  (make exps: the compact table, 80 columns)
      llmops exps -A --csv         (any argument: DVC's own `dvc exp show`, narrowed the same way, e.g. for a CSV)

Plain `dvc exp show` on this repo prints hundreds of columns, and even narrowed to the decision metrics it needs
~160. The compact table reads `dvc exp show --json`: one "base model" row (the base scores every tuned row is
compared with), one row for the committed baseline, the workspace and each experiment, a column per task in
params eval.domain_tasks + eval.regression_tasks, and only the params whose values differ between the rows.
With arguments it falls back to DVC's table: --keep protects the decision metrics, --only-changed drops params
equal in every row, and --drop removes everything that is not a params.yaml key.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from llmops.errors import ConfigError

FALLBACK_TASKS = r"[^.]+"  # no eval section: every task's tuned score and ratio


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """params.yaml keys as DVC names their columns: nested dicts joined by dots, lists are one value."""
    keys = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        keys += _flatten(value, f"{name}.") if isinstance(value, dict) and value else [name]
    return keys


def _alternatives(names: Sequence[str]) -> str:
    return "|".join(re.escape(n) for n in names) if names else FALLBACK_TASKS


def columns(params_file: Path = Path("params.yaml")) -> tuple[str, str]:
    """The (--keep, --drop) regular expressions for this repo's params.yaml."""
    try:
        params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{params_file}: cannot read ({exc})") from None
    evals = params.get("eval") or {}
    domain = evals.get("domain_tasks") or ([evals["domain_task"]] if evals.get("domain_task") else [])
    regression = evals.get("regression_tasks") or []
    # a metric name that also occurs in another file is prefixed with its path ("reports/x.json:verdict")
    keep = (
        rf"^(Experiment|(.*:)?verdict|(.*:)?tasks\.({_alternatives(domain)})\.tuned"
        rf"|(.*:)?tasks\.({_alternatives(regression)})\.ratio)$"
    )
    drop = rf"^(?!(Experiment|({re.escape(str(params_file))}:)?({'|'.join(map(re.escape, _flatten(params)))}))$)"
    return keep, drop


def command(extra: Sequence[str] = (), params_file: Path = Path("params.yaml")) -> list[str]:
    keep, drop = columns(params_file)
    return ["dvc", "exp", "show", "--no-pager", "--only-changed", "--keep", keep, "--drop", drop, *extra]


def _dig(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _files(data: dict, kind: str) -> dict[str, Any]:
    """{file: its data} of a `dvc exp show --json` entry's params or metrics."""
    return {name: (f or {}).get("data") or {} for name, f in ((data or {}).get(kind) or {}).items()}


def rows_of(shown: list[dict]) -> list[dict[str, Any]]:
    """[{name, params, compare, gate}] for the workspace, each commit shown and its experiments, in DVC's order."""
    rows = []
    for entry in shown:
        name = "workspace" if entry["rev"] == "workspace" else entry.get("name") or entry["rev"][:7]
        rows.append({"name": name, "data": entry.get("data") or {}})
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                rows.append({"name": rev.get("name") or rev["rev"][:7], "data": rev.get("data") or {}})
    for row in rows:
        params = _files(row["data"], "params")
        row["params"] = params.get("params.yaml") or next(iter(params.values()), {})
        metrics = _files(row["data"], "metrics")
        row["compare"] = next((m for f, m in metrics.items() if f.endswith("eval_compare.json")), None)
        row["gate"] = next((m for f, m in metrics.items() if f.endswith("gate.json")), None)
    return rows


def changed_params(rows: list[dict[str, Any]]) -> list[str]:
    """Dotted params keys whose values are not the same in every row (paths never: they are not knobs)."""
    keys = sorted({k for r in rows for k in _flatten(r["params"]) if not k.startswith("paths.")})
    values = {k: {repr(_dig(r["params"], k)) for r in rows if r["params"]} for k in keys}
    return [k for k in keys if len(values[k]) > 1]


def table(rows: list[dict[str, Any]], tasks: list[str]):
    """The compact rich Table: base model row, then one row per run; task names wrap where their '_' were."""
    from rich import box
    from rich.table import Table

    params = changed_params(rows)
    out = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    out.add_column("run", overflow="fold")
    out.add_column("gate")
    for task in tasks:
        out.add_column(task.replace("_", " "), justify="right", overflow="fold")
    for key in params:
        out.add_column(key.split(".", 1)[-1].replace("_", " "), overflow="fold")

    def score(row: dict, task: str, side: str) -> str:
        value = _dig(row["compare"], f"tasks.{task}.{side}") if row["compare"] else None
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    base_row = next((r for r in rows if r["compare"] and any(score(r, t, "base") != "-" for t in tasks)), None)
    if base_row is not None:  # the base scores every tuned row is compared with (eval_base is shared)
        out.add_row("base model", "", *(score(base_row, t, "base") for t in tasks), *("" for _ in params))
        out.add_section()
    for row in rows:
        verdict = str((row["gate"] or {}).get("verdict") or "-")
        values = [str(_dig(row["params"], k)) if row["params"] else "-" for k in params]
        out.add_row(row["name"], verdict, *(score(row, t, "tuned") for t in tasks), *values)
    return out


def show(params_file: Path = Path("params.yaml"), width: int | None = None) -> int:
    """Print the compact table; the committed baseline without results gets a line saying how to record one."""
    import json

    from rich.console import Console

    try:
        params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{params_file}: cannot read ({exc})") from None
    evals = params.get("eval") or {}
    tasks = [*(evals.get("domain_tasks") or []), *(evals.get("regression_tasks") or [])]
    proc = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"`dvc exp show --json` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    rows = rows_of(json.loads(proc.stdout))
    console = Console(width=min(width or Console().width, 80))  # one screen: never wider than 80 columns
    console.print(table(rows, tasks))
    missing = [r["name"] for r in rows if r["name"] != "workspace" and not r["compare"]]
    if missing:
        console.print(
            f"no results committed for {', '.join(missing)}: record a baseline with "
            "`git add dvc.lock reports/ && git commit` after a run you keep",
            overflow="fold",
        )
    return 0


def run(extra: Sequence[str] = ()) -> int:
    if extra:  # DVC's own table (e.g. --csv, -A), narrowed to the decision metrics and changed params
        return subprocess.run(command(extra), check=False).returncode
    return show()
