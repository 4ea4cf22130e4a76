"""TensorBoard output for ``log { tensorboard true }`` (or ``tensorboard { hparams false }``).

A thin wrapper over ``torch.utils.tensorboard.SummaryWriter``: every numeric value
of a metrics row becomes a scalar (``train.loss`` -> tag ``train/loss``), and run
events (phase changes, checkpoints, skips, ...) become text entries under
``events/<kind>``. At the end, the HParams tab gets the resolved plan's settings
against the run's metrics (their last values), unless ``hparams false``.
metrics.csv stays the record; this is a view of it, written off the training
thread (``Background``).

The ``tensorboard`` package is optional (``pip install 'specrun[tensorboard]'``);
without it the constructor raises ``TensorBoardUnavailable`` with that advice.
"""

from __future__ import annotations

import json
import math
from numbers import Real
from pathlib import Path

from specrun.engine.sinks.background import Background
from specrun.engine.sinks.base import Sink, SinkUnavailable
from specrun.engine.sinks.tracking import plan_params, require

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
    def __init__(self, log_dir, hparams: dict | None = None):
        """``hparams``: flat settings for the HParams tab, written at close against the metrics seen."""
        writer_class = _summary_writer()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = writer_class(log_dir=str(self.log_dir))
        self._hparams = hparams
        self._metrics: dict[str, float] = {}  # tag -> last value

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
            self._metrics[tag(column)] = value

    def event(self, record: dict) -> None:
        """A run event as text under ``events/<kind>`` (shown in TensorBoard's Text tab)."""
        if self._writer is None:
            return
        kind = record["event"]
        fields = {k: v for k, v in record.items() if k not in ("time", "step", "event")}
        self._writer.add_text(f"events/{kind}", describe_event(kind, fields), global_step=int(record["step"]))
        if kind in ("phase", "end", "resume"):
            self._writer.flush()  # rare and worth seeing at once

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Write the hparams, flush and close; later calls are ignored (safe to call twice)."""
        if self._writer is None:
            return
        if self._hparams and self._metrics:
            from torch.utils.tensorboard.summary import hparams

            # The HParams plugin reads each metric's values from the scalars of the same run.
            for summary in hparams({k: _hparam(v) for k, v in self._hparams.items()}, self._metrics):
                self._writer.file_writer.add_summary(summary)
        self._writer.close()
        self._writer = None


def _hparam(value):
    """What the HParams plugin takes: numbers, strings, booleans (None and the rest as text)."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


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


def open_sink(opening) -> Background:
    require("tensorboard", SETTING, "tensorboard")
    settings = opening.settings if isinstance(opening.settings, dict) else {}
    params = plan_params(opening.plan.to_json()) if settings.get("hparams", True) else None
    log_dir = opening.run_dir.path / "tensorboard"
    return Background(SETTING, lambda: TensorBoardLog(log_dir, params), opening.run_dir.sinks.warn)
