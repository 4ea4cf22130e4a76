"""The memory guard: its actions in order, stopping early when memory drains, save-and-stop."""

import pytest

from specrun.engine.guard import MemoryGuard
from specrun.sections import MemoryPolicy

from .conftest import FAST_SPEC, events, index_entries, load_plan, run_inproc, write_spec

MEMORY = """memory {
  ram_limit 1MB
  scope process
  check_every 2 steps
  actions [collect_garbage, recheck, pause, recheck]
  pause 10ms
}
"""
ACTIONS = ["collect_garbage", "recheck", "pause", "recheck"]


class Fake:
    """measure() returns the readings given, then repeats the last; sleep() and empty_cache() are counted."""

    def __init__(self, *readings):
        self.readings = list(readings)
        self.sleeps = []
        self.emptied = 0
        self.said = []
        self.scopes = []

    def measure(self, scope):
        self.scopes.append(scope)
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def sleep(self, seconds):
        self.sleeps.append(seconds)

    def empty(self):
        self.emptied += 1

    def guard(self, **settings):
        return MemoryGuard(MemoryPolicy.of(settings), self.empty, sleep=self.sleep, measure=self.measure)


def test_settings_from_a_spec(tmp_path):
    _, plan = load_plan(write_spec(tmp_path, FAST_SPEC + MEMORY))
    m = plan.settings["memory"]
    assert m["ram_limit"] == 1_000_000 and m["pause"] == pytest.approx(0.01) and m["check_every"] == 2
    guard = MemoryGuard(plan.memory, lambda: None)
    assert guard.active and guard.limit == 1_000_000 and guard.scope == "process"
    assert guard.actions == ACTIONS and guard.still_over_action == "continue"


def test_under_the_limit_nothing_happens():
    f = Fake(500)
    report = f.guard(ram_limit=1000, actions=ACTIONS, pause=5.0).check(f.said.append)
    assert not report.over and report.actions == [] and f.sleeps == [] and f.said == []


def test_stops_at_the_first_recheck_under_the_limit():
    f = Fake(2000, 500)  # over; garbage collection brings it under
    report = f.guard(ram_limit=1000, scope="process", actions=ACTIONS, pause=5.0).check(f.said.append)
    assert report.over and not report.still_over
    assert report.actions == ["collect_garbage", "recheck"]
    assert (report.used_before, report.used_after) == (2000, 500)
    assert f.sleeps == []  # never paused
    assert f.scopes == ["process", "process"]
    assert f.said[0].startswith("[memory guard] RAM") and "over the" in f.said[0]
    assert f.said[-1].startswith("[memory guard] cooled down")


def test_the_pause_runs_when_the_first_recheck_is_still_over():
    f = Fake(2000, 1500, 900)
    report = f.guard(ram_limit=1000, actions=ACTIONS, pause=2.5).check(f.said.append)
    assert report.actions == ACTIONS and f.sleeps == [2.5]
    assert not report.still_over and report.used_after == 900


def test_still_over_after_every_action():
    f = Fake(2000)
    actions = ["collect_garbage", "empty_cache", "pause", "recheck"]
    report = f.guard(ram_limit=1000, actions=actions, pause=0.5, still_over="save_and_stop").check(f.said.append)
    assert report.actions == actions and report.still_over and report.used_after == 2000
    assert f.sleeps == [0.5] and f.emptied == 1
    assert "saving and stopping" in f.said[-1]
    assert [s.split("] ")[1].split(" ")[0] for s in f.said] == ["RAM", "collected", "emptied", "pausing",
                                                                 "rechecked:", "still"]


def test_a_run_over_its_limit_records_each_guard_action(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC.replace("max_steps 12", "max_steps 6") + MEMORY)
    run_dir = tmp_path / "run"
    out = run_inproc(spec, run_dir, quiet=False)
    assert out.code == 0, out.message  # still_over defaults to continue
    guard = events(run_dir, "memory_guard")
    # each action is an event: over the limit, the spec's actions in order, still over at the end
    per_check = ["over"] + ACTIONS + ["still_over"]
    assert [e["step"] for e in guard] == [2] * 6 + [4] * 6 + [6] * 6
    assert [e["action"] for e in guard] == per_check * 3
    assert all(e["used_gb"] > 0.001 for e in guard if e["action"] in ("over", "recheck", "still_over"))
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if line.startswith("[memory guard]")]
    # and a console line each, in the same order
    starts = [line.split("] ", 1)[1].split(" ")[0] for line in lines]
    assert starts == ["RAM", "collected", "rechecked:", "pausing", "rechecked:", "still"] * 3
    assert all("(process)" in line for line in lines[::6])
    assert all(line == "[memory guard] pausing 0.01s to let memory drain" for line in lines[3::6])
    assert all(line.endswith("; continuing") and "collect_garbage, recheck, pause, recheck" in line
               for line in lines[5::6])


def test_a_ram_limit_without_check_every_is_still_guarded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    memory = MEMORY.replace("  check_every 2 steps\n", "")
    spec = write_spec(tmp_path, FAST_SPEC.replace("max_steps 12", "max_steps 20") + memory)
    assert run_inproc(spec, tmp_path / "run").code == 0
    assert sorted({e["step"] for e in events(tmp_path / "run", "memory_guard")}) == [10, 20]  # every 10 steps


def test_still_over_save_and_stop_ends_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stop = MEMORY.replace("pause 10ms", "pause 10ms\n  still_over save_and_stop")
    spec = write_spec(tmp_path, FAST_SPEC + stop)
    run_dir = tmp_path / "run"
    out = run_inproc(spec, run_dir)
    assert (out.status, out.code, out.step) == ("failed", 1, 2)
    assert out.message.startswith("memory guard: RAM at") and "still over the 1 MB limit; saved and stopped" \
        in out.message
    finals = [e for e in index_entries(run_dir) if e["kind"] == "final"]
    assert [(e["file"], e["step"]) for e in finals] == [("final.pt", 2)]
    assert events(run_dir, "memory_guard")[-1]["then"] == "save_and_stop"
    assert events(run_dir, "end")[0]["status"] == "failed"


@pytest.mark.parametrize("n, text", [(50e6, "50 MB"), (1.234e9, "1.23 GB"), (123e9, "123 GB"), (4.5e3, "4.5 kB"), (12, "12 B")])
def test_guard_lines_name_small_limits_in_their_own_unit(n, text):
    from specrun.engine.guard import format_bytes

    assert format_bytes(n) == text
