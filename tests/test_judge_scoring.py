"""Judge scoring through the real openai client against a scripted server on 127.0.0.1: G-Eval logprob
scores, strict SCORE-line parsing.

Run:  pytest tests/test_judge_scoring.py -q
"""

from __future__ import annotations

import math

import pytest
from judge_common import answer_of, cfg, endpoint, item, shipped_rubric
from openai_stub import StubServer, completion

from llmops import judge


@pytest.fixture(scope="module")
def rubric():
    return shipped_rubric()


@pytest.mark.integration
def test_logprob_score_is_the_renormalised_weighted_mean(rubric, tmp_path):
    replies = {
        "a": completion("Looks right.\nSCORE: 4", {" 4": 0.6, " 5": 0.2, " great": 0.2}, logprobs=True),
        "b": completion("SCORE: 2", {"2": 0.5, " 2": 0.25, " 1": 0.25}, logprobs=True),  # "2" and " 2" add up
        "c": completion("SCORE: 9", {" 9": 0.7, " 0": 0.3}, logprobs=True),  # no valid token: invalid
        "d": completion("no verdict here", {" 4": 1.0}, logprobs=True),  # no verdict position: invalid
    }

    def script(body, headers, n):
        assert body["logprobs"] is True and body["top_logprobs"] == 10
        return replies[answer_of(body)[0]]

    with StubServer(script) as stub:
        items = [item(rubric, f"{k} answer", id=k) for k in replies]
        records, stats = judge.judge_items(items, cfg(), endpoint(stub), judge.JudgeCache(tmp_path / "c"))
    by_id = {r["id"]: r for r in records}
    assert by_id["a"]["score"] == pytest.approx((4 * 0.6 + 5 * 0.2) / 0.8)
    assert by_id["a"]["method"] == "logprobs" and by_id["a"]["score_mass"] == pytest.approx(0.8)
    assert by_id["a"]["reasoning"] == "Looks right."
    assert by_id["b"]["score"] == pytest.approx((2 * 0.75 + 1 * 0.25) / 1.0)
    assert not by_id["c"]["valid"] and "no valid score token" in by_id["c"]["error"]
    assert not by_id["d"]["valid"] and by_id["d"]["score"] is None
    assert stats.calls == 4 and stats.prompt_tokens == 400


@pytest.mark.parametrize(
    "content, expected",
    [
        ("SCORE: 4", 4),
        ("The category is right.\nSCORE: 3", 3),
        ("SCORE: 2\nOn reflection:\nSCORE: 5", 5),  # the LAST verdict line counts
        ("  SCORE:1  ", 1),
        ("SCORE: 6", None),  # out of scale
        ("SCORE: 0", None),
        ("SCORE: 4.5", None),  # not an integer
        ("SCORE: four", None),
        ("score: 4", None),  # the format is exact
        ("I would give it SCORE: 5", None),  # not a verdict line
        ("5", None),  # no logprobs: a bare number is not the verdict format
        ("", None),
        ('{"score": 5}', None),
    ],
)
def test_strict_text_verdicts(rubric, content, expected):
    score, error = judge.parse_verdict(content, rubric)
    assert score == expected
    assert (error is None) == (expected is not None)
    result = judge.score_response({"content": content, "logprobs": None}, rubric)
    assert result["valid"] == (expected is not None) and result["method"] == "text"


@pytest.mark.integration
def test_text_verdicts_through_the_client_without_logprobs(rubric, tmp_path):
    contents = {"x": "SCORE: 5", "y": "SCORE: 7", "z": "Great answer, 5 stars"}

    def script(body, headers, n):
        assert "logprobs" not in body  # top_logprobs 0: the stage does not ask for them
        return completion(contents[answer_of(body)[0]])

    with StubServer(script) as stub:
        items = [item(rubric, f"{k} answer", id=k) for k in contents]
        records, _ = judge.judge_items(items, cfg(top_logprobs=0), endpoint(stub), judge.JudgeCache(tmp_path))
    scores = {r["id"]: (r["score"], r["valid"]) for r in records}
    assert scores == {"x": (5.0, True), "y": (None, False), "z": (None, False)}


def test_bare_number_reply_uses_the_first_token(rubric):
    logprobs = [
        {
            "token": " 4",
            "logprob": -0.1,
            "top_logprobs": [{"token": " 4", "logprob": math.log(0.5)}, {"token": " 2", "logprob": math.log(0.5)}],
        }
    ]
    score, mass, error = judge.logprob_score(logprobs, rubric)
    assert score == pytest.approx(3.0) and mass == pytest.approx(1.0) and error is None


def test_marker_merged_into_the_verdict_token(rubric):
    """Tokenizers can merge ':' and the digit: the candidates share the marker's tail, which is stripped."""
    logprobs = [
        {"token": "SCORE", "logprob": 0.0, "top_logprobs": []},
        {
            "token": ":4",
            "logprob": -0.2,
            "top_logprobs": [
                {"token": ":4", "logprob": math.log(0.75)},
                {"token": ":5", "logprob": math.log(0.25)},
                {"token": "5", "logprob": math.log(0.5)},
            ],
        },
    ]
    score, mass, _ = judge.logprob_score(logprobs, rubric)
    assert score == pytest.approx(4.25) and mass == pytest.approx(1.0)
