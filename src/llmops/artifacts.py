"""Writing stage outputs all-or-nothing, as plain JSON, plus the run environment record.

A stage that fails halfway must leave no output DVC could mistake for a result, so everything is written
to a temporary sibling and renamed into place (rename is atomic on one filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any


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


# Float results are byte-identical on one machine but drift across CPU kernel paths (measured: the same
# commit flipped 1-4 of 60 eval items elsewhere). These settings pick the path, so every run records them.
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
        f" | {settings}" if settings else "")


def environment() -> dict[str, Any]:
    """Package versions and hardware, recorded with each run so a result says where it came from."""
    import torch

    packages = {}
    for name in ("torch", "transformers", "peft", "accelerate", "tokenizers", "lm_eval", "mlflow", "dvc"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
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
