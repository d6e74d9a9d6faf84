"""prepare: every kind of bad input gets file, line and field, a non-zero outcome and no outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmops import prepare
from llmops.config import load_params
from llmops.errors import DataError
from conftest import offline_env

GOOD = {"input": "the eNodeB at site A1 is off air", "output": "Category: radio_access\nAction: reset it."}


def lines(records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def many(n: int, offset: int = 0) -> list[dict]:
    cats = ["billing", "transport", "radio_access"]
    return [{"input": f"incident number {i} at node {i * 7}", "output": f"Category: {cats[i % 3]}\nAction: act."}
            for i in range(offset, offset + n)]


@pytest.fixture
def work(tiny_workdir, in_copy_of):
    work = in_copy_of(tiny_workdir)
    for out in (work / "data/prepared", work / "reports/data.json"):
        if out.is_dir():
            import shutil
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
    return work


def run_with(work, train_records, eval_records=None):
    (work / "data/raw/train.jsonl").write_bytes(lines(train_records))
    (work / "data/raw/eval.jsonl").write_bytes(lines(eval_records if eval_records is not None else many(5, 1000)))
    return prepare.run(load_params())


def assert_no_outputs(work):
    assert not (work / "data/prepared").exists()
    assert not (work / "reports/data.json").exists()


@pytest.mark.parametrize("bad, line, field, message", [
    (b'{"input": "x", "output": ', 3, None, "malformed JSON"),
    (b'{"input": "caf\xe9", "output": "Category: billing"}', 3, None, "not valid UTF-8"),
    (b"", 3, None, "blank line"),
    (b'["a list"]', 3, None, "expected a JSON object"),
    ({"input": "x"}, 3, "output", "missing"),
    ({"input": "   ", "output": "Category: billing"}, 3, "input", "empty"),
    ({"input": 5, "output": "Category: billing"}, 3, "input", "must be a string"),
    ({"text": "x"}, 3, None, "either 'messages' or 'input'+'output'"),
    ({"input": "x y z", "output": "no label here"}, 3, "output", "no label"),
    ({"messages": []}, 3, "messages", "non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, 3, "messages[0].role", "must be one of"),
    ({"messages": [{"role": "user", "content": "x"}]}, 3, "messages[0].role", "last turn"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}, 3,
     "messages[1].content", "empty"),
])
def test_bad_record_is_located(work, bad, line, field, message):
    records = many(2) + [bad] + many(60, 10)
    with pytest.raises(DataError) as err:
        run_with(work, records)
    assert err.value.line == line and err.value.field == field
    assert message in str(err.value) and "train.jsonl:3" in str(err.value)
    assert_no_outputs(work)


def test_too_few_examples(work):
    with pytest.raises(DataError, match="min_examples is 50"):
        run_with(work, many(49))
    assert_no_outputs(work)


def test_empty_file(work):
    with pytest.raises(DataError, match="empty"):
        run_with(work, [])
    assert_no_outputs(work)


@pytest.mark.parametrize("variant", ["exact", "normalised"])
def test_leakage_is_an_error(work, variant):
    leaked = dict(GOOD)
    if variant == "normalised":
        leaked["input"] = "  The ENODEB at site A1   is OFF air "
    with pytest.raises(DataError, match="also appears in") as err:
        run_with(work, many(55) + [GOOD], many(3, 1000) + [leaked])
    assert err.value.line == 56 and err.value.field == "input"
    assert_no_outputs(work)


def test_duplicates_dropped_and_counted_and_outputs_written(work):
    stats = run_with(work, many(55) + many(3), many(4, 1000) + [{"messages": [
        {"role": "user", "content": "incident number 1000 at node 7000"},
        {"role": "assistant", "content": "Category: billing\nAction: act."}]}])
    assert stats["train"]["duplicates_dropped"] == 3 and stats["train"]["final"] == 55
    assert stats["eval"]["duplicates_dropped"] == 1
    assert set(stats["train"]["tokens"]) == {"p50", "p90", "p99", "max", "mean"}
    report = json.loads((work / "reports/data.json").read_text())
    assert report["labels"] == ["billing", "radio_access", "transport"]
    rows = [json.loads(x) for x in (work / "data/prepared/train.jsonl").read_text().splitlines()]
    assert len(rows) == 55 and all(r["messages"][0]["role"] == "system" for r in rows)  # system prompt added
    evals = [json.loads(x) for x in (work / "data/prepared/eval.jsonl").read_text().splitlines()]
    assert evals[0]["prompt"].endswith("<|assistant|>\n") and evals[0]["choices"][evals[0]["gold"]] == evals[0]["label"]


def test_shuffle_is_seeded(work):
    run_with(work, many(60))
    first = (work / "data/prepared/train.jsonl").read_bytes()
    run_with(work, many(60))
    assert (work / "data/prepared/train.jsonl").read_bytes() == first


@pytest.mark.parametrize("policy", ["error", "drop", "truncate"])
def test_length_policy(work, policy):
    import yaml

    # the limit sits just above the longest normal record, whatever this repo's tokenizer and prompt make of it
    longest = run_with(work, many(60))["train"]["tokens"]["max"]
    limit = longest + 5
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["prepare"].update(max_seq_len=limit, truncation=policy)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    long = {"input": "short incident at node 9", "output": "Category: billing\nAction: " + "call back " * 60}
    records = many(60) + [long]
    if policy == "error":
        with pytest.raises(DataError, match=f"exceed prepare.max_seq_len {limit}") as err:
            run_with(work, records)
        assert err.value.line == 61
        return
    stats = run_with(work, records)
    if policy == "drop":
        assert stats["train"]["dropped_too_long"] == 1 and stats["train"]["final"] == 60
    else:
        assert stats["train"]["truncated"] == 1 and stats["train"]["final"] == 61
        assert stats["train"]["tokens"]["max"] <= limit


def test_cli_exits_nonzero_with_one_line(work):
    (work / "data/raw/train.jsonl").write_bytes(lines(many(2) + [b"{oops"]))
    proc = subprocess.run([sys.executable, "-m", "llmops.cli", "prepare"], cwd=work, env=offline_env(work),
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "train.jsonl:3" in proc.stderr and "Traceback" not in proc.stderr
    assert_no_outputs(work)
