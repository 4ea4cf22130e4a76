"""The log window: train metrics averaged over the steps since the last log row, and throughput.

It is part of the run's state: a checkpoint taken between two log rows carries the
steps already summed, so the first row after a resume holds the same means as the
uninterrupted run's (the rates are wall-clock and start over).
"""

from __future__ import annotations

import time


class Window:
    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}  # per metric: task metrics may be computed on log steps only
        self.count = 0
        self.tokens = 0  # input tokens (or samples) consumed: batch shapes, no device sync
        self.started = time.perf_counter()
        self.steps = 0
        self.last: dict[str, float] = {}  # the latest step's values: what a row reports as loss and lr

    def add(self, values: dict[str, float]) -> None:
        self.last = values  # the caller's own dict (read_back makes one a step), not copied
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.count += 1
        self.steps += 1

    def take(self) -> tuple[dict[str, float], float, float]:
        means = {k: v / self.counts[k] for k, v in self.sums.items()}
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rates = (self.steps / elapsed, self.tokens / elapsed)
        self.__init__()
        return means, *rates

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.__init__()
        self.sums, self.counts, self.count = dict(state["sums"]), dict(state["counts"]), state["count"]
