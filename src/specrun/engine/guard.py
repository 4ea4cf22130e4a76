"""The memory guard: the sha256 document's "active RAM defense".

Every ``check_every`` steps it reads RAM with psutil: the machine's used
memory (``scope system``) or this process's resident set (``scope process``).
Over the limit, it runs the spec's actions in order (collect garbage, empty
device caches, pause, re-check), stopping as soon as a re-check finds memory
under the limit, and reports what happened. If memory is still over after
the last action, ``still_over`` decides: continue, or save and stop.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import psutil

from specrun.sections import MemoryPolicy

GB = 1e9


def format_bytes(n: float) -> str:
    """1.23 GB, 45.6 MB, 789 kB: a guard line must not call a 50 MB limit '0.05 GB'."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}" if n / size < 100 else f"{n / size:.0f} {unit}"
    return f"{n:.0f} B"


def used_bytes(scope: str) -> int:
    if scope == "process":
        return psutil.Process().memory_info().rss
    return psutil.virtual_memory().used


@dataclass
class GuardReport:
    over: bool
    used_before: int
    used_after: int
    actions: list[str] = field(default_factory=list)
    still_over: bool = False


class MemoryGuard:
    def __init__(self, policy: MemoryPolicy, empty_cache, sleep=time.sleep, measure=used_bytes):
        self.limit = policy.ram_limit
        self.scope = policy.scope
        self.actions = policy.actions
        self.pause = policy.pause
        self.still_over_action = policy.still_over
        self._empty_cache = empty_cache
        self._sleep = sleep
        self._measure = measure

    @property
    def active(self) -> bool:
        return bool(self.limit)

    def check(self, say, event=None) -> GuardReport:
        """Measure; when over the limit, take the actions in order, each a console line and an event.

        ``event(action, **fields)`` records one action (the run's events.jsonl); the
        actions are ``over``, the spec's actions, and ``still_over`` at the end.
        """
        used = self._measure(self.scope)
        if used <= self.limit:
            return GuardReport(False, used, used)

        def tell(action: str, line: str, **fields) -> None:
            say(f"[memory guard] {line}")
            if event is not None:
                event(action, **fields)

        tell("over", f"RAM at {format_bytes(used)}, over the {format_bytes(self.limit)} limit ({self.scope})",
             used_gb=used / GB, limit_gb=self.limit / GB, scope=self.scope)
        report = GuardReport(True, used, used)
        for action in self.actions:
            report.actions.append(action)
            if action == "collect_garbage":
                gc.collect()
                tell(action, "collected garbage")
            elif action == "empty_cache":
                self._empty_cache()
                tell(action, "emptied device caches")
            elif action == "pause":
                tell(action, f"pausing {self.pause:g}s to let memory drain", seconds=self.pause)
                self._sleep(self.pause)
            elif action == "recheck":
                report.used_after = self._measure(self.scope)
                if report.used_after <= self.limit:
                    tell(action, f"cooled down to {format_bytes(report.used_after)}", used_gb=report.used_after / GB)
                    return report
                tell(action, f"rechecked: still at {format_bytes(report.used_after)}", used_gb=report.used_after / GB)
        report.used_after = self._measure(self.scope)
        report.still_over = report.used_after > self.limit
        if report.still_over:
            tell("still_over", f"still at {format_bytes(report.used_after)} after {', '.join(self.actions)}; "
                 f"{'saving and stopping' if self.still_over_action == 'save_and_stop' else 'continuing'}",
                 used_gb=report.used_after / GB, then=self.still_over_action)
        return report
