"""LLM-as-judge: `from llmops import judge; judge.run(params)` is the `judge` stage (see stage.py).

rubric     rubric schema, loading, hash of the parsed rubric, rendering
hardening  delimiting and neutralising untrusted text (input, reference, answer)
scoring    SCORE-line parsing and G-Eval logprob scoring
client     the async openai client: cache first, concurrency, its own retries, logprobs fallback
cache      content-addressed response store with pruning
items      one request per (item, rubric, repeat) -> one record per judgment
calibration  agreement with human scores (sklearn kappa) and the `calibrated` decision
summary    means, CIs, pass rates, the histogram CSV
stage      run(params)
"""

from llmops.errors import ConfigError, DataError, StageError
from llmops.judge.cache import JudgeCache
from llmops.judge.calibration import calibration_summary, load_calibration, quadratic_kappa
from llmops.judge.client import Call, CallStats, Endpoint, redact, run_calls
from llmops.judge.hardening import delimit, neutralise, normalise
from llmops.judge.items import Item, judge_calls, judge_items
from llmops.judge.rubric import RUBRIC_DIR, Rubric, load_rubric, render
from llmops.judge.scoring import logprob_score, parse_verdict, score_response
from llmops.judge.stage import run, safe_url, serving_identity

__all__ = [
    "Call",
    "CallStats",
    "ConfigError",
    "DataError",
    "Endpoint",
    "Item",
    "JudgeCache",
    "RUBRIC_DIR",
    "Rubric",
    "StageError",
    "calibration_summary",
    "delimit",
    "judge_calls",
    "judge_items",
    "load_calibration",
    "load_rubric",
    "logprob_score",
    "neutralise",
    "normalise",
    "parse_verdict",
    "quadratic_kappa",
    "redact",
    "render",
    "run",
    "run_calls",
    "safe_url",
    "score_response",
    "serving_identity",
]
