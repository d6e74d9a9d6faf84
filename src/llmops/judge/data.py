"""JSONL inputs of the judge stage: the prepared eval prompts; errors name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

from llmops.errors import DataError


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise DataError(path, "not found")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON ({exc.msg})", lineno) from None
        if not isinstance(row, dict):
            raise DataError(path, "expected a JSON object", lineno)
        rows.append((lineno, row))
    if not rows:
        raise DataError(path, "no records")
    return rows


def load_eval(path: Path) -> list[dict]:
    rows = []
    for lineno, row in read_jsonl(path):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DataError(path, "missing prompt turns (run the prepare stage)", lineno, "messages")
        user = [m.get("content", "") for m in messages if m.get("role") == "user"]
        rows.append({"id": str(row.get("id", lineno)), "messages": messages, "prompt": user[-1] if user else "",
                     "reference": row.get("reference")})
    return rows
