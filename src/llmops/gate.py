"""Stage `gate`: turn the evaluation and judge metrics into one verdict and an exit code that decides shipping.

Run:  llmops gate            (exit 0 pass, 1 a binding rule failed, 2 the gate could not judge)
      llmops gate --no-fail  (same reports/gate.json, always exit 0: what the dvc.yaml stage runs, so a
                              failing verdict still reaches the `report` stage and the PR comment)

Rules come from params.yaml `gate:`; task kinds from `eval.domain_tasks` / `eval.regression_tasks` (never
from the file being judged). Each eval rule is a one-sided statistical decision with error rate gate.alpha,
computed from the paired sufficient statistics in reports/eval_compare.json (llmops.stats):
  - domain_min               tuned score on eval.domain_task >= gate.domain_min (a product threshold)
  - domain_over_baseline     tuned score >= max(chance, majority-class share) + gate.domain_min_lift, both
                             from the eval set's gold labels (meaningful for any label set)
  - domain_gain:<task>       for every eval.domain_tasks entry not in eval.report_only_tasks: one-sided p of a
                             gain < alpha (exact McNemar for 0/1 items, paired t otherwise): a model that did
                             not really improve passes this at most alpha of the time
  - regression:<task>        margin = (1 - regression_min_ratio) x base score (absolute (1 - regression_min_ratio)
                             when the base scores below near_zero_base). regression_rule "noninferiority": the
                             one-sided p of H0 "tuned - base <= -margin" < alpha (0/1 items: exact unconditional
                             test ordered by Tango's score; others: paired t), so a model that really lost more
                             than the margin passes at most alpha of the time (bench/stats_oc.py measures it);
                             "point": the observed delta >= -margin (no error rate; the p is still reported)
  - judge_mean:<rubric>      tuned judge mean >= judge_min_mean; binding only when the judge is calibrated
  - judge_invalid_rate       <= judge_max_invalid_rate; binding only when the judge is calibrated
  - judge_failure_rate       > judge_max_failure_rate is "could not judge" (exit 2) whatever the calibration:
                             a judge whose calls fail must never let a model through silently

It fails closed: a missing file, one that breaks its contract (llmops.schemas: wrong type, NaN, infinity),
a task or rubric the params name but the metrics lack (or the reverse), a task kind that disagrees with
the params, a task too small for any result on it to pass its test (the message names the minimum n), no
regression task at all (unless gate.regression_required is false), or metrics whose adapter_sha256 is not the current adapter's (stale) make the verdict "error".

Why one module (~380 lines): the rules (one function per rule kind), their thresholds and the verdict, read
together when a verdict is questioned; the statistics are llmops.stats.
"""

from __future__ import annotations

import operator
from typing import Any

from llmops import stats
from llmops.artifacts import sha256_tree
from llmops.config import Params
from llmops.schemas import (
    EVAL_COMPARE,
    GATE,
    JUDGE,
    ContractError,
    EvalComparison,
    GateReport,
    GateRule,
    JudgeReport,
    Op,
    TaskComparison,
    TaskKind,
    Verdict,
    read,
    write,
)

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _rule(
    rule: str,
    metric: str,
    observed: float | None,
    threshold: float,
    op: Op,
    binding: bool,
    reason: str,
    detail: str = "",
) -> GateRule:
    ok = observed is not None and OPS[op](observed, threshold)
    return GateRule(
        rule=rule,
        metric=metric,
        observed=observed,
        threshold=threshold,
        op=op,
        binding=binding,
        passed=bool(ok),
        reason=reason if not ok or not binding else "ok",
        detail=detail,
    )


def margin(params: Params, task: TaskComparison) -> float:
    """The allowed drop on a regression task, in score points."""
    allowed = 1 - params.gate.regression_min_ratio
    return allowed if task.base < params.gate.near_zero_base else allowed * task.base


def _counts(task: TaskComparison) -> str:
    moved = f"{task.gained} gained, {task.lost} lost, " if task.binary else ""
    return f"n {task.n}, {moved}one item = {task.resolution():.3g}"


def gain_rule(params: Params, name: str, task: TaskComparison) -> GateRule:
    """domain_gain:<task>: the tuned model gained over the base, one-sided at alpha."""
    g = params.gate
    p = stats.gain_pvalue(n=task.n, delta=task.delta, diff_sd=task.diff_sd, gained=task.gained, lost=task.lost)
    test = "exact McNemar" if task.binary else "paired t"
    return _rule(
        f"domain_gain:{name}",
        f"{EVAL_COMPARE}:tasks.{name} (one-sided {test} p)",
        p,
        g.alpha,
        "<",
        True,
        f"{name}: gain over base not significant (one-sided {test} p {_fmt(p)} >= alpha {g.alpha})",
        f"{_counts(task)}; delta {task.delta:+.3f}",
    )


def domain_rules(params: Params, name: str, task: TaskComparison) -> list[GateRule]:
    g, key = params.gate, f"{EVAL_COMPARE}:tasks.{name}"
    rules = [
        _rule(
            "domain_min",
            f"{key}.tuned",
            task.tuned,
            g.domain_min,
            ">=",
            True,
            f"{name}: tuned score {_fmt(task.tuned)} < domain_min {g.domain_min}",
            _counts(task),
        )
    ]
    if task.baseline is not None and g.domain_min_lift is not None:
        # An absolute threshold means nothing across label sets (0.2 is chance for five labels): the score
        # must also beat what an input-blind answer gets, guessing or always naming the commonest label.
        b = task.baseline
        floor = max(b.chance, b.majority)
        rules.append(
            _rule(
                "domain_over_baseline",
                f"{key}.tuned",
                task.tuned,
                round(floor + g.domain_min_lift, 10),
                ">=",
                True,
                f"{name}: tuned score {_fmt(task.tuned)} is not {g.domain_min_lift} above "
                f"the input-blind baseline {floor:.3g} (chance {b.chance:.3g}, majority {b.majority:.3g})",
                f"{b.labels} labels; chance {b.chance:.3g}, majority class {b.majority:.3g}",
            )
        )
    return rules


def regression_rule(params: Params, name: str, task: TaskComparison) -> GateRule:
    alpha, allowed = params.gate.alpha, margin(params, task)
    stat = dict(n=task.n, delta=task.delta, diff_sd=task.diff_sd, gained=task.gained, lost=task.lost)
    p = stats.noninferiority_pvalue(**stat, margin=allowed)
    test = "exact, Tango-ordered" if task.binary else "paired t"
    detail = f"{_counts(task)}; delta {task.delta:+.3f}, margin {allowed:.3f}, non-inferiority p {_fmt(p)} ({test})"
    key = f"{EVAL_COMPARE}:tasks.{name}"
    if params.gate.regression_rule == "point":
        return _rule(
            f"regression:{name}",
            f"{key}.delta",
            task.delta,
            round(-allowed, 10),
            ">=",
            True,
            f"{name}: observed drop {task.delta:+.4f} exceeds the margin -{allowed:.4f} (forgetting)",
            detail,
        )
    return _rule(
        f"regression:{name}",
        f"{key} (one-sided non-inferiority p, {test})",
        p,
        alpha,
        "<",
        True,
        f"{name}: a drop beyond the margin -{allowed:.4f} cannot be ruled out (delta {task.delta:+.4f}, "
        f"non-inferiority p {_fmt(p)} >= alpha {alpha}): forgetting",
        detail,
    )


def too_few_items(params: Params, name: str, task: TaskComparison, kind: str) -> str | None:
    """Why a task is too small to decide at all (no result on it could pass), or None."""
    alpha = params.gate.alpha
    if kind == "gain":
        need = stats.min_items_gain(alpha)
        what = f"a gain at alpha {alpha}"
    else:
        allowed = margin(params, task)
        unchanged = dict(n=task.n, delta=0.0, diff_sd=0.0, margin=allowed)
        if task.binary:
            unchanged.update(gained=0, lost=0)
        if stats.noninferiority_pvalue(**unchanged) < alpha:  # an unchanged model could pass: the size is enough
            return None
        if stats.grid_margin(allowed) <= 0:
            return f"{name}: a margin of {allowed:.2g} cannot be shown on any number of items (gate.regression_min_ratio < 1)"
        need = stats.min_items_noninferiority(stats.grid_margin(allowed), alpha, task.binary)
        what = f"non-inferiority at the margin {allowed:.4g} (alpha {alpha}), even with no item changed"
    if task.n >= need:
        return None
    return (
        f"{name}: {task.n} items cannot show {what}: it needs at least {need} items (more items, a wider "
        "margin gate.regression_min_ratio or a larger gate.alpha)"
    )


def eval_rules(params: Params, compare: EvalComparison, src: str, problems: list[str]) -> list[GateRule]:
    cfg = params.eval
    if compare.domain_task != cfg.domain_task:
        problems.append(
            f"{src}: domain_task is {compare.domain_task!r}, params eval.domain_task is {cfg.domain_task!r}"
        )
    # The params decide which tasks exist and which rule each gets; a file that disagrees is not judged.
    missing = [t for t in cfg.tasks if t not in compare.tasks]
    extra = [t for t in compare.tasks if t not in cfg.tasks]
    if missing:
        problems.append(f"{src}: tasks {missing} missing (params eval.domain_tasks/regression_tasks name them)")
    if extra:
        problems.append(f"{src}: tasks {extra} are not in params eval.domain_tasks/regression_tasks")
    if not cfg.regression_tasks and params.gate.regression_required:
        problems.append(
            "params eval.regression_tasks is empty: nothing checks that the tuned model kept its general skills "
            "(name the general tasks, or set gate.regression_required: false to ship without a forgetting check)"
        )
    rules: list[GateRule] = []
    for name in cfg.tasks:
        task = compare.tasks.get(name)
        if task is None:
            continue
        if task.kind != cfg.kind(name):
            problems.append(f"{src}: tasks.{name}.kind is {task.kind.value!r}, params make it {cfg.kind(name)!r}")
            continue
        if name == cfg.domain_task:
            rules += domain_rules(params, name, task)
        test = None  # the statistical test this task's verdict rests on
        if task.kind is TaskKind.domain:
            if name not in cfg.report_only_tasks and params.gate.domain_gain_significant:
                rules.append(gain_rule(params, name, task))
                test = "gain"
        else:
            rules.append(regression_rule(params, name, task))
            test = "noninferiority" if params.gate.regression_rule == "noninferiority" else None
        # A verdict needs a task that could have shown it: a size where no result passes is not evidence.
        if test and (why := too_few_items(params, name, task, test)):
            problems.append(f"{src}: {why}")
    return rules


def judge_rules(params: Params, judge: JudgeReport, src: str, problems: list[str]) -> list[GateRule]:
    g, rules = params.gate, []
    calibrated = judge.calibration.calibrated
    advisory = f"advisory: judge not calibrated ({judge.calibration.reason or 'no reason given'})"
    # A judge whose calls fail has not judged: could-not-judge, whatever its calibration says.
    if judge.failure_rate > g.judge_max_failure_rate:
        # The most frequent error says what to fix (an endpoint down, a key missing, a prompt over the context).
        top = max(judge.errors, key=lambda e: e.n, default=None)
        why = f"; most frequent error ({top.n}x): {top.error}: {top.message}" if top else ""
        problems.append(
            f"{src}: judge failure_rate {judge.failure_rate:.3g} > gate.judge_max_failure_rate "
            f"{g.judge_max_failure_rate}: the judge could not judge{why} (fix it and rerun the judge stage)"
        )
    rules.append(
        _rule(
            "judge_failure_rate",
            f"{JUDGE}:failure_rate",
            judge.failure_rate,
            g.judge_max_failure_rate,
            "<=",
            True,
            f"judge failure rate {_fmt(judge.failure_rate)} > {g.judge_max_failure_rate}",
        )
    )
    for rubric in [*params.judge.rubrics, *(r for r in judge.rubrics if r not in params.judge.rubrics)]:
        if rubric not in judge.rubrics or rubric not in params.judge.rubrics:
            problems.append(
                f"{src}: rubric {rubric!r} is in one of params judge.rubrics "
                f"({params.judge.rubrics}) and the metrics ({sorted(judge.rubrics)}) but not the other"
            )
            continue
        mean = judge.rubrics[rubric].tuned.mean
        if mean is None and calibrated:
            problems.append(f"{src}: rubrics.{rubric}.tuned.mean is null but the judge is calibrated")
        entry = _rule(
            f"judge_mean:{rubric}",
            f"{JUDGE}:rubrics.{rubric}.tuned.mean",
            mean,
            g.judge_min_mean,
            ">=",
            calibrated,
            f"{rubric}: tuned judge mean "
            f"{'null (no valid verdict)' if mean is None else _fmt(mean)} < {g.judge_min_mean}",
        )
        rules.append(entry)
    entry = _rule(
        "judge_invalid_rate",
        f"{JUDGE}:invalid_rate",
        judge.invalid_rate,
        g.judge_max_invalid_rate,
        "<=",
        calibrated,
        f"judge invalid rate {_fmt(judge.invalid_rate)} > {g.judge_max_invalid_rate}",
    )
    rules.append(entry)
    if not calibrated:
        rules = [
            r if r.binding else r.model_copy(update={"reason": advisory + ("" if r.passed else f"; {r.reason}")})
            for r in rules
        ]
    return rules


def _load(path, model, adapter_sha: str | None, problems: list[str]) -> Any:
    try:
        data = read(path, model)
    except ContractError as exc:
        problems.append(str(exc))
        return None
    if adapter_sha is not None and data.adapter_sha256 != adapter_sha:
        problems.append(
            f"{path}: stale, adapter_sha256 {str(data.adapter_sha256)[:12]} is not the current "
            f"adapter's {adapter_sha[:12]} (metrics older than the adapter they describe; rerun "
            "dvc repro)"
        )
    return data


def evaluate(params: Params) -> GateReport:
    """The gate report (pure: reads the metrics files and the adapter, writes nothing)."""
    paths, problems = params.paths, []
    adapter_sha = sha256_tree(paths.adapter_dir) if paths.adapter_dir.is_dir() else None
    if adapter_sha is None:
        problems.append(f"{paths.adapter_dir}: adapter folder missing")
    rules: list[GateRule] = []
    compare = _load(paths.report(EVAL_COMPARE), EvalComparison, adapter_sha, problems)
    if compare is not None:
        rules += eval_rules(params, compare, str(paths.report(EVAL_COMPARE)), problems)
    judge = _load(paths.report(JUDGE), JudgeReport, adapter_sha, problems)
    if judge is not None:
        rules += judge_rules(params, judge, str(paths.report(JUDGE)), problems)
    failed = [r for r in rules if r.binding and not r.passed]
    verdict = Verdict.error if problems else Verdict.failed if failed else Verdict.passed
    return GateReport(
        verdict=verdict,
        exit_code=verdict.exit_code,
        adapter_sha256=adapter_sha,
        rules=rules,
        errors=problems,
        summary=summary(verdict, rules, problems),
    )


def summary(verdict: Verdict, rules: list[GateRule], errors: list[str]) -> str:
    """One line a human reads first: the verdict and what decided it."""
    if verdict is Verdict.error:
        return f"error: could not judge ({len(errors)} problem(s)): {errors[0]}"
    failed = [r.reason for r in rules if r.binding and not r.passed]
    if failed:
        return "fail: " + "; ".join(failed)
    advisory = sum(1 for r in rules if not r.binding)
    return f"pass: {len(rules)} rules ({advisory} advisory)"


def run(params: Params, no_fail: bool = False) -> GateReport:
    """Evaluate the rules and write reports/gate.json atomically, whatever the verdict."""
    report = evaluate(params)
    write(params.paths.report(GATE), report)
    from llmops.tracking import log_to_training_run

    try:  # MLflow only mirrors the verdict: a store hiccup must not turn "fail" into a crash or a pass
        log_to_training_run(
            params.paths.reports,
            {"exit_code": report.exit_code, "passed": int(report.verdict is Verdict.passed)},
            "gate",
        )
    except Exception as exc:  # noqa: BLE001
        print(f"warning: gate verdict not mirrored to MLflow: {exc}")
    return report
