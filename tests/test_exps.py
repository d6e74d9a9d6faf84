"""llmops.exps: the compact experiments table from `dvc exp show --json` (the real CLI is in test_plots.py)."""

from __future__ import annotations

from rich.console import Console

from llmops import exps


def entry(rev: str, name: str | None, lr: float, tuned: float | None, experiments=()) -> dict:
    metrics = {}
    if tuned is not None:
        compare = {
            "tasks": {"triage_gen": {"base": 0.0, "tuned": tuned}, "arc_easy_slice": {"base": 0.4, "tuned": 0.41}}
        }
        metrics = {"reports/eval_compare.json": {"data": compare}, "reports/gate.json": {"data": {"verdict": "pass"}}}
    data = {"params": {"params.yaml": {"data": {"train": {"learning_rate": lr, "seed": 0}, "paths": {"x": rev}}}}}
    return {"rev": rev, "name": name, "data": {**data, "metrics": metrics}, "error": None, "experiments": experiments}


def render(rows, tasks) -> str:
    console = Console(width=80, record=True)
    console.print(exps.table(rows, tasks))
    return console.export_text()


def test_base_row_tuned_rows_and_only_changed_params():
    shown = [
        entry("workspace", None, 0.001, 0.6),
        entry("a" * 40, "main", 0.001, None, [{"revs": [entry("b" * 40, "lr10", 0.01, 0.9)]}]),
    ]
    rows = exps.rows_of(shown)
    assert [r["name"] for r in rows] == ["workspace", "main", "lr10"]
    assert exps.changed_params(rows) == ["train.learning_rate"]  # seed equal everywhere, paths never
    text = render(rows, ["triage_gen", "arc_easy_slice"])
    lines = {
        line.split()[0] + (" " + line.split()[1] if line.startswith(" base") else ""): line.split()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("─")
    }
    assert lines["base model"][2:] == ["0.000", "0.400"]
    assert lines["lr10"][1:] == ["pass", "0.900", "0.410", "0.01"]
    assert lines["main"][1:] == ["-", "-", "-", "0.001"]  # committed without results
    assert max(len(line) for line in text.splitlines()) <= 80
