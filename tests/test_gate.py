"""The quality gate on crafted metrics files: a pass, each kind of binding failure, every could-not-judge (exit 2)
case, the advisory judge, and the real `llmops gate` CLI's exit codes."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import REPORT_EXAMPLES, make_workdir, offline_env, raw_params

from llmops import gate, stats
from llmops.artifacts import sha256_tree
from llmops.config import load_params

ADAPTER_FILES = {"adapter_config.json": '{"r": 16}', "adapter_model.safetensors": "weights"}


def items(n: int, right: int) -> list[int]:
    return [1] * right + [0] * (n - right)


SIX_BALANCED = {"labels": 6, "chance": 1 / 6, "majority": 1 / 6}


def task(kind: str, base: list[int], tuned: list[int], metric: str = "exact_match", baseline=None) -> dict:
    """A task row exactly as eval_tuned writes it, from per-item 0/1 results."""
    row = {"kind": kind, "metric": metric, **stats.compare(base, tuned, samples=200, seed=0)}
    if kind == "domain":
        row["baseline"] = baseline or SIX_BALANCED
    return row


def moved(n: int, base_right: int, gained: int, lost: int) -> tuple[list[int], list[int]]:
    """Paired items: base gets the first base_right right; tuned loses `lost` of those and gains `gained`."""
    base = items(n, base_right)
    tuned = list(base)
    for i in range(lost):
        tuned[i] = 0
    for i in range(base_right, base_right + gained):
        tuned[i] = 1
    return base, tuned


def compare_metrics(sha: str) -> dict:
    return {
        "adapter_sha256": sha,
        "domain_task": "triage_gen",
        "tasks": {
            "triage_gen": task("domain", *moved(60, 1, gained=14, lost=0)),
            "triage_mc": task("domain", *moved(60, 10, gained=20, lost=2), metric="acc"),
            "general_qa": task("regression", *moved(200, 198, gained=1, lost=2)),
            "general_arith": task("regression", *moved(200, 190, gained=2, lost=4)),
        },
    }


def judge_metrics(sha: str, calibrated: bool = True) -> dict:
    """A complete judge.json (schemas.JudgeReport): the committed one with these figures."""

    def side(m: float) -> dict:
        return {"mean": m, "ci": [m - 0.3, m + 0.3], "pass_rate": 0.6, "n": 60, "n_valid": 60, "repeat_var": None}

    judged = json.loads((REPORT_EXAMPLES / "judge.json").read_text())
    judged.update(
        {
            "adapter_sha256": sha,
            "judge_model": "base",
            "provider": "local",
            "rubrics": {
                "triage_quality": {
                    "rubric_sha256": "r",
                    "version": 1,
                    "tuned": side(3.6),
                    "base": side(2.1),
                    "delta": 1.5,
                    "delta_ci": [1.1, 1.9],
                }
            },
            "invalid_rate": 0.05,
            "failure_rate": 0.0,
            "calls": 120,
            "cache_hits": 0,
            "cache_hit_rate": 0.0,
            "tokens": {"prompt": 1000, "completion": 100},
            "cost_usd": 0.0,
        }
    )
    judged["calibration"].update(
        {
            "n": 30,
            "n_valid": 30,
            "valid_share": 1.0,
            "kappa": 0.7 if calibrated else 0.2,
            "exact": 0.6,
            "adjacent": 0.9,
            "min_kappa": 0.6,
            "calibrated": calibrated,
            "reason": "kappa 0.70 >= 0.6" if calibrated else "kappa 0.20 < 0.6",
        }
    )
    return judged


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A workdir with real params, a (fake-bytes) adapter and passing metrics for exactly that adapter."""
    raw = raw_params()
    raw["gate"]["regression_rule"] = "noninferiority"  # the statistical rule; point mode has its own test
    make_workdir(tmp_path, raw)
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
    report = gate.run(load_params()).model_dump(mode="json")
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
    assert names == [
        "domain_min",
        "domain_over_baseline",
        "domain_gain:triage_gen",
        "domain_gain:triage_mc",
        "regression:general_qa",
        "regression:general_arith",
        "judge_failure_rate",
        "judge_mean:triage_quality",
        "judge_invalid_rate",
    ]
    for r in report["rules"]:
        assert r["passed"] and r["binding"]
    qa = rule(report, "regression:general_qa")
    # 2 lost, 1 gained of 200: delta -0.005; margin (1 - 0.90) x 0.99; the exact non-inferiority p against alpha
    margin = (1 - raw_params()["gate"]["regression_min_ratio"]) * 0.99
    assert qa["observed"] == pytest.approx(stats.noninferiority_pvalue_binary(1, 2, 200, margin))
    assert qa["op"] == "<" and qa["threshold"] == 0.025 and qa["observed"] < 1e-4
    assert "n 200, 1 gained, 2 lost, one item = 0.005" in qa["detail"] and f"margin {margin:.3f}" in qa["detail"]


@pytest.mark.parametrize(
    "gained, lost, passes",
    [
        (5, 0, False),  # one-sided exact p = 1/32 = 0.031 >= 0.025: five wins and no losses is not enough
        (6, 0, True),  # p = 1/64 = 0.016
        (10, 3, False),  # p = 0.046
        (14, 2, True),
    ],
)
def test_domain_gain_is_the_exact_one_sided_mcnemar(work, gained, lost, passes):
    edit(
        work,
        "eval_compare.json",
        lambda c: c["tasks"].update(triage_gen=task("domain", *moved(60, 20, gained=gained, lost=lost))),
    )
    r = rule(judge_gate(), "domain_gain:triage_gen")
    from scipy.stats import binomtest

    assert r["observed"] == pytest.approx(binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue)
    assert r["passed"] is passes and r["threshold"] == 0.025
    assert f"{gained} gained, {lost} lost" in r["detail"]


@pytest.mark.parametrize(
    "n, base_right, lost, passes",
    [
        # base right on all 81 sums, margin 5%: only an untouched set passes (the paired t let one lost sum through,
        # which a model that truly lost 5% shows 8% of the time: binomial P(lost <= 1 | 81, 0.05) = 0.083)
        (81, 81, 0, True),
        (81, 81, 1, False),
        (146, 146, 3, False),  # 3 of 146 facts lost: passed the t interval, fails the exact test at 5%
        (146, 146, 2, True),
        (400, 400, 10, True),  # 2.5% lost on a set large enough to tell it from 5%
        (400, 400, 40, False),  # forgetting
    ],
)
def test_regression_is_an_exact_non_inferiority_test(work, n, base_right, lost, passes):
    set_params(work, gate__regression_min_ratio=0.95)
    edit(
        work,
        "eval_compare.json",
        lambda c: c["tasks"].update(general_arith=task("regression", *moved(n, base_right, gained=0, lost=lost))),
    )
    report = judge_gate()
    r = rule(report, "regression:general_arith")
    assert r["passed"] is passes, r
    assert report["verdict"] == ("pass" if passes else "fail")
    assert r["observed"] == pytest.approx(stats.noninferiority_pvalue_binary(0, lost, n, 0.05 * base_right / n))
    if not passes:
        assert "general_arith" in r["reason"] and "forgetting" in r["reason"]


@pytest.mark.parametrize(
    "n, ratio, minimum",
    [(3, 0.95, 75), (60, 0.95, 75), (30, 0.90, 36)],  # the sizes min_items_noninferiority gives at base 1.0
)
def test_a_task_too_small_to_show_the_margin_cannot_be_judged(work, n, ratio, minimum):
    """Even a result with no item lost cannot pass on too few items: that is no verdict (exit 2), not a pass."""
    set_params(work, gate__regression_min_ratio=ratio)
    edit(work, "eval_compare.json", lambda c: c["tasks"].update(general_arith=task("regression", [1] * n, [1] * n)))
    report = judge_gate()
    assert (report["verdict"], report["exit_code"]) == ("error", 2)
    assert any(
        f"general_arith: {n} items cannot show non-inferiority" in e and f"at least {minimum} items" in e
        for e in report["errors"]
    ), report["errors"]
    set_params(work, gate__regression_rule="point")  # no statistical claim, no minimum size
    assert judge_gate()["exit_code"] == 0


def test_a_zero_margin_is_no_verdict_not_a_crash(work):
    set_params(work, gate__regression_min_ratio=1.0)
    report = judge_gate()
    assert report["exit_code"] == 2
    assert any("a margin of 0 cannot be shown on any number of items" in e for e in report["errors"]), report


def test_a_gain_needs_at_least_six_items(work):
    """2^-5 = 0.031 >= alpha: five items all gained cannot show a gain, for 0/1 and graded metrics alike."""
    for base, tuned in (([0] * 5, [1] * 5), ([0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 0.8, 0.9, 1.0])):
        row = task("domain", base, tuned, "acc")
        edit(work, "eval_compare.json", lambda c, row=row: c["tasks"].update(triage_mc=row))
        report = judge_gate()
        assert report["exit_code"] == 2
        assert any("triage_mc: 5 items cannot show a gain" in e and "at least 6 items" in e for e in report["errors"])


def test_graded_gain_with_no_spread_is_not_certainty(work):
    """Two items with identical differences used to give p = 0.0; with no spread the sign-flip bound 2^-n stands."""
    base, tuned = [0.2] * 8, [0.5] * 8
    edit(work, "eval_compare.json", lambda c: c["tasks"].update(triage_mc=task("domain", base, tuned, "f1")))
    r = rule(judge_gate(), "domain_gain:triage_mc")
    assert r["observed"] == pytest.approx(0.5**8) and r["passed"]


def test_every_domain_task_is_gated_unless_report_only(work):
    """A secondary domain task that falls from 0.267 to 0.0 fails the gate, unless params mark it report-only."""
    edit(
        work,
        "eval_compare.json",
        lambda c: c["tasks"].update(triage_mc=task("domain", *moved(60, 16, gained=0, lost=16), "acc")),
    )
    report = judge_gate()
    assert report["verdict"] == "fail" and not rule(report, "domain_gain:triage_mc")["passed"]
    set_params(work, eval__report_only_tasks=["triage_mc"])
    report = judge_gate()
    assert report["verdict"] == "pass" and "domain_gain:triage_mc" not in [r["rule"] for r in report["rules"]]


def test_no_regression_task_is_no_verdict_unless_waived(work):
    edit(work, "eval_compare.json", lambda c: [c["tasks"].pop(t) for t in ("general_qa", "general_arith")])
    set_params(work, eval__regression_tasks=[])
    report = judge_gate()
    assert report["exit_code"] == 2 and "eval.regression_tasks is empty" in report["errors"][0]
    set_params(work, gate__regression_required=False)
    assert judge_gate()["exit_code"] == 0


def test_domain_must_beat_the_input_blind_baseline(work):
    """0.25 beats six balanced labels (chance 0.167) but not a set where one label is 40% of the items."""
    assert rule(judge_gate(), "domain_over_baseline")["passed"]
    edit(
        work,
        "eval_compare.json",
        lambda c: c["tasks"].update(
            triage_gen=task(
                "domain", *moved(60, 1, gained=14, lost=0), baseline={"labels": 5, "chance": 0.2, "majority": 0.4}
            )
        ),
    )
    report = judge_gate()
    r = rule(report, "domain_over_baseline")
    assert report["verdict"] == "fail" and r["threshold"] == pytest.approx(0.43) and not r["passed"]
    assert "input-blind baseline 0.4 (chance 0.2, majority 0.4)" in r["reason"]


def test_point_rule_judges_the_observed_drop_and_still_reports_the_statistics(work):
    set_params(work, gate__regression_rule="point")
    edit(
        work,
        "eval_compare.json",
        lambda c: c["tasks"].update(general_arith=task("regression", *moved(200, 190, gained=0, lost=8))),
    )
    set_params(work, gate__regression_min_ratio=0.95)
    r = rule(judge_gate(), "regression:general_arith")  # delta -0.04 inside the margin 0.0475: passes
    assert r["passed"] and r["observed"] == pytest.approx(-0.04) and "non-inferiority p" in r["detail"]
    set_params(work, gate__regression_rule="noninferiority")  # the same numbers cannot rule out a 5% drop
    assert not rule(judge_gate(), "regression:general_arith")["passed"]


def test_near_zero_base_uses_an_absolute_margin(work):
    # base 2/200 is below gate.near_zero_base (0.05): 0.95 allows losing at most 0.05 absolute, not 5% of 0.01
    set_params(work, gate__regression_min_ratio=0.95, gate__regression_rule="point")
    edit(
        work,
        "eval_compare.json",
        lambda c: c["tasks"].update(general_arith=task("regression", *moved(200, 2, gained=0, lost=1))),
    )
    r = rule(judge_gate(), "regression:general_arith")
    assert r["threshold"] == pytest.approx(-0.05) and r["passed"], r
    assert "margin 0.050" in r["detail"]


@pytest.mark.parametrize(
    "mutate, failing, words",
    [
        (
            lambda c, j: c["tasks"].update(
                triage_gen=task(
                    "domain", *moved(60, 0, gained=8, lost=0), baseline={"labels": 20, "chance": 0.05, "majority": 0.05}
                )
            ),
            "domain_min",
            ["triage_gen", "0.133", f"domain_min {raw_params()['gate']['domain_min']}"],
        ),
        (
            lambda c, j: c["tasks"].update(triage_gen=task("domain", *moved(60, 10, gained=8, lost=4))),
            "domain_gain:triage_gen",
            ["triage_gen", "not significant"],
        ),
        (
            lambda c, j: c["tasks"].update(general_qa=task("regression", *moved(200, 198, gained=0, lost=150))),
            "regression:general_qa",
            ["general_qa", "forgetting"],
        ),
        (lambda c, j: j.update(invalid_rate=0.5), "judge_invalid_rate", ["invalid rate", "0.5"]),
        (
            lambda c, j: j["rubrics"]["triage_quality"]["tuned"].update(mean=2.0),
            "judge_mean:triage_quality",
            ["triage_quality", "2", "3.0"],
        ),
    ],
)
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


def test_uncalibrated_judge_is_advisory_only(work):
    write(work, "judge.json", judge_metrics(sha256_tree(work / "models/adapter"), calibrated=False))
    edit(work, "judge.json", lambda j: j["rubrics"]["triage_quality"]["tuned"].update(mean=1.5))
    edit(work, "judge.json", lambda j: j.update(invalid_rate=1.0))
    report = judge_gate()
    assert report["verdict"] == "pass", report["summary"]
    for name in ("judge_mean:triage_quality", "judge_invalid_rate"):
        r = rule(report, name)
        assert (r["binding"], r["passed"]) == (False, False)
        assert r["reason"].startswith("advisory: judge not calibrated (kappa 0.20 < 0.6)")


@pytest.mark.parametrize("calibrated", [True, False])
def test_a_failing_judge_cannot_pass_whatever_its_calibration(work, calibrated):
    write(work, "judge.json", judge_metrics(sha256_tree(work / "models/adapter"), calibrated=calibrated))
    context = "messages: the prompt has 556 tokens; this model's context is 512 tokens"
    errors = [{"error": "APIConnectionError", "message": "refused", "n": 2}]
    errors.append({"error": "BadRequestError (HTTP 400)", "message": context, "n": 118})
    edit(work, "judge.json", lambda j: j.update(failure_rate=1.0, errors=errors))
    report = judge_gate()
    assert (report["verdict"], report["exit_code"]) == ("error", 2)
    assert "failure_rate 1 > gate.judge_max_failure_rate 0.1" in report["errors"][0]
    # the message says what to fix: the most frequent of the judge's errors
    assert f"most frequent error (118x): BadRequestError (HTTP 400): {context}" in report["errors"][0]
    assert rule(report, "judge_failure_rate")["binding"] is True


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
    assert report["exit_code"] == 2 and "tuned.mean is null but the judge is calibrated" in report["errors"][0]


def test_kinds_come_from_params_not_from_the_file(work):
    """Relabelling a regression task as domain in the metrics file does not drop its rule: it is exit 2."""
    edit(
        work,
        "eval_compare.json",
        lambda c: c["tasks"].update(
            general_arith={**task("regression", *moved(200, 190, gained=0, lost=150)), "kind": "domain"}
        ),
    )
    report = judge_gate()
    assert report["exit_code"] == 2
    assert "tasks.general_arith.kind is 'domain', params make it 'regression'" in report["errors"][0]


def _missing(work):
    (work / "reports/judge.json").unlink()


def _stale(work):
    (work / "models/adapter/adapter_model.safetensors").write_text("retrained weights")


@pytest.mark.parametrize(
    "breakage, message",
    [
        (_missing, "judge.json: missing"),
        (lambda w: write(w, "eval_compare.json", '{"adapter_sha256": "x", "tasks": {'), "malformed JSON"),
        (
            lambda w: write(
                w,
                "eval_compare.json",
                json.dumps(compare_metrics(sha256_tree(w / "models/adapter"))).replace(
                    '"tuned": 0.985', '"tuned": NaN', 1
                ),
            ),
            "tasks.general_qa.tuned: nan is not a finite number",
        ),
        (
            lambda w: edit(w, "eval_compare.json", lambda c: c["tasks"]["general_qa"].update(tuned=float("inf"))),
            "tasks.general_qa.tuned: inf is not a finite number",
        ),
        (
            lambda w: edit(w, "eval_compare.json", lambda c: c["tasks"]["general_qa"].update(diff_sd=None)),
            "tasks.general_qa.diff_sd",
        ),
        (lambda w: edit(w, "judge.json", lambda j: j.update(invalid_rate="0.05x")), "invalid_rate"),
        (lambda w: edit(w, "judge.json", lambda j: j.update(invalid_rate=None)), "invalid_rate"),
        (
            lambda w: edit(w, "eval_compare.json", lambda c: c["tasks"]["triage_gen"].pop("delta")),
            "tasks.triage_gen.delta: missing",
        ),
        (
            lambda w: edit(w, "eval_compare.json", lambda c: c["tasks"].pop("general_arith")),
            "tasks ['general_arith'] missing",
        ),
        (lambda w: set_params(w, eval__regression_tasks=["general_qa", "mmlu"]), "tasks ['mmlu'] missing"),
        (lambda w: set_params(w, eval__regression_tasks=["general_qa"]), "tasks ['general_arith'] are not in params"),
        (lambda w: set_params(w, judge__rubrics=["triage_quality", "tone"]), "rubric 'tone'"),
        (
            lambda w: edit(w, "eval_compare.json", lambda c: c["tasks"]["general_qa"].update(kind="forgetting")),
            "tasks.general_qa.kind",
        ),
        (lambda w: edit(w, "judge.json", lambda j: j["calibration"].pop("calibrated")), "calibration.calibrated"),
        (
            lambda w: edit(w, "judge.json", lambda j: j["rubrics"]["triage_quality"]["base"].update(mean=float("nan"))),
            "rubrics.triage_quality.base.mean: nan is not a finite number",
        ),  # the full judge.json is a contract
        (_stale, "stale"),
        (lambda w: write(w, "judge.json", "[1, 2]"), "valid dictionary"),
    ],
)
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
    edit(
        work,
        "eval_compare.json",
        lambda c: c["tasks"].update(triage_gen=task("domain", *moved(60, 0, gained=2, lost=0))),
    )
    _missing(work)
    assert judge_gate()["exit_code"] == 2


def llmops_gate(work, *args):
    return subprocess.run(["llmops", "gate", *args], cwd=work, env=offline_env(work), capture_output=True, text=True)


@pytest.mark.integration
def test_cli_exit_codes_and_no_fail(work):
    assert llmops_gate(work).returncode == 0
    edit(
        work,
        "eval_compare.json",
        lambda c: c["tasks"].update(general_qa=task("regression", *moved(200, 198, gained=0, lost=100))),
    )
    proc = llmops_gate(work)
    assert proc.returncode == 1 and "general_qa" in proc.stderr
    proc = llmops_gate(work, "--no-fail")  # what dvc.yaml runs: the verdict is in gate.json, not the exit code
    assert proc.returncode == 0
    assert json.loads((work / "reports/gate.json").read_text())["verdict"] == "fail"
    _missing(work)
    assert llmops_gate(work).returncode == 2
    assert json.loads((work / "reports/gate.json").read_text())["exit_code"] == 2


@pytest.mark.integration
def test_cli_unreadable_params_is_exit_2(work):
    set_params(work, gate__alpha="often")
    proc = llmops_gate(work)
    assert proc.returncode == 2 and "gate.alpha" in proc.stderr


def test_gate_json_is_replaced_atomically(work):
    """An old passing gate.json never survives a run that could not judge."""
    assert judge_gate()["verdict"] == "pass"
    _stale(work)
    assert json.loads((work / "reports/gate.json").read_text())["verdict"] == "pass"
    judge_gate()
    assert json.loads((work / "reports/gate.json").read_text())["verdict"] == "error"
    assert not list((work / "reports").glob(".gate.json.*"))
