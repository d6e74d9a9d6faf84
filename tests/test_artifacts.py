"""The shared readers and writers of llmops.artifacts: one JSONL policy, one CSV writer, one Markdown table,
one URL credential stripper (every stage routes through these)."""

from __future__ import annotations

import pytest

from llmops.artifacts import csv_text, md_table, read_jsonl, safe_url
from llmops.errors import DataError


@pytest.mark.parametrize(
    "line, message, field",
    [
        (b'{"a": 1', "malformed JSON", None),
        (b'["a list"]', "expected a JSON object", None),
        (b'{"a": 1, "a": 2}', "key given 2 times", "a"),
        (b'{"a": "\xff"}', "not valid UTF-8", None),
    ],
)
def test_strict_jsonl_names_file_line_and_field(tmp_path, line, message, field):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"ok": 1}\n\n' + line + b"\n")
    with pytest.raises(DataError, match=message) as err:
        read_jsonl(path)
    assert (err.value.path, err.value.line, err.value.field) == (path, 3, field)
    assert str(err.value).startswith(f"{path}:3")


def test_tolerant_jsonl_skips_and_says_so(tmp_path, capsys):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\nnot json\n\n[1]\n{"b": 2}')  # no final newline
    assert read_jsonl(path, strict=False) == [(1, {"a": 1}), (5, {"b": 2})]
    assert f"{path}: skipped 2 line(s)" in capsys.readouterr().err
    assert read_jsonl(path, data=b'{"c": 3}\n') == [(1, {"c": 3})]  # bytes read elsewhere (a git revision)


def test_strict_jsonl_rejects_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_jsonl(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        read_jsonl(tmp_path / "empty.jsonl")
    assert read_jsonl(tmp_path / "empty.jsonl", strict=False) == []


def test_markdown_table_escapes_pipes_and_newlines():
    table = md_table(["a|b", "c"], [[None, "x|y\nz"], [1.5, [0.1, 0.2]]])
    assert table.splitlines() == ["| a\\|b | c |", "|---|---|", "| - | x\\|y z |", "| 1.5 | [0.1, 0.2] |"]


def test_csv_text_quotes_and_uses_newline():
    assert csv_text(["a", "b"], [[1, "x,y"], [2, ""]]) == 'a,b\n1,"x,y"\n2,\n'


@pytest.mark.parametrize(
    "url, safe",
    [
        ("https://user:tok@Host.example.com:5000/v1/?api_key=s", "https://host.example.com:5000/v1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("databricks", "databricks"),
        ("file:///tmp/mlruns?token=x", "file:///tmp/mlruns"),
    ],
)
def test_safe_url_drops_credentials(url, safe):
    assert safe_url(url) == safe
