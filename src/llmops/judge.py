"""Stage `judge`: LLM-as-judge scores for the tuned and base models' answers, cached and calibrated.

Run:  llmops judge          (dvc repro judge; offline by default: judge.provider local)
      OPENAI_API_KEY=... dvc exp run -S judge.provider=remote -S judge.base_url=https://api.openai.com/v1 \
          -S judge.model=gpt-4o     (any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama; key only from env)

1. Answers: the tuned and base models answer every domain eval prompt (data/prepared/eval.jsonl `messages`)
   through the project's own server (llmops.serve.running_server, greedy, eval.max_gen_toks tokens).
2. Judging: each answer is rendered into each rubric (prompts/rubrics/<name>.yaml via judge.jinja) and sent
   to the judge endpoint with the official openai client: bounded concurrency, per-request timeout,
   exponential backoff on 429/5xx/timeouts. Items that still fail are counted (failure_rate), not fatal.
3. Scoring: with logprobs, the probability-weighted mean over the rubric's score tokens at the verdict
   position (G-Eval), renormalised over valid score tokens; without, the LAST `SCORE: <int>` line of the
   response. Out of scale or unparsable = invalid (invalid_rate), never a pass.
4. Hardening: the answer sits between per-answer tags; `<`, `>` and `&` are escaped so it cannot close
   the block, and `SCORE:` look-alikes are defanged so a judge that quotes the answer cannot emit a
   verdict line from it. Only the judge's own verdict format is read.
5. Cache: one JSON file per request under paths.judge_cache, keyed by sha256(judge identity, rubric hash,
   rendered prompt, sampling params, repeat). dvc.yaml keeps it as a `persist: true` out, so
   `dvc repro -f judge` with nothing changed makes zero judge calls. Failed requests are not cached.
6. Calibration: data/judge_calibration.jsonl (human scores) is judged every run; quadratic-weighted
   Cohen's kappa and exact/adjacent agreement decide `calibrated` (gate binds judge rules only then).

Outputs: reports/judge.json (metrics, schema in the README), reports/judge_items.jsonl (every judgment),
reports/judge_scores.csv (score histogram, a DVC plot); metrics mirrored into the training's MLflow run.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError, model_validator

from llmops.artifacts import read_json, sha256_file, sha256_tree, write_json, write_jsonl, write_text
from llmops.config import Judge, Params, Strict
from llmops.errors import ConfigError, DataError, StageError

RUBRIC_DIR = "rubrics"
TEMPLATE_FILE = "judge.jinja"
LOCAL_KEY = "local-server-needs-no-key"  # the local server ignores auth; never send the real key there
VERDICT = re.compile(r"^[ \t]*SCORE:[ \t]*(.*?)[ \t]*$", re.MULTILINE)
RETRYABLE_STATUS = {408, 409, 429}  # plus every 5xx


# ---------------------------------------------------------------------------------------------- rubrics
class Scale(Strict):
    min: int = 1
    max: int = 5

    @model_validator(mode="after")
    def _ordered(self) -> "Scale":
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be greater than min ({self.min})")
        return self


class RubricSpec(Strict):
    name: str
    version: int | str
    description: str
    criteria: list[str]
    use_reference: bool = False
    scale: Scale = Scale()
    levels: dict[int, str]

    @model_validator(mode="after")
    def _every_level_anchored(self) -> "RubricSpec":
        want = set(range(self.scale.min, self.scale.max + 1))
        if set(self.levels) != want:
            raise ValueError(f"levels must describe exactly the scores {sorted(want)}, got {sorted(self.levels)}")
        if not self.criteria:
            raise ValueError("criteria: at least one")
        return self


@dataclass(frozen=True)
class Rubric:
    spec: RubricSpec
    sha256: str  # of the rubric file + the template: any edit to either re-judges
    template: Any = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def valid_score(self, value: int) -> bool:
        return self.spec.scale.min <= value <= self.spec.scale.max


def load_rubric(folder: Path, name: str) -> Rubric:
    import jinja2
    import yaml

    path, template_path = folder / f"{name}.yaml", folder / TEMPLATE_FILE
    if not path.is_file():
        raise ConfigError(f"judge.rubrics: {path} not found")
    if not template_path.is_file():
        raise ConfigError(f"{template_path}: judge prompt template not found")
    try:
        spec = RubricSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join((".".join(map(str, e["loc"])) + ": " if e["loc"] else "")
                             + e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    if spec.name != name:
        raise ConfigError(f"{path}: name {spec.name!r} must match the file name {name!r}")
    digest = hashlib.sha256(path.read_bytes() + b"\0" + template_path.read_bytes()).hexdigest()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    try:
        template = env.from_string(template_path.read_text(encoding="utf-8"))
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{template_path}:{exc.lineno}: {exc.message}") from None
    return Rubric(spec, digest, template)


def answer_tag(answer: str) -> str:
    """A per-answer delimiter: derived from the answer itself, so an answer cannot contain its own tag
    (that would be a SHA-256 fixed point), yet stable across runs so the cache key is too."""
    return "a-" + hashlib.sha256(answer.encode("utf-8")).hexdigest()[:8]


def neutralise(answer: str) -> str:
    """Make an answer inert inside the judge prompt: no tag can be opened or closed from it (all angle
    brackets escaped), and no line of it reads as our verdict format if a judge quotes it back."""
    text = answer.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"(?i)score\s*:", "score -", text)


def render(rubric: Rubric, prompt: str, answer: str, reference: str | None) -> list[dict[str, str]]:
    content = rubric.template.render(
        rubric=rubric.spec.model_dump(), prompt=prompt, answer=neutralise(answer), tag=answer_tag(answer),
        reference=reference if rubric.spec.use_reference else None,
    )
    return [{"role": "user", "content": content.strip() + "\n"}]


# ---------------------------------------------------------------------------------------------- scoring
def parse_verdict(content: str, rubric: Rubric) -> tuple[int | None, str | None]:
    """Strict text verdict: the LAST line `SCORE: <int>`; returns (score, error)."""
    matches = VERDICT.findall(content or "")
    if not matches:
        return None, "no 'SCORE: <int>' line"
    raw = matches[-1]
    if not re.fullmatch(r"[+-]?\d+", raw):
        return None, f"verdict {raw[:20]!r} is not an integer"
    value = int(raw)
    if not rubric.valid_score(value):
        return None, f"score {value} outside {rubric.spec.scale.min}..{rubric.spec.scale.max}"
    return value, None


def _score_token(token: str, rubric: Rubric) -> int | None:
    text = token.strip()
    if re.fullmatch(r"\d+", text) and rubric.valid_score(int(text)):
        return int(text)
    return None


def verdict_position(tokens: list[str], rubric: Rubric) -> tuple[int, str] | None:
    """Where the verdict sits: (token index, the part of that token still belonging to the marker).

    The first token reaching past the last `SCORE:` line marker with non-blank text, or token 0 when the
    judge replied with a bare score. A tokenizer may merge the marker's end into that token (":5"), so
    the shared prefix is returned too and stripped from every candidate. None when there is no verdict."""
    text = "".join(tokens)
    markers = list(re.finditer(r"(?m)^[ \t]*SCORE:", text))
    if markers:
        end, offset = markers[-1].end(), 0
        for i, token in enumerate(tokens):
            start, offset = offset, offset + len(token)
            if offset > end and text[max(end, start):offset].strip():
                return i, token[: max(0, end - start)]
        return None
    first = next((i for i, t in enumerate(tokens) if t.strip()), None)
    if first is not None and _score_token(tokens[first], rubric) is not None:
        return first, ""
    return None


def logprob_score(logprobs: list[dict[str, Any]], rubric: Rubric) -> tuple[float | None, float, str | None]:
    """G-Eval: sum(score * p) / sum(p) over the score tokens among the verdict position's top_logprobs.
    Returns (score, probability mass on valid score tokens, error)."""
    found = verdict_position([t["token"] for t in logprobs], rubric)
    if found is None:
        return None, 0.0, "no verdict position in the response"
    position, prefix = found
    probs: dict[int, float] = {}
    for cand in logprobs[position].get("top_logprobs") or []:
        token = cand["token"]
        value = _score_token(token[len(prefix):], rubric) if token.startswith(prefix) else None
        if value is not None:  # " 4" and "4" are different tokens with the same meaning: add them up
            probs[value] = probs.get(value, 0.0) + math.exp(cand["logprob"])
    mass = sum(probs.values())
    if mass <= 0:
        return None, 0.0, "no valid score token among top_logprobs at the verdict position"
    return sum(v * p for v, p in probs.items()) / mass, mass, None


def score_response(response: dict[str, Any], rubric: Rubric) -> dict[str, Any]:
    """One judge response -> {score, valid, method, score_mass, reasoning, error}."""
    content = response.get("content") or ""
    reasoning = "\n".join(line for line in content.splitlines() if not VERDICT.match(line)).strip() or None
    if response.get("logprobs"):
        score, mass, error = logprob_score(response["logprobs"], rubric)
        method = "logprobs"
    else:
        score, error = parse_verdict(content, rubric)
        mass, method = (1.0 if score is not None else 0.0), "text"
    return {"score": None if score is None else round(float(score), 6), "valid": score is not None,
            "method": method, "score_mass": round(mass, 6), "reasoning": reasoning, "error": error}


# ------------------------------------------------------------------------------------------------ cache
class JudgeCache:
    """Content-addressed store: one JSON file per request at <root>/<key[:2]>/<key>.json."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def key(fields: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = read_json(path)
        except (OSError, ValueError):  # a torn or edited entry is a miss, rewritten after the call
            return None
        return entry.get("response") if entry.get("key") == key else None

    def put(self, key: str, fields: dict[str, Any], response: dict[str, Any]) -> None:
        write_json(self.path(key), {"key": key, "request": fields, "response": response})


# ------------------------------------------------------------------------------------------------ calls
@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str = field(repr=False)  # repr=False: never in a traceback or log line
    identity: str = ""  # what the cache key names instead of the URL/key (e.g. "local:<base sha>")


@dataclass
class Call:
    id: str
    body: dict[str, Any]  # model, messages, sampling: passed to chat.completions.create
    cache_fields: dict[str, Any] | None = None  # None = not cached (answers)


@dataclass
class CallStats:
    calls: int = 0  # requests that went to the endpoint (cache misses)
    attempts: int = 0  # HTTP attempts, retries included
    retries: int = 0
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _plain_response(resp) -> dict[str, Any]:
    choice = resp.choices[0]
    logprobs = None
    if choice.logprobs is not None and choice.logprobs.content:
        logprobs = [{"token": t.token, "logprob": t.logprob,
                     "top_logprobs": [{"token": c.token, "logprob": c.logprob} for c in (t.top_logprobs or [])]}
                    for t in choice.logprobs.content]
    usage = resp.usage
    return {"content": choice.message.content or "", "finish_reason": choice.finish_reason, "logprobs": logprobs,
            "usage": {"prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                      "completion_tokens": getattr(usage, "completion_tokens", 0) or 0}}


def _error_name(exc: BaseException) -> str:
    """Class and status only: provider error messages can quote the API key (e.g. on 401)."""
    status = getattr(exc, "status_code", None)
    return type(exc).__name__ + (f" (HTTP {status})" if status else "")


async def _one(client, call: Call, cfg: Judge, stats: CallStats) -> dict[str, Any]:
    import openai

    for attempt in range(cfg.max_retries + 1):
        stats.attempts += 1
        try:
            resp = await client.chat.completions.create(**call.body, timeout=cfg.timeout_s)
            return {"response": _plain_response(resp)}
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            error, wait = _error_name(exc), 0.0
        except openai.APIStatusError as exc:
            error = _error_name(exc)
            if exc.status_code not in RETRYABLE_STATUS and exc.status_code < 500:
                return {"error": error}  # 400/401/404: retrying cannot help
            try:
                wait = min(float(exc.response.headers.get("retry-after", 0)), 60.0)
            except ValueError:
                wait = 0.0
        except (openai.APIError, ValueError, IndexError, AttributeError) as exc:  # malformed body: not retried
            return {"error": _error_name(exc)}
        if attempt == cfg.max_retries:
            return {"error": f"{error} after {attempt + 1} attempts"}
        stats.retries += 1
        await asyncio.sleep(max(wait, cfg.backoff_s * 2**attempt))
    raise AssertionError("unreachable")


async def _run_calls(endpoint: Endpoint, calls: list[Call], cfg: Judge, cache: JudgeCache | None,
                     label: str) -> tuple[dict[str, dict], CallStats]:
    from openai import AsyncOpenAI
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
    # max_retries=0: our own loop retries, so attempts/backoff are counted and testable
    client = AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=cfg.timeout_s)
    limit = asyncio.Semaphore(cfg.concurrency)
    progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[note]}"), console=Console(stderr=True), transient=False)

    async def worker(call: Call, task) -> None:
        async with limit:
            stats.calls += 1
            outcome = await _one(client, call, cfg, stats)
        if "response" in outcome:
            usage = outcome["response"]["usage"]
            stats.prompt_tokens += usage["prompt_tokens"]
            stats.completion_tokens += usage["completion_tokens"]
            if cache and call.cache_fields is not None:
                cache.put(JudgeCache.key(call.cache_fields), call.cache_fields, outcome["response"])
        else:
            stats.failures += 1
        results[call.id] = {**outcome, "cached": False}
        progress.update(task, advance=1, note=f"cached {stats.cache_hits}, failed {stats.failures}")

    try:
        with progress:
            task = progress.add_task(label, total=len(calls), completed=stats.cache_hits,
                                     note=f"cached {stats.cache_hits}")
            await asyncio.gather(*(worker(call, task) for call in todo))
    finally:
        await client.close()
    return results, stats


def run_calls(endpoint: Endpoint, calls: list[Call], cfg: Judge, cache: JudgeCache | None = None,
              label: str = "judging") -> tuple[dict[str, dict], CallStats]:
    """Send `calls` (cache first), bounded by cfg.concurrency; every call gets a result or an error."""
    return asyncio.run(_run_calls(endpoint, calls, cfg, cache, label))


# ------------------------------------------------------------------------------------------ judge items
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
            sampling = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "seed": cfg.seed + repeat,
                        "top_logprobs": cfg.top_logprobs}
            fields = {"judge": judge_identity, "rubric_sha256": item.rubric.sha256, "messages": messages,
                      "sampling": sampling, "repeat": repeat}
            body = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
                    "max_tokens": cfg.max_tokens, "seed": cfg.seed + repeat}
            if cfg.top_logprobs:
                body.update(logprobs=True, top_logprobs=cfg.top_logprobs)
            call_id = f"{item.kind}/{item.rubric.name}/{item.model}/{item.id}/{repeat}"
            out.append((item, repeat, Call(call_id, body, fields)))
    return out


def judge_items(items: list[Item], cfg: Judge, endpoint: Endpoint,
                cache: JudgeCache) -> tuple[list[dict[str, Any]], CallStats]:
    """Judge every item `cfg.repeats` times; one record per judgment (failures and invalid ones too)."""
    planned = judge_calls(items, cfg, endpoint.identity)
    results, stats = run_calls(endpoint, [c for _, _, c in planned if c is not None], cfg, cache, "judging")
    records = []
    for item, repeat, call in planned:
        record = {"kind": item.kind, "id": item.id, "model": item.model, "rubric": item.rubric.name,
                  "rubric_sha256": item.rubric.sha256, "repeat": repeat, "prompt": item.prompt,
                  "answer": item.answer, "reference": item.reference, "human_score": item.human_score}
        outcome = results.get(call.id) if call else {"error": "no answer to judge (generation failed)"}
        if "response" in outcome:
            record.update(score_response(outcome["response"], item.rubric), failed=False, cached=outcome["cached"])
        else:
            record.update(score=None, valid=False, method=None, score_mass=0.0, reasoning=None,
                          error=outcome["error"], failed=True, cached=False)
        records.append(record)
    return records, stats


# ------------------------------------------------------------------------------------------- statistics
def quadratic_kappa(a: list[int], b: list[int], lo: int, hi: int) -> float | None:
    """Cohen's kappa with quadratic weights on the scale lo..hi; None when undefined (no variation)."""
    import numpy as np

    if len(a) != len(b) or len(a) < 2:
        return None
    k = hi - lo + 1
    observed = np.zeros((k, k))
    for x, y in zip(a, b):
        observed[x - lo, y - lo] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    idx = np.arange(k)
    weights = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    denom = float((weights * expected).sum())
    if denom == 0:
        return None
    return 1.0 - float((weights * observed).sum()) / denom


def bootstrap_ci(values: list[float], samples: int, seed: int) -> list[float] | None:
    from llmops.stats import mean_ci

    ci = mean_ci(values, samples, seed)
    return None if ci is None else [round(v, 6) for v in ci]


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def item_scores(records: list[dict], kind: str, rubric: str, model: str) -> dict[str, list[float]]:
    """item id -> its valid repeat scores (an item with no valid repeat maps to [])."""
    scores: dict[str, list[float]] = {}
    for r in records:
        if r["kind"] == kind and r["rubric"] == rubric and r["model"] == model:
            scores.setdefault(r["id"], [])
            if r["valid"]:
                scores[r["id"]].append(r["score"])
    return scores


def summarise_model(scores: dict[str, list[float]], cfg: Judge, seed: int) -> dict[str, Any]:
    import numpy as np

    means = [sum(s) / len(s) for s in scores.values() if s]
    multi = [float(np.var(s, ddof=1)) for s in scores.values() if len(s) > 1]
    return {
        "mean": _r(sum(means) / len(means)) if means else None,
        "ci": bootstrap_ci(means, cfg.bootstrap_samples, seed),
        # an item with no valid judgment never passes: the denominator is every item
        "pass_rate": _r(sum(m >= cfg.pass_threshold for m in means) / len(scores)) if scores else 0.0,
        "n": len(scores), "n_valid": len(means),
        "repeat_var": _r(sum(multi) / len(multi)) if multi else None,
    }


def calibration_summary(records: list[dict], rubrics: dict[str, Rubric], min_kappa: float) -> dict[str, Any]:
    by_item: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["kind"] == "calibration":
            entry = by_item.setdefault((r["rubric"], r["id"]), {"human": r["human_score"], "scores": [],
                                                                 "failed": 0, "invalid": 0})
            if r["valid"]:
                entry["scores"].append(r["score"])
            elif r["failed"]:
                entry["failed"] += 1
            else:
                entry["invalid"] += 1
    n = len(by_item)
    human, judged = [], []
    for entry in by_item.values():
        if entry["scores"]:
            human.append(entry["human"])
            judged.append(int(math.floor(sum(entry["scores"]) / len(entry["scores"]) + 0.5)))
    lo = min(r.spec.scale.min for r in rubrics.values())
    hi = max(r.spec.scale.max for r in rubrics.values())
    kappa = quadratic_kappa(human, judged, lo, hi)
    # an item the judge could not score agrees with nobody: agreement is over all n items
    exact = sum(h == j for h, j in zip(human, judged)) / n if n else 0.0
    adjacent = sum(abs(h - j) <= 1 for h, j in zip(human, judged)) / n if n else 0.0
    calibrated = kappa is not None and kappa >= min_kappa
    valid = len(human)
    if calibrated:
        reason = (f"weighted kappa {kappa:.2f} >= judge.min_calibration_kappa {min_kappa} on {valid}/{n} valid "
                  "calibration judgments: judge rules can bind")
    elif kappa is None:
        reason = (f"only {valid} of {n} calibration items got a valid judgment (or no variation to compare): "
                  "agreement with the human scores is unknown, so judge rules are advisory")
    else:
        reason = (f"weighted kappa {kappa:.2f} < judge.min_calibration_kappa {min_kappa} ({valid}/{n} valid, "
                  f"exact {exact:.0%}, adjacent {adjacent:.0%}): the judge disagrees with humans, so judge "
                  "rules are advisory")
    return {"n": n, "n_valid": valid, "kappa": _r(kappa), "exact": _r(exact), "adjacent": _r(adjacent),
            "min_kappa": min_kappa, "calibrated": calibrated, "reason": reason}


def histogram_csv(records: list[dict], rubrics: list[str]) -> str:
    """Per rubric and model, how many eval items got each (rounded) score; `invalid` = no valid judgment.
    Long format with a `series` label, so dvc.yaml draws it as horizontal bars like the eval plots."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rubric", "model", "score", "series", "count"])
    for rubric in rubrics:
        for model in ("tuned", "base"):
            counts: dict[str, int] = {}
            for scores in item_scores(records, "eval", rubric, model).values():
                bucket = str(int(math.floor(sum(scores) / len(scores) + 0.5))) if scores else "invalid"
                counts[bucket] = counts.get(bucket, 0) + 1
            numeric = sorted(int(k) for k in counts if k != "invalid")
            lo, hi = min([1, *numeric]), max([5, *numeric])
            for bucket in [*map(str, range(lo, hi + 1)), "invalid"]:
                label = f"{rubric} {model} {bucket}" if len(rubrics) > 1 else f"{model} {bucket}"
                writer.writerow([rubric, model, bucket, label, counts.get(bucket, 0)])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- inputs
def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise DataError(path, "not found")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON ({exc.msg})", lineno) from None
        if not isinstance(row, dict):
            raise DataError(path, "expected a JSON object", lineno)
        rows.append((lineno, row))
    if not rows:
        raise DataError(path, "no records")
    return rows


def load_calibration(path: Path, rubrics: dict[str, Rubric]) -> list[Item]:
    items, seen = [], {}
    default = next(iter(rubrics))
    for lineno, row in read_jsonl(path):
        for name in ("id", "prompt", "answer"):
            if not isinstance(row.get(name), (str, int)) or (isinstance(row[name], str) and not row[name].strip()
                                                             and name != "answer"):
                raise DataError(path, "missing or not a string", lineno, name)
        rubric = rubrics.get(row.get("rubric", default))
        if rubric is None:
            raise DataError(path, f"rubric {row.get('rubric')!r} is not in judge.rubrics {list(rubrics)}",
                            lineno, "rubric")
        human = row.get("human_score")
        if not isinstance(human, int) or isinstance(human, bool) or not rubric.valid_score(human):
            raise DataError(path, f"must be an integer in {rubric.spec.scale.min}..{rubric.spec.scale.max}",
                            lineno, "human_score")
        if str(row["id"]) in seen:
            raise DataError(path, f"duplicate id {row['id']!r} (first on line {seen[str(row['id'])]})", lineno, "id")
        seen[str(row["id"])] = lineno
        items.append(Item("calibration", str(row["id"]), "calibration", rubric, str(row["prompt"]),
                          str(row["answer"]), row.get("reference"), human))
    return items


def load_eval(path: Path) -> list[dict]:
    rows = []
    for lineno, row in read_jsonl(path):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DataError(path, "missing prompt turns (run the prepare stage)", lineno, "messages")
        user = [m.get("content", "") for m in messages if m.get("role") == "user"]
        rows.append({"id": str(row.get("id", lineno)), "messages": messages, "prompt": user[-1] if user else "",
                     "reference": row.get("reference")})
    return rows


def _safe_url(url: str) -> str:
    """Scheme, host and path only: userinfo or a query string could carry a credential."""
    parts = urlsplit(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def answer_calls(rows: list[dict], params: Params, models_sha: str) -> list[Call]:
    """Greedy answers of "tuned" and "base" to every eval prompt. Cached like judgments (keyed on the base
    and adapter hashes): a forced rerun then re-judges byte-identical answers even where greedy decoding
    is not bit-stable (GPU kernels), and needs no model server at all when everything is cached."""
    sampling = {"temperature": 0.0, "max_tokens": params.eval.max_gen_toks, "seed": params.judge.seed}
    return [Call(f"{model}/{row['id']}", {"model": model, "messages": row["messages"], **sampling},
                 {"answer_by": model, "models": models_sha, "messages": row["messages"], "sampling": sampling})
            for model in ("tuned", "base") for row in rows]


def generate_answers(endpoint: Endpoint, calls: list[Call], cfg: Judge,
                     cache: JudgeCache) -> tuple[dict[tuple[str, str], str | None], CallStats]:
    results, stats = run_calls(endpoint, calls, cfg, cache, "answering")
    answers = {}
    for call in calls:
        model, row_id = call.id.split("/", 1)
        outcome = results[call.id]
        answers[(model, row_id)] = outcome["response"]["content"] if "response" in outcome else None
    return answers, stats


def _all_cached(cache: JudgeCache, calls: list[Call | None]) -> bool:
    return all(c is None or cache.get(JudgeCache.key(c.cache_fields)) is not None for c in calls)


# ------------------------------------------------------------------------------------------------ stage
def run(params: Params) -> dict[str, Any]:
    """Answer, judge, calibrate; write reports/judge.json, judge_items.jsonl, judge_scores.csv."""
    from llmops.serve import running_server

    cfg, paths = params.judge, params.paths
    started = time.perf_counter()
    folder = paths.prompts / RUBRIC_DIR
    rubrics = {name: load_rubric(folder, name) for name in cfg.rubrics}
    rows = load_eval(paths.prepared_eval)
    calibration = load_calibration(paths.calibration, rubrics)
    if not paths.adapter_dir.is_dir():
        raise StageError(f"{paths.adapter_dir}: missing; run the train stage first (dvc repro train)")
    adapter_sha = sha256_tree(paths.adapter_dir)
    if cfg.provider == "remote":
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise StageError("judge.provider is 'remote': set OPENAI_API_KEY in the environment "
                             "(the key is never read from params.yaml)")
        remote = Endpoint(cfg.base_url, key, f"remote:{_safe_url(cfg.base_url)}:{cfg.model}")
    elif cfg.model not in ("base", "tuned"):
        raise ConfigError(f"judge.model {cfg.model!r}: the local server serves only 'base' and 'tuned' "
                          "(set judge.provider: remote to use another model)")
    cache = JudgeCache(paths.judge_cache)

    def items_for(answers: dict) -> list[Item]:
        out = []
        for rubric in rubrics.values():
            for model in ("tuned", "base"):
                for row in rows:
                    out.append(Item("eval", row["id"], model, rubric, row["prompt"], answers[(model, row["id"])],
                                    row["reference"]))
        return out + calibration

    base_sha = sha256_file(paths.base_identity)
    to_answer = answer_calls(rows, params, f"{base_sha}+{adapter_sha}")
    # the local judge's cache identity: which weights answer as cfg.model (not the port they are served on)
    local_identity = f"local:{cfg.model}:{base_sha}" + (f"+{adapter_sha}" if cfg.model == "tuned" else "")
    need_server = not _all_cached(cache, to_answer)
    if not need_server and cfg.provider == "local":  # answers known: are all their judgments cached too?
        known = {tuple(c.id.split("/", 1)): cache.get(JudgeCache.key(c.cache_fields))["content"] for c in to_answer}
        planned = judge_calls(items_for(known), cfg, local_identity)
        need_server = not _all_cached(cache, [call for _, _, call in planned])
    server = running_server(paths, paths.adapter_dir) if need_server else contextlib.nullcontext(None)
    with server as url:
        # with url None nothing is sent: every call was found in the cache above
        local = Endpoint(url or "http://127.0.0.1:9/v1", LOCAL_KEY)
        t0 = time.perf_counter()
        answers, answer_stats = generate_answers(local, to_answer, cfg, cache)
        answers_s = time.perf_counter() - t0
        endpoint = Endpoint(local.base_url, LOCAL_KEY, local_identity) if cfg.provider == "local" else None
        if endpoint is not None:
            t0 = time.perf_counter()
            records, stats = judge_items(items_for(answers), cfg, endpoint, cache)
            judge_s = time.perf_counter() - t0
    if cfg.provider == "remote":
        t0 = time.perf_counter()
        records, stats = judge_items(items_for(answers), cfg, remote, cache)
        judge_s = time.perf_counter() - t0

    evals = [r for r in records if r["kind"] == "eval"]
    report: dict[str, Any] = {"rubrics": {}}
    for i, name in enumerate(cfg.rubrics):
        tuned_scores = item_scores(records, "eval", name, "tuned")
        base_scores = item_scores(records, "eval", name, "base")
        tuned = summarise_model(tuned_scores, cfg, cfg.seed + 2 * i)
        base = summarise_model(base_scores, cfg, cfg.seed + 2 * i + 1)
        both = [k for k in tuned_scores if tuned_scores[k] and base_scores.get(k)]
        diffs = [sum(tuned_scores[k]) / len(tuned_scores[k]) - sum(base_scores[k]) / len(base_scores[k])
                 for k in both]
        report["rubrics"][name] = {
            "rubric_sha256": rubrics[name].sha256, "version": rubrics[name].spec.version,
            "tuned": tuned, "base": base,
            "delta": _r(tuned["mean"] - base["mean"]) if tuned["mean"] is not None and base["mean"] is not None
            else None,
            "delta_ci": bootstrap_ci(diffs, cfg.bootstrap_samples, cfg.seed),  # paired, items valid in both
        }
    total = len(evals)
    cost = (stats.prompt_tokens * cfg.price_per_1k_input_tokens
            + stats.completion_tokens * cfg.price_per_1k_output_tokens) / 1000
    report.update({
        "adapter_sha256": adapter_sha, "judge_model": cfg.model, "provider": cfg.provider,
        "judge_endpoint": "local" if cfg.provider == "local" else _safe_url(cfg.base_url),
        "repeats": cfg.repeats,
        "invalid_rate": _r(sum(not r["valid"] and not r["failed"] for r in evals) / total),
        "failure_rate": _r(sum(r["failed"] for r in evals) / total),
        "calls": stats.calls, "attempts": stats.attempts, "retries": stats.retries,
        "cache_hits": stats.cache_hits,
        "cache_hit_rate": _r(stats.cache_hits / (stats.cache_hits + stats.calls)) if stats.cache_hits + stats.calls
        else 0.0,
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens},
        "cost_usd": _r(cost),
        "answer_calls": answer_stats.calls, "answer_cache_hits": answer_stats.cache_hits,
        "answer_failures": answer_stats.failures, "model_server_started": need_server,
        "calibration": calibration_summary(records, rubrics, cfg.min_calibration_kappa),
        "timing_s": {"answers": round(answers_s, 2), "judging": round(judge_s, 2),
                     "total": round(time.perf_counter() - started, 2)},
    })
    records.sort(key=lambda r: (r["kind"], r["rubric"], r["model"], _sort_id(r["id"]), r["repeat"]))
    write_jsonl(paths.report("judge_items.jsonl"), records)
    write_text(paths.report("judge_scores.csv"), histogram_csv(records, cfg.rubrics))
    write_json(paths.report("judge.json"), report)
    from llmops.tracking import log_to_training_run

    log_to_training_run(paths.reports, {k: v for k, v in report.items() if k != "timing_s"}, prefix="judge")
    return report


def _sort_id(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (1 << 30, value)
