"""Compare experiments on one screen: `dvc exp show` narrowed to what decides a change and what differs.

Run:  llmops exps                  (make exps; extra arguments go to dvc, e.g. `llmops exps -A --csv`)

Plain `dvc exp show` on this repo prints hundreds of columns. This keeps the gate verdict, each domain task's
tuned score and each regression task's tuned/base ratio (tasks named by params eval.domain_tasks and
eval.regression_tasks), plus only the params whose values differ between the experiments listed (DVC's
`--only-changed`); every other metric and every dependency hash is dropped. The columns come from three
`dvc exp show` flags: --keep protects the decision metrics, --only-changed drops params equal in every row,
and --drop removes everything that is not a params.yaml key.
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


def run(extra: Sequence[str] = ()) -> int:
    return subprocess.run(command(extra), check=False).returncode
