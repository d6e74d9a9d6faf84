"""Calibration: scikit-learn's quadratic-weighted kappa, and `calibrated` only with enough valid calibration
judgments (a judge that ignores the answers must not pass on a handful of lucky items).

Run:  pytest tests/test_judge_calibration.py -q
"""

from __future__ import annotations

import hashlib

import pytest
import yaml
from conftest import ROOT
from judge_common import cfg, endpoint, shipped_rubric
from openai_stub import StubServer, completion

from llmops import judge


@pytest.fixture(scope="module")
def rubric():
    return shipped_rubric()


def test_quadratic_kappa_matches_hand_computed_and_library_values():
    from sklearn.metrics import cohen_kappa_score

    # a=[1,2,3], b=[1,3,3] on 1..3: observed weighted disagreement 1/12, expected 5/12 -> 1 - 1/5
    assert judge.quadratic_kappa([1, 2, 3], [1, 3, 3], 1, 3) == pytest.approx(0.8)
    assert judge.quadratic_kappa([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], 1, 5) == pytest.approx(-1.0)
    assert judge.quadratic_kappa([3, 3, 3], [3, 3, 3], 1, 5) is None  # no variation: undefined
    assert judge.quadratic_kappa([4], [4], 1, 5) is None
    a, b = [1, 2, 2, 3, 5, 4, 1, 5], [1, 3, 2, 3, 4, 4, 2, 3]
    assert judge.quadratic_kappa(a, b, 1, 5) == pytest.approx(
        cohen_kappa_score(a, b, weights="quadratic", labels=[1, 2, 3, 4, 5])
    )


def _rec(rubric, id, human, score, valid=True):
    return {
        "kind": "calibration",
        "rubric": rubric.name,
        "id": id,
        "human_score": human,
        "score": score,
        "valid": valid,
        "failed": False,
    }


def test_few_valid_judgments_are_never_calibrated(rubric):
    """The reviewer's case: 4 valid of 20 gave kappa 0.667 and `calibrated: true`."""
    humans = [1, 2, 3, 4, 5] * 4
    records = [_rec(rubric, str(i), h, float(h) if i < 4 else None, valid=i < 4) for i, h in enumerate(humans)]
    out = judge.calibration_summary(records, {rubric.name: rubric}, cfg(min_calibration_kappa=0.6))
    assert out["kappa"] == pytest.approx(1.0) and out["n_valid"] == 4 and out["calibrated"] is False
    assert "4/20 valid" in out["reason"] and "judge.min_calibration_valid 15" in out["reason"]
    full = [_rec(rubric, str(i), h, float(h)) for i, h in enumerate(humans)]
    assert judge.calibration_summary(full, {rubric.name: rubric}, cfg())["calibrated"] is True
    share = judge.calibration_summary(
        full[:17] + records[17:], {rubric.name: rubric}, cfg(min_calibration_valid=2, min_calibration_valid_share=0.9)
    )
    assert share["calibrated"] is False and "min_calibration_valid_share 0.9" in share["reason"]


@pytest.mark.integration
def test_a_judge_that_ignores_the_answer_is_not_calibrated(rubric, tmp_path):
    """Scores from the input alone (valid or not by the input's hash): whatever kappa the lucky subset gives,
    the shipped calibration set does not call it calibrated."""
    items = judge.load_calibration(ROOT / "data/judge_calibration.jsonl", {rubric.name: rubric})

    def script(body, headers, n):
        content = body["messages"][0]["content"]
        given = content.split("<input-", 1)[1].split("\n</input-", 1)[0]  # the input block only
        h = int(hashlib.sha256(given.encode()).hexdigest(), 16)
        return completion(f"SCORE: {1 + h % 5}" if h % 4 == 0 else "I cannot tell.")

    with StubServer(script) as stub:
        records, _ = judge.judge_items(items, cfg(top_logprobs=0), endpoint(stub), judge.JudgeCache(tmp_path))
    out = judge.calibration_summary(records, {rubric.name: rubric}, cfg())
    assert out["calibrated"] is False and out["n"] == len(items) and out["n_valid"] < 15
    # and answering everything (still ignoring the answer) does not reach the kappa bar either
    with StubServer(lambda body, headers, n: completion("SCORE: 3")) as stub:
        constant, _ = judge.judge_items(items, cfg(top_logprobs=0), endpoint(stub), judge.JudgeCache(tmp_path / "c"))
    out = judge.calibration_summary(constant, {rubric.name: rubric}, cfg())
    assert out["n_valid"] == len(items) and out["calibrated"] is False


def test_shipped_calibration_set_is_valid_and_spread(rubric):
    items = judge.load_calibration(ROOT / "data/judge_calibration.jsonl", {rubric.name: rubric})
    assert len(items) >= 20 and {i.human_score for i in items} == {1, 2, 3, 4, 5}


def test_bad_calibration_line_is_named(rubric, tmp_path):
    path = tmp_path / "cal.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "p", "answer": "x", "human_score": 3}\n'
        '{"id": "b", "prompt": "p", "answer": "x", "human_score": 7}\n'
    )
    with pytest.raises(judge.DataError, match=r"cal.jsonl:2 field 'human_score'"):
        judge.load_calibration(path, {rubric.name: rubric})


def test_bad_rubric_is_named(tmp_path):
    (tmp_path / "judge.jinja").write_text("{{ answer }}")
    (tmp_path / "r.yaml").write_text(
        yaml.safe_dump({"name": "r", "version": 1, "description": "d", "criteria": ["c"], "levels": {1: "a", 2: "b"}})
    )
    with pytest.raises(judge.ConfigError, match=r"r.yaml: levels must describe exactly the scores \[1, 2, 3, 4, 5\]"):
        judge.load_rubric(tmp_path, "r")
