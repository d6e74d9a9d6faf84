"""How a stage runs from a command line: load params, call it, turn a user error into one line and exit 1.

Used by the `llmops` CLI for every subcommand and by `accelerate launch -m llmops.train` (which runs outside
the CLI), so no stage imports llmops.cli.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from llmops.errors import StageError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def run_stage(fn: Callable[..., Any], *args: Any) -> Any:
    """Load params, call the stage; user errors become one line on stderr and exit 1 (no traceback)."""
    from llmops.config import load_params

    try:
        result = fn(load_params(), *args)
    except StageError as exc:
        import typer  # only to colour the message: the accelerate launch process imports this module too

        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(1)  # not typer.Exit: accelerate-launched modules call this outside a typer context
    if hasattr(result, "model_dump"):  # a stage output contract (llmops.schemas)
        result = result.model_dump(mode="json")
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return result


def exit_now(code: int) -> NoReturn:
    """Exit with `code` without the interpreter's teardown. Freeing every module of a process that imported torch,
    transformers, peft and datasets takes about a second on 2 cores, time a user waits for after the
    work is done. Everything a stage writes is closed by then (atomic writes); atexit handlers (temp folders,
    logging) still run, and stdout/stderr are flushed."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send `sig` to this process when its parent exits; False where prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
