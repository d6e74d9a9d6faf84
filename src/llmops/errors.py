"""Errors a stage reports to the user: the CLI prints them on one line and exits non-zero."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class StageError(Exception):
    """Anything the user must fix (data, params, missing inputs); never a traceback."""


class ConfigError(StageError):
    """A params.yaml problem (file and dotted key)."""


class DataError(StageError):
    """A bad record, located as precisely as we can: file, line (1-based) and field."""

    def __init__(self, path: Path | str, message: str, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = Path(path), line, field
        where = str(path) + (f":{line}" if line is not None else "") + (f" field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


def problem(error: dict[str, Any]) -> str:
    """One pydantic error's message in our wording: a missing key says "missing", NaN/inf say so, and a validator's
    own message loses pydantic's "Value error, " prefix."""
    value = error.get("input")
    if error["type"] == "missing":
        return "missing"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    return error["msg"].removeprefix("Value error, ")


def problems(errors: list[dict[str, Any]]) -> str:
    """pydantic's errors (ValidationError.errors()) as one line, `dotted.location: what is wrong; ...`: the one
    wording every config, contract and rubric message uses (a rule over the whole object has no location)."""
    return "; ".join((".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "") + problem(e) for e in errors)


def field_path(loc: tuple) -> str | None:
    """A pydantic location as a reader writes a field: ('messages', 0, 'role') -> 'messages[0].role' (None: the
    whole object). Data errors and the server's `error.param` name fields this way."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None
