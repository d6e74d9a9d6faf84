"""llmops.progress.Every: a line at most every N seconds and at the end, with an estimate of what is left."""

from __future__ import annotations

import io

from llmops.progress import Every


def test_lines_come_at_most_every_n_seconds_and_at_the_end():
    now = [0.0]
    out = io.StringIO()
    tick = Every("base: pretraining step", 100, seconds=30, clock=lambda: now[0], out=out)
    printed = []
    for step in range(1, 101):
        now[0] = step * 1.0  # one step a second
        printed.append(tick(step, f"loss {1 / step:.3f}"))
    lines = [p for p in printed if p]
    assert lines == out.getvalue().splitlines()
    assert len(lines) == 4  # at 30, 60 and 90 s, and the last step
    assert lines[0] == "base: pretraining step: 30/100 (30%), 30 s, ~70 s left; loss 0.033"
    assert lines[-1] == "base: pretraining step: 100/100 (100%), 100 s; loss 0.010"  # no estimate when done


def test_nothing_done_yet_gives_no_estimate():
    tick = Every("x", 10, clock=lambda: 0.0, out=io.StringIO())
    assert tick.line(0) == "x: 0/10 (0%), 0 s"
