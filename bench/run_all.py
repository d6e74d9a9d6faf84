"""Run every benchmark and write the table to reports/bench.md (quoted in docs/benchmarks.md).

Run:  make bench      (= python bench/run_all.py; about 15 minutes on a 2-core CPU)
      python bench/run_all.py --quick     (fewer repeats and sizes, for a smoke run)
      python bench/run_all.py --resume    (keep the benches reports/bench_rows.json already holds)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from dataclasses import asdict  # noqa: E402

import deploy_check_cost  # noqa: E402
import eval_overhead  # noqa: E402
import gpu  # noqa: E402
import growth  # noqa: E402
import judge_scaling  # noqa: E402
import pipeline  # noqa: E402
import train_overhead  # noqa: E402
from common import ROOT, Row  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def table(rows: list[Row]) -> str:
    out = ["| bench | measure | median | min | max | n | target | met |", "|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        nums = ["-" if math.isnan(v) else f"{v:.3g}" for v in (r.median, r.low, r.high)]
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        out.append(
            f"| {r.bench} | {r.measure} | {nums[0]} {r.unit} | {nums[1]} | {nums[2]} | {r.repeats} | "
            f"{r.target} | {met} |"
        )
    return "\n".join(out)


def kept_sections(path: Path) -> str:
    """The `## ...` sections after the main table (the interleaved training runs, gate stability: written by
    their own benches, which take hours, not by this run): kept as they are, so `make bench` refreshes the table
    without erasing them."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    _, sep, rest = text.partition("\n## ")
    return "\n## " + rest if sep else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench.md")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    reps = 1 if args.quick else 3
    benches = {
        "pipeline": lambda: pipeline.run(1 if args.quick else 2),
        "train": lambda: train_overhead.run(reps),
        "eval": lambda: eval_overhead.run(reps),
        "deploy": lambda: deploy_check_cost.run(reps),
        "judge": lambda: judge_scaling.run(8 if args.quick else 16, 0.2, [1, 4, 16]),
        "growth": lambda: growth.run(
            [50, 200] if args.quick else [50, 200, 1000], [40, 200] if args.quick else [40, 200, 1000]
        ),
        "gpu": gpu.run,
    }
    # Rows are saved after each bench, so a failure late in a 25-minute run keeps what was measured.
    saved_path = args.out.parent / "bench_rows.json"
    saved = json.loads(saved_path.read_text()) if args.resume and saved_path.is_file() else {}
    rows: list[Row] = []
    for name, bench in benches.items():
        if name not in saved:
            saved[name] = [asdict(r) for r in bench()]
            saved_path.parent.mkdir(parents=True, exist_ok=True)
            saved_path.write_text(json.dumps(saved, indent=2, allow_nan=True) + "\n")
        rows += [Row(**r) for r in saved[name]]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"# Benchmarks\n\nMeasured {when} on {cpu_name()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; `python bench/run_all.py{' --quick' if args.quick else ''}`. "
        "Machines here are shared and noisy: the ratios, measured side by side in one run, are the "
        "headline; absolute times say what one run saw.\n\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + table(rows) + "\n" + kept_sections(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
