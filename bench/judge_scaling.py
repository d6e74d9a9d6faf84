"""Judge throughput: items/s against concurrency (1, 4, 16) on a loopback OpenAI-compatible server that
takes a fixed 200 ms per request, with a cold and a warm cache.

Run:  python bench/judge_scaling.py [--items 64] [--latency 0.2]

Uses the stage's own request path (llmops.judge.run_calls: openai client, bounded concurrency, retries,
content-addressed cache) against tests/openai_stub.py's real HTTP server (in its own process). Target: near-linear scaling up to
the concurrency limit (speed-up at 16 close to 16x while items >= 16), zero calls with a warm cache.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import ROOT, Row, summarise

from llmops.config import load_params  # noqa: E402
from llmops.judge import Call, Endpoint, JudgeCache, run_calls  # noqa: E402


@contextlib.contextmanager
def stub_server(latency: float) -> Iterator[str]:
    """tests/openai_stub.py's server in its own process (as a real endpoint is), so the client's CPU time
    and the server's do not share one interpreter lock; yields its /v1 URL."""
    code = ("import sys, time; sys.path.insert(0, 'tests'); from openai_stub import Hang, StubServer; "
            f"s = StubServer(lambda body, headers, n: Hang({latency})); s.__enter__(); "
            "print(s.url, flush=True); time.sleep(3600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


def run(items: int, latency: float, levels: list[int]) -> list[Row]:
    os.chdir(ROOT)  # params validation resolves configs/ and prompts/ from the repository root
    base_cfg = load_params().judge
    rows, rates = [], {}
    with stub_server(latency) as url:
        endpoint = Endpoint(url, "bench-key", identity="bench")
        for level in levels:
            cfg = base_cfg.model_copy(update={"concurrency": level, "max_retries": 0, "timeout_s": 30})
            cache_dir = Path(tempfile.mkdtemp(prefix="judge-cache-"))
            calls = [Call(f"item/{i}", {"model": "judge", "messages": [{"role": "user", "content": f"item {i}"}],
                                        "max_tokens": 8}, {"item": i, "level": level}) for i in range(items)]
            for state in ("cold", "warm"):
                start = time.perf_counter()
                _, stats = run_calls(endpoint, calls, cfg, JudgeCache(cache_dir), label=f"c={level} {state}")
                wall = time.perf_counter() - start
                sent = stats.calls
                rate = items / wall
                if state == "cold":
                    rates[level] = rate
                rows.append(summarise("judge", f"concurrency {level:>2}, {state} cache ({sent} calls)", [rate],
                                      "item/s", "0 calls" if state == "warm" else "",
                                      (lambda v, s=sent: s == 0) if state == "warm" else None))
            shutil.rmtree(cache_dir, ignore_errors=True)
    # What the client itself can push (server answers at once): on 2 cores this, not the semaphore, may cap
    # the speed-up, so the table shows both.
    with stub_server(0.0) as url:
        cfg = base_cfg.model_copy(update={"concurrency": max(levels), "max_retries": 0})
        calls = [Call(f"c/{i}", {"model": "judge", "messages": [{"role": "user", "content": f"c {i}"}],
                                 "max_tokens": 8}) for i in range(items)]
        start = time.perf_counter()
        run_calls(Endpoint(url, "bench-key"), calls, cfg, None, label="ceiling")
        ceiling = items / (time.perf_counter() - start)
    rows.append(summarise("judge", f"client ceiling (0 ms server, concurrency {max(levels)})", [ceiling], "item/s"))
    top = max(levels)
    ideal = min(top, items) / min(levels)
    rows.append(summarise("judge", f"speed-up at concurrency {top} vs {min(levels)} (ideal {ideal:.0f}x)",
                          [rates[top] / rates[min(levels)]], "x", f">= {0.8 * ideal:.1f}x (80% of linear)",
                          lambda v: v >= 0.8 * ideal))
    reachable = min(min(top, items) / latency, ceiling)
    rows.append(summarise("judge", f"rate at {top} vs reachable min(linear, client ceiling)",
                          [rates[top] / reachable], "share", ">= 0.8", lambda v: v >= 0.8))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    run(args.items, args.latency, args.levels)
