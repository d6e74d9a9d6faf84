"""prepare: every kind of bad input gets file, line and field, a non-zero outcome and no outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import offline_env

from llmops import prepare
from llmops.config import load_params
from llmops.errors import DataError

GOOD = {"input": "the eNodeB at site A1 is off air", "output": "Category: radio_access\nAction: reset it."}


def lines(records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def many(n: int, offset: int = 0) -> list[dict]:
    cats = ["billing", "transport", "radio_access"]
    return [
        {"input": f"incident number {i} at node {i * 7}", "output": f"Category: {cats[i % 3]}\nAction: act."}
        for i in range(offset, offset + n)
    ]


LABELS = ["billing", "core_network", "radio_access", "transport"]  # the closed set these tests write against


@pytest.fixture
def work(tiny_workdir, in_copy_of):
    import yaml

    work = in_copy_of(tiny_workdir)
    # the answer format and label set these records use, whatever this repo's (a bake's may be 'Route:')
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["prepare"].update(label_regex=r"Category:\s*([A-Za-z0-9_\-]+)", label_prefix="Category:", labels=LABELS)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
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


@pytest.mark.parametrize(
    "bad, line, field, message",
    [
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
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
            3,
            "messages[1].content",
            "empty",
        ),
        # issue #13: control characters, also when they arrive as JSON escapes (raw ones are malformed JSON)
        (b'{"input": "site A\\u0000 down", "output": "Category: billing"}', 3, "input", "control character U+0000"),
        (b'{"input": "x", "output": "Category: billing\\u001b[2J"}', 3, "output", "control character U+001B"),
        (b'{"input": "x\\r\\ny", "output": "Category: billing"}', 3, "input", "control character U+000D"),
        (b'{"input": "x\\u007f", "output": "Category: billing"}', 3, "input", "control character U+007F"),
        (b'{"input": "x\\u0085", "output": "Category: billing"}', 3, "input", "control character U+0085"),
        (b'{"input": "a\tb", "output": "Category: billing"}', 3, None, "malformed JSON (Invalid control character"),
        (b'{"input": "x\\ud800", "output": "Category: billing"}', 3, "input", "lone surrogate U+D800"),
        # ... and text with nothing visible in it
        ({"input": "\u200b\u200c\u200d", "output": "Category: billing"}, 3, "input", "no visible character"),
        ({"input": "\u2060\ufeff\u00ad", "output": "Category: billing"}, 3, "input", "no visible character"),
        ({"input": "\u00a0\u3000\u2028 \n\t", "output": "Category: billing"}, 3, "input", "no visible character"),
        ({"input": "\u3164\u2800\u034f", "output": "Category: billing"}, 3, "input", "no visible character"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "\u200b"}]},
            3,
            "messages[1].content",
            "no visible character",
        ),
        # ... duplicate keys, at any level: json.loads alone keeps the last value and drops the conflicting label
        (
            b'{"input": "x", "output": "Category: billing", "output": "Category: transport"}',
            3,
            "output",
            'key given 2 times ("Category: billing", "Category: transport")',
        ),
        (
            b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "Category: billing", '
            b'"content": "Category: transport"}]}',
            3,
            "messages[1].content",
            "key given 2 times",
        ),
        (
            b'{"input": "x", "output": "Category: billing", "meta": {"src": [{"a": 1, "a": 1}]}}',
            3,
            "meta.src[0].a",
            "key given 2 times",
        ),
        (b"[" * 100_000 + b"]" * 100_000, 3, None, "nested too deeply"),
        # issue #26: one record, one shape; a label outside the closed set (prepare.labels) is named where it sits
        (
            {
                "input": "x y z",
                "output": "Category: billing",
                "messages": [
                    {"role": "user", "content": "x y z"},
                    {"role": "assistant", "content": "Category: transport"},
                ],
            },
            3,
            None,
            "holds both shapes",
        ),
        ({"input": "x y z", "output": "Category: Fraud_Report"}, 3, "output", "label 'Fraud_Report' is not in"),
        (
            {"messages": [{"role": "user", "content": "x y z"}, {"role": "assistant", "content": "Category: fraud"}]},
            3,
            "messages[1].content",
            "not in prepare.labels",
        ),
    ],
)
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


def test_allowed_whitespace_controls_and_visible_format_characters_pass(work):
    # \n and \t are text; a zero-width joiner inside visible text (emoji, Indic scripts) is legitimate
    ok = {"input": "line one\n\tline two \U0001f469\u200d\U0001f4bb", "output": "Category: billing\nAction: act."}
    assert run_with(work, many(60) + [ok])["train"]["final"] == 61


def test_over_long_line_is_rejected_before_parsing_and_tokenising(work, monkeypatch):
    import tracemalloc

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("the tokenizer must not be loaded when a line is over prepare.max_line_bytes")

    monkeypatch.setattr(prepare, "load_tokenizer", no_tokenizer)
    huge = b'{"input": "' + b"word " * (4 << 20) + b'", "output": "Category: billing"}'  # ~20 MiB
    (work / "data/raw/train.jsonl").write_bytes(lines(many(2) + [huge] + many(60, 10)))
    (work / "data/raw/eval.jsonl").write_bytes(lines(many(5, 1000)))
    size = len(huge)
    del huge
    params = load_params()
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            prepare.run(params)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.line == 3 and f"line is {size:,} bytes" in str(err.value)
    assert "prepare.max_line_bytes 1,048,576" in str(err.value)
    assert peak < 8 << 20  # a few limit-sized buffers (measured ~4 MiB), never the ~20 MiB line
    assert_no_outputs(work)


@pytest.mark.parametrize(
    "size, ending",
    [(1024, b"\r\n"), (1024, b"\n"), (1025, b"\n"), (1025, b"\r\n"), (5000, b"\r\n"), (1024, b""), (5000, b"")],
)
def test_line_byte_limit_counts_content_bytes_only(size, ending):
    import io

    data = b"x" * size + ending + (b"y\n" if ending else b"")
    got = list(prepare._bounded_lines(io.BytesIO(data), 1024))
    assert got[0] == (1, b"x" * size + ending if size <= 1024 else None, size)
    assert got[1:] == ([(2, b"y\n", 1)] if ending else [])


@pytest.mark.parametrize(
    "variant, text",
    [
        ("exact", GOOD["input"]),
        ("case and spaces", "  The ENODEB at site A1   is OFF air "),
        ("punctuation", "The eNodeB, at site A1 -- is off-air!!"),
        (
            "unicode forms",
            "the \uff45\uff2e\uff4f\uff44\uff45\uff22 at site A1 is o\u200bff air",
        ),  # fullwidth, zero-width
    ],
)
def test_leakage_is_an_error(work, variant, text):
    leaked = dict(GOOD, input=text)
    with pytest.raises(DataError, match="1 train/eval pair") as err:
        run_with(work, many(55) + [GOOD], many(3, 1000) + [leaked])
    assert err.value.line == 56 and err.value.field == "input"
    assert "train.jsonl:56 <-> data/raw/eval.jsonl:4  similarity 1.00" in str(err.value)
    assert_no_outputs(work)


LONG = (
    "Customer care escalation: the eNodeB at tower C-79 raised a sector down alarm after the storm, the backup "
    "batteries drained within two hours and the generator at the hut failed to start on its own, so the whole "
    "cluster of three sectors serving the stadium has been off air since early this morning."
)


def test_near_duplicates_are_caught_and_every_pair_is_named(work):
    near = LONG.replace(", ", "; ").replace("C-79", "C 79") + " Please advise."  # re-punctuated, 2 words added
    train = many(55) + [
        {"input": LONG, "output": "Category: radio_access"},
        {
            "messages": [
                {"role": "user", "content": "incident number 2000 at node 14000"},
                {"role": "assistant", "content": "Category: billing"},
            ]
        },
    ]
    evals = many(3, 1000) + [
        {"input": near, "output": "Category: radio_access"},
        {"input": "Incident number 2000, at node 14000.", "output": "Category: billing"},
        {"input": "INCIDENT NUMBER 7 AT NODE 49", "output": "Category: radio_access"},
    ]
    with pytest.raises(DataError) as err:
        run_with(work, train, evals)
    message = str(err.value)
    assert message.startswith("data/raw/train.jsonl:8 field 'input': 3 train/eval pair(s) leak")
    pairs = [line.split()[:3] for line in message.splitlines()[1:]]
    assert pairs == [
        ["data/raw/train.jsonl:8", "<->", "data/raw/eval.jsonl:6"],
        ["data/raw/train.jsonl:56", "<->", "data/raw/eval.jsonl:4"],
        ["data/raw/train.jsonl:57", "<->", "data/raw/eval.jsonl:5"],
    ]
    near_similarity = float(message.splitlines()[2].split()[-1])
    assert 0.9 <= near_similarity < 1.0
    assert_no_outputs(work)


def test_allowed_leakage_is_listed_in_data_json(work):
    import yaml

    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["prepare"]["allow_leakage"] = True
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    stats = run_with(work, many(55) + [GOOD], many(3, 1000) + [dict(GOOD, input=GOOD["input"].upper() + "!")])
    report = json.loads((work / "reports/data.json").read_text())
    assert report == json.loads(json.dumps({k: v for k, v in stats.items() if k != "runtime_s"}))
    assert report["leaked"] == 1 and report["leakage"]["max_similarity"] == 1.0
    assert report["leakage"]["pairs"] == [
        {"train": "data/raw/train.jsonl:56", "eval": "data/raw/eval.jsonl:4", "similarity": 1.0}
    ]


def test_shipped_demo_data_has_no_leakage_with_margin():
    """The default threshold must leave the demo's own train/eval pairs (same templates) well below it."""
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "params.yaml").read_text())
    regex = re.compile(cfg["prepare"]["label_regex"])
    train, evals = (prepare.read_examples(root / cfg["paths"][k], None, regex) for k in ("raw_train", "raw_eval"))
    leaks, (_, _, most) = prepare.find_leaks(
        train, evals, cfg["prepare"]["leakage_ngram"], cfg["prepare"]["leakage_threshold"]
    )
    # the demo's own data (0.733) keeps a 0.15 margin; a baked domain's placeholder data only has to pass
    margin = 0.15 if (root / "data/make_demo_data.py").is_file() else 0.0
    assert leaks == [] and most < cfg["prepare"]["leakage_threshold"] - margin


def test_duplicates_dropped_and_counted_and_outputs_written(work):
    stats = run_with(
        work,
        many(55) + many(3),
        many(4, 1000)
        + [
            {
                "messages": [
                    {"role": "user", "content": "incident number 1000 at node 7000"},
                    {"role": "assistant", "content": "Category: billing\nAction: act."},
                ]
            }
        ],
    )
    assert stats["train"]["duplicates_dropped"] == 3 and stats["train"]["final"] == 55
    assert stats["eval"]["duplicates_dropped"] == 1
    assert set(stats["train"]["tokens"]) == {"p50", "p90", "p99", "max", "mean"}
    report = json.loads((work / "reports/data.json").read_text())
    assert report["labels"] == LABELS and report["train"]["labels"]["core_network"] == 0  # untrained: still an option
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
    proc = subprocess.run(
        [sys.executable, "-m", "llmops.cli", "prepare"], cwd=work, env=offline_env(work), capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "train.jsonl:3" in proc.stderr and "Traceback" not in proc.stderr
    assert_no_outputs(work)


def test_an_eval_label_training_lacks_is_named_with_its_line(work):
    evals = many(4, 1000) + [{"input": "core router R2 lost its BGP sessions", "output": "Category: core_network"}]
    with pytest.raises(DataError, match="'core_network' never occurs in the training data") as err:
        run_with(work, many(60), evals)
    assert (err.value.line, err.value.field) == (5, "output") and "eval.jsonl:5" in str(err.value)
    assert_no_outputs(work)


def test_an_open_label_set_takes_what_training_holds(work):
    import yaml

    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["prepare"]["labels"] = None
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    fraud = [{"input": f"card {i} charged twice abroad", "output": "Category: fraud\nAction: block."} for i in range(3)]
    stats = run_with(work, many(60) + fraud)
    assert sorted(stats["labels"]) == ["billing", "fraud", "radio_access", "transport"]


@pytest.mark.parametrize("labels, message", [(["billing", "billing"], "repeated"), (["billing"], "at least 2")])
def test_bad_label_sets_are_config_errors(tmp_path, labels, message):
    from conftest import raw_params
    from pydantic import ValidationError

    from llmops.config import Params

    raw = raw_params()
    raw["prepare"]["labels"] = labels
    with pytest.raises(ValidationError, match=message):
        Params.model_validate(raw)
