"""Stages `eval_base` and `eval_tuned`: lm-evaluation-harness on the base and on base + LoRA adapter.

Run:  llmops eval-base      (dvc repro eval_base)
      llmops eval-tuned     (dvc repro eval_tuned; needs eval_base's sample logs)

The suite is `params.eval.domain_tasks + regression_tasks`. Names found in `paths.eval_tasks` (one lm-eval
task folder each) are loaded through `TaskManager(include_path=...)`; their `${section.key}` values (data
files, label regex, max_gen_toks) are filled from params.yaml here, so every path and knob has one home.
Any other name (triviaqa, gsm8k, mmlu, ...) is an lm-eval built-in task, for real models.

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
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from llmops import schemas, stats
from llmops.artifacts import atomic_dir, csv_text, read_json, read_jsonl, sha256_tree, to_plain, write_jsonl, write_text
from llmops.config import Params
from llmops.errors import StageError
from llmops.schemas import AnswerStats, Baseline, EvalComparison, TaskComparison

Model = Literal["base", "tuned"]
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")
# vLLM preallocates LoRA buffers for a fixed set of max ranks; the adapter's r is rounded up to one of them
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def samples_dir(params: Params, model: Model) -> Path:
    return params.paths.report("eval_samples") / model


# ---------------------------------------------------------------- the task suite


def _lookup(params: Params, dotted: str, where: str) -> Any:
    value: Any = params.model_dump(mode="json")
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise StageError(f"{where}: ${{{dotted}}} is not a params.yaml key")
        value = value[part]
    return value


def render(obj: Any, params: Params, where: str) -> Any:
    """Fill `${section.key}` from params: a value that is only a placeholder keeps its type (ints stay
    ints), a placeholder inside a longer string is substituted as text."""
    if isinstance(obj, dict):
        return {k: render(v, params, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [render(v, params, where) for v in obj]
    if isinstance(obj, str):
        whole = PLACEHOLDER.fullmatch(obj)
        if whole:
            return _lookup(params, whole.group(1), where)
        return PLACEHOLDER.sub(lambda m: str(_lookup(params, m.group(1), where)), obj)
    return obj


# A local task may build on one of lm-eval's own task definitions: `include: ${lm_eval_tasks}/arc/arc_easy.yaml`
# names the installed copy (lm-eval resolves an include relative to the including file, or absolute), so the prompt,
# choices, filters and metrics are lm-eval's and only the data source is ours (evals/*_slice/).
LM_EVAL_TASKS = "${lm_eval_tasks}"


def builtin_tasks_dir() -> str:
    import lm_eval.tasks

    return str(Path(lm_eval.tasks.__file__).parent)


def local_tasks(folder: Path) -> dict[str, Path]:
    """{task name: its YAML} for the task folders under `folder` (read without following includes)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*/*.yaml")):
        name = load_yaml(path, resolve_func=False, recursive=False).get("task")
        if isinstance(name, str):
            found[name] = path
    return found


def _includes(cfg: dict) -> list[str]:
    include = cfg.pop("include", None)
    return [] if include is None else [include] if isinstance(include, str) else list(include)


def load_task(path: Path, params: Params) -> dict:
    """A local task's config as lm-eval would merge it (included files first, local keys win), `${...}` filled."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(path, resolve_func=True, recursive=False)
    merged: dict = {}
    for inc in _includes(cfg):
        inc_path = Path(inc.replace(LM_EVAL_TASKS, builtin_tasks_dir()))
        inc_path = inc_path if inc_path.is_absolute() else path.parent / inc_path
        if not inc_path.is_file():
            raise StageError(f"{path}: include {inc} -> {inc_path} not found (is lm-eval installed?)")
        base = load_yaml(inc_path, resolve_func=True)  # its !function tags resolve next to the included file
        base.pop("task_list", None)
        merged.update(base)
    merged.update(cfg)
    return render(merged, params, str(path))


def task_specs(params: Params) -> tuple[list[str | dict], Any]:
    """(what simple_evaluate gets, the TaskManager): rendered config dicts for our own tasks, plain names
    for lm-eval's built-in ones. The built-in index (~10k YAML files) is only scanned when needed."""
    from lm_eval.tasks import TaskManager

    folder = params.paths.eval_tasks
    if not folder.is_dir():
        raise StageError(f"paths.eval_tasks: {folder} is not a folder of lm-eval tasks")
    wanted, ours = params.eval.tasks, local_tasks(folder)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    if any(name not in ours and name not in manager.task_index for name in wanted):
        manager = TaskManager(include_path=str(folder))
    unknown = [name for name in wanted if name not in ours and name not in manager.task_index]
    if unknown:
        raise StageError(
            f"eval.domain_tasks/regression_tasks: unknown lm-eval task(s) {unknown}: not in "
            f"{folder}/ nor lm-eval's built-in tasks"
        )
    specs: list[str | dict] = []
    for name in wanted:
        if name not in ours:
            specs.append(name)  # built-in task: used as lm-eval ships it
            continue
        path = ours[name]
        cfg = load_task(path, params)
        data_files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
        if not isinstance(data_files, dict):  # lm-eval also accepts one path or a list of them
            data_files = {"": data_files}
        for split, files in data_files.items():
            for data_file in [files] if isinstance(files, str) else files:
                if not Path(data_file).is_file():
                    raise StageError(
                        f"{path}: dataset_kwargs.data_files{'.' + split if split else ''} "
                        f"{data_file} not found (run the earlier stages: dvc repro)"
                    )
        specs.append(cfg)
    return specs, manager


def render_suite(dest: Path | str, params: Params | None = None) -> list[Path]:
    """Write the rendered task folders (placeholders filled) to `dest`, for the plain lm-eval CLI:
    `lm_eval --include_path <dest> ...`. Not used by the stages, which pass rendered dicts directly.
    An include of lm-eval's own task stays an include, pointed at the installed copy."""
    import yaml
    from lm_eval.tasks._yaml_loader import load_yaml

    from llmops.config import load_params

    params = params or load_params()
    written = []
    for path in sorted(params.paths.eval_tasks.glob("*/*.yaml")):
        cfg = load_yaml(path, resolve_func=False, recursive=False)
        includes = [inc.replace(LM_EVAL_TASKS, builtin_tasks_dir()) for inc in _includes(cfg)]
        cfg = render(cfg, params, str(path))
        if includes:
            cfg = {"include": includes[0] if len(includes) == 1 else includes, **cfg}
        out = Path(dest) / path.parent.name / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
        written.append(out)
    return written


# ---------------------------------------------------------------- running lm-eval


def model_config(params: Params, adapter: Path | None) -> tuple[str, dict[str, Any]]:
    """lm-eval model type and model_args for the configured backend."""
    from llmops.model import model_reference

    name, revision = model_reference(params.paths)
    args: dict[str, Any] = {"pretrained": name, "dtype": "auto"}
    if revision:
        args["revision"] = revision
    if params.eval.backend == "hf":
        if adapter is not None:
            args["peft"] = str(adapter)  # unmerged: exactly the adapter folder train wrote
        return "hf", args
    # vllm: the LoRA is applied per request on top of the unmerged base (needs `pip install lm-eval[vllm]`)
    args["seed"] = params.eval.seed
    if adapter is not None:
        rank = int(read_json(adapter / "adapter_config.json")["r"])
        args["lora_local_path"] = str(adapter)
        args["max_lora_rank"] = next((r for r in VLLM_LORA_RANKS if r >= rank), rank)
    return "vllm", args


def run_lm_eval(params: Params, adapter: Path | None) -> dict[str, Any]:
    import torch
    from lm_eval import simple_evaluate

    cfg = params.eval
    specs, manager = task_specs(params)
    backend, model_args = model_config(params, adapter)
    if backend == "vllm" and not torch.cuda.is_available():
        raise StageError("eval.backend 'vllm' needs a CUDA GPU; use eval.backend: hf on this machine")
    kwargs: dict[str, Any] = {}
    if backend == "hf":
        kwargs["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    results = simple_evaluate(
        model=backend,
        model_args=model_args,
        tasks=specs,
        task_manager=manager,
        batch_size=cfg.batch_size,
        limit=cfg.limit,
        log_samples=True,
        bootstrap_iters=cfg.bootstrap_samples,  # lm-eval's own stderr for non-mean metrics
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
        **kwargs,
    )
    if results is None:  # only non-zero ranks of a multi-process run get None
        raise StageError("lm-eval returned no results (multi-process evaluation is not supported here)")
    return results


# ---------------------------------------------------------------- reading lm-eval's results


def leaves(results: dict, name: str) -> list[str]:
    """The leaf tasks a requested name stands for (a group such as mmlu expands to its subtasks)."""
    children = results.get("group_subtasks", {}).get(name)
    if not children:
        return [name]
    return [leaf for child in children for leaf in leaves(results, child)]


def primary_metric(results: dict, leaf: str) -> tuple[str, str]:
    """(metric, filter) the task reports first: its first metric under its first filter."""
    config = results["configs"][leaf]
    metrics = config.get("metric_list") or [{"metric": "acc"}]
    filters = config.get("filter_list") or [{"name": "none"}]
    return metrics[0]["metric"], filters[0].get("name", "none")


def per_sample_scores(samples: list[dict], leaf: str, metric: str, filt: str) -> dict[tuple, dict]:
    """(leaf, doc_id) -> {"score", "doc_hash", "prompt_hash", "category"} for the chosen metric/filter."""
    out = {}
    for s in samples:
        if s.get("filter", "none") != filt or metric not in s:
            continue
        doc = s.get("doc") or {}
        out[(leaf, s["doc_id"])] = {
            "score": float(s[metric]),
            "doc_hash": s.get("doc_hash"),
            "prompt_hash": s.get("prompt_hash"),
            "category": str(doc.get("label", s.get("target"))),
            "answer": _answer(s.get("resps")),
        }  # raw text: filters may map "" to a fallback
    return out


def _answer(resps: Any) -> str | None:
    """The generated text of a generate_until sample (None for loglikelihood tasks)."""
    while isinstance(resps, list) and len(resps) == 1:
        resps = resps[0]
    return resps if isinstance(resps, str) else None


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


def load_samples(folder: Path) -> dict[str, list[dict]]:
    if not folder.is_dir():
        raise StageError(f"{folder}: missing; run eval_base first (dvc repro eval_base)")
    out = {}
    for path in sorted(folder.glob("*.jsonl")):
        out[path.stem] = [row for _, row in read_jsonl(path)]
    return out


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
