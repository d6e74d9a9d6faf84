"""How a stage runs from a command line: load params, call it, turn a user error into one line and exit 1.

Used by the `llmops` CLI for every subcommand and by `accelerate launch -m llmops.train` (which runs outside
the CLI), so no stage imports llmops.cli.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import typer

from llmops.errors import StageError


def run_stage(fn: Callable[..., Any], *args: Any) -> Any:
    """Load params, call the stage; user errors become one line on stderr and exit 1 (no traceback)."""
    from llmops.config import load_params

    try:
        result = fn(load_params(), *args)
    except StageError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(1)  # not typer.Exit: accelerate-launched modules call this outside a typer context
    if hasattr(result, "model_dump"):  # a stage output contract (llmops.schemas)
        result = result.model_dump(mode="json")
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return result
