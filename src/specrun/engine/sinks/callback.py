"""A function as a sink: the Python API's ``on_metrics`` callback (``specrun.run(..., on_metrics=f)``)."""

from __future__ import annotations

from specrun.engine.sinks.base import Sink


class Callback(Sink):
    def __init__(self, on_row):
        self.on_row = on_row

    def row(self, row: dict) -> None:
        self.on_row(dict(row))  # a copy: what the caller keeps or changes is not the other sinks' row
