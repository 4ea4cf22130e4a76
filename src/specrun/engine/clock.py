"""Wall-clock intervals: ``checkpoint { every 30min }``, as Lightning's and HF's trainers offer.

A step count says nothing about time when steps vary from milliseconds to minutes;
a time-based checkpoint bounds the work a crash can lose.
"""

from __future__ import annotations

import time


class WallClock:
    """Due once ``seconds`` have passed since it was last due (or since the run started)."""

    def __init__(self, seconds: float, dist=None):
        self.seconds = float(seconds)
        self.dist = dist
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        due = now - self.last >= self.seconds
        if self.dist is not None:
            # Ranks' clocks differ: all of them save at one step, or the save's collectives hang.
            due = self.dist.all_agree(due)
        if due:
            self.last = now
        return due
