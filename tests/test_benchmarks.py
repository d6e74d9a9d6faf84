"""The vendored benchmark slices (data/benchmarks/) and their lm-eval tasks (evals/*_slice/): the files are the ones
SOURCES.md pins, and each task is lm-eval's own definition (prompt, choices, target, process_docs) on our file."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml
from conftest import ROOT

SLICES = {"arc_easy": "arc/arc_easy.yaml", "hellaswag": "hellaswag/hellaswag.yaml", "piqa": "piqa/piqa.yaml"}
COLUMNS = {
    "arc_easy": {"id", "question", "choices", "answerKey"},
    "hellaswag": {"activity_label", "ctx_a", "ctx_b", "endings", "label"},
    "piqa": {"goal", "sol1", "sol2", "label"},
}
BENCH = ROOT / "data" / "benchmarks"


def test_every_slice_is_the_file_sources_md_pins():
    sources = (BENCH / "SOURCES.md").read_text()
    for name in SLICES:
        path = BENCH / f"{name}.jsonl"
        row = next(line for line in sources.splitlines() if line.startswith(f"| `{name}.jsonl`"))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == re.findall(r"`([0-9a-f]{64})`", row)[-1], name
        lines = path.read_text(encoding="utf-8").splitlines()
        assert f"| {len(lines)} of " in row
        for line in lines:
            assert COLUMNS[name] <= set(json.loads(line)), name


@pytest.fixture(scope="module")
def specs():
    """The slice tasks as the eval stages load them (load_task), without the rest of the suite, whose domain
    data only exists after `dvc repro`."""
    from lm_eval.tasks import TaskManager

    from llmops import eval_suite
    from llmops.config import load_params

    params = load_params(ROOT / "params.yaml")
    ours = eval_suite.local_tasks(ROOT / "evals")
    specs = {f"{n}_slice": eval_suite.load_task(ours[f"{n}_slice"], params) for n in SLICES}
    return specs, TaskManager(include_path=str(ROOT / "evals"), include_defaults=False), params


@pytest.mark.integration
@pytest.mark.parametrize("name", SLICES)
def test_the_slice_task_is_lm_evals_own_definition_on_our_file(specs, name):
    from lm_eval.tasks._yaml_loader import load_yaml

    from llmops.eval_suite import builtin_tasks_dir

    ours, _, params = specs
    cfg = ours[f"{name}_slice"]
    builtin = load_yaml(f"{builtin_tasks_dir()}/{SLICES[name]}", resolve_func=True)
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "output_type"):
        assert cfg[key] == builtin[key], key
    if "process_docs" in builtin:  # hellaswag's preprocessing, resolved from lm-eval's own utils.py
        assert cfg["process_docs"] is builtin["process_docs"]
    assert cfg["dataset_kwargs"]["data_files"]["test"] == f"{params.paths.benchmarks}/{name}.jsonl"
    assert [m["metric"] for m in cfg["metric_list"]] == ["acc_norm", "acc"]


@pytest.mark.integration
def test_lm_eval_builds_the_tasks_from_the_files_offline(specs, monkeypatch):
    ours, manager, _ = specs
    monkeypatch.chdir(ROOT)
    tasks = manager.load(list(ours.values()))["tasks"]
    arc = tasks["arc_easy_slice"]
    docs = list(arc.test_docs())
    assert len(docs) == 400 and arc.doc_to_text(docs[0]).startswith("Question: ")
    hella = tasks["hellaswag_slice"]
    doc = next(iter(hella.test_docs()))
    assert len(hella.doc_to_choice(doc)) == 4 and "query" in doc  # lm-eval's process_docs ran


@pytest.mark.integration
def test_render_suite_keeps_the_include_for_the_lm_eval_cli(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    from llmops.config import load_params
    from llmops.eval_suite import builtin_tasks_dir, render_suite

    monkeypatch.chdir(ROOT)
    render_suite(tmp_path, load_params())
    written = yaml.safe_load((tmp_path / "piqa_slice" / "piqa_slice.yaml").read_text())
    assert written["include"] == f"{builtin_tasks_dir()}/piqa/piqa.yaml"
    assert written["dataset_kwargs"]["data_files"]["test"] == "data/benchmarks/piqa.jsonl"
    assert "piqa_slice" in TaskManager(include_path=str(tmp_path), include_defaults=False).task_index
