"""Helpers shared by tests/test_judge_*.py: a small judge config, the shipped rubric, items, endpoints."""

from __future__ import annotations

from conftest import ROOT, raw_params
from openai_stub import StubServer

from llmops import judge
from llmops.config import Judge

REFERENCE = "Category: billing\nAction: verify the charging records for the period."
PROMPT = "Ticket 1: customer was double charged."


def cfg(**over) -> Judge:
    base = dict(
        rubrics=["triage_quality"], concurrency=4, timeout_s=5, max_retries=3, bootstrap_samples=200, model="judge"
    )
    return Judge(**{**raw_params()["judge"], **base, **over})  # params.yaml holds every default


def shipped_rubric() -> judge.Rubric:
    return judge.load_rubric(ROOT / "prompts" / judge.RUBRIC_DIR, "triage_quality")


def item(
    rubric,
    answer: str,
    id: str = "0",
    model: str = "tuned",
    kind: str = "eval",
    human=None,
    prompt: str = PROMPT,
    reference: str = REFERENCE,
) -> judge.Item:
    return judge.Item(kind, id, model, rubric, prompt, answer, reference, human)


def endpoint(stub: StubServer, key: str = "sk-test", identity: str = "stub:judge") -> judge.Endpoint:
    return judge.Endpoint(stub.url, key, identity)


def answer_of(body: dict) -> str:
    """The (neutralised) answer text in a judge request."""
    content = body["messages"][0]["content"]
    return content.split("<answer-", 1)[1].split("\n", 1)[1].split("\n</answer-", 1)[0]
