"""What the train stage measures about itself and the one setting it tunes for speed: wall time per phase,
the process's page faults and age, and glibc's malloc thresholds.

Used by llmops.train (reports/train_perf.json); bench/train_overhead.py compares the results with plain Trainer + peft.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

# glibc's allocator returns freed memory above M_TRIM_THRESHOLD to the kernel and serves blocks above
# M_MMAP_THRESHOLD with fresh mmaps; both thresholds start at 128 KiB and only grow as the process frees large blocks,
# so where they stand when the loop starts depends on what ran before it (the loss-before pass). Left alone, they can
# leave the loop returning its activations to the kernel and faulting them in again every step; fixed at glibc's own
# dynamic ceiling (32 MiB, trim 2x) from the start, the memory kept is what the next step allocates again and peak
# RSS does not change. Measured in reports/bench.md, "Training loop: page faults from glibc's malloc thresholds".
# Keyed by the environment variable glibc reads for the same setting (a user's own value there wins).
MALLOC_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 64 << 20}
MALLOPT_OPTION = {"MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_TRIM_THRESHOLD_": -1}  # <malloc.h> M_MMAP_/M_TRIM_THRESHOLD


def keep_freed_memory() -> dict[str, int] | None:
    """Fix glibc's malloc thresholds (MALLOC_THRESHOLDS) for this process; what was set, or None (not glibc, or the
    environment already sets them: MALLOC_*_THRESHOLD_ or GLIBC_TUNABLES=glibc.malloc.*)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    user_set = any(k in os.environ for k in MALLOC_THRESHOLDS) or "glibc.malloc." in tunables
    if not sys.platform.startswith("linux") or user_set:
        return None
    import ctypes

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc returns 1 on success; musl's stub returns 0
    if mallopt is None or not all(mallopt(MALLOPT_OPTION[k], v) == 1 for k, v in MALLOC_THRESHOLDS.items()):
        return None
    return dict(MALLOC_THRESHOLDS)


class Phases:
    """Wall seconds per phase of the stage, for train_perf.json: what the user waits for beyond the loop."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now
        return self.laps[name]

    def summary(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self.laps.items()}
        out["process"] = round(process_age_s(), 3)
        return out


def minor_faults() -> int:
    """Minor page faults of this process so far (every thread)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def process_age_s() -> float:
    """Seconds since this process started (Linux: /proc start time; elsewhere unknown = 0)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
