"""Stages `eval_base` and `eval_tuned`: lm-evaluation-harness on the base and on base + LoRA adapter.

Run:  llmops eval-base      (dvc repro eval_base)
      llmops eval-tuned     (dvc repro eval_tuned; needs eval_base's sample logs)

The suite is `params.eval.domain_tasks + regression_tasks`, rendered and run by llmops.eval_suite (our task
folders with params.yaml's values filled in, lm-eval's built-in tasks by name); llmops.lm_eval_results reads
what lm-eval returns.

eval_base depends on nothing training produces, so an experiment that only changes `train.*` reuses its
cached result. eval_tuned evaluates the unmerged adapter (`peft=` on hf, `lora_local_path` on vllm), then
pairs its per-sample results with eval_base's item by item for the statistics in reports/eval_compare.json
(the interval and p of one method per task, Tango score for 0/1 items, paired t otherwise; see llmops.stats).

Outputs (<m> = base | tuned): reports/eval_<m>.json (score, stderr, n per task),
reports/eval_samples/<m>/ (lm-eval's per-sample logs, one <task>.jsonl per leaf task + results.json);
eval_tuned also writes reports/eval_compare.json, eval_tasks.csv and eval_categories.csv (DVC plots) and
logs the comparison into the training's MLflow run.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

from llmops import schemas, stats
from llmops.artifacts import atomic_dir, csv_text, sha256_tree, to_plain, write_jsonl, write_text
from llmops.config import Params
from llmops.errors import StageError
from llmops.eval_suite import run_lm_eval
from llmops.lm_eval_results import Model, leaves, load_samples, per_sample_scores, primary_metric, samples_dir
from llmops.schemas import AnswerStats, Baseline, EvalComparison, TaskComparison

# ---------------------------------------------------------------- reading lm-eval's results


def _number(value: Any) -> float | None:
    value = to_plain(value)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarise(params: Params, results: dict) -> dict[str, dict[str, Any]]:
    """Per requested task: metric, filter, score, stderr, n (groups: lm-eval's aggregate, pooled samples)."""
    summary = {}
    for name in params.eval.tasks:
        task_leaves = leaves(results, name)
        metric, filt = primary_metric(results, task_leaves[0])
        row = results.get("groups", {}).get(name) or results["results"][name]
        key = f"{metric},{filt}"
        if key not in row:
            raise StageError(f"task {name}: lm-eval reported no {key!r} (has {sorted(row)})")
        n = sum(len(per_sample_scores(results["samples"][leaf], leaf, metric, filt)) for leaf in task_leaves)
        summary[name] = {
            "metric": metric,
            "filter": filt,
            "score": _number(row[key]),
            "stderr": _number(row.get(f"{metric}_stderr,{filt}")),
            "n": n,
            "leaves": task_leaves,
        }
    return summary


# ---------------------------------------------------------------- the stage


def run(params: Params, model: Model) -> dict[str, Any]:
    """Evaluate `model` ("base" or "tuned"); for tuned also compare against eval_base's sample logs."""
    paths = params.paths
    started = time.perf_counter()
    adapter = None
    base_samples = None
    if model == "tuned":
        adapter = paths.adapter_dir
        if not (adapter / "adapter_config.json").is_file():
            raise StageError(f"{adapter}: no adapter_config.json; run the train stage first (dvc repro train)")
        base_samples = load_samples(samples_dir(params, "base"))  # fail before the slow part

    results = run_lm_eval(params, adapter)
    summary = summarise(params, results)
    runtime = time.perf_counter() - started

    report: dict[str, Any] = {
        "model": model,
        "runtime_s": round(runtime, 2),
        "tasks": {name: {k: v for k, v in row.items() if k != "leaves"} for name, row in summary.items()},
    }
    compare = None
    if model == "tuned":
        report["adapter_sha256"] = sha256_tree(adapter)
        compare = compare_models(params, summary, base_samples, results, report["adapter_sha256"])

    results_contract = schemas.validate(
        report, schemas.TunedEvalResults if model == "tuned" else schemas.EvalResults, f"eval_{model}.json"
    )
    # every output is computed before the first is written: a failure above leaves none behind
    with atomic_dir(samples_dir(params, model)) as out:
        for leaf, records in sorted(results["samples"].items()):
            write_jsonl(out / f"{leaf}.jsonl", (json.loads(json.dumps(r, default=str)) for r in records))
        write_text(
            out / "results.json", json.dumps(stable_results(results), indent=2, sort_keys=True, default=str) + "\n"
        )
    schemas.write(paths.report(f"eval_{model}.json"), results_contract)
    if compare is not None:
        schemas.write(paths.report(schemas.EVAL_COMPARE), compare)
        write_text(paths.report("eval_tasks.csv"), tasks_csv(compare))
        write_text(paths.report("eval_categories.csv"), categories_csv(params, summary, base_samples, results))
        log_mlflow(params, compare)
        return compare.model_dump(mode="json")
    return report


# lm-eval's results carry the wall clock (date, start/end times, durations) and the machine's paths; kept
# in results.json they would make the sample folder's hash differ on every run, so eval_tuned (which
# depends on eval_base's folder) would rerun for nothing. Runtime lives in eval_<model>.json instead.
VOLATILE_KEYS = {
    "date",
    "start_time",
    "end_time",
    "total_evaluation_time_seconds",
    "model_name_sanitized",
    "pretty_env_info",
    "transformers_version",
    "lm_eval_version",
    "upper_git_hash",
    "git_hash",
}


def stable_results(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "samples" and k not in VOLATILE_KEYS}


def paired(params: Params, row: dict, base_samples: dict[str, list[dict]], results: dict):
    """Base and tuned per-sample scores of one task, aligned item by item (same documents, same prompts)."""
    base, tuned = {}, {}
    for leaf in row["leaves"]:
        if leaf not in base_samples:
            raise StageError(f"eval_base has no samples for task {leaf}; rerun it (dvc repro eval_base)")
        base.update(per_sample_scores(base_samples[leaf], leaf, row["metric"], row["filter"]))
        tuned.update(per_sample_scores(results["samples"][leaf], leaf, row["metric"], row["filter"]))
    if base.keys() != tuned.keys():
        raise StageError(
            f"tasks {row['leaves']}: eval_base scored {len(base)} items, eval_tuned {len(tuned)}; "
            "they must see the same items (rerun eval_base: dvc repro eval_base)"
        )
    keys = sorted(base)
    changed = [
        k
        for k in keys
        if (base[k]["doc_hash"], base[k]["prompt_hash"]) != (tuned[k]["doc_hash"], tuned[k]["prompt_hash"])
    ]
    if changed:
        raise StageError(
            f"task {changed[0][0]} item {changed[0][1]}: document or prompt differs between "
            "eval_base and eval_tuned (rerun eval_base: dvc repro eval_base)"
        )
    return keys, base, tuned


def compare_models(
    params: Params, summary: dict, base_samples: dict, results: dict, adapter_sha: str
) -> EvalComparison:
    cfg = params.eval
    tasks = {}
    for name, row in summary.items():
        keys, base, tuned = paired(params, row, base_samples, results)
        if not keys:
            raise StageError(f"task {name}: no scored items to compare")
        stats_row = stats.compare(
            [base[k]["score"] for k in keys],
            [tuned[k]["score"] for k in keys],
            samples=cfg.bootstrap_samples,
            seed=cfg.seed,
        )
        extra: dict[str, Any] = {}
        if cfg.kind(name) == "domain":
            extra["baseline"] = label_baseline([base[k]["category"] for k in keys])
        answers = [tuned[k]["answer"] for k in keys]
        if all(a is not None for a in answers):
            extra["tuned_answers"] = AnswerStats(
                empty=sum(1 for a in answers if not a.strip()),
                distinct=len({" ".join(a.split()).lower() for a in answers}),
            )
        tasks[name] = TaskComparison(kind=cfg.kind(name), metric=row["metric"], **stats_row, **extra)
    return EvalComparison(adapter_sha256=adapter_sha, domain_task=cfg.domain_task, tasks=tasks)


def label_baseline(labels: list[str]) -> Baseline:
    """What a model that ignores the input scores: guessing uniformly (chance) or always answering the most
    common gold label (majority). A domain score means something only above both."""
    counts = defaultdict(int)
    for label in labels:
        counts[label] += 1
    return Baseline(labels=len(counts), chance=1 / len(counts), majority=max(counts.values()) / len(labels))


def tasks_csv(compare: EvalComparison) -> str:
    rows = [
        [name, row.kind.value, row.metric, model, f"{name} {model}", round(getattr(row, model), 6)]
        for name, row in compare.tasks.items()
        for model in ("base", "tuned")
    ]
    return csv_text(["task", "kind", "metric", "model", "series", "score"], rows)


def categories_csv(params: Params, summary: dict, base_samples: dict, results: dict) -> str:
    """Domain-task accuracy per gold category, base and tuned (which categories the adapter learned)."""
    keys, base, tuned = paired(params, summary[params.eval.domain_task], base_samples, results)
    by_cat: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"base": [], "tuned": []})
    for k in keys:
        by_cat[base[k]["category"]]["base"].append(base[k]["score"])
        by_cat[base[k]["category"]]["tuned"].append(tuned[k]["score"])
    rows = [
        [cat, model, f"{cat} {model}", len(scores[model]), round(sum(scores[model]) / len(scores[model]), 6)]
        for cat, scores in sorted(by_cat.items())
        for model in ("base", "tuned")
    ]
    return csv_text(["category", "model", "series", "n", "accuracy"], rows)


def log_mlflow(params: Params, compare: EvalComparison) -> str | None:
    from llmops.tracking import log_to_training_run

    metrics = {}
    for name, task in compare.tasks.items():
        row = task.model_dump()
        metrics[name] = {k: row[k] for k in ("base", "tuned", "delta", "ratio", "p_value") if row[k] is not None}
        metrics[name]["delta_ci_low"], metrics[name]["delta_ci_high"] = row["delta_ci"]
    return log_to_training_run(params.paths.reports, metrics, prefix="eval")
