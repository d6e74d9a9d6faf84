"""Judge throughput: items/s against concurrency (1, 4, 16) on a loopback OpenAI-compatible server that
takes a fixed 200 ms per request, with a cold and a warm cache.

Run:  python bench/judge_scaling.py [--waves 16] [--latency 0.2]

Each level sends waves x concurrency items, so every level makes the same number of round trips (~waves x
latency of wall time) and the one-off start-up (client, connections, progress bar) weighs the same in each rate.
With a fixed item count the top level would run only a few round trips and mostly time that start-up.

Uses the stage's own request path (llmops.judge.run_calls: openai client, bounded concurrency, retries,
content-addressed cache) against tests/openai_stub.py's real HTTP server (in its own process). Target: the rate at
concurrency 16 reaches >= 80% of min(linear scaling, the client ceiling), zero calls with a warm cache.
The ceiling is measured twice against a server that answers at once: through run_calls, and with the bare
openai client (AsyncOpenAI + asyncio.gather, no judge code around it). When the two agree, a shortfall
from linear at high concurrency is the openai client's CPU cost per request, not the judge's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import ROOT, Row, summarise

from llmops.config import load_params  # noqa: E402
from llmops.judge import Call, Endpoint, JudgeCache, run_calls  # noqa: E402

CEILING_CALLS = 512  # at ~200-600 calls/s, 64 would be ~0.1-0.3 s, where client set-up is a visible share


@contextlib.contextmanager
def stub_server(latency: float) -> Iterator[str]:
    """tests/openai_stub.py's server in its own process (as a real endpoint is), so the client's CPU time
    and the server's do not share one interpreter lock; yields its /v1 URL."""
    code = (
        "import sys, time; sys.path.insert(0, 'tests'); from openai_stub import Hang, StubServer; "
        f"s = StubServer(lambda body, headers, n: Hang({latency})); s.__enter__(); "
        "print(s.url, flush=True); time.sleep(3600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


def raw_client_rate(url: str, n: int, concurrency: int) -> float:
    """Requests/s of the bare openai client: no cache, no scoring, no progress bar, no attempt counting."""
    from openai import AsyncOpenAI

    async def go() -> float:
        client = AsyncOpenAI(base_url=url, api_key="bench-key", max_retries=0)
        limit = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with limit:
                await client.chat.completions.create(
                    model="judge", max_tokens=8, messages=[{"role": "user", "content": f"raw {i}"}]
                )

        await asyncio.gather(*(one(i) for i in range(n)))
        await client.close()

    # timed like run_calls below: client set-up and the first connections included, over enough calls
    # (CEILING_CALLS) that they are a small share of either figure
    start = time.perf_counter()
    asyncio.run(go())
    return n / (time.perf_counter() - start)


def run(waves: int, latency: float, levels: list[int]) -> list[Row]:
    os.chdir(ROOT)  # params validation resolves configs/ and prompts/ from the repository root
    base_cfg = load_params().judge
    rows, rates = [], {}
    with stub_server(latency) as url:
        endpoint = Endpoint(url, "bench-key", identity="bench")
        # untimed: the first call of a process imports the openai client and httpx (~0.5 s), once per judge stage;
        # timed inside the first level it would lower that level's rate and flatter the speed-up
        warm = Call(
            "warm-up", {"model": "judge", "messages": [{"role": "user", "content": "warm-up"}], "max_tokens": 8}
        )
        run_calls(endpoint, [warm], base_cfg.model_copy(update={"max_retries": 0}), None, label="warm-up")
        for level in levels:
            items = waves * level
            cfg = base_cfg.model_copy(update={"concurrency": level, "max_retries": 0, "timeout_s": 30})
            cache_dir = Path(tempfile.mkdtemp(prefix="judge-cache-"))
            calls = [
                Call(
                    f"item/{i}",
                    {"model": "judge", "messages": [{"role": "user", "content": f"item {i}"}], "max_tokens": 8},
                    {"item": i, "level": level},
                )
                for i in range(items)
            ]
            for state in ("cold", "warm"):
                start = time.perf_counter()
                _, stats = run_calls(endpoint, calls, cfg, JudgeCache(cache_dir), label=f"c={level} {state}")
                wall = time.perf_counter() - start
                sent = stats.calls
                rate = items / wall
                if state == "cold":
                    rates[level] = rate
                rows.append(
                    summarise(
                        "judge",
                        f"concurrency {level:>2}, {state} cache ({sent} calls)",
                        [rate],
                        "item/s",
                        "0 calls" if state == "warm" else "",
                        (lambda v, s=sent: s == 0) if state == "warm" else None,
                    )
                )
            shutil.rmtree(cache_dir, ignore_errors=True)
    # What the client itself can push (server answers at once): on 2 cores this, not the semaphore, may cap
    # the speed-up, so the table shows both.
    with stub_server(0.0) as url:
        cfg = base_cfg.model_copy(update={"concurrency": max(levels), "max_retries": 0})
        n = max(waves * max(levels), CEILING_CALLS)
        calls = [
            Call(f"c/{i}", {"model": "judge", "messages": [{"role": "user", "content": f"c {i}"}], "max_tokens": 8})
            for i in range(n)
        ]
        start = time.perf_counter()
        run_calls(Endpoint(url, "bench-key"), calls, cfg, None, label="ceiling")
        ceiling = n / (time.perf_counter() - start)
        raw = raw_client_rate(url, n, max(levels))
    rows.append(summarise("judge", f"client ceiling (0 ms server, concurrency {max(levels)})", [ceiling], "item/s"))
    rows.append(summarise("judge", "bare openai client, same server and concurrency", [raw], "req/s"))
    rows.append(
        summarise(
            "judge",
            "judge path / bare client at the ceiling",
            [ceiling / raw],
            "share",
            ">= 0.8 (the judge code adds little)",
            lambda v: v >= 0.8,
        )
    )
    top = max(levels)
    ideal = top / min(levels)
    rows.append(
        summarise(
            "judge",
            f"speed-up at concurrency {top} vs {min(levels)} (ideal {ideal:.0f}x)",
            [rates[top] / rates[min(levels)]],
            "x",
            f">= {0.8 * ideal:.1f}x (80% of linear)",
            lambda v: v >= 0.8 * ideal,
        )
    )
    reachable = min(top / latency, ceiling)
    rows.append(
        summarise(
            "judge",
            f"rate at {top} vs reachable min(linear, client ceiling)",
            [rates[top] / reachable],
            "share",
            ">= 0.8",
            lambda v: v >= 0.8,
        )
    )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waves", type=int, default=16, help="round trips per level (items = waves x level)")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    run(args.waves, args.latency, args.levels)
