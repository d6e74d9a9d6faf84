"""Stage `gate`: turn the evaluation and judge metrics into one verdict and an exit code that decides shipping.

Run:  llmops gate            (exit 0 pass, 1 a binding rule failed, 2 the gate could not judge)
      llmops gate --no-fail  (same reports/gate.json, always exit 0: what the dvc.yaml stage runs, so a
                              failing verdict still reaches the `report` stage and the PR comment)

Rules come from params.yaml `gate:` and read reports/eval_compare.json and reports/judge.json:
  - domain_min               tuned score on eval.domain_task >= gate.domain_min
  - domain_gain_significant  lower bound of the (tuned - base) CI > 0 (when the knob is true)
  - regression:<task>        for every regression task: tuned/base ratio (point or CI lower bound, per
                             gate.regression_on) >= gate.regression_min_ratio. Where the base score is near
                             zero (eval writes rule "abs_delta") a ratio means nothing, so the absolute
                             delta must be >= -(1 - regression_min_ratio) instead (0.95 -> at most 0.05 lost)
  - judge_mean:<rubric>      tuned judge mean >= gate.judge_min_mean; binding only when the judge is
                             calibrated against human labels, otherwise advisory (reported, never decides)
  - judge_invalid_rate / judge_failure_rate <= their maxima: binding always, or with
                             gate.judge_rates_binding: calibrated only while the judge itself is binding

It fails closed: a missing or malformed metrics file, a NaN or non-number, a task or rubric the params
name but the metrics lack, an unknown rule kind, or metrics whose adapter_sha256 is not the current
adapter's (stale: older than the adapter they describe) make the verdict "error" (exit 2), never a pass.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llmops.artifacts import finite, sha256_tree, write_json
from llmops.config import Params

EVAL_FILE = "eval_compare.json"
JUDGE_FILE = "judge.json"
GATE_FILE = "gate.json"
EXIT = {"pass": 0, "fail": 1, "error": 2}


class _Problems(list):
    """Everything that stops the gate from judging; each entry is one readable line."""


def _load(path: Path, problems: _Problems) -> dict | None:
    if not path.is_file():
        problems.append(f"{path}: missing (the stage that writes it has not run)")
        return None
    try:
        # NaN/Infinity are not JSON; Python would accept them silently, so keep them visible as NaN and let
        # the number check below name the exact metric.
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda _: math.nan)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: malformed JSON ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a JSON object, got {type(data).__name__}")
        return None
    return data


def _get(data: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            raise KeyError(dotted)
    return data


def _number(data: dict, dotted: str, source: str, problems: _Problems) -> float | None:
    """The finite number at `dotted`, or None with the reason recorded (missing, NaN, non-number)."""
    try:
        value = _get(data, dotted)
    except KeyError:
        problems.append(f"{source}: {dotted} missing")
        return None
    if isinstance(value, float) and math.isnan(value):
        problems.append(f"{source}: {dotted} is NaN")
        return None
    if not finite(value):
        problems.append(f"{source}: {dotted} is not a finite number ({value!r})")
        return None
    return float(value)


def _rule(rule: str, metric: str, observed: float | None, threshold: float, op: str, binding: bool,
          reason: str) -> dict:
    ok = observed is not None and (observed >= threshold if op == ">=" else
                                   observed > threshold if op == ">" else observed <= threshold)
    return {"rule": rule, "metric": metric, "observed": observed, "threshold": threshold, "op": op,
            "binding": binding, "passed": bool(ok), "reason": reason if not ok or not binding else "ok"}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _eval_rules(params: Params, compare: dict, src: str, problems: _Problems) -> list[dict]:
    g, rules = params.gate, []
    tasks = compare.get("tasks")
    if not isinstance(tasks, dict):
        problems.append(f"{src}: tasks missing or not an object")
        return rules
    domain = params.eval.domain_task
    if compare.get("domain_task") != domain:
        problems.append(f"{src}: domain_task is {compare.get('domain_task')!r}, params eval.domain_task is {domain!r}")
    # Every task the params name must be measured, and every regression task measured is gated: an extra
    # task in the file is not ignored (fail closed), a missing one cannot be judged.
    for name in [domain, *params.eval.regression_tasks]:
        if name not in tasks:
            problems.append(f"{src}: unknown task {name!r} (params name it; the metrics have {sorted(tasks)})")
    for name, task in tasks.items():
        if not isinstance(task, dict) or task.get("kind") not in ("domain", "regression"):
            problems.append(f"{src}: tasks.{name}.kind must be 'domain' or 'regression'")
    if domain in tasks:
        key = f"tasks.{domain}"
        tuned = _number(compare, f"{key}.tuned", src, problems)
        rules.append(_rule("domain_min", f"{EVAL_FILE}:{key}.tuned", tuned, g.domain_min, ">=", True,
                           f"{domain}: tuned score {_fmt(tuned)} < domain_min {g.domain_min}"))
        if g.domain_gain_significant:
            lo = _number(compare, f"{key}.delta_ci.0", src, problems)
            rules.append(_rule("domain_gain_significant", f"{EVAL_FILE}:{key}.delta_ci[0]", lo, 0.0, ">", True,
                               f"{domain}: gain over base not significant (95% CI lower bound {_fmt(lo)} <= 0)"))
    for name, task in tasks.items():
        if not isinstance(task, dict) or task.get("kind") != "regression":
            continue
        key, kind = f"tasks.{name}", task.get("rule")
        lower = g.regression_on == "ci_lower"
        if kind == "ratio":
            field = f"{key}.ratio_ci.0" if lower else f"{key}.ratio"
            observed, threshold = _number(compare, field, src, problems), g.regression_min_ratio
            what = "ratio CI lower bound" if lower else "tuned/base ratio"
        elif kind == "abs_delta":
            field = f"{key}.delta_ci.0" if lower else f"{key}.delta"
            observed, threshold = _number(compare, field, src, problems), round(-(1 - g.regression_min_ratio), 10)
            what = "absolute delta CI lower bound" if lower else "absolute delta (base near zero)"
        else:
            problems.append(f"{src}: {key}.rule must be 'ratio' or 'abs_delta', got {kind!r}")
            continue
        metric = f"{EVAL_FILE}:{field[:-2]}[0]" if field.endswith(".0") else f"{EVAL_FILE}:{field}"
        rules.append(_rule(f"regression:{name}", metric, observed, threshold, ">=", True,
                           f"{name}: {what} {_fmt(observed)} < {threshold:g} (forgetting)"))
    return rules


def _judge_rules(params: Params, judge: dict, src: str, problems: _Problems) -> list[dict]:
    g, rules = params.gate, []
    calibration = judge.get("calibration")
    calibrated = isinstance(calibration, dict) and calibration.get("calibrated") is True
    if not isinstance(calibration, dict) or not isinstance(calibration.get("calibrated"), bool):
        problems.append(f"{src}: calibration.calibrated missing or not true/false")
    why = (calibration or {}).get("reason") if isinstance(calibration, dict) else None
    advisory = f"advisory: judge not calibrated ({why or 'no reason given'})"
    rubrics = judge.get("rubrics") if isinstance(judge.get("rubrics"), dict) else {}
    # the params' rubrics must all be there; any extra rubric the judge scored is gated too (fail closed)
    for rubric in [*params.judge.rubrics, *(r for r in rubrics if r not in params.judge.rubrics)]:
        if rubric not in rubrics:
            problems.append(f"{src}: unknown rubric {rubric!r} (params judge.rubrics name it; "
                            f"the metrics have {sorted(rubrics)})")
            continue
        key = f"rubrics.{rubric}.tuned.mean"
        try:
            no_score = _get(judge, key) is None
        except KeyError:
            no_score = False  # missing key: _number reports it
        # The judge writes mean null when none of its verdicts was valid. For an advisory rule that is a
        # finding to show, not a file we cannot read; for a binding one it is exit 2 like any non-number.
        mean = None if (no_score and not calibrated) else _number(judge, key, src, problems)
        entry = _rule(f"judge_mean:{rubric}", f"{JUDGE_FILE}:{key}", mean, g.judge_min_mean, ">=", calibrated,
                      f"{rubric}: tuned judge mean {'null (no valid verdict)' if no_score else _fmt(mean)} "
                      f"< {g.judge_min_mean}")
        if not calibrated:
            entry["reason"] = advisory + ("" if entry["passed"] else f"; {entry['reason']}")
        rules.append(entry)
    # The rates say whether the judge's scores can be trusted at all. They bind always, or (the knob) only
    # while the judge's scores bind: an uncalibrated judge is advisory already, its reliability with it.
    rates_bind = g.judge_rates_binding == "always" or calibrated
    for name, limit in (("invalid_rate", g.judge_max_invalid_rate), ("failure_rate", g.judge_max_failure_rate)):
        rate = _number(judge, name, src, problems)
        entry = _rule(f"judge_{name}", f"{JUDGE_FILE}:{name}", rate, limit, "<=", rates_bind,
                      f"judge {name.replace('_', ' ')} {_fmt(rate)} > {limit}")
        if not rates_bind:
            entry["reason"] = advisory + ("" if entry["passed"] else f"; {entry['reason']}")
        rules.append(entry)
    return rules


def evaluate(params: Params) -> dict:
    """The gate report (pure: reads the metrics files and the adapter, writes nothing)."""
    paths, problems = params.paths, _Problems()
    adapter_sha = sha256_tree(paths.adapter_dir) if paths.adapter_dir.is_dir() else None
    if adapter_sha is None:
        problems.append(f"{paths.adapter_dir}: adapter folder missing")
    rules: list[dict] = []
    for name, builder in ((EVAL_FILE, _eval_rules), (JUDGE_FILE, _judge_rules)):
        path = paths.report(name)
        data = _load(path, problems)
        if data is None:
            continue
        claimed = data.get("adapter_sha256")
        if adapter_sha is not None and claimed != adapter_sha:
            problems.append(f"{path}: stale, adapter_sha256 {str(claimed)[:12]} is not the current adapter's "
                            f"{adapter_sha[:12]} (metrics older than the adapter they describe; rerun dvc repro)")
        rules.extend(builder(params, data, str(path), problems))
    failed = [r for r in rules if r["binding"] and not r["passed"]]
    verdict = "error" if problems else "fail" if failed else "pass"
    return {"verdict": verdict, "exit_code": EXIT[verdict], "adapter_sha256": adapter_sha,
            "rules": rules, "errors": list(problems),
            "summary": summary({"verdict": verdict, "rules": rules, "errors": list(problems)})}


def summary(report: dict) -> str:
    """One line a human reads first: the verdict and what decided it."""
    if report["verdict"] == "error":
        return f"error: could not judge ({len(report['errors'])} problem(s)): {report['errors'][0]}"
    failed = [r["reason"] for r in report["rules"] if r["binding"] and not r["passed"]]
    if failed:
        return "fail: " + "; ".join(failed)
    advisory = sum(1 for r in report["rules"] if not r["binding"])
    return f"pass: {len(report['rules'])} rules ({advisory} advisory)"


def run(params: Params, no_fail: bool = False) -> dict:
    """Evaluate the rules and write reports/gate.json atomically, whatever the verdict."""
    report = evaluate(params)
    write_json(params.paths.report(GATE_FILE), report)
    from llmops.tracking import log_to_training_run

    try:  # MLflow only mirrors the verdict: a store hiccup must not turn "fail" into a crash or a pass
        log_to_training_run(params.paths.reports, {"exit_code": report["exit_code"],
                                                   "passed": int(report["verdict"] == "pass")}, "gate")
    except Exception as exc:  # noqa: BLE001
        print(f"warning: gate verdict not mirrored to MLflow: {exc}")
    return report
