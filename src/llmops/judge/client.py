"""Sending chat requests with the official async openai client: cache first, bounded concurrency.

Retries are the client's own (`max_retries=judge.max_retries`): 408/409/429/5xx, timeouts and connection
errors, exponential backoff with jitter, `retry-after-ms` / `retry-after` (seconds or HTTP date) honoured.
Attempts are counted with an httpx request hook (a context variable ties each attempt to its call), so
`attempts`/`retries` in the metrics are what went over the wire.

An HTTP 400 that names logprobs (hosted models that do not return them) switches the rest of the run to
text scoring: the call is re-sent once without logprobs and the reason is kept in `CallStats.logprobs_fallback`.
A failed call keeps the provider's message with anything key-like stripped (some providers quote the key).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from dataclasses import dataclass, field
from typing import Any

from llmops.config import Judge
from llmops.judge.cache import JudgeCache
from llmops.progress import Every

_ATTEMPTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("judge_attempts", default=None)
_SECRET_PATTERNS = [
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{4,}"), "sk-***"),
    (re.compile(r"(?i)\b(bearer)\s+\S+"), r"\1 ***"),
    (re.compile(r"(?i)\b(api[_\-]?key|token|secret|password|authorization)(\W{1,3})[^\s,;'\"]+"), r"\1\2***"),
]
MAX_MESSAGE = 300


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str = field(repr=False)  # repr=False: never in a traceback or log line
    identity: str = ""  # what the cache key names instead of the URL/key (e.g. "local:<base sha>")


@dataclass
class Call:
    id: str
    body: dict[str, Any]  # model, messages, sampling: passed to chat.completions.create
    cache_fields: dict[str, Any] | None = None  # None = not cached


@dataclass
class CallStats:
    calls: int = 0  # requests that went to the endpoint (cache misses)
    attempts: int = 0  # HTTP attempts, retries included
    retries: int = 0
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    logprobs_fallback: str | None = None  # why this run switched to text scoring, if it did


def redact(message: str, api_key: str | None = None) -> str:
    """A provider message fit for reports: the key and key-like strings masked, one line, bounded."""
    text = " ".join(str(message).split())
    if api_key:
        text = text.replace(api_key, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text[:MAX_MESSAGE]


def _error(exc: BaseException, api_key: str, attempts: int) -> dict[str, str]:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__ + (f" (HTTP {status})" if status else "")
    if attempts > 1:
        name += f" after {attempts} attempts"
    message = re.sub(r"^Error code: \d+ - ", "", str(getattr(exc, "message", "") or exc))
    return {"error": name, "error_message": redact(message, api_key)}


def _plain_response(resp, prices: tuple[float, float] | None) -> dict[str, Any]:
    choice = resp.choices[0]
    logprobs = None
    if choice.logprobs is not None and choice.logprobs.content:
        logprobs = [
            {
                "token": t.token,
                "logprob": t.logprob,
                "top_logprobs": [{"token": c.token, "logprob": c.logprob} for c in (t.top_logprobs or [])],
            }
            for t in choice.logprobs.content
        ]
    usage = resp.usage
    tokens = {
        "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
        "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
    }
    cost = (
        0.0
        if prices is None
        else (tokens["prompt_tokens"] * prices[0] + tokens["completion_tokens"] * prices[1]) / 1000
    )
    # model / system_fingerprint: what the provider says answered; a change behind an alias shows up here
    return {
        "content": choice.message.content or "",
        "finish_reason": choice.finish_reason,
        "logprobs": logprobs,
        "usage": tokens,
        "cost_usd": round(cost, 8),
        "model": getattr(resp, "model", None),
        "system_fingerprint": getattr(resp, "system_fingerprint", None),
    }


def _names_logprobs(exc: BaseException) -> bool:
    return "logprob" in str(getattr(exc, "message", "") or exc).lower()


async def _count_attempt(request) -> None:
    box = _ATTEMPTS.get()
    if box is not None:
        box[0] += 1


async def _one(
    client, call: Call, stats: CallStats, api_key: str, prices: tuple[float, float] | None
) -> dict[str, Any]:
    import openai

    box = [0]
    _ATTEMPTS.set(box)  # this task's context: the request hook counts into it
    body, fallback = call.body, False
    if stats.logprobs_fallback and "logprobs" in body:
        body, fallback = _without_logprobs(body), True
    while True:
        try:
            resp = await client.chat.completions.create(**body)
            response = _plain_response(resp, prices)
            if fallback:
                response["logprobs_fallback"] = stats.logprobs_fallback
            return {"response": response, "attempts": box[0]}
        except openai.BadRequestError as exc:
            if "logprobs" in body and _names_logprobs(exc):
                if not stats.logprobs_fallback:  # once: the rest of the run asks without logprobs
                    stats.logprobs_fallback = _error(exc, api_key, 1)["error_message"] or "HTTP 400 on logprobs"
                body, fallback = _without_logprobs(body), True
                continue
            return {**_error(exc, api_key, box[0]), "attempts": box[0]}
        except (openai.APIError, ValueError, IndexError, AttributeError) as exc:  # incl. malformed bodies
            return {**_error(exc, api_key, box[0]), "attempts": box[0]}


def _without_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}


async def _run_calls(
    endpoint: Endpoint,
    calls: list[Call],
    cfg: Judge,
    cache: JudgeCache | None,
    label: str,
    prices: tuple[float, float] | None,
) -> tuple[dict[str, dict], CallStats]:
    import openai
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    stats, results = CallStats(), {}
    todo = []
    for call in calls:
        hit = cache.get(JudgeCache.key(call.cache_fields)) if cache and call.cache_fields is not None else None
        if hit is not None:
            stats.cache_hits += 1
            results[call.id] = {"response": hit, "cached": True}
        else:
            todo.append(call)
    if not todo:
        return results, stats
    http_client = openai.DefaultAsyncHttpxClient(event_hooks={"request": [_count_attempt]})
    client = openai.AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        max_retries=cfg.max_retries,
        timeout=cfg.timeout_s,
        http_client=http_client,
    )
    limit = asyncio.Semaphore(cfg.concurrency)
    # a low refresh rate: at hundreds of calls/s redrawing the bar would cost the client CPU it needs
    console = Console(stderr=True)
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
        refresh_per_second=2,
        auto_refresh=True,
    )
    # no terminal (a CI log): rich draws nothing until the end, so a line every 30 s with an estimate instead
    tick = None if console.is_terminal else Every(label, len(calls))
    done = [stats.cache_hits]

    async def worker(call: Call, task) -> None:
        async with limit:
            stats.calls += 1
            outcome = await _one(client, call, stats, endpoint.api_key, prices)
        stats.attempts += outcome["attempts"]
        stats.retries += max(0, outcome["attempts"] - 1)
        if "response" in outcome:
            response = outcome["response"]
            stats.prompt_tokens += response["usage"]["prompt_tokens"]
            stats.completion_tokens += response["usage"]["completion_tokens"]
            stats.cost_usd += response["cost_usd"]
            if cache and call.cache_fields is not None:
                cache.put(JudgeCache.key(call.cache_fields), call.cache_fields, response)
        else:
            stats.failures += 1
        results[call.id] = {**outcome, "cached": False}
        note = f"cached {stats.cache_hits}, failed {stats.failures}"
        progress.update(task, advance=1, note=note)
        done[0] += 1
        if tick:
            tick(done[0], note)

    try:
        with progress:
            task = progress.add_task(
                label, total=len(calls), completed=stats.cache_hits, note=f"cached {stats.cache_hits}"
            )
            await asyncio.gather(*(worker(call, task) for call in todo))
    finally:
        await client.close()
    return results, stats


def run_calls(
    endpoint: Endpoint,
    calls: list[Call],
    cfg: Judge,
    cache: JudgeCache | None = None,
    label: str = "judging",
    prices: tuple[float, float] | None = None,
) -> tuple[dict[str, dict], CallStats]:
    """Send `calls` (cache first), at most cfg.concurrency at a time; every call gets a response or an error.
    `prices` (USD per 1k input, output tokens) prices each response; None = free (the local server)."""
    return asyncio.run(_run_calls(endpoint, calls, cfg, cache, label, prices))
