"""Stage `judge`: LLM-as-judge scores for the tuned and base models' answers, cached and calibrated.

Run:  llmops judge          (dvc repro judge; offline by default: judge.provider local)
      OPENAI_API_KEY=... dvc exp run -S judge.provider=remote -S judge.base_url=https://api.openai.com/v1 \
          -S judge.model=gpt-4o     (any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama; key only from env)

1. Answers: the tuned and base models answer every domain eval prompt (data/prepared/eval.jsonl `messages`)
   through the project's own server (llmops.serve_client.running_server, greedy, eval.max_gen_toks tokens), started
   only when something is not cached, with a fresh random bearer key (LLMOPS_SERVE_API_KEY) for this run.
2. Judging: each answer is rendered into each rubric (rubric.py, hardening.py: every untrusted field is
   delimited and neutralised) and sent with the openai client (client.py: its own retries, bounded
   concurrency, logprobs fallback). Items that still fail are counted (failure_rate), not fatal.
3. Scoring (scoring.py): G-Eval over the verdict's logprobs, else the last `SCORE: <int>` line.
4. Cache (cache.py): one JSON file per request under paths.judge_cache. Answers are keyed on the base and
   adapter hashes, the serving code's hash and the torch/transformers/peft versions; judgments on the judge
   identity, the parsed rubric's hash, the rendered prompt and sampling. Entries keep the tokens and cost of
   the run that produced them; entries no current item uses are pruned at the end (judge.prune_cache).
5. Calibration (calibration.py): judge rules bind only for a judge that agrees with human scores on enough
   valid calibration judgments.

Outputs: reports/judge.json (metrics, fields in docs/judge.md), reports/judge_items.jsonl (every judgment),
reports/judge_scores.csv (score histogram, a DVC plot); metrics mirrored into the training's MLflow run.

Why one module (~330 lines): the stage's orchestration (answers, judgments, calibration, cache, outputs);
every part it calls is its own module in this package.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmops import schemas
from llmops.artifacts import safe_url, sha256_file, sha256_tree, write_jsonl, write_text
from llmops.config import Judge, Params
from llmops.errors import ConfigError, StageError
from llmops.judge.cache import JudgeCache
from llmops.judge.calibration import calibration_summary, load_calibration
from llmops.judge.client import Call, CallStats, Endpoint, run_calls
from llmops.judge.data import load_eval
from llmops.judge.items import Item, judge_calls, judge_items
from llmops.judge.rubric import RUBRIC_DIR, Rubric, load_rubric
from llmops.judge.summary import bootstrap_ci, histogram_csv, item_scores, summarise_model

SERVE_KEY_ENV = "LLMOPS_SERVE_API_KEY"  # read by `llmops serve`: when set, requests need this bearer key
SERVING_MODULES = (
    "llmops.serve",
    "llmops.serve_api",
    "llmops.serve_engine",
    "llmops.model",
)  # the server, its parts, the loader
SERVING_LIBRARIES = ("torch", "transformers", "peft")
UNUSED_URL = "http://127.0.0.1:9/v1"  # everything was cached: no request is sent


# ------------------------------------------------------------------------------------------- identities
def serving_identity() -> dict[str, Any]:
    """What else decides an answer besides the weights: the serving code and the library versions. A fix to
    serve.py or a new transformers changes answers' cache keys, so they are regenerated, not reused."""
    digest = hashlib.sha256()
    for name in SERVING_MODULES:
        origin = importlib.util.find_spec(name).origin
        digest.update(name.encode() + b"\0" + Path(origin).read_bytes() + b"\0")
    versions = {}
    for lib in SERVING_LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = None
    return {"code_sha256": digest.hexdigest(), "libraries": versions}


def remote_endpoint(cfg: Judge) -> Endpoint | None:
    if cfg.provider == "local":
        if cfg.model not in ("base", "tuned"):
            raise ConfigError(
                f"judge.model {cfg.model!r}: the local server serves only 'base' and 'tuned' "
                "(set judge.provider: remote to use another model)"
            )
        return None
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise StageError(
            "judge.provider is 'remote': set OPENAI_API_KEY in the environment (the key is never read from params.yaml)"
        )
    return Endpoint(cfg.base_url, key, f"remote:{safe_url(cfg.base_url)}:{cfg.model}")


# ------------------------------------------------------------------------------------------- answers
def answer_calls(rows: list[dict], params: Params, models: dict[str, Any]) -> list[Call]:
    """Greedy answers of "tuned" and "base" to every eval prompt, cached: a forced rerun then re-judges
    byte-identical answers even where greedy decoding is not bit-stable (GPU kernels), and needs no model
    server at all when everything is cached."""
    sampling = {"temperature": 0.0, "max_tokens": params.eval.max_gen_toks, "seed": params.judge.seed}
    return [
        Call(
            f"{model}/{row['id']}",
            {"model": model, "messages": row["messages"], **sampling},
            {"answer_by": model, "models": models, "messages": row["messages"], "sampling": sampling},
        )
        for model in ("tuned", "base")
        for row in rows
    ]


def eval_items(rubrics: dict[str, Rubric], rows: list[dict], answers: dict) -> list[Item]:
    return [
        Item("eval", row["id"], model, rubric, row["prompt"], answers[(model, row["id"])], row["reference"])
        for rubric in rubrics.values()
        for model in ("tuned", "base")
        for row in rows
    ]


def cached_answers(cache: JudgeCache, calls: list[Call]) -> dict[tuple[str, str], str] | None:
    """Every answer from the cache, or None when any is missing."""
    found = {}
    for call in calls:
        hit = cache.get(JudgeCache.key(call.cache_fields))
        if hit is None:
            return None
        found[tuple(call.id.split("/", 1))] = hit["content"]
    return found


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def local_server(params: Params, needed: bool) -> Iterator[Endpoint]:
    """The project's server for base + tuned, with a random per-run bearer key in its environment (set only
    while it starts: the child inherits it, nothing else does). Not started when `needed` is False."""
    from llmops.serve_client import running_server

    if not needed:
        yield Endpoint(UNUSED_URL, "unused")
        return
    key = secrets.token_urlsafe(32)
    with contextlib.ExitStack() as stack:
        with _env(SERVE_KEY_ENV, key):
            url = stack.enter_context(running_server(params.paths, params.paths.adapter_dir))
        yield Endpoint(url, key)


def generate_answers(
    endpoint: Endpoint, calls: list[Call], cfg: Judge, cache: JudgeCache
) -> tuple[dict[tuple[str, str], str | None], CallStats]:
    results, stats = run_calls(endpoint, calls, cfg, cache, "answering")
    answers = {}
    for call in calls:
        outcome = results[call.id]
        answers[tuple(call.id.split("/", 1))] = outcome["response"]["content"] if "response" in outcome else None
    return answers, stats


# ------------------------------------------------------------------------------------------- metrics
def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def rubric_report(records: list[dict], rubrics: dict[str, Rubric], cfg: Judge) -> dict[str, Any]:
    out = {}
    for i, (name, rubric) in enumerate(rubrics.items()):
        tuned_scores = item_scores(records, "eval", name, "tuned")
        base_scores = item_scores(records, "eval", name, "base")
        tuned = summarise_model(tuned_scores, cfg, cfg.seed + 2 * i)
        base = summarise_model(base_scores, cfg, cfg.seed + 2 * i + 1)
        both = [k for k in tuned_scores if tuned_scores[k] and base_scores.get(k)]
        diffs = [sum(tuned_scores[k]) / len(tuned_scores[k]) - sum(base_scores[k]) / len(base_scores[k]) for k in both]
        out[name] = {
            "rubric_sha256": rubric.sha256,
            "version": rubric.spec.version,
            "tuned": tuned,
            "base": base,
            "delta": _r(tuned["mean"] - base["mean"]) if None not in (tuned["mean"], base["mean"]) else None,
            "delta_ci": bootstrap_ci(diffs, cfg.bootstrap_samples, cfg.seed),  # paired, items valid in both
        }
    return out


def provenance(records: list[dict]) -> dict[str, Any]:
    """What the provider said answered each judgment (cached ones keep the run that made them): more than
    one (model, system_fingerprint) pair means the model behind the alias changed between judgments."""
    pairs = Counter((r["judge_reported_model"], r["system_fingerprint"]) for r in records if not r["failed"])
    return {
        "models": sorted({m for m, _ in pairs if m}),
        "system_fingerprints": sorted({f for _, f in pairs if f}),
        "judgments_per_pair": [
            {"model": m, "system_fingerprint": f, "n": n}
            for (m, f), n in sorted(pairs.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ],
        "changed": len(pairs) > 1,
    }


def spend(records: list[dict], stats: CallStats) -> dict[str, Any]:
    """This run's spend, and what the judgments in the results cost when they were made (cached or not)."""
    prompt = sum((r["tokens"] or {}).get("prompt_tokens", 0) for r in records)
    completion = sum((r["tokens"] or {}).get("completion_tokens", 0) for r in records)
    return {
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens},
        "cost_usd": _r(stats.cost_usd),
        "results_tokens": {"prompt": prompt, "completion": completion},
        "results_cost_usd": _r(sum(r["cost_usd"] or 0.0 for r in records)),
    }


def error_counts(records: list[dict], top: int = 5) -> list[dict[str, Any]]:
    errors = Counter((r["error"], r["error_message"]) for r in records if r["failed"])
    return [{"error": e, "message": m, "n": n} for (e, m), n in errors.most_common(top)]


def _sort_id(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (1 << 30, value)


# ------------------------------------------------------------------------------------------------ stage
def run(params: Params) -> dict[str, Any]:
    """Answer, judge, calibrate; write reports/judge.json, judge_items.jsonl, judge_scores.csv."""
    cfg, paths = params.judge, params.paths
    started = time.perf_counter()
    rubrics = {name: load_rubric(paths.prompts / RUBRIC_DIR, name) for name in cfg.rubrics}
    all_rows = load_eval(paths.prepared_eval)
    rows = all_rows[: cfg.limit]  # the first N, as lm-eval's limit takes them: the same items every run
    calibration = load_calibration(paths.calibration, rubrics)
    if not paths.adapter_dir.is_dir():
        raise StageError(f"{paths.adapter_dir}: missing; run the train stage first (dvc repro train)")
    remote = remote_endpoint(cfg)
    cache = JudgeCache(paths.judge_cache)
    prices = (cfg.price_per_1k_input_tokens, cfg.price_per_1k_output_tokens)

    base_sha, adapter_sha = sha256_file(paths.base_identity), sha256_tree(paths.adapter_dir)
    serving = serving_identity()
    to_answer = answer_calls(rows, params, {"base": base_sha, "adapter": adapter_sha, **serving})
    # the local judge's cache identity: which weights, code and libraries answer as cfg.model (not the port)
    local_weights = base_sha + (f"+{adapter_sha}" if cfg.model == "tuned" else "")
    local_identity = f"local:{cfg.model}:{local_weights}:{serving['code_sha256']}:{serving['libraries']}"

    # start the model server only if an answer, or (local judge) a judgment, is not cached yet
    known = cached_answers(cache, to_answer)
    need_server = known is None or (
        remote is None
        and any(
            c is None or cache.get(JudgeCache.key(c.cache_fields)) is None
            for _, _, c in judge_calls(eval_items(rubrics, rows, known) + calibration, cfg, local_identity)
        )
    )

    with contextlib.ExitStack() as stack:
        local = stack.enter_context(local_server(params, need_server))
        t0 = time.perf_counter()
        answers, answer_stats = generate_answers(local, to_answer, cfg, cache)
        answers_s = time.perf_counter() - t0
        judge_at = remote or Endpoint(local.base_url, local.api_key, local_identity)
        if remote is not None:
            stack.close()  # a remote judge does not need the model server: free its memory now
        t0 = time.perf_counter()
        records, stats = judge_items(eval_items(rubrics, rows, answers) + calibration, cfg, judge_at, cache, prices)
        judge_s = time.perf_counter() - t0

    evals = [r for r in records if r["kind"] == "eval"]
    fallback = stats.logprobs_fallback or next(
        (r["logprobs_fallback"] for r in records if r["logprobs_fallback"]), None
    )
    pruned = cache.prune(cache.used) if cfg.prune_cache else 0
    report: dict[str, Any] = {
        "rubrics": rubric_report(records, rubrics, cfg),
        "adapter_sha256": adapter_sha,
        "judge_model": cfg.model,
        "provider": cfg.provider,
        "judge_endpoint": "local" if remote is None else safe_url(cfg.base_url),
        "judge_reported": provenance(records),
        "serving": serving,
        "repeats": cfg.repeats,
        "items": len(rows),
        "eval_items": len(all_rows),
        "invalid_rate": _r(sum(not r["valid"] and not r["failed"] for r in evals) / len(evals)),
        "failure_rate": _r(sum(r["failed"] for r in evals) / len(evals)),
        "errors": error_counts(records),
        "logprobs_fallback": fallback is not None,
        "logprobs_fallback_reason": fallback,
        "calls": stats.calls,
        "attempts": stats.attempts,
        "retries": stats.retries,
        "cache_hits": stats.cache_hits,
        "cache_hit_rate": _r(stats.cache_hits / (stats.cache_hits + stats.calls))
        if stats.cache_hits + stats.calls
        else 0.0,
        **spend(records, stats),
        "cache_pruned": pruned,
        "cache_entries": len(cache.entries()),
        "answer_calls": answer_stats.calls,
        "answer_cache_hits": answer_stats.cache_hits,
        "answer_failures": answer_stats.failures,
        "model_server_started": need_server,
        "calibration": calibration_summary(records, rubrics, cfg),
        "timing_s": {
            "answers": round(answers_s, 2),
            "judging": round(judge_s, 2),
            "total": round(time.perf_counter() - started, 2),
        },
    }
    contract = schemas.validate(report, schemas.JudgeReport, schemas.JUDGE)  # before anything is written
    records.sort(key=lambda r: (r["kind"], r["rubric"], r["model"], _sort_id(r["id"]), r["repeat"]))
    write_jsonl(paths.report(schemas.JUDGE_ITEMS), records)
    write_text(paths.report("judge_scores.csv"), histogram_csv(records, cfg.rubrics))
    schemas.write(paths.report(schemas.JUDGE), contract)
    from llmops.tracking import log_to_training_run

    log_to_training_run(paths.reports, {k: v for k, v in report.items() if k != "timing_s"}, prefix="judge")
    return report
