"""TensorBoard output for ``log { tensorboard true }``.

A thin wrapper over ``torch.utils.tensorboard.SummaryWriter``: every numeric value
of a metrics row becomes a scalar (``train.loss`` -> tag ``train/loss``), and run
events (phase changes, checkpoints, skips, ...) become text entries under
``events/<kind>``. metrics.csv stays the record; this is a view of it.

The ``tensorboard`` package is optional (``pip install 'specrun[tensorboard]'``);
without it the constructor raises ``TensorBoardUnavailable`` with that advice.
"""

from __future__ import annotations

import json
import math
from numbers import Real
from pathlib import Path

from specrun.engine.sinks.base import Sink, SinkUnavailable

INSTALL = "pip install 'specrun[tensorboard]'"
# Columns that are the x axis or wall time, not a quantity to chart.
SKIP = {"step", "time"}


class TensorBoardUnavailable(SinkUnavailable):
    """``log.tensorboard`` is on but the tensorboard package cannot be imported."""


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch raises ImportError when `import tensorboard` fails
        raise TensorBoardUnavailable(
            f"log.tensorboard is on but the tensorboard package is not installed: {INSTALL}") from exc
    return SummaryWriter


def tag(column: str) -> str:
    """``train.loss`` -> ``train/loss``; ``phase.size`` -> ``phase/size``; ``epoch`` stays."""
    return column.replace(".", "/")


class TensorBoardLog(Sink):
    def __init__(self, log_dir):
        writer_class = _summary_writer()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = writer_class(log_dir=str(self.log_dir))

    def row(self, row: dict) -> None:
        """Every numeric value of a metrics row (strings such as phase names are skipped)."""
        if self._writer is None:
            return
        step = int(row["step"])
        for column, value in row.items():
            if column in SKIP or isinstance(value, bool) or not isinstance(value, Real):
                continue
            value = float(value)
            if math.isinf(value):
                continue
            self._writer.add_scalar(tag(column), value, global_step=step)

    def event(self, record: dict) -> None:
        """A run event as text under ``events/<kind>`` (shown in TensorBoard's Text tab)."""
        if self._writer is None:
            return
        kind = record["event"]
        fields = {k: v for k, v in record.items() if k not in ("time", "step", "event")}
        self._writer.add_text(f"events/{kind}", describe_event(kind, fields), global_step=int(record["step"]))
        if kind in ("phase", "end", "resume"):
            self._writer.flush()  # rare and worth seeing at once

    def close(self) -> None:
        """Flush and close; later calls are ignored (safe to call twice)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def describe_event(kind: str, fields: dict) -> str:
    if kind == "phase" and {"old", "new"} <= set(fields):
        text = f"promoted {fields.get('axis', 'curriculum')}: {fields['old']} -> {fields['new']}"
        values = fields.get("values") or {}
        if values:
            text += " (" + ", ".join(f"{k}={_short(v)}" for k, v in values.items()) + ")"
        return text
    if not fields:
        return kind
    parts = []
    for key, value in fields.items():
        if isinstance(value, dict) and value:  # validation metrics, guard values: inline
            parts += [f"{k}={_short(v)}" for k, v in value.items()]
        else:
            parts.append(f"{key}={_short(value)}")
    return f"{kind}: " + ", ".join(parts)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


SETTING = "tensorboard"  # log { tensorboard true }: written to <run>/tensorboard


def open_sink(opening) -> TensorBoardLog:
    return TensorBoardLog(opening.run_dir.path / "tensorboard")
