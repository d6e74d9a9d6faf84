"""Content-addressed store of judge and answer responses: one JSON file per request at
<root>/<key[:2]>/<key>.json, holding the request fields and the response (with the tokens and cost it took
when it was produced, so a fully cached rerun still shows what the committed results cost).

`used` collects every key this process looked up or wrote; `prune(used)` at the end of a stage removes
entries no current item needs (old rubric versions, old answers), so the DVC-tracked folder stays bounded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from llmops.artifacts import read_json, write_json


class JudgeCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.used: set[str] = set()

    @staticmethod
    def key(fields: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        self.used.add(key)
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = read_json(path)
        except (OSError, ValueError):  # a torn or edited entry is a miss, rewritten after the call
            return None
        return entry.get("response") if entry.get("key") == key else None

    def put(self, key: str, fields: dict[str, Any], response: dict[str, Any]) -> None:
        self.used.add(key)
        write_json(self.path(key), {"key": key, "request": fields, "response": response})

    def entries(self) -> list[Path]:
        return sorted(self.root.glob("??/*.json")) if self.root.is_dir() else []

    def prune(self, keep: set[str]) -> int:
        """Remove every entry whose key is not in `keep`; returns how many were removed."""
        removed = 0
        for path in self.entries():
            if path.stem not in keep:
                path.unlink()
                removed += 1
        for folder in self.root.glob("??") if self.root.is_dir() else []:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return removed
