"""Reading lm-eval's results: the leaf tasks a name stands for, a task's primary metric and filter, and the per-item
scores and answers of its sample logs (reports/eval_samples/<model>/<leaf>.jsonl, as eval_base/eval_tuned write them).

Used by the eval stages (llmops.evaluate), the report's base-branch comparison and the deploy check; reading needs
no lm-eval, torch or model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from llmops.artifacts import read_jsonl
from llmops.config import Params
from llmops.errors import StageError

Model = Literal["base", "tuned"]


def samples_dir(params: Params, model: Model) -> Path:
    return params.paths.report("eval_samples") / model


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


def load_samples(folder: Path) -> dict[str, list[dict]]:
    if not folder.is_dir():
        raise StageError(f"{folder}: missing; run eval_base first (dvc repro eval_base)")
    out = {}
    for path in sorted(folder.glob("*.jsonl")):
        out[path.stem] = [row for _, row in read_jsonl(path)]
    return out
