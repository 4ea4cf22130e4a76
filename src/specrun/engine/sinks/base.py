"""The sink seam: where a run's record goes.

The training loop hands every metrics row and every event to one fan-out,
``Sinks``; it names no file and no tool. metrics.csv, events.jsonl, the spec's
own CSV, TensorBoard and the experiment trackers are each a ``Sink``: adding
one is a new module in this package (see ``sinks/__init__.py``).

A sink's methods are called on the training thread, in order. A sink that is
slow or can fail without harm to the run (a tracker: a server, a network)
runs behind ``background.Background``, which moves its work to a thread of its
own and turns its first error into one warning event.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass


class SinkUnavailable(RuntimeError):
    """A sink the spec names cannot work here (its package is missing); the run does not start."""


@dataclass
class Opening:
    """What a sink named in the spec's log block is opened with."""

    plan: object  # specrun.plan.Plan
    run_dir: object  # specrun.engine.rundir.RunDir
    settings: object  # the sink's own entry of the log block (True, or its block as a dict)
    runs_base: str = "runs"  # where every run of every spec lives (`specrun run --runs-base`)


class Sink:
    """One destination of the run's record. Every method may be left as it is."""

    def row(self, row: dict) -> None:
        """A metrics row: ``step`` and the logged columns (``train.loss``, ``val.accuracy``, ...)."""

    def event(self, record: dict) -> None:
        """An event: ``{"time", "step", "event", **fields}`` as events.jsonl holds it."""

    def close(self) -> None:
        """The run is over (its ``end`` event came before); flush and let go of files."""


class Sinks:
    """The fan-out the loop writes to: every sink sees every row and event, in order."""

    def __init__(self):
        self._sinks: list[Sink] = []
        # Warnings from sink threads wait here until the training thread writes them as events:
        # events are written from one thread only.
        self._warnings: queue.SimpleQueue = queue.SimpleQueue()
        self._step = 0
        self.on_warning = None  # also show a sink's warning elsewhere (execute: on the console)

    def add(self, sink: Sink) -> Sink:
        self._sinks.append(sink)
        return sink

    def __iter__(self):
        return iter(self._sinks)

    def warn(self, message: str, **fields) -> None:
        """Thread-safe: becomes a ``warning`` event at the next row or event (or at close)."""
        self._warnings.put((message, fields))

    def row(self, row: dict) -> None:
        self._step = row.get("step", self._step)
        self._flush_warnings()
        for sink in self._sinks:
            sink.row(row)

    def event(self, step: int, kind: str, fields: dict) -> None:
        self._step = step
        self._flush_warnings()
        self._emit({"time": round(time.time(), 3), "step": step, "event": kind, **fields})

    def close(self) -> None:
        """Close every sink, in order, even when one of them fails; then write what they warned."""
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:  # a sink that fails to close must not keep the others open
                self.warn(f"{type(sink).__name__} failed to close: {type(exc).__name__}: {exc}")
        self._flush_warnings()  # the events file opens per write: it still takes them

    def _emit(self, record: dict) -> None:
        for sink in self._sinks:
            sink.event(record)

    def _flush_warnings(self) -> None:
        while True:
            try:
                message, fields = self._warnings.get_nowait()
            except queue.Empty:
                return
            self._emit({"time": round(time.time(), 3), "step": self._step, "event": "warning",
                        "message": message, **fields})
            if self.on_warning is not None:
                self.on_warning(message)
