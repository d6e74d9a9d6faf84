"""The `llmops` command: one subcommand per dvc.yaml stage, each a thin wrapper around `<module>.run`.

Run:  llmops --help          (dvc.yaml calls these; `train` is launched via accelerate, see dvc.yaml)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import typer

from llmops.errors import StageError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])


def run_stage(fn: Callable[..., Any], *args: Any) -> Any:
    """Load params, call the stage; user errors become one line on stderr and exit 1 (no traceback)."""
    from llmops.config import load_params

    try:
        result = fn(load_params(), *args)
    except StageError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(1)  # not typer.Exit: accelerate-launched modules call this outside a typer context
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return result


@app.command()
def base() -> None:
    """Build (tiny) or pin (hub id / local path) the base model."""
    from llmops import base as stage

    run_stage(stage.run)


@app.command()
def prepare() -> None:
    """Validate and normalise the raw data; write data/prepared and reports/data.json."""
    from llmops import prepare as stage

    run_stage(stage.run)


@app.command()
def train() -> None:
    """Train the LoRA adapter in this process (dvc.yaml runs it under `accelerate launch`)."""
    from llmops import train as stage

    run_stage(stage.run)


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="llmops")


if __name__ == "__main__":
    sys.exit(main())
