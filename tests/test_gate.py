"""The quality gate on crafted metrics files: a pass, each kind of binding failure, every could-not-judge (exit 2)
case, the advisory judge, and the real `llmops gate` CLI's exit codes."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from conftest import make_workdir, offline_env, raw_params
from llmops import gate
from llmops.artifacts import sha256_tree
from llmops.config import load_params

ADAPTER_FILES = {"adapter_config.json": '{"r": 16}', "adapter_model.safetensors": "weights"}


def compare_metrics(sha: str) -> dict:
    def task(kind, base, tuned, delta_ci, ratio, ratio_ci, rule="ratio", metric="exact_match"):
        return {"kind": kind, "metric": metric, "n": 40, "base": base, "tuned": tuned, "delta": tuned - base,
                "delta_ci": delta_ci, "ratio": ratio, "ratio_ci": ratio_ci, "rule": rule, "p_value": 0.01,
                "test": "mcnemar_exact"}

    return {"adapter_sha256": sha, "domain_task": "triage_gen", "tasks": {
        "triage_gen": task("domain", 0.0, 0.6, [0.45, 0.75], None, None, rule="abs_delta"),
        "triage_mc": task("domain", 0.2, 0.7, [0.3, 0.7], 3.5, [2.0, 6.0], metric="acc"),
        "general_qa": task("regression", 1.0, 0.975, [-0.075, 0.0], 0.975, [0.925, 1.0]),
        "general_arith": task("regression", 0.975, 0.95, [-0.1, 0.05], 0.974, [0.9, 1.05]),
    }}


def judge_metrics(sha: str, calibrated: bool = True) -> dict:
    side = lambda m: {"mean": m, "ci": [m - 0.3, m + 0.3], "pass_rate": 0.6, "n": 60}  # noqa: E731
    return {"adapter_sha256": sha, "judge_model": "base", "provider": "local",
            "rubrics": {"triage_quality": {"rubric_sha256": "r", "tuned": side(3.6), "base": side(2.1), "delta": 1.5}},
            "invalid_rate": 0.05, "failure_rate": 0.0, "calls": 120, "cache_hits": 0, "cache_hit_rate": 0.0,
            "tokens": {"prompt": 1000, "completion": 100}, "cost_usd": 0.0,
            "calibration": {"n": 30, "kappa": 0.7 if calibrated else 0.2, "exact": 0.6, "adjacent": 0.9,
                            "min_kappa": 0.6, "calibrated": calibrated,
                            "reason": "kappa 0.70 >= 0.6" if calibrated else "kappa 0.20 < 0.6"}}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A workdir with real params, a (fake-bytes) adapter and passing metrics for exactly that adapter."""
    make_workdir(tmp_path, raw_params())
    monkeypatch.chdir(tmp_path)
    adapter = tmp_path / "models/adapter"
    adapter.mkdir(parents=True)
    for name, text in ADAPTER_FILES.items():
        (adapter / name).write_text(text)
    sha = sha256_tree(adapter)
    (tmp_path / "reports").mkdir()
    write(tmp_path, "eval_compare.json", compare_metrics(sha))
    write(tmp_path, "judge.json", judge_metrics(sha))
    return tmp_path


def write(work, name, obj):
    (work / "reports" / name).write_text(obj if isinstance(obj, str) else json.dumps(obj))


def edit(work, name, fn):
    data = json.loads((work / "reports" / name).read_text())
    fn(data)
    write(work, name, data)


def set_params(work, **sections):
    raw = yaml.safe_load((work / "params.yaml").read_text())
    for dotted, value in sections.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def judge_gate() -> dict:
    report = gate.run(load_params())
    on_disk = json.loads(open("reports/gate.json").read())
    assert on_disk == report
    return report


def rule(report, name):
    return next(r for r in report["rules"] if r["rule"] == name)


def test_passing_metrics_pass(work):
    report = judge_gate()
    assert (report["verdict"], report["exit_code"], report["errors"]) == ("pass", 0, [])
    assert report["adapter_sha256"] == sha256_tree(work / "models/adapter")
    names = [r["rule"] for r in report["rules"]]
    assert names == ["domain_min", "domain_gain_significant", "regression:general_qa", "regression:general_arith",
                     "judge_mean:triage_quality", "judge_invalid_rate", "judge_failure_rate"]
    for r in report["rules"]:
        assert set(r) == {"rule", "metric", "observed", "threshold", "op", "binding", "passed", "reason"}
        assert r["passed"] and r["binding"]
    assert rule(report, "regression:general_qa") == {
        "rule": "regression:general_qa", "metric": "eval_compare.json:tasks.general_qa.ratio", "observed": 0.975,
        "threshold": 0.95, "op": ">=", "binding": True, "passed": True, "reason": "ok"}


@pytest.mark.parametrize("mutate, failing, words", [
    (lambda c, j: c["tasks"]["triage_gen"].update(tuned=0.1), "domain_min",
     ["triage_gen", "0.1", f"domain_min {raw_params()['gate']['domain_min']}"]),
    (lambda c, j: c["tasks"]["triage_gen"].update(delta_ci=[-0.02, 0.4]), "domain_gain_significant",
     ["triage_gen", "not significant"]),
    (lambda c, j: c["tasks"]["general_qa"].update(tuned=0.05, ratio=0.05, ratio_ci=[0.0, 0.12]),
     "regression:general_qa", ["general_qa", "forgetting", "0.05"]),
    (lambda c, j: j.update(invalid_rate=0.5), "judge_invalid_rate", ["invalid rate", "0.5"]),
    (lambda c, j: j.update(failure_rate=0.25), "judge_failure_rate", ["failure rate", "0.25"]),
    (lambda c, j: j["rubrics"]["triage_quality"]["tuned"].update(mean=2.0), "judge_mean:triage_quality",
     ["triage_quality", "2", "3.0"]),
])
def test_each_binding_failure_fails_with_a_reason(work, mutate, failing, words):
    c, j = (json.loads((work / "reports" / n).read_text()) for n in ("eval_compare.json", "judge.json"))
    mutate(c, j)
    write(work, "eval_compare.json", c)
    write(work, "judge.json", j)
    report = judge_gate()
    assert (report["verdict"], report["exit_code"], report["errors"]) == ("fail", 1, [])
    failed = [r for r in report["rules"] if not r["passed"]]
    assert [r["rule"] for r in failed] == [failing]
    for word in words:
        assert word in failed[0]["reason"], failed[0]["reason"]
        assert word in report["summary"]


def test_regression_on_ci_lower_is_stricter(work):
    assert judge_gate()["verdict"] == "pass"
    set_params(work, gate__regression_on="ci_lower")  # general_qa ratio CI lower bound 0.925 < 0.95
    report = judge_gate()
    assert report["verdict"] == "fail"
    r = rule(report, "regression:general_qa")
    assert (r["observed"], r["metric"]) == (0.925, "eval_compare.json:tasks.general_qa.ratio_ci[0]")


def test_abs_delta_rule_for_near_zero_base(work):
    # base 0.02 is below eval.near_zero_base: eval wrote rule abs_delta; 0.95 allows losing at most 0.05 absolute
    edit(work, "eval_compare.json", lambda c: c["tasks"]["general_arith"].update(
        base=0.02, tuned=0.0, delta=-0.02, ratio=None, ratio_ci=None, rule="abs_delta"))
    r = rule(judge_gate(), "regression:general_arith")
    assert (r["passed"], r["observed"], r["threshold"]) == (True, -0.02, -0.05)
    edit(work, "eval_compare.json", lambda c: c["tasks"]["general_arith"].update(tuned=-0.08 + 0.02, delta=-0.08))
    report = judge_gate()
    r = rule(report, "regression:general_arith")
    assert report["verdict"] == "fail" and not r["passed"] and "absolute delta" in r["reason"]


def test_uncalibrated_judge_is_advisory_only(work):
    write(work, "judge.json", judge_metrics(sha256_tree(work / "models/adapter"), calibrated=False))
    edit(work, "judge.json", lambda j: j["rubrics"]["triage_quality"]["tuned"].update(mean=1.5))
    report = judge_gate()
    assert report["verdict"] == "pass", report["summary"]
    r = rule(report, "judge_mean:triage_quality")
    assert (r["binding"], r["passed"]) == (False, False)
    assert r["reason"].startswith("advisory: judge not calibrated (kappa 0.20 < 0.6)")
    # the judge's reliability rates: advisory with it under judge_rates_binding: calibrated (the demo's setting)...
    edit(work, "judge.json", lambda j: j.update(failure_rate=0.9))
    set_params(work, gate__judge_rates_binding="calibrated")
    report = judge_gate()
    r = rule(report, "judge_failure_rate")
    assert report["verdict"] == "pass" and (r["binding"], r["passed"]) == (False, False)
    assert r["reason"].startswith("advisory: judge not calibrated") and "failure rate 0.9 > 0.1" in r["reason"]
    # ...binding under "always", the default when the knob is absent (fail closed)
    set_params(work, gate__judge_rates_binding="always")
    report = judge_gate()
    assert report["verdict"] == "fail" and "failure rate 0.9" in report["summary"]
    raw = yaml.safe_load((work / "params.yaml").read_text())
    del raw["gate"]["judge_rates_binding"]
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert judge_gate()["verdict"] == "fail"


def test_no_valid_verdict_is_a_finding_when_advisory_and_an_error_when_binding(work):
    """The judge writes mean null when none of its verdicts parsed (the tiny demo judge)."""
    sha = sha256_tree(work / "models/adapter")
    uncalibrated = judge_metrics(sha, calibrated=False)
    uncalibrated["rubrics"]["triage_quality"]["tuned"]["mean"] = None
    write(work, "judge.json", uncalibrated)
    report = judge_gate()
    r = rule(report, "judge_mean:triage_quality")
    assert report["verdict"] == "pass" and (r["observed"], r["binding"], r["passed"]) == (None, False, False)
    assert "null (no valid verdict)" in r["reason"]
    calibrated = judge_metrics(sha)
    calibrated["rubrics"]["triage_quality"]["tuned"]["mean"] = None
    write(work, "judge.json", calibrated)
    report = judge_gate()
    assert report["exit_code"] == 2 and "tuned.mean is not a finite number (None)" in report["errors"][0]


def _missing(work):
    (work / "reports/judge.json").unlink()


def _stale(work):
    (work / "models/adapter/adapter_model.safetensors").write_text("retrained weights")


@pytest.mark.parametrize("breakage, message", [
    (_missing, "judge.json: missing"),
    (lambda w: write(w, "eval_compare.json", '{"adapter_sha256": "x", "tasks": {'), "malformed JSON"),
    (lambda w: write(w, "eval_compare.json", (w / "reports/eval_compare.json").read_text().replace(
        '"tuned": 0.975', '"tuned": NaN').replace('"ratio": 0.975', '"ratio": NaN')),
     "tasks.general_qa.ratio is NaN"),
    (lambda w: edit(w, "judge.json", lambda j: j.update(invalid_rate="0.05")), "invalid_rate is not a finite number"),
    (lambda w: edit(w, "judge.json", lambda j: j.update(invalid_rate=None)), "invalid_rate is not a finite number"),
    (lambda w: edit(w, "eval_compare.json", lambda c: c["tasks"]["triage_gen"].pop("delta_ci")),
     "tasks.triage_gen.delta_ci.0 missing"),
    (lambda w: edit(w, "eval_compare.json", lambda c: c["tasks"].pop("general_arith")),
     "unknown task 'general_arith'"),
    (lambda w: set_params(w, eval__regression_tasks=["general_qa", "mmlu"]), "unknown task 'mmlu'"),
    (lambda w: set_params(w, judge__rubrics=["triage_quality", "tone"]), "unknown rubric 'tone'"),
    (lambda w: edit(w, "eval_compare.json", lambda c: c["tasks"]["general_qa"].update(rule="log_ratio")),
     "rule must be 'ratio' or 'abs_delta'"),
    (lambda w: edit(w, "judge.json", lambda j: j["calibration"].pop("calibrated")), "calibration.calibrated"),
    (_stale, "stale"),
    (lambda w: write(w, "judge.json", "[1, 2]"), "expected a JSON object"),
])
def test_cannot_judge_exits_2_and_explains(work, breakage, message):
    breakage(work)
    report = judge_gate()
    assert (report["verdict"], report["exit_code"]) == ("error", 2)
    assert any(message in e for e in report["errors"]), report["errors"]
    assert report["summary"].startswith("error: could not judge")


def test_stale_names_both_hashes(work):
    old = sha256_tree(work / "models/adapter")
    _stale(work)
    errors = judge_gate()["errors"]
    assert len(errors) == 2  # both metrics files describe the old adapter
    assert all(old[:12] in e and "older than the adapter" in e for e in errors)


def test_error_beats_a_failed_rule(work):
    """Fail closed: a broken input is exit 2 even when another rule already failed (not a mere 1)."""
    edit(work, "eval_compare.json", lambda c: c["tasks"]["triage_gen"].update(tuned=0.1))
    _missing(work)
    assert judge_gate()["exit_code"] == 2


def llmops_gate(work, *args):
    return subprocess.run(["llmops", "gate", *args], cwd=work, env=offline_env(work), capture_output=True, text=True)


def test_cli_exit_codes_and_no_fail(work):
    assert llmops_gate(work).returncode == 0
    edit(work, "eval_compare.json", lambda c: c["tasks"]["general_qa"].update(ratio=0.5))
    proc = llmops_gate(work)
    assert proc.returncode == 1 and "general_qa" in proc.stderr
    proc = llmops_gate(work, "--no-fail")  # what dvc.yaml runs: the verdict is in gate.json, not the exit code
    assert proc.returncode == 0
    assert json.loads((work / "reports/gate.json").read_text())["verdict"] == "fail"
    _missing(work)
    assert llmops_gate(work).returncode == 2
    assert json.loads((work / "reports/gate.json").read_text())["exit_code"] == 2


def test_cli_unreadable_params_is_exit_2(work):
    set_params(work, gate__regression_on="median")
    proc = llmops_gate(work)
    assert proc.returncode == 2 and "gate.regression_on" in proc.stderr


def test_gate_json_is_replaced_atomically(work):
    """An old passing gate.json never survives a run that could not judge."""
    assert judge_gate()["verdict"] == "pass"
    _stale(work)
    assert json.loads((work / "reports/gate.json").read_text())["verdict"] == "pass"
    judge_gate()
    assert json.loads((work / "reports/gate.json").read_text())["verdict"] == "error"
    assert not list((work / "reports").glob(".gate.json.*"))
