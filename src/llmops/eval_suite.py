"""The lm-eval task suite and running lm-eval on it: our task folders (evals/) rendered with params.yaml's values,
lm-eval's built-in tasks by name, and simple_evaluate on the pinned base (or another source) with an adapter.

Run:  python -c "from llmops.eval_suite import render_suite; render_suite('/tmp/suite')"
      lm_eval --include_path /tmp/suite --tasks triage_gen ...        (the same suite, by lm-eval's own CLI)

Used by the eval stages (llmops.evaluate) and the deploy check (llmops.deploy_check). The names in
`paths.eval_tasks` (one lm-eval task folder each) are loaded through `TaskManager(include_path=...)`; their
`${section.key}` values (data files, label regex, max_gen_toks) are filled from params.yaml here, so every path and
knob has one home. Any other name (triviaqa, gsm8k, mmlu, ...) is an lm-eval built-in task, for real models.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llmops.artifacts import read_json
from llmops.config import Params
from llmops.errors import StageError

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")
# vLLM preallocates LoRA buffers for a fixed set of max ranks; the adapter's r is rounded up to one of them
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


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


def task_specs(params: Params, tasks: list[str] | None = None) -> tuple[list[str | dict], Any]:
    """(what simple_evaluate gets, the TaskManager) for `tasks` (default: the suite, params.eval.tasks): rendered
    config dicts for our own tasks, plain names for lm-eval's built-in ones. The built-in index (~10k YAML files) is
    only scanned when needed."""
    from lm_eval.tasks import TaskManager

    folder = params.paths.eval_tasks
    if not folder.is_dir():
        raise StageError(f"paths.eval_tasks: {folder} is not a folder of lm-eval tasks")
    wanted, ours = tasks or params.eval.tasks, local_tasks(folder)
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


def model_config(params: Params, adapter: Path | None, source: Any = None) -> tuple[str, dict[str, Any]]:
    """lm-eval model type and model_args for the configured backend; the base is the pinned one (params.paths)
    unless `source` names another (llmops.model.reference: e.g. a downloaded registry version, a merged folder)."""
    from llmops.model import reference

    name, revision = reference(source if source is not None else params.paths)
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


def run_lm_eval(
    params: Params, adapter: Path | None, source: Any = None, tasks: list[str] | None = None
) -> dict[str, Any]:
    """lm-eval's simple_evaluate on the suite (or `tasks`), on the pinned base (or `source`) + `adapter`."""
    import torch
    from lm_eval import simple_evaluate

    cfg = params.eval
    specs, manager = task_specs(params, tasks)
    backend, model_args = model_config(params, adapter, source)
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
