"""Reading a judge response: the strict `SCORE: <int>` verdict line, or G-Eval over the verdict's logprobs.

With logprobs, the score is the probability-weighted mean over the rubric's score tokens at the verdict
position, renormalised over valid score tokens; without, the LAST `SCORE: <int>` line. Out of scale or
unparsable = invalid, never a pass.
"""

from __future__ import annotations

import math
import re
from typing import Any

from llmops.judge.rubric import Rubric

VERDICT = re.compile(r"^[ \t]*SCORE:[ \t]*(.*?)[ \t]*$", re.MULTILINE)


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
            if offset > end and text[max(end, start) : offset].strip():
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
        value = _score_token(token[len(prefix) :], rubric) if token.startswith(prefix) else None
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
    return {
        "score": None if score is None else round(float(score), 6),
        "valid": score is not None,
        "method": method,
        "score_mass": round(mass, 6),
        "reasoning": reasoning,
        "error": error,
    }
