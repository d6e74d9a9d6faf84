"""bench/run_all.py rewrites the main table of reports/bench.md and keeps the sections other benches wrote.

Run:  pytest tests/test_bench_report.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
# bench/ is this repository's own: a repository baked from the template has none, and skips this file
run_all = pytest.importorskip("run_all", reason="bench/run_all.py is not part of this repository")


def test_sections_after_the_table_survive_a_rerun(tmp_path):
    out = tmp_path / "bench.md"
    sections = "\n## Gate stability\n\n| seed | 0 |\n|---|---|\n| verdict | pass |\n\n## Another\n\ntext\n"
    out.write_text("# Benchmarks\n\nMeasured long ago.\n\n| bench | measure |\n|---|---|\n| old | row |\n" + sections)
    assert run_all.kept_sections(out) == sections
    assert run_all.kept_sections(tmp_path / "missing.md") == ""
    out.write_text("# Benchmarks\n\n| bench | measure |\n|---|---|\n")  # nothing but the table: nothing to keep
    assert run_all.kept_sections(out) == ""
