"""JSONL inputs of the judge stage: the prepared eval prompts; errors name file, line and field."""

from __future__ import annotations

from pathlib import Path

from llmops.artifacts import read_jsonl
from llmops.errors import DataError


def load_eval(path: Path) -> list[dict]:
    rows = []
    for lineno, row in read_jsonl(path):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DataError(path, "missing prompt turns (run the prepare stage)", lineno, "messages")
        user = [m.get("content", "") for m in messages if m.get("role") == "user"]
        rows.append(
            {
                "id": str(row.get("id", lineno)),
                "messages": messages,
                "prompt": user[-1] if user else "",
                "reference": row.get("reference"),
            }
        )
    return rows
