"""The PR report: built in a temporary git repo (base commit + PR commit, real `dvc params/metrics diff`), its size
limit and missing inputs. The sticky comment is tested in test_github.py against a loopback GitHub REST API."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from conftest import REPORT_EXAMPLES, make_workdir, offline_env, raw_params
from test_gate import compare_metrics, judge_metrics, moved, task

from llmops import base_branch, gate, report
from llmops.artifacts import sha256_tree
from llmops.config import load_params

pytestmark = pytest.mark.integration  # a real MLflow store / dvc / git in every test


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, env=offline_env(repo), check=True, capture_output=True)


def put(repo, rel, obj):
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=2))


@pytest.fixture
def pr_repo(tmp_path, monkeypatch):
    """main: lr 0.001 and its metrics; branch pr: lr 0.01, general_qa forgotten. Metrics declared in dvc.yaml."""
    repo = make_workdir(tmp_path / "repo", raw_params())
    monkeypatch.chdir(repo)
    put(repo, ".gitignore", "/models/\n/mlflow.db\n")
    put(
        repo,
        "dvc.yaml",
        yaml.safe_dump({"metrics": ["reports/eval_compare.json", "reports/data.json", "reports/train_perf.json"]}),
    )
    adapter = repo / "models/adapter"
    put(repo, "models/adapter/adapter_model.safetensors", "weights v1")
    put(repo, "reports/eval_compare.json", compare_metrics(sha256_tree(adapter)))
    put(repo, "reports/data.json", json.loads((REPORT_EXAMPLES / "data.json").read_text()))  # a valid contract
    put(repo, "reports/train_perf.json", {"runtime_s": 15.25, "phases_s": {"loop": 7.03, "import": 6.95}})
    put(
        repo,
        "reports/mlflow_run.json",
        {"run_id": "0123abcd", "experiment_id": "1", "tracking_uri": "sqlite:///mlflow.db"},
    )
    git(repo, "init", "-q", "-b", "main")
    subprocess.run(["dvc", "init", "-q"], cwd=repo, env=offline_env(repo), check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "pr")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(learning_rate=0.01, epochs=30)
    put(repo, "params.yaml", yaml.safe_dump(params, sort_keys=False))
    put(repo, "models/adapter/adapter_model.safetensors", "weights v2 (forgot)")
    sha = sha256_tree(adapter)
    forgot = compare_metrics(sha)
    forgot["tasks"]["general_qa"] = task("regression", *moved(200, 198, gained=0, lost=188))
    put(repo, "reports/eval_compare.json", forgot)
    put(repo, "reports/train_perf.json", {"runtime_s": 15.25, "phases_s": {"loop": 1.89, "import": 5.85}})
    put(repo, "reports/judge.json", dict(judge_metrics(sha), timing_s={"answers": 15.1, "total": 34.89}))
    put(
        repo,
        "reports/judge_items.jsonl",
        "".join(
            json.dumps(
                {
                    "kind": k,
                    "id": f"eval-{i}",
                    "rubric": "triage_quality",
                    "model": m,
                    "score": s,
                    "answer": f"answer {i}",
                    "reference": "Category: billing",
                    "reasoning": f"note {i} | {m}",
                }
            )
            + "\n"
            for i, (k, m, s) in enumerate(
                [
                    ("eval", "tuned", 4.0),
                    ("eval", "tuned", 1.0),
                    ("eval", "base", 0.5),
                    ("eval", "tuned", 2.0),
                    ("calibration", "calibration", 0.0),
                    ("eval", "tuned", None),
                ]
            )
        ),
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pr: higher learning rate")
    gate.run(load_params())
    return repo


def test_report_has_both_dvc_diffs_gate_table_and_sections(pr_repo):
    result = report.run(load_params(), base_ref="main")
    text = (pr_repo / "reports/report.md").read_text()
    assert result["chars"] == len(text) and not result["trimmed"]
    assert text.startswith(report.MARKER)
    # DVC's own params diff: the changed knobs with old and new values
    params_diff = section(text, "Params diff against `main`")
    assert re.search(r"\| params\.yaml\s*\| train\.learning_rate\s*\| 0\.001\s*\| 0\.01\s*\|", params_diff), params_diff
    assert "train.epochs" in params_diff
    # DVC's own metrics diff: the forgotten task's numbers from both commits
    metrics_diff = section(text, "Metrics diff against `main`")
    assert re.search(r"eval_compare\.json:tasks\.general_qa\.tuned\s*\| 0\.985\s*\| 0\.05\b", metrics_diff), (
        metrics_diff
    )
    # decision metrics first; nothing of the bookkeeping kind outside the collapsed block
    visible, _, hidden = metrics_diff.partition("<details>")
    assert "sha256" not in visible and "adapter_sha256" in hidden and "</details>" in hidden
    assert (
        "phases_s" not in visible and "phases_s.loop" in hidden
    )  # per-phase timings (train_perf.json:phases_s.loop) are bookkeeping too
    # gate verdict table with the reason naming the task
    gate_part = section(text, "Quality gate")
    assert "**Verdict: ❌ fail** (exit code 1" in gate_part
    assert re.search(
        # the shipped rule (noninferiority): the one-sided exact non-inferiority p against alpha
        r"\| ❌ \| regression:general_qa \| binding \| 1 \| < 0\.025 \| general_qa: a drop beyond the margin "
        r"-0\.0990 cannot be ruled out \(delta -0\.9400, non-inferiority p 1 >= alpha 0\.025\): forgetting \| n 200, "
        r"0 gained, 188 lost, one item = 0\.005; delta -0\.940, margin 0\.099",
        gate_part,
    ), gate_part
    tasks = section(text, "Base vs tuned per task")
    assert "| general_qa | regression | exact_match | 200 | 0.005 | 0.990 | 0.050 | -0.940 [" in tasks
    assert "| +0 / -188 |" in tasks
    chart = section(text, "Chart")
    assert "```mermaid\nxychart-beta" in chart and '"general_qa base", "general_qa tuned"' in chart
    assert "bar [0.0167, 0, 0.1667, 0, 0.9900, 0, 0.9500, 0]" in chart
    assert "calibrated: **True**" in section(text, "LLM judge")
    worst = section(text, "Worst-scored items (tuned, lowest 5)")
    assert worst.index("eval-1") < worst.index("eval-3") < worst.index("eval-0")
    assert "eval-2" not in worst and "eval-4" not in worst and "eval-5" not in worst  # base, calibration, unscored
    assert "note 1 \\| tuned" in worst  # pipes escaped inside table cells
    assert "| train | 60 | 60 |" in section(text, "Data")
    assert "| train_perf | 15.2 |" in section(text, "Runtime per stage")
    assert "| judge | 34.9 |" in section(text, "Runtime per stage")  # judge.json reports timing_s.total
    assert "MLflow run `0123abcd`" in text


def eval_samples(repo, scores: dict[str, list[int]], env: dict | None = None) -> None:
    """reports/eval_samples/tuned as eval_tuned writes it (lm-eval sample logs + results.json), DVC-tracked,
    and the train_perf.json environment record next to it."""
    folder = repo / "reports/eval_samples/tuned"
    folder.mkdir(parents=True, exist_ok=True)
    configs = {}
    for name, values in scores.items():
        put(
            repo,
            f"reports/eval_samples/tuned/{name}.jsonl",
            "".join(
                json.dumps(
                    {
                        "doc_id": i,
                        "doc_hash": f"d{i}",
                        "prompt_hash": f"p{i}",
                        "doc": {"label": "x"},
                        "filter": "strip",
                        "exact_match": v,
                    }
                )
                + "\n"
                for i, v in enumerate(values)
            ),
        )
        configs[name] = {"metric_list": [{"metric": "exact_match"}], "filter_list": [{"name": "strip"}]}
    put(repo, "reports/eval_samples/tuned/results.json", {"configs": configs, "group_subtasks": {}})
    subprocess.run(["dvc", "add", "-q", "reports/eval_samples/tuned"], cwd=repo, env=offline_env(repo), check=True)
    put(repo, "reports/train_perf.json", {"environment": env or {"numerics_path": "cpu A | torch CPU AVX2"}})


def test_change_or_noise_against_the_base_branch(tmp_path, monkeypatch):
    """Real DVC: main's per-item results come from the DVC cache, paired item by item with the PR's."""
    repo = make_workdir(tmp_path / "repo", raw_params())
    monkeypatch.chdir(repo)
    git(repo, "init", "-q", "-b", "main")
    subprocess.run(["dvc", "init", "-q"], cwd=repo, env=offline_env(repo), check=True)
    main = {
        "triage_gen": moved(60, 15, 0, 0)[0],
        "triage_mc": moved(60, 24, 0, 0)[0],
        "general_qa": moved(200, 198, 0, 0)[0],
        "general_arith": moved(200, 190, 0, 0)[0],
    }
    eval_samples(repo, main)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "main")
    git(repo, "checkout", "-qb", "pr")
    pr = dict(main)
    pr["triage_gen"] = moved(60, 15, gained=1, lost=2)[1]  # one item net: noise
    pr["general_arith"] = moved(200, 190, gained=0, lost=60)[1]  # a real drop
    eval_samples(repo, pr, env={"numerics_path": "cpu B | torch CPU DEFAULT"})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pr")
    text = base_branch.vs_base_section(load_params(), "main")
    assert re.search(
        r"\| triage_gen \| 60 \| 0\.250 \| 0\.233 \| -0\.017 \[-0\.\d+, \+0\.\d+\] \| \+1 / -2 \| "
        r"p 0\.56, within noise \|",  # Tango's score p: (1 - 2) / sqrt(3) -> 0.56; the interval spans 0
        text,
    ), text
    assert re.search(
        r"\| general_arith \| 200 \| 0\.950 \| 0\.650 \| -0\.300 .* \| \+0 / -60 \| p [\d.e-]+, worse \|", text
    )
    # nothing moved: the score interval still has a width (what 200 unmoved items can rule out), and p is 1
    assert "| general_qa | 200 | 0.990 | 0.990 | +0.000 [-0.019, +0.019] | +0 / -0 | p 1, within noise |" in text
    assert "Different hardware paths" in text and "cpu A | torch CPU AVX2" in text
    # the base branch's samples in neither cache nor remote: said so, with what to do
    import shutil

    shutil.rmtree(repo / ".dvc/cache")
    text = base_branch.vs_base_section(load_params(), "main")
    assert text.startswith(
        "_not available_: the tuned eval samples of `main` as committed are neither in the local DVC cache"
    )
    assert "dvc push" in text


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_base_ref_from_env_and_unknown_ref_is_not_available(pr_repo, monkeypatch):
    monkeypatch.setenv(report.BASE_REF_ENV, "no-such-branch")
    result = report.run(load_params())
    text = (pr_repo / "reports/report.md").read_text()
    assert result["base_ref"] == "no-such-branch"
    assert "## Params diff against `no-such-branch`\n\n_not available_ (`dvc params diff no-such-branch` failed" in text
    assert "Is `no-such-branch` fetched?" in section(text, "Params diff against `no-such-branch`")
    assert "## Quality gate" in text  # the rest still renders


def test_an_unchanged_params_file_is_said_in_words(pr_repo):
    # against the PR's own commit nothing in params.yaml differs: DVC prints a bare header, the report a sentence
    report.run(load_params(), base_ref="HEAD")
    text = (pr_repo / "reports/report.md").read_text()
    assert section(text, "Params diff against `HEAD`").strip().endswith("No params changed against `HEAD`."), text


def test_missing_inputs_render_not_available(tmp_path, monkeypatch):
    make_workdir(tmp_path, raw_params())
    monkeypatch.chdir(tmp_path)
    report.run(load_params(), base_ref="main")
    text = (tmp_path / "reports/report.md").read_text()
    assert "**Verdict: not available**" in text and "nothing deploys" in text
    for title in ("Base vs tuned per task", "LLM judge", "Data", "Runtime per stage", "Chart"):
        assert "_not available_" in section(text, title), title


def test_a_report_that_breaks_its_contract_is_named_not_rendered(tmp_path, monkeypatch):
    make_workdir(tmp_path, raw_params())
    monkeypatch.chdir(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir(exist_ok=True)
    bad_gate = json.loads((REPORT_EXAMPLES / "gate.json").read_text())
    bad_gate["verdict"] = "maybe"
    del bad_gate["rules"][1]["binding"]
    put(tmp_path, "reports/gate.json", bad_gate)
    put(tmp_path, "reports/data.json", dict(json.loads((REPORT_EXAMPLES / "data.json").read_text()), leaked=-1))
    put(tmp_path, "reports/mlflow_run.json", {"run_id": "", "experiment_id": "1", "tracking_uri": "sqlite:///m.db"})
    text = report.build(load_params(), "main")
    gate_part = section(text, "Quality gate")
    assert gate_part.startswith("## Quality gate\n\n**Verdict: not available** (_not available_ (")
    assert "gate.json: verdict: Input should be 'pass', 'fail' or 'error'; rules.1.binding: missing" in gate_part
    assert "data.json: leaked: Input should be greater than or equal to 0" in section(text, "Data")
    assert "Gate: **not available**" in text and "MLflow run `not available`" in text  # empty run id: no run


def test_huge_judge_items_are_trimmed_first_and_said_so(pr_repo):
    put(
        pr_repo,
        "reports/judge_items.jsonl",
        "".join(
            json.dumps(
                {
                    "kind": "eval",
                    "id": f"item-{i}",
                    "rubric": "triage_quality",
                    "model": "tuned",
                    "score": 1.0,
                    "answer": "y" * 5000,
                    "reasoning": "x" * 5000,
                }
            )
            + "\n"
            for i in range(2000)
        ),
    )
    raw = yaml.safe_load((pr_repo / "params.yaml").read_text())
    raw["report"]["worst_items"] = 2000
    put(pr_repo, "params.yaml", yaml.safe_dump(raw, sort_keys=False))
    result = report.run(load_params(), base_ref="main")
    text = (pr_repo / "reports/report.md").read_text()
    assert result["trimmed"] and len(text) == result["chars"] <= 65000
    assert "> **Trimmed** to stay under 65,000 characters" in text and "omitted 'Worst-scored items" in text
    assert "item-0" not in text
    for kept in ("Quality gate", "Base vs tuned per task", "Params diff", "Metrics diff", "LLM judge", "Data"):
        assert f"## {kept}" in text, kept  # only what had to go went


def test_tiny_limit_drops_sections_in_order_then_truncates(pr_repo):
    raw = yaml.safe_load((pr_repo / "params.yaml").read_text())
    raw["report"]["max_chars"] = 1000
    put(pr_repo, "params.yaml", yaml.safe_dump(raw, sort_keys=False))
    report.run(load_params(), base_ref="main")
    text = (pr_repo / "reports/report.md").read_text()
    assert len(text) <= 1000
    assert text.startswith(report.MARKER) and "## Quality gate" in text and "**Truncated**" in text
    note = text[text.index("omitted") :]
    assert note.index("Worst-scored") < note.index("Runtime") < note.index("Data") < note.index("LLM judge")


# --- the sticky comment, against a loopback server speaking GitHub's REST protocol -------------------------


def test_the_run_ends_with_a_summary_a_person_reads():
    """Issue #26: verdict, failed rules, where the report is, what to do next, and that dvc repro never fails."""
    from pathlib import Path

    from llmops.schemas import GateReport

    passed = GateReport.model_validate(json.loads((REPORT_EXAMPLES / "gate.json").read_text()))
    where = Path("reports/report.md")
    text = "\n".join(report.run_summary(passed, None, where))
    assert "Gate: PASS (`llmops gate` exits 0" in text and "git add dvc.lock reports/" in text
    assert "Report: reports/report.md" in text and "dvc repro exits 0 whatever the verdict" in text

    rule = passed.rules[0].model_copy(update={"passed": False, "reason": "tuned 0.40 < 0.50"})
    failed = passed.model_copy(update={"verdict": "fail", "exit_code": 1, "rules": [rule, *passed.rules[1:]]})
    text = "\n".join(report.run_summary(failed, None, where))
    assert "Gate: FAIL (`llmops gate` exits 1" in text and f"failed {rule.rule}: tuned 0.40 < 0.50" in text
    assert "dvc exp run" in text

    error = passed.model_copy(update={"verdict": "error", "exit_code": 2, "errors": ["eval_compare.json: missing"]})
    assert "could not judge: eval_compare.json: missing" in "\n".join(report.run_summary(error, None, where))
    assert "no verdict" in report.run_summary(None, "not available (reports/gate.json missing)", where)[0]
