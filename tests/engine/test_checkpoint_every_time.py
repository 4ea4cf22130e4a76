"""`checkpoint { every 30min }`: a wall-clock interval, beside step and epoch intervals."""

from __future__ import annotations

import specrun
from specrun.engine.clock import WallClock

from .conftest import FAST_SPEC, events, run_inproc, write_spec


def test_wall_clock_is_due_once_per_interval(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("specrun.engine.clock.time.monotonic", lambda: now[0])
    clock = WallClock(1800)
    now[0] += 1799
    assert not clock.due()
    now[0] += 1
    assert clock.due() and not clock.due()  # counted again from the save
    now[0] += 1800
    assert clock.due()


def test_the_plan_keeps_a_time_apart_from_steps(tmp_path):
    path = write_spec(tmp_path, FAST_SPEC)
    plan = specrun.build_plan(path, overrides=["checkpoint.every=[4 steps, 30min]"])
    assert plan.settings["checkpoint"]["every"] == [4, {"seconds": 1800.0}]
    assert specrun.build_plan(path, overrides=["checkpoint.every=2h"]).settings["checkpoint"]["every"] == \
        {"seconds": 7200.0}


def test_a_run_checkpoints_by_the_clock(tmp_path):
    spec = write_spec(tmp_path, FAST_SPEC)
    run_inproc(spec, tmp_path / "often", sets=("checkpoint.every=1ms",))  # every step takes longer
    regular = [e["step"] for e in events(tmp_path / "often", "checkpoint") if e["kind"] == "regular"]
    assert len(regular) >= 6 and regular == sorted(regular)
    run_inproc(spec, tmp_path / "rarely", sets=("checkpoint.every=1h",))
    kinds = [e["kind"] for e in events(tmp_path / "rarely", "checkpoint")]
    assert kinds == ["final"]
