"""Judging items: one request per (item, rubric, repeat), cached, scored, one record per judgment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmops.config import Judge
from llmops.judge.cache import JudgeCache
from llmops.judge.client import Call, CallStats, Endpoint, run_calls
from llmops.judge.rubric import Rubric, render
from llmops.judge.scoring import score_response


@dataclass
class Item:
    """One answer to judge under one rubric: an eval answer (tuned/base) or a calibration answer."""

    kind: str  # "eval" | "calibration"
    id: str
    model: str  # "tuned" | "base" | "calibration"
    rubric: Rubric
    prompt: str
    answer: str | None  # None when generating it failed
    reference: str | None = None
    human_score: int | None = None


def judge_calls(items: list[Item], cfg: Judge, judge_identity: str) -> list[tuple[Item, int, Call | None]]:
    out = []
    for item in items:
        for repeat in range(cfg.repeats):
            if item.answer is None:
                out.append((item, repeat, None))
                continue
            messages = render(item.rubric, item.prompt, item.answer, item.reference)
            sampling = {
                "temperature": cfg.temperature,
                "max_tokens": cfg.max_tokens,
                "seed": cfg.seed + repeat,
                "top_logprobs": cfg.top_logprobs,
            }
            fields = {
                "judge": judge_identity,
                "rubric_sha256": item.rubric.sha256,
                "messages": messages,
                "sampling": sampling,
                "repeat": repeat,
            }
            body = {
                "model": cfg.model,
                "messages": messages,
                "temperature": cfg.temperature,
                "max_tokens": cfg.max_tokens,
                "seed": cfg.seed + repeat,
            }
            if cfg.top_logprobs:
                body.update(logprobs=True, top_logprobs=cfg.top_logprobs)
            call_id = f"{item.kind}/{item.rubric.name}/{item.model}/{item.id}/{repeat}"
            out.append((item, repeat, Call(call_id, body, fields)))
    return out


def judge_items(
    items: list[Item], cfg: Judge, endpoint: Endpoint, cache: JudgeCache, prices: tuple[float, float] | None = None
) -> tuple[list[dict[str, Any]], CallStats]:
    """Judge every item `cfg.repeats` times; one record per judgment (failures and invalid ones too)."""
    planned = judge_calls(items, cfg, endpoint.identity)
    results, stats = run_calls(endpoint, [c for _, _, c in planned if c is not None], cfg, cache, "judging", prices)
    records = []
    for item, repeat, call in planned:
        record = {
            "kind": item.kind,
            "id": item.id,
            "model": item.model,
            "rubric": item.rubric.name,
            "rubric_sha256": item.rubric.sha256,
            "repeat": repeat,
            "prompt": item.prompt,
            "answer": item.answer,
            "reference": item.reference,
            "human_score": item.human_score,
        }
        outcome = results.get(call.id) if call else {"error": "no answer to judge (generation failed)"}
        if "response" in outcome:
            response = outcome["response"]
            record.update(
                score_response(response, item.rubric),
                failed=False,
                cached=outcome["cached"],
                error_message=None,
                judge_reported_model=response.get("model"),
                system_fingerprint=response.get("system_fingerprint"),
                tokens=response.get("usage"),
                cost_usd=response.get("cost_usd", 0.0),
                logprobs_fallback=response.get("logprobs_fallback"),
            )
        else:
            record.update(
                score=None,
                valid=False,
                method=None,
                score_mass=0.0,
                reasoning=None,
                error=outcome["error"],
                error_message=outcome.get("error_message"),
                failed=True,
                cached=False,
                judge_reported_model=None,
                system_fingerprint=None,
                tokens=None,
                cost_usd=0.0,
                logprobs_fallback=None,
            )
        records.append(record)
    return records, stats
