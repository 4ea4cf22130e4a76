"""engine/profiling.py: `profiler { enabled true }` and `--profile-trace` write a torch.profiler
trace into the run directory and the top operators into the events, without changing the run."""

import json

from .conftest import FAST_SPEC, events, run_inproc, train_losses, write_spec

PROFILED = FAST_SPEC + 'profiler {\n  enabled true\n  wait 1\n  warmup 1\n  active 2\n  dir "prof"\n}\n'


def _trace_events(path) -> list:
    return json.loads(path.read_text())["traceEvents"]


def test_the_spec_asks_for_a_trace_on_its_schedule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run_inproc(write_spec(tmp_path, PROFILED), tmp_path / "run")
    assert out.code == 0, out.message
    traces = sorted((tmp_path / "run" / "prof").iterdir())
    assert [p.name for p in traces] == ["trace_step4.json"]  # 1 waited, 1 warmed up, 2 recorded
    assert _trace_events(traces[0])  # Chrome trace JSON, with the recorded operators
    (profile,) = events(tmp_path / "run", "profile")
    assert profile["trace"] == "trace_step4.json" and "Self CPU" in profile["top"]
    reference = run_inproc(write_spec(tmp_path, FAST_SPEC, "plain.train"), tmp_path / "plain")
    assert reference.code == 0, reference.message
    assert train_losses(tmp_path / "run") == train_losses(tmp_path / "plain")  # profiling changes no step


def test_profile_trace_alone_uses_the_default_schedule_and_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run_inproc(write_spec(tmp_path, FAST_SPEC), tmp_path / "run", profile_trace=True)
    assert out.code == 0, out.message
    assert [p.name for p in (tmp_path / "run" / "profile").iterdir()] == ["trace_step5.json"]  # 1 + 1 + 3
    assert [e["trace"] for e in events(tmp_path / "run", "profile")] == ["trace_step5.json"]


def test_no_profiler_no_trace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_inproc(write_spec(tmp_path, FAST_SPEC), tmp_path / "run").code == 0
    assert not (tmp_path / "run" / "profile").exists() and events(tmp_path / "run", "profile") == []
