"""A progress line for long loops that reads the same in a terminal and in a CI log.

    tick = Every("base: pretraining", total=4000)
    for step in range(4000):
        ...
        tick(step + 1, f"loss {loss:.2f}")

At most one line every `seconds` (and one at the end), with the share done, the time spent and an estimate
of what is left from the rate so far. A redrawn bar (tqdm, rich) floods a CI log, which sees every redraw as
a line; minutes of silence look like a hang. The judge and lm-eval keep their own bars.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Every:
    def __init__(
        self,
        label: str,
        total: int,
        seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        out: TextIO | None = None,
    ):
        self.label, self.total, self.seconds, self.clock = label, total, seconds, clock
        self.out = out
        self.start = self.last = clock()

    def line(self, done: int, note: str = "") -> str:
        spent = self.clock() - self.start
        left = spent / done * (self.total - done) if done else float("nan")
        share = done / self.total if self.total else 1.0
        estimate = "" if done >= self.total or left != left else f", ~{left:.0f} s left"
        return f"{self.label}: {done}/{self.total} ({share:.0%}), {spent:.0f} s{estimate}" + (
            f"; {note}" if note else ""
        )

    def __call__(self, done: int, note: str = "") -> str | None:
        """Print (and return) a line if `seconds` have passed since the last one, or at the end."""
        now = self.clock()
        if done < self.total and now - self.last < self.seconds:
            return None
        self.last = now
        text = self.line(done, note)
        print(text, file=self.out or sys.stderr, flush=True)
        return text
