"""The judge's requests: the openai client's own retries (counted per attempt), failures recorded with the
provider's message (secrets stripped), the fallback to text scoring when logprobs are refused, the cache
keys and what each cached entry keeps (model, fingerprint, tokens, cost), and pruning.

Run:  pytest tests/test_judge_client.py -q
"""

from __future__ import annotations

import email.utils
import json
import time

import pytest
from judge_common import REFERENCE, answer_of, cfg, endpoint, item, shipped_rubric
from openai_stub import Fault, Hang, StubServer, completion, naive_judge

from llmops import judge
from llmops.judge import rubric as rubric_mod

FAST = {"retry-after-ms": "5"}  # the client honours it: retries without the default 0.5 s backoff


@pytest.fixture(scope="module")
def rubric():
    return shipped_rubric()


@pytest.mark.integration
def test_client_retries_429_5xx_and_timeouts_and_counts_attempts(rubric, tmp_path):
    attempts: dict[str, int] = {}
    plan = {
        "r429": [Fault(429, "slow down", FAST)] * 2,
        "r500": [Fault(500, headers=FAST), Fault(503, headers=FAST)],
        "hang": [Hang(2.0)],
        "ok": [],
    }

    def script(body, headers, n):
        key = answer_of(body).split()[0]
        k = attempts[key] = attempts.get(key, 0) + 1
        assert headers["x-stainless-retry-count"] == str(k - 1)  # the client's own retry loop sent it
        faults = plan[key]
        return faults[k - 1] if k <= len(faults) else naive_judge(body)

    items = [item(rubric, f"{k} Category: billing", id=k) for k in plan]
    with StubServer(script) as stub:
        records, stats = judge.judge_items(
            items, cfg(timeout_s=0.5, max_retries=3), endpoint(stub), judge.JudgeCache(tmp_path)
        )
    assert all(r["valid"] and not r["failed"] for r in records), records
    assert attempts == {"r429": 3, "r500": 3, "hang": 2, "ok": 1}
    assert stats.calls == 4 and stats.attempts == 9 and stats.retries == 5


@pytest.mark.integration
def test_retry_after_as_an_http_date_is_honoured(rubric, tmp_path):
    seen: list[float] = []

    def script(body, headers, n):
        seen.append(time.monotonic())
        if n == 0:
            return Fault(429, "later", {"retry-after": email.utils.formatdate(time.time() + 2, usegmt=True)})
        return naive_judge(body)

    with StubServer(script) as stub:
        records, stats = judge.judge_items([item(rubric, REFERENCE)], cfg(), endpoint(stub), judge.JudgeCache(tmp_path))
    assert records[0]["valid"] and stats.retries == 1
    assert seen[1] - seen[0] >= 0.9  # a date 1-2 s ahead (second granularity), not "0 seconds"


@pytest.mark.integration
def test_failed_items_keep_the_provider_message_without_secrets(rubric, tmp_path):
    secret = "sk-test-DO-NOT-LEAK-7f3a9c"

    def script(body, headers, n):
        text = answer_of(body)
        if "always500" in text:
            return Fault(500, "overloaded, try later", FAST)
        if "bad400" in text:
            return Fault(400, "messages[0]: too long")
        if "echo401" in text:
            return Fault(401, f"Incorrect API key provided: {secret}. Authorization: Bearer {secret}")
        return naive_judge(body)

    items = [item(rubric, "always500", id="a"), item(rubric, "bad400", id="b"), item(rubric, "echo401", id="c")] + [
        item(rubric, REFERENCE + f" ({i})", id=str(i)) for i in range(5)
    ]
    with StubServer(script) as stub:
        records, stats = judge.judge_items(
            items, cfg(max_retries=2), endpoint(stub, key=secret), judge.JudgeCache(tmp_path)
        )
        sent = [answer_of(body).split()[0] for body, _ in stub.requests]
    assert sent.count("always500") == 3 and sent.count("bad400") == 1  # 5xx retried max_retries times, 400 never
    failed = {r["id"]: (r["error"], r["error_message"]) for r in records if r["failed"]}
    assert failed["a"] == ("InternalServerError (HTTP 500) after 3 attempts", "overloaded, try later")
    assert failed["b"] == ("BadRequestError (HTTP 400)", "messages[0]: too long")
    assert failed["c"][0] == "AuthenticationError (HTTP 401)" and "Incorrect API key provided" in failed["c"][1]
    assert secret not in json.dumps(records) and "DO-NOT-LEAK" not in json.dumps(records)
    assert stats.failures == 3 and sum(r["valid"] for r in records) == 5
    assert len(list(tmp_path.rglob("*.json"))) == 5  # failures are not cached: the next run asks again


@pytest.mark.parametrize(
    "message", ["sk-abcdef0123456789 is wrong", "Bearer abc.def-ghi", "api_key=abc123 rejected", "token: abc123"]
)
def test_redact_masks_key_like_strings(message):
    assert not any(s in judge.redact(message) for s in ("abcdef0123456789", "abc.def-ghi", "abc123"))


@pytest.mark.integration
def test_http_400_on_logprobs_falls_back_to_text_once(rubric, tmp_path):
    def script(body, headers, n):
        if body.get("logprobs"):
            return Fault(400, "Unsupported parameter: 'logprobs' is not supported with this model.")
        return naive_judge(body)

    items = [item(rubric, REFERENCE + f" ({i})", id=str(i)) for i in range(5)]
    cache = judge.JudgeCache(tmp_path)
    with StubServer(script) as stub:
        records, stats = judge.judge_items(items, cfg(concurrency=1), endpoint(stub), cache)
        assert stub.calls == 6  # one refusal, then the rest of the run asks without logprobs
        again, stats2 = judge.judge_items(items, cfg(concurrency=1), endpoint(stub), cache)
        assert stub.calls == 6 and stats2.cache_hits == 5  # cached under the request we meant to send
    assert "'logprobs' is not supported" in stats.logprobs_fallback
    for r in records + again:
        assert r["valid"] and r["method"] == "text" and r["score"] == 5
        assert "'logprobs' is not supported" in r["logprobs_fallback"]


@pytest.mark.integration
def test_cache_keys_follow_the_parsed_rubric_sampling_and_judge(rubric, tmp_path):
    items = [item(rubric, f"Category: billing\nAction: answer {i}.", id=str(i)) for i in range(6)]
    cache = judge.JudgeCache(tmp_path / "cache")
    with StubServer(lambda body, headers, n: naive_judge(body)) as stub:
        first, s1 = judge.judge_items(items, cfg(repeats=2), endpoint(stub), cache)
        assert stub.calls == 12 and s1.calls == 12 and s1.cache_hits == 0
        assert sorted({body["seed"] for body, _ in stub.requests}) == [0, 1]  # each repeat its own seed
        second, s2 = judge.judge_items(items, cfg(repeats=2), endpoint(stub), cache)
        assert stub.calls == 12 and s2.cache_hits == 12
        assert [r["score"] for r in second] == [r["score"] for r in first] and all(r["cached"] for r in second)
        entry = json.loads(next((tmp_path / "cache").rglob("*.json")).read_text())
        assert entry["request"]["rubric_sha256"] == rubric.sha256 and "sk-test" not in json.dumps(entry)
        edited = judge.Rubric(rubric.spec, "0" * 64, rubric.template)
        _, s3 = judge.judge_items([item(edited, "Category: billing\nAction: answer 0.")], cfg(), endpoint(stub), cache)
        _, s4 = judge.judge_items(items[:1], cfg(temperature=0.5), endpoint(stub), cache)
        _, s5 = judge.judge_items(items[:1], cfg(), judge.Endpoint(stub.url, "k", "stub:other"), cache)
        assert (s3.calls, s4.calls, s5.calls) == (1, 1, 1)


def test_comment_only_rubric_edit_keeps_the_hash_and_a_real_edit_changes_it(tmp_path):
    src = shipped_rubric()
    folder = tmp_path / "rubrics"
    folder.mkdir()
    original = (rubric_mod.Path(__file__).parents[1] / "prompts/rubrics/triage_quality.yaml").read_text()
    template = (rubric_mod.Path(__file__).parents[1] / "prompts/rubrics/judge.jinja").read_text()
    (folder / "judge.jinja").write_text("{# a new comment #}\n" + template)
    (folder / "triage_quality.yaml").write_text("# reworded comment\n" + original.replace("  min: 1", "  min:   1"))
    assert judge.load_rubric(folder, "triage_quality").sha256 == src.sha256
    (folder / "triage_quality.yaml").write_text(original.replace("version: 1", "version: 2"))
    assert judge.load_rubric(folder, "triage_quality").sha256 != src.sha256
    (folder / "triage_quality.yaml").write_text(original)
    (folder / "judge.jinja").write_text(template.replace("Grade the answer.", "Grade it."))
    assert judge.load_rubric(folder, "triage_quality").sha256 != src.sha256


@pytest.mark.integration
def test_entries_keep_model_fingerprint_tokens_and_cost(rubric, tmp_path):
    fingerprint = {"fp": "fp_aaa"}

    def script(body, headers, n):
        return completion("SCORE: 4", model="gpt-judge-2026-01", fingerprint=fingerprint["fp"])

    items = [item(rubric, f"answer {i}", id=str(i)) for i in range(3)]
    cache = judge.JudgeCache(tmp_path)
    with StubServer(script) as stub:
        records, stats = judge.judge_items(items, cfg(), endpoint(stub), cache, prices=(0.5, 2.0))
        fingerprint["fp"] = "fp_bbb"  # the provider swaps the model behind the alias
        more, _ = judge.judge_items(
            items + [item(rubric, "answer 9", id="9")], cfg(), endpoint(stub), cache, prices=(0.5, 2.0)
        )
    cost = (100 * 0.5 + 10 * 2.0) / 1000
    assert stats.cost_usd == pytest.approx(3 * cost)
    assert all(r["cost_usd"] == pytest.approx(cost) and r["tokens"]["prompt_tokens"] == 100 for r in more)
    assert [r["system_fingerprint"] for r in more] == ["fp_aaa"] * 3 + ["fp_bbb"]
    assert {r["judge_reported_model"] for r in more} == {"gpt-judge-2026-01"}
    from llmops.judge.stage import provenance, spend

    assert provenance(records)["changed"] is False
    drift = provenance(more)
    assert drift["changed"] is True and drift["system_fingerprints"] == ["fp_aaa", "fp_bbb"]
    _, rerun = judge.judge_items(
        items, cfg(), judge.Endpoint("http://127.0.0.1:9/v1", "k", "stub:judge"), cache, prices=(0.5, 2.0)
    )
    cached = spend(more[:3], rerun)
    assert cached["cost_usd"] == 0 and cached["results_cost_usd"] == pytest.approx(3 * cost)  # what results cost


@pytest.mark.integration
def test_prune_removes_only_entries_no_current_item_uses(rubric, tmp_path):
    cache = judge.JudgeCache(tmp_path)
    with StubServer(lambda body, headers, n: naive_judge(body)) as stub:
        judge.judge_items([item(rubric, f"old {i}", id=str(i)) for i in range(4)], cfg(), endpoint(stub), cache)
        current = judge.JudgeCache(tmp_path)  # a new run: only what it asks for counts as used
        judge.judge_items(
            [item(rubric, f"old {i}", id=str(i)) for i in range(2)] + [item(rubric, "new", id="n")],
            cfg(),
            endpoint(stub),
            current,
        )
    assert len(cache.entries()) == 5
    assert current.prune(current.used) == 2 and len(current.entries()) == 3
    assert current.prune(current.used) == 0
