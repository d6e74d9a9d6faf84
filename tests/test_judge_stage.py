"""The judge stage as a whole: dvc.yaml names every file it runs, the local server gets a fresh bearer key,
answers' cache keys follow the serving code and libraries. The slow tests run the real stage (tiny-model
answers via llmops serve) against the stub as a remote judge, and the real `dvc repro`.

Run:  pytest tests/test_judge_stage.py -m "not slow"      (seconds; the slow ones train and serve the tiny model)
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import subprocess

import pytest
import yaml
from conftest import ROOT, copy_repo, offline_env
from openai_stub import Fault, StubServer, naive_judge

from llmops import judge
from llmops.judge import stage

# imported by the stage but cannot change its outputs: error classes, and the MLflow mirror
NOT_DEPS = {"llmops.errors", "llmops.tracking"}


def _llmops_imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmops"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("llmops"))
    return found


def test_dvc_stage_depends_on_every_module_it_runs():
    deps = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["judge"]["deps"])
    todo, seen = ["llmops.judge"] + [f"llmops.{m}" for m in ("serve",)], set()
    while todo:
        name = todo.pop()
        rel = name.replace(".", "/")
        path = ROOT / "src" / (rel + "/__init__.py" if (ROOT / "src" / rel).is_dir() else rel + ".py")
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        todo.extend(_llmops_imports(path))
    needed = {str((ROOT / "src" / (n.replace(".", "/"))).relative_to(ROOT)) for n in seen - NOT_DEPS}
    needed = {p + ("/__init__.py" if (ROOT / p).is_dir() else ".py") for p in needed} - {"src/llmops/__init__.py"}
    assert needed - deps == set(), f"dvc.yaml judge deps miss {sorted(needed - deps)}"


def test_local_server_gets_a_fresh_bearer_key(monkeypatch):
    seen = []

    @contextlib.contextmanager
    def running_server(paths, adapter_dir):
        seen.append(os.environ.get(stage.SERVE_KEY_ENV))  # what the child process would inherit
        yield "http://127.0.0.1:1/v1"

    monkeypatch.setattr("llmops.serve_client.running_server", running_server)
    monkeypatch.delenv(stage.SERVE_KEY_ENV, raising=False)
    params = type("P", (), {"paths": type("Q", (), {"adapter_dir": None})()})()
    with stage.local_server(params, needed=True) as first:
        assert stage.SERVE_KEY_ENV not in os.environ  # only the child got it
    with stage.local_server(params, needed=True) as second:
        pass
    assert seen == [first.api_key, second.api_key] and first.api_key != second.api_key
    assert len(first.api_key) >= 40  # secrets.token_urlsafe(32)
    assert "api_key" not in repr(first) and first.api_key not in repr(first)


def test_answer_keys_follow_serving_code_and_libraries(monkeypatch, tmp_path):
    ident = judge.serving_identity()
    assert set(ident["libraries"]) == {"torch", "transformers", "peft"} and ident["libraries"]["transformers"]
    fake = tmp_path / "serve.py"
    fake.write_text((ROOT / "src/llmops/serve.py").read_text() + "\n# a fix\n")
    real = stage.importlib.util.find_spec

    def find_spec(name, *a):
        spec = real(name, *a)
        if name == "llmops.serve":
            spec = type("S", (), {"origin": str(fake)})()
        return spec

    monkeypatch.setattr(stage.importlib.util, "find_spec", find_spec)
    assert judge.serving_identity()["code_sha256"] != ident["code_sha256"]
    monkeypatch.setattr(stage.importlib.metadata, "version", lambda lib: "99.0")
    assert judge.serving_identity()["libraries"]["torch"] == "99.0"


# -------------------------------------------------------------------------------------- the real stage (slow)
def _set_params(work, **judge_over):
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["judge"].update(judge_over)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.slow
def test_remote_judge_run_never_writes_the_api_key(trained_workdir, in_copy_of, monkeypatch, capfd):
    """Full stage: tiny-model answers from llmops serve, judged by the stub as a 'remote' endpoint. The stub
    checks the key arrives as a Bearer header, and echoes it in a 401 (as real providers partly do)."""
    from llmops.config import load_params
    from llmops.tracking import mlflow

    secret = "sk-test-DO-NOT-LEAK-7f3a9c"
    work = in_copy_of(trained_workdir)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")  # the training run's store

    def script(body, headers, n):
        if headers.get("authorization") != f"Bearer {secret}":
            return Fault(403, "wrong or missing key")  # shows up as failures, asserted below
        if "calibration-echo" in json.dumps(body):
            return Fault(401, f"Incorrect API key provided: {secret}")
        return naive_judge(body)

    cal = work / "data/judge_calibration.jsonl"
    cal.write_text(
        cal.read_text()
        + json.dumps({"id": "echo", "prompt": "calibration-echo", "answer": "x", "human_score": 1})
        + "\n"
    )
    stale = work / "cache/judge/00/00stale.json"  # an entry no current item uses: pruned at the end
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("{}")
    with StubServer(script) as stub:
        _set_params(
            work, provider="remote", base_url=stub.url, model="judge", repeats=2, price_per_1k_input_tokens=0.01
        )
        report = judge.run(load_params())
        calls_cold = stub.calls
        again = judge.run(load_params())
        calls_again = stub.calls
        _set_params(work, limit=5, prune_cache=False)  # the first 5 eval items only: all cached already
        few = judge.run(load_params())
    n_eval = 2 * 60  # tuned + base answers to every prepared eval prompt
    assert report["provider"] == "remote" and report["calls"] == (n_eval + 21) * 2
    assert report["cost_usd"] == pytest.approx(report["tokens"]["prompt"] * 0.01 / 1000)
    assert report["failure_rate"] == 0 and report["calibration"]["n"] == 21
    assert report["errors"][0]["n"] == 2 and "Incorrect API key provided" in report["errors"][0]["message"]
    assert report["cache_pruned"] == 1 and not stale.exists()
    assert report["judge_reported"]["models"] == ["judge"] and report["judge_reported"]["changed"] is False
    assert again["calls"] == 2 and again["cache_hits"] == report["calls"] - 2  # only the failed item re-asked
    assert again["cost_usd"] == 0  # the two re-asked calls failed again: no tokens billed
    assert again["results_cost_usd"] == pytest.approx(report["results_cost_usd"])  # kept on a cached rerun
    assert calls_again == calls_cold + 2 and again["answer_calls"] == 0 and again["model_server_started"] is False
    rub = report["rubrics"]["triage_quality"]
    assert rub["tuned"]["n"] == 60 and rub["rubric_sha256"] and set(rub) >= {"tuned", "base", "delta"}
    assert report["judge_endpoint"] == stub.url
    assert (report["items"], report["eval_items"], few["items"], few["eval_items"]) == (60, 60, 5, 60)
    assert few["rubrics"]["triage_quality"]["tuned"]["n"] == 5 and few["answer_calls"] == 0
    assert few["calls"] == 2 and few["calibration"]["n"] == 21  # calibration is never cut; the echo fails again

    out = capfd.readouterr()
    leaks = [str(p.relative_to(work)) for p in work.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == [], leaks
    assert secret not in out.out + out.err
    store = mlflow().get_run(json.loads((work / "reports/mlflow_run.json").read_text())["run_id"])
    assert store.data.metrics["judge.calls"] == 2
    assert secret not in json.dumps(store.data.to_dictionary())  # and mlflow.db was in the byte scan above


@pytest.mark.slow
def test_remote_without_key_fails_cleanly(trained_workdir, in_copy_of, monkeypatch):
    from llmops.config import load_params

    work = in_copy_of(trained_workdir)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _set_params(work, provider="remote", base_url="http://127.0.0.1:9/v1", model="x")
    with pytest.raises(judge.StageError, match="OPENAI_API_KEY"):
        judge.run(load_params())
    assert not (work / "reports/judge.json").exists()


@pytest.mark.slow
def test_dvc_repro_judges_offline_and_a_forced_rerun_makes_zero_calls(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    env = offline_env(repo)
    env.pop("OPENAI_API_KEY", None)

    def dvc(*args):
        proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    dvc("repro", "judge")
    cold = json.loads((repo / "reports/judge.json").read_text())
    assert cold["provider"] == "local" and cold["calls"] > 0 and cold["cache_hits"] == 0
    assert cold["calibration"]["calibrated"] is False and cold["calibration"]["reason"]  # the tiny judge
    dvc("repro", "-f", "-s", "judge")  # forced, judge only: DVC would delete a non-persist cache first
    warm = json.loads((repo / "reports/judge.json").read_text())
    assert warm["calls"] == 0 and warm["cache_hits"] == cold["calls"]
    assert warm["answer_calls"] == 0 and warm["model_server_started"] is False  # answers cached as well
    assert warm["cache_pruned"] == 0 and warm["cache_entries"] == cold["cache_entries"]
    assert (repo / "reports/judge_items.jsonl").read_text().count("\n") == cold["calls"]
    assert "Data and pipelines are up to date" in dvc("repro", "judge").stdout
