"""eval_base / eval_tuned on the tiny model, offline, with real lm-eval: the task folders load and run, the
outputs have the documented keys, data locations come from params.paths, mistakes fail by name."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from llmops import eval_suite, evaluate
from llmops.artifacts import sha256_tree
from llmops.config import load_params
from llmops.errors import StageError

TASKS = ["general_arith", "general_qa", "triage_gen", "triage_mc"]
GENERAL_FILES = {"general_qa": "general/qa.jsonl", "general_arith": "general/arith.jsonl"}
COMPARE_KEYS = {
    "kind",
    "metric",
    "n",
    "base",
    "tuned",
    "delta",
    "delta_ci",
    "ratio",
    "ratio_ci",
    "diff_sd",
    "binary",
    "gained",
    "lost",
    "p_value",
    "test",
    "baseline",
    "tuned_answers",
}


@pytest.fixture(scope="module")
def evaluated(trained_workdir, tmp_path_factory):
    """A copy of the trained workdir with both evaluations run (shared, read-only)."""
    work = tmp_path_factory.mktemp("evaluated") / "work"
    shutil.copytree(trained_workdir, work)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        params = load_params()
        base = evaluate.run(params, "base")
        compare = evaluate.run(params, "tuned")
    return work, base, compare


@pytest.mark.integration
def test_every_task_folder_is_a_versioned_lm_eval_task():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(ROOT / "evals"), include_defaults=False)
    assert sorted(manager.all_subtasks) == TASKS
    for name in TASKS:
        folder = ROOT / "evals" / name
        assert (folder / "README.md").is_file(), name
        config = yaml.safe_load((folder / f"{name}.yaml").read_text())
        assert config["task"] == name and config["metadata"]["version"] == 1.0
        assert Path(manager.task_index[name].yaml_path).parent == folder


def test_rendering_takes_data_files_and_regex_from_params(tiny_workdir, in_copy_of):
    work = in_copy_of(tiny_workdir)
    params = load_params()
    specs, _ = eval_suite.task_specs(params)
    by_name = {s["task"]: s for s in specs}
    assert set(by_name) == set(TASKS)
    assert "${" not in json.dumps(specs)
    assert by_name["general_qa"]["dataset_kwargs"]["data_files"]["test"] == f"{params.paths.general_evals}/qa.jsonl"
    assert by_name["triage_gen"]["dataset_kwargs"]["data_files"]["test"] == str(params.paths.prepared_eval)
    regex = by_name["triage_gen"]["filter_list"][0]["filter"][0]["regex_pattern"]
    assert regex == params.prepare.label_regex
    assert by_name["general_qa"]["generation_kwargs"]["max_gen_toks"] == params.eval.max_gen_toks  # an int
    assert work.exists()


@pytest.mark.slow  # the lm_eval CLI indexes every built-in task first (~30 s)
def test_rendered_suite_runs_with_the_plain_lm_eval_cli(tiny_workdir, in_copy_of, tmp_path):
    import subprocess

    from conftest import offline_env

    work = in_copy_of(tiny_workdir)
    suite = tmp_path / "suite"
    # every task folder of evals/: the suite's own and the benchmark slices real models use
    assert len(eval_suite.render_suite(suite)) == len(list((ROOT / "evals").glob("*/*.yaml")))
    out = subprocess.run(
        [
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            "pretrained=models/base",
            "--device",
            "cpu",
            "--include_path",
            str(suite),
            "--tasks",
            "general_qa",
            "--limit",
            "3",
        ],
        cwd=work,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "general_qa" in out.stdout and "exact_match" in out.stdout


def test_base_report_has_score_stderr_n_per_task(evaluated):
    work, base, _ = evaluated
    report = json.loads((work / "reports/eval_base.json").read_text())
    assert report == json.loads(json.dumps(base))  # what run returns is what it wrote
    assert sorted(report["tasks"]) == TASKS
    lines = {name: sum(1 for _ in (ROOT / "data" / rel).open()) for name, rel in GENERAL_FILES.items()}
    sizes = {**lines, "triage_gen": 60, "triage_mc": 60}  # every line of the general sets is an item
    for name, row in report["tasks"].items():
        assert {"metric", "filter", "score", "stderr", "n"} <= set(row)
        assert row["n"] == sizes[name] and 0 <= row["score"] <= 1
    assert report["tasks"]["triage_mc"]["metric"] == "acc"
    assert report["tasks"]["triage_gen"]["filter"] == "label"


def test_per_sample_logs_are_kept_at_stable_paths(evaluated):
    work, _, _ = evaluated
    for model in ("base", "tuned"):
        folder = work / "reports/eval_samples" / model
        assert sorted(p.stem for p in folder.glob("*.jsonl")) == TASKS
        first = json.loads((folder / "triage_gen.jsonl").read_text().splitlines()[0])
        assert {"doc_id", "doc", "resps", "filtered_resps", "exact_match", "doc_hash"} <= set(first)
        assert "versions" in json.loads((folder / "results.json").read_text())


def test_compare_has_the_documented_keys(evaluated):
    work, _, returned = evaluated
    compare = json.loads((work / "reports/eval_compare.json").read_text())
    assert compare == json.loads(json.dumps(returned))
    assert compare["adapter_sha256"] == sha256_tree(work / "models/adapter")
    assert compare["domain_task"] == "triage_gen"
    assert sorted(compare["tasks"]) == TASKS
    for name, row in compare["tasks"].items():
        assert set(row) == COMPARE_KEYS, name
        assert row["kind"] == ("domain" if name.startswith("triage") else "regression")
        assert row["delta"] == pytest.approx(row["tuned"] - row["base"])
        assert row["delta_ci"][0] <= row["delta"] <= row["delta_ci"][1]
        assert 0 <= row["p_value"] <= 1 and row["test"] == "tango_score"  # all four are 0/1 metrics
        if row["base"] > 0:
            assert row["ratio"] == pytest.approx(row["tuned"] / row["base"])
        else:
            assert row["ratio"] is None and row["ratio_ci"] is None
        assert row["gained"] - row["lost"] == round(row["delta"] * row["n"])  # the discordant pairs
        if row["kind"] == "domain":
            b = row["baseline"]  # from the eval set's own labels (a baked domain has its own label set)
            assert b["labels"] >= 2 and b["chance"] == pytest.approx(1 / b["labels"]) and b["majority"] >= b["chance"]
        if name.endswith("_gen") or name.startswith("general"):  # generative: the answers are summarised
            assert 0 <= row["tuned_answers"]["empty"] <= row["n"] and row["tuned_answers"]["distinct"] >= 1
    tuned = json.loads((work / "reports/eval_tuned.json").read_text())
    assert tuned["adapter_sha256"] == compare["adapter_sha256"]
    assert {n: r["score"] for n, r in tuned["tasks"].items()} == pytest.approx(
        {n: r["tuned"] for n, r in compare["tasks"].items()}
    )


def test_plots_and_mlflow(evaluated):
    work, _, compare = evaluated
    rows = list(csv.DictReader((work / "reports/eval_tasks.csv").open()))
    assert len(rows) == 2 * len(TASKS) and {r["model"] for r in rows} == {"base", "tuned"}
    cats = list(csv.DictReader((work / "reports/eval_categories.csv").open()))
    assert {r["category"] for r in cats} == set(
        json.loads((work / "data/prepared/eval.jsonl").read_text().splitlines()[0])["choices"]
    )
    assert sum(int(r["n"]) for r in cats if r["model"] == "base") == 60

    from mlflow.tracking import MlflowClient

    run_id = json.loads((work / "reports/mlflow_run.json").read_text())["run_id"]
    logged = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}").get_run(run_id).data.metrics
    assert logged["eval.triage_gen.tuned"] == pytest.approx(compare["tasks"]["triage_gen"]["tuned"])
    assert logged["eval.general_qa.p_value"] == pytest.approx(compare["tasks"]["general_qa"]["p_value"])


def test_data_location_is_read_from_params_paths(tiny_workdir, in_copy_of):
    work = in_copy_of(tiny_workdir)
    alt = work / "data/general_small"
    alt.mkdir()
    for name in ("qa", "arith"):
        lines = (work / f"data/general/{name}.jsonl").read_text().splitlines()[:3]
        (alt / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["paths"]["general_evals"] = "data/general_small"
    raw["eval"].update(domain_tasks=["triage_mc"], domain_task="triage_mc")  # keep this one quick
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    report = evaluate.run(load_params(), "base")
    assert report["tasks"]["general_qa"]["n"] == 3 and report["tasks"]["general_arith"]["n"] == 3


def test_eval_tuned_needs_eval_base_first(tiny_workdir, in_copy_of):
    work = in_copy_of(tiny_workdir)
    adapter = work / "models/adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(StageError, match="eval_base"):
        evaluate.run(load_params(), "tuned")
    assert not (work / "reports/eval_tuned.json").exists()


def test_unknown_task_and_missing_data_are_named(tiny_workdir, in_copy_of):
    work = in_copy_of(tiny_workdir)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["eval"]["regression_tasks"] = ["general_qa", "no_such_task_xyz"]
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(StageError, match="no_such_task_xyz"):
        eval_suite.task_specs(load_params())

    raw["eval"]["regression_tasks"] = ["general_qa"]
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    os.remove(work / "data/general/qa.jsonl")
    with pytest.raises(StageError, match="qa.jsonl not found"):
        eval_suite.task_specs(load_params())


def test_changed_items_between_base_and_tuned_are_refused(evaluated, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(evaluated[0], work)
    monkeypatch.chdir(work)
    samples = work / "reports/eval_samples/base/general_qa.jsonl"
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    records[0]["doc_hash"] = "0" * 64  # as if the QA file had changed after eval_base ran
    samples.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = (work / "reports/eval_compare.json").read_bytes()
    with pytest.raises(StageError, match="differs between eval_base and eval_tuned"):
        evaluate.run(load_params(), "tuned")
    assert (work / "reports/eval_compare.json").read_bytes() == before  # nothing half-written


def test_vllm_backend_args(tiny_workdir, in_copy_of):
    """The vllm model_args without a GPU: the adapter is passed unmerged with a rank vLLM accepts."""
    work = in_copy_of(tiny_workdir)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["eval"]["backend"] = "vllm"
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    adapter = work / "models/adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 12}))
    kind, args = eval_suite.model_config(load_params(), adapter)
    assert kind == "vllm" and args["lora_local_path"] == str(adapter) and args["max_lora_rank"] == 16
    assert "peft" not in args


@pytest.mark.gpu
def test_vllm_backend_runs_on_gpu(evaluated, tmp_path, monkeypatch):
    """On a CUDA machine with vllm installed: the same stage through lm-eval's vllm model type."""
    pytest.importorskip("vllm")
    work = tmp_path / "work"
    shutil.copytree(evaluated[0], work)
    monkeypatch.chdir(work)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["eval"].update(backend="vllm", batch_size="auto")
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    compare = evaluate.run(load_params(), "tuned")
    assert set(compare["tasks"]) == set(TASKS)
    assert all(set(row) == COMPARE_KEYS for row in compare["tasks"].values())
