"""Profiles: a named set of params.yaml overrides (profiles/<name>.yaml), run as one DVC experiment.

Run:  llmops profile smollm2            (prints the `dvc exp run` command the profile stands for)
      llmops profile smollm2 --run      (runs it; `make demo-real` does this)

params.yaml stays the one source of defaults: a profile only lists the keys it changes, every key must already
exist there, and the params with the overrides applied must validate before anything runs. `dvc exp run -S`
applies them, so the experiment, its params and its metrics are DVC's like any other (`dvc exp show`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmops.config import PARAMS_FILE, Params
from llmops.errors import ConfigError

FOLDER = Path("profiles")


def _set(tree: dict, dotted: str, value: Any, where: str) -> None:
    *head, last = dotted.split(".")
    node = tree
    for part in head:
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{where}: {dotted}: params.yaml has no section {part!r}")
        node = node[part]
    if not isinstance(node, dict) or last not in node:
        raise ConfigError(f"{where}: {dotted}: params.yaml has no key {last!r} there")
    node[last] = value


def load(name: str, params_file: Path = PARAMS_FILE) -> dict[str, Any]:
    """The profile's {dotted key: value} overrides, checked against params.yaml (ConfigError names the key)."""
    path = FOLDER / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in FOLDER.glob("*.yaml"))
        raise ConfigError(f"{path}: no such profile (known: {known})")
    overrides = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(overrides, dict) or not overrides:
        raise ConfigError(f"{path}: expected a mapping of dotted params keys to values")
    raw = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    for key, value in overrides.items():
        _set(raw, str(key), value, str(path))
    try:
        Params.model_validate(raw)
    except Exception as exc:  # noqa: BLE001 - pydantic's message names the key
        raise ConfigError(f"{path}: the params with this profile applied do not validate: {exc}") from None
    return overrides


def exp_run_command(name: str, overrides: dict[str, Any]) -> list[str]:
    """`dvc exp run -n <name> -S key=value ...` (values as YAML flow text, which is what -S parses)."""
    cmd = ["dvc", "exp", "run", "-n", name]
    for key, value in overrides.items():
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        text = text.removesuffix("\n...").removesuffix("...").strip()
        cmd += ["-S", f"{key}={text}"]
    return cmd
