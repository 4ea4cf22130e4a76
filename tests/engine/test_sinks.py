"""The sink seam: every metrics row and event reaches every sink, in order, then close.

A sink is the one place a run's record goes (engine/sinks); the loop names none of them.
"""

from __future__ import annotations

import threading

import pytest

from specrun.engine.sinks.base import Sink, Sinks
from specrun.engine.sinks.events import EventsFile

from .conftest import FAST_SPEC, csv_rows, events, run_inproc, write_spec


class Recorder(Sink):
    def __init__(self):
        self.rows, self.events, self.closed = [], [], 0

    def row(self, row):
        self.rows.append(row)

    def event(self, record):
        self.events.append(record)

    def close(self):
        self.closed += 1


@pytest.fixture
def recorder(monkeypatch):
    """A Recorder joined to the run's sinks where execute() opens the spec's log sinks."""
    from specrun.engine import execute

    sink = Recorder()
    opened = execute.open_log_sinks

    def open_with_recorder(plan, run_dir, runs_base="runs"):
        run_dir.sinks.add(sink)
        return opened(plan, run_dir, runs_base)

    monkeypatch.setattr(execute, "open_log_sinks", open_with_recorder)
    return sink


def test_a_sink_sees_every_row_and_event_then_close(tmp_path, recorder):
    run_dir = tmp_path / "run"
    out = run_inproc(write_spec(tmp_path, FAST_SPEC), run_dir)
    assert out.code == 0, out.message

    _, rows = csv_rows(run_dir / "metrics.csv")
    assert [r["step"] for r in recorder.rows] == [int(r["step"]) for r in rows] == list(range(1, 13))
    assert [float(r["train.loss"]) for r in rows] == pytest.approx([r["train.loss"] for r in recorder.rows],
                                                                   rel=1e-5)
    # events.jsonl is a sink like any other: the same records, in the same order
    recorded = recorder.events
    assert [(e["step"], e["event"]) for e in recorded] == [(e["step"], e["event"]) for e in events(run_dir)]
    assert recorded[-1]["event"] == "end" and recorder.closed == 1


def test_warnings_from_other_threads_become_events_on_the_training_thread(tmp_path):
    sinks = Sinks()
    sinks.add(EventsFile(tmp_path / "events.jsonl"))
    seen = sinks.add(Recorder())
    worker = threading.Thread(target=lambda: sinks.warn("tracker x failed: boom", sink="x"))
    worker.start()
    worker.join()
    assert seen.events == []  # not written from the worker thread
    sinks.row({"step": 5, "train.loss": 1.0})
    assert [(e["step"], e["event"], e["message"], e["sink"]) for e in events(tmp_path)] == \
        [(5, "warning", "tracker x failed: boom", "x")]
    assert seen.events[0]["message"] == "tracker x failed: boom"


def test_a_sink_that_fails_to_close_leaves_the_others_closed_and_says_so(tmp_path):
    class Broken(Sink):
        def close(self):
            raise OSError(28, "No space left on device")

    sinks = Sinks()
    sinks.add(EventsFile(tmp_path / "events.jsonl"))
    sinks.add(Broken())
    after = sinks.add(Recorder())
    sinks.event(7, "end", {"status": "finished"})
    sinks.close()
    assert after.closed == 1
    (warning,) = events(tmp_path, "warning")
    assert warning["step"] == 7
    assert warning["message"] == "Broken failed to close: OSError: [Errno 28] No space left on device"


def test_the_specs_own_csv_is_a_sink_too(tmp_path):
    spec = FAST_SPEC.replace("log { every 1 step }", """log {
  every 4 steps
  csv "logs/train.csv"
  columns ["step", "loss:train.loss", "phase", "lr:optimizer.lr"]
}""")
    run_dir = tmp_path / "run"
    assert run_inproc(write_spec(tmp_path, spec), run_dir).code == 0
    header, rows = csv_rows(run_dir / "logs" / "train.csv")
    _, metrics = csv_rows(run_dir / "metrics.csv")
    assert header == ["step", "loss", "phase", "lr"]
    assert [(r["step"], r["loss"]) for r in rows] == [(m["step"], m["train.loss"]) for m in metrics]
    assert [r["phase"] for r in rows] == ["1", "1", "1"]  # promoted to b (index 1) at step 3
    assert {r["lr"] for r in rows} == {"0.01"}


def test_the_api_callback_gets_a_copy_of_each_row():
    """specrun.run(..., on_metrics=f): whatever f does to its row, the other sinks' row is as logged."""
    from specrun.engine.sinks.callback import Callback

    seen, sinks, recorder = [], Sinks(), Recorder()

    def meddle(row):
        seen.append(dict(row))
        row["train.loss"] = -1.0
        row.clear()

    sinks.add(Callback(meddle))
    sinks.add(recorder)
    sinks.row({"step": 1, "train.loss": 0.5})
    sinks.event(1, "checkpoint", {"file": "step_1.pt"})  # rows only: an event is not the callback's
    assert seen == [{"step": 1, "train.loss": 0.5}] and recorder.rows == [{"step": 1, "train.loss": 0.5}]
    assert [(e["step"], e["event"], e["file"]) for e in recorder.events] == [(1, "checkpoint", "step_1.pt")]
