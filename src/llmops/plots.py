"""Render DVC plots to PNG without a network: `dvc plots show`/`diff` write HTML that loads Vega from a CDN
(a blank page offline); vl-convert bundles Vega and renders the same Vega-Lite specs to PNG locally.

Run:  llmops plots               (the workspace: dvc plots show --json -> <paths.reports>/plots/*.png)
      llmops plots main          (workspace vs main, one chart per plot: dvc plots diff main --json)
      make plots

The PNG folder is replaced as a whole (no stale charts from an earlier run), is git-ignored and not a DVC
output: it is a view of metrics DVC already tracks.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from llmops.artifacts import atomic_dir
from llmops.errors import StageError

SCALE = 2  # pixels per Vega-Lite unit: DVC's 300x300 charts come out ~850 px wide, readable in a PR


def default_out(params_file: Path = Path("params.yaml")) -> Path:
    """<paths.reports>/plots; read without validating the rest of params.yaml, so it works in any DVC repo."""
    try:
        params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        params = {}
    return Path((params.get("paths") or {}).get("reports") or "reports") / "plots"


def collect(revs: Sequence[str] = ()) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """({plot id: [renderer dicts]}, DVC's per-plot errors) from `dvc plots show/diff --json`.

    A plot DVC could not load for one revision (e.g. a file that does not exist yet on the base branch) is an
    error line, not a failure: the other revisions still render. No plot at all is a failure."""
    cmd = ["dvc", "plots", "diff", *revs, "--json"] if revs else ["dvc", "plots", "show", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StageError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise StageError(f"`{' '.join(cmd)}` printed no JSON ({exc})") from None
    errors = [
        f"{e.get('name') or e.get('source') or 'dvc'} @ {e.get('rev', '?')}: {e.get('type')} {e.get('msg', '')}".strip()
        for e in result.get("errors", [])
    ]
    data = {plot_id: renderers for plot_id, renderers in (result.get("data") or {}).items() if renderers}
    if not data:
        raise StageError(
            f"`{' '.join(cmd)}` gave no plot to render"
            + (
                f": {'; '.join(errors)}"
                if errors
                else " (no dvc.yaml `plots:` or stage plots, or their files are missing)"
            )
        )
    return data, errors


def file_name(plot_id: str, index: int, count: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", re.sub(r"\.(csv|tsv|json|yaml)$", "", plot_id)).strip("_")
    return f"{stem}{f'-{index}' if count > 1 else ''}.png"


def render(plots: dict[str, list[dict[str, Any]]], out: Path) -> list[dict[str, str]]:
    """Write one PNG per Vega-Lite spec into `out` (replaced whole); image plots are copied as they are."""
    import vl_convert

    written = []
    with atomic_dir(out) as tmp:
        for plot_id, renderers in sorted(plots.items()):
            for i, renderer in enumerate(renderers):
                name = file_name(plot_id, i, len(renderers))
                if renderer.get("type") == "vega":
                    (tmp / name).write_bytes(vl_convert.vegalite_to_png(renderer["content"], scale=SCALE))
                elif renderer.get("type") == "image" and Path(str(renderer.get("url", ""))).is_file():
                    name = file_name(plot_id, i, len(renderers)).removesuffix(".png") + Path(renderer["url"]).suffix
                    shutil.copyfile(renderer["url"], tmp / name)
                else:
                    raise StageError(f"plot {plot_id}: cannot render a {renderer.get('type')!r} renderer")
                written.append(
                    {"plot": plot_id, "revisions": ",".join(renderer.get("revisions", [])), "file": str(out / name)}
                )
    return written


def run(revs: Sequence[str] = (), out: Path | None = None) -> dict[str, Any]:
    out = out or default_out()
    data, errors = collect(revs)
    return {"out": str(out), "plots": render(data, out), "errors": errors}
