"""events.jsonl: one strict JSON object a line, appended (phase changes, checkpoints, warnings...)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from specrun.engine.sinks.base import Sink


class EventsFile(Sink):
    def __init__(self, path: Path):
        self.path = Path(path)

    def event(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(strict(record), default=str, allow_nan=False) + "\n")


def strict(value):
    """NaN and infinities as strings: events.jsonl stays strict JSON for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value
