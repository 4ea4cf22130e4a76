"""Sinks: where a run's metrics rows and events go (see ``base``).

Always: events.jsonl (``events``, from the run directory's creation) and
metrics.csv plus the spec's own CSV (``csv``, once the run is set up). Then one
sink per entry of the spec's ``log`` block that a module here claims: a module
with ``SETTING = "<log key>"`` and ``open_sink(opening) -> Sink`` is found by
``open_log_sinks`` without being listed anywhere, so a new tracker is one new
file here (and its settings in the schema's ``log`` block).
"""

from __future__ import annotations

import importlib
import pkgutil

from specrun.engine.sinks.base import Opening, Sink


def log_sink_modules() -> dict:
    """``log`` key -> the module that opens it, for every module of this package that claims one."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        setting = getattr(module, "SETTING", None)
        if setting:
            found[setting] = module
    return found


def open_log_sinks(plan, run_dir, runs_base: str = "runs") -> list[Sink]:
    """Open, in the order of the log block's keys, the sinks it names; each joins ``run_dir.sinks``.

    Raises ``SinkUnavailable`` (before any training) when one cannot work here.
    """
    if not run_dir.main:
        return []  # rank 0 alone writes the record
    modules = log_sink_modules()
    opened = []
    for key, settings in plan.log.sinks.items():
        if key in modules and settings not in (None, False):
            opened.append(run_dir.sinks.add(modules[key].open_sink(Opening(plan, run_dir, settings, runs_base))))
    return opened
