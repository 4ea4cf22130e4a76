"""Background and Subprocess: a sink on its own thread or process never slows or stops the run;
its first error is one warning."""

from __future__ import annotations

import threading

from specrun.engine.sinks.background import Background
from specrun.engine.sinks.process import Subprocess
from specrun.engine.sinks.base import Sink


class Collect(Sink):
    def __init__(self, fail_at=None, gate=None):
        self.rows, self.flushes, self.closed = [], 0, False
        self.fail_at, self.gate = fail_at, gate

    def row(self, row):
        if self.gate is not None:
            self.gate.wait()
        if row["step"] == self.fail_at:
            raise OSError(28, "No space left on device")
        self.rows.append(row["step"])

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


def warnings_list():
    said = []
    return said, lambda message, **fields: said.append((message, fields))


def test_everything_arrives_in_order_then_close():
    said, warn = warnings_list()
    sink = Collect()
    bg = Background("t", lambda: sink, warn)
    for step in range(1, 201):
        bg.row({"step": step})
    bg.close()
    assert sink.rows == list(range(1, 201)) and sink.closed and said == []
    assert 1 <= sink.flushes <= 200  # what waited went out in batches


def test_a_failing_write_is_one_warning_and_the_rest_is_dropped():
    said, warn = warnings_list()
    sink = Collect(fail_at=3)
    bg = Background("tracker", lambda: sink, warn)
    for step in range(1, 50):
        bg.row({"step": step})
    bg.close()
    assert sink.rows == [1, 2]
    assert said == [("tracker failed: OSError: [Errno 28] No space left on device; it records nothing more for "
                     "this run (training goes on; metrics.csv is complete)", {"sink": "tracker"})]


def test_a_sink_that_cannot_open_is_one_warning():
    said, warn = warnings_list()

    def opener():
        raise ConnectionRefusedError("server down")

    bg = Background("mlflow", opener, warn)
    for step in range(1, 10):
        bg.row({"step": step})
    bg.close()
    assert [m for m, _ in said] == ["mlflow could not start: ConnectionRefusedError: server down; it records "
                                    "nothing more for this run (training goes on; metrics.csv is complete)"]


def test_a_stuck_sink_never_blocks_the_caller():
    said, warn = warnings_list()
    gate = threading.Event()
    sink = Collect(gate=gate)
    bg = Background("slow", lambda: sink, warn, capacity=5, close_timeout=0.2)
    for step in range(1, 100):  # the worker holds one row, five wait: the rest are dropped, not waited for
        bg.row({"step": step})
    bg.close()  # gives up after 0.2 s
    assert [m.split(" (")[0] for m, _ in said] == ["slow falls behind the training",
                                                   "slow did not finish within 0.2s after the run ended; what it "
                                                   "had not sent yet is lost"]
    gate.set()


class Flaky(Sink):
    """Built in the worker process by Subprocess: fails on the row of step ``fail_at``, writes what it got."""

    def __init__(self, path, fail_at, warn):
        self.path, self.fail_at = path, fail_at
        warn(f"flaky opened, failing at step {fail_at}")

    def row(self, row):
        if row["step"] == self.fail_at:
            raise OSError(28, "No space left on device")
        with open(self.path, "a") as fh:
            fh.write(f"{row['step']}\n")


def test_a_tracker_process_fails_once_and_the_caller_goes_on(tmp_path):
    said, warn = warnings_list()
    sink = Subprocess("flaky", f"{__name__}:Flaky", (str(tmp_path / "got.txt"), 4), warn)
    for step in range(1, 30):
        sink.row({"step": step})
    sink.close()
    assert (tmp_path / "got.txt").read_text().split() == ["1", "2", "3"]
    assert said == [("flaky opened, failing at step 4", {"sink": "flaky"}),
                    ("flaky failed: OSError: [Errno 28] No space left on device; it records nothing more for "
                     "this run (training goes on; metrics.csv is complete)", {"sink": "flaky"})]
    assert not sink._worker.is_alive()


class Dies(Sink):
    def __init__(self, warn):
        pass

    def row(self, row):
        import os

        os._exit(3)  # killed mid-write: no word from the worker


def test_a_tracker_process_that_dies_is_reported_at_close(tmp_path):
    said, warn = warnings_list()
    sink = Subprocess("dies", f"{__name__}:Dies", (), warn)
    sink.row({"step": 1})
    sink.close()
    assert said == [("dies's process ended with exit code 3; what it had not sent is lost (training went on; "
                     "metrics.csv is complete)", {"sink": "dies"})]


class Stuck(Sink):
    def __init__(self, warn):
        import time

        time.sleep(30)  # still opening when the run is over


def test_a_stuck_tracker_process_never_blocks_the_caller():
    said, warn = warnings_list()
    sink = Subprocess("stuck", f"{__name__}:Stuck", (), warn, capacity=3, close_timeout=0.5)
    for step in range(1, 10):
        sink.row({"step": step})
    sink.close()
    assert [m.split(" (")[0] for m, _ in said] == ["stuck falls behind the training",
                                                   "stuck did not finish within 0.5s after the run ended; what it "
                                                   "had not sent yet is lost"]
    assert not sink._worker.is_alive()  # terminated
