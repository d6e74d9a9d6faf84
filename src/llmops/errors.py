"""Errors a stage reports to the user: the CLI prints them on one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


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
