"""Stage files in and out: writing all-or-nothing (JSON, JSONL, CSV text), reading JSONL, Markdown tables,
URLs fit for a report, and the run environment record.

A stage that fails halfway must leave no output DVC could mistake for a result, so everything is written
to a temporary sibling and renamed into place (rename is atomic on one filesystem). Every JSONL file goes
through `read_jsonl`, so one policy decides what a bad line does: strict readers stop at it (file:line),
tolerant ones skip it and say so on stderr.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmops.errors import DataError


def to_plain(value: Any) -> Any:
    """numpy/torch scalars (lm-eval returns numpy floats) -> Python values json can write."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(obj: Any) -> str:
    # allow_nan=False: a NaN metric is a bug upstream, never something to write and gate on later.
    return json.dumps(to_plain(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_text(path, dumps(obj))


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(to_plain(r), ensure_ascii=False, allow_nan=False) + "\n" for r in records))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class _Object(dict):
    """A JSON object that remembers keys given more than once (json.loads alone keeps the last silently)."""

    duplicates: dict[str, list[Any]]


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj, seen = _Object(), {}
    for key, value in pairs:
        seen.setdefault(key, []).append(value)
        obj[key] = value
    obj.duplicates = {k: v for k, v in seen.items() if len(v) > 1}
    return obj


def _first_duplicate(value: Any, where: str = "") -> tuple[str, list[Any]] | None:
    """Depth-first in document order: the dotted field of the first key given twice, and its values."""
    if isinstance(value, _Object):
        for key, values in value.duplicates.items():
            return f"{where}.{key}" if where else key, values
        children = [(f"{where}.{k}" if where else k, v) for k, v in value.items()]
    elif isinstance(value, list):
        children = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for child_where, child in children:
        found = _first_duplicate(child, child_where)
        if found:
            return found
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_json_line(raw: bytes, path: Path | str, line: int) -> Any:
    """One JSONL line, strictly: UTF-8, valid JSON, no key given twice; DataError names file and line."""
    try:
        record = json.loads(raw.decode("utf-8"), object_pairs_hook=_object_pairs)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line) from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON ({exc.msg}, column {exc.colno})", line) from None
    except RecursionError:
        raise DataError(path, "malformed JSON (nested too deeply)", line) from None
    duplicate = _first_duplicate(record)
    if duplicate:
        where, values = duplicate
        raise DataError(
            path,
            f"key given {len(values)} times ({', '.join(_short(v) for v in values)}); JSON "
            "would silently keep the last value",
            line,
            where,
        )
    return record


def read_jsonl(path: Path | str, strict: bool = True, data: bytes | None = None) -> list[tuple[int, dict]]:
    """(1-based line number, object) for each JSON-object line of `path` (or of `data`, its bytes read elsewhere,
    e.g. from a git revision); blank lines are skipped. strict: a bad line raises DataError naming file and
    line, and so does a missing or empty file. Tolerant: bad lines are skipped and counted on stderr."""
    if data is None:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise DataError(path, "not found") from None
    rows, skipped = [], []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            record = parse_json_line(raw, path, number)
            if not isinstance(record, dict):
                raise DataError(path, f"expected a JSON object, got {type(record).__name__}", number)
        except DataError:
            if strict:
                raise
            skipped.append(number)
            continue
        rows.append((number, record))
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
        print(
            f"warning: {path}: skipped {len(skipped)} line(s) that are not JSON objects (line {shown})", file=sys.stderr
        )
    if strict and not rows:
        raise DataError(path, "no records")
    return rows


def csv_text(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """CSV with a header row and \\n line ends (DVC plots and diffs read these files)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def clip(text: Any, limit: int) -> str:
    """One line of at most `limit` characters (an ellipsis marks a cut)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def md_cell(text: Any, limit: int = 300) -> str:
    """Text safe inside a Markdown table cell: one line, bounded length, pipes escaped; None shows as '-'."""
    return "-" if text is None else clip(text, limit).replace("|", "\\|")


def md_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def safe_url(url: str) -> str:
    """A URL fit for a report or an identity: scheme, host and path only. Userinfo (user:token@) and the query
    string could carry a credential; URLs without a host (sqlite:///mlflow.db, databricks) keep their path."""
    parts = urlsplit(url)
    if not parts.netloc:
        return url.split("?", 1)[0].split("#", 1)[0]
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final` only if the block finishes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(root: Path) -> str:
    """Content hash of a folder (relative names + bytes), e.g. an adapter, for lineage checks."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Float results are byte-identical on one machine but drift across CPU kernel paths (the same commit can flip a few
# eval items on another CPU: docs/evaluation.md). These settings pick the path, so every run records them.
NUMERICS_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def numerics_path(env: dict[str, Any]) -> str:
    """One string naming the hardware/kernel path a result was computed on (same string, same floats)."""
    settings = ",".join(f"{k}={v}" for k, v in sorted((env.get("numerics_env") or {}).items()))
    gpus = "+".join(env.get("gpus") or []) or "no GPU"
    return f"{env.get('cpu_model')} | torch CPU {env.get('torch_cpu_capability')} | {gpus}" + (
        f" | {settings}" if settings else ""
    )


def environment() -> dict[str, Any]:
    """Package versions and hardware, recorded with each run so a result says where it came from."""
    import torch

    packages = {}
    for name in ("torch", "transformers", "peft", "accelerate", "tokenizers", "lm_eval", "mlflow", "dvc"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numerics_env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ},
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "packages": packages,
    }
    env["numerics_path"] = numerics_path(env)
    return env
