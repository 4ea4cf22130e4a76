"""`specrun runs`: the table of runs, read back from hand-made run directories."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from specrun.cli.commands import runs_command
from specrun.cli.runs import find_runs, format_duration, list_runs, read_metrics, resolve_run, spec_name

PLAN = {
    "name": "toy",
    "profile": "smoke",
    "curriculum": [{"axis": "size", "phases": [{"name": "small", "promote": "mean(train.accuracy, 10) >= 0.9"},
                                               {"name": "big", "promote": None}]},
                   {"axis": "mode", "phases": [{"name": "easy", "promote": "val.loss < 0.5"},
                                               {"name": "hard", "promote": None}]}],
    "switches": [],
    "settings": {"checkpoint": {"best": {"metric": "val.accuracy"}}},
}
CSV = """step,epoch,segment,phase.size,phase.mode,train.loss,train.accuracy,val.loss,val.accuracy,time
10,0.1,0,small,easy,1.5,0.40,,,1
20,0.2,0,small,easy,1.2,0.60,1.3,0.55,2
30,0.3,0,big,easy,0.9,0.80,0.9,0.81,3
40,0.4,0,big,hard,0.7,0.90,1.1,0.70,4
"""


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists
    return proc.pid


def make_run(base: Path, spec: str, run_id: str, *, status: str = "finished", started: float = 1_700_000_000.0,
             updated: float | None = None, pid: int | None = None, plan: dict | None = None,
             csv: str | None = CSV, events: list[dict] | None = None, step: int = 40,
             phases: dict | None = None) -> Path:
    path = base / spec / run_id
    path.mkdir(parents=True)
    (path / "plan.json").write_text(json.dumps({**(plan or PLAN), "name": spec}))
    (path / "run.json").write_text(json.dumps({
        "status": status, "spec": spec, "started": started, "step": step,
        "phases": phases if phases is not None else {"size": "big", "mode": "hard"},
        "pid": pid if pid is not None else 999_999, "host": socket.gethostname(),
        "updated": updated if updated is not None else started + 125, "message": f"{status} message"}))
    if csv is not None:
        (path / "metrics.csv").write_text(csv)
    lines = [json.dumps(e) for e in (events or [])]
    (path / "events.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def test_statuses_best_phases_and_duration(tmp_path):
    base = tmp_path / "runs"
    make_run(base, "toy", "a-finished", started=1_700_000_000)
    make_run(base, "toy", "b-failed", status="failed", started=1_700_000_100)
    make_run(base, "toy", "c-killed", status="running", pid=dead_pid(), started=1_700_000_200)
    live = make_run(base, "toy", "d-live", status="running", pid=os.getpid(), started=time.time() - 30)
    make_run(base, "other", "e-interrupted", status="interrupted", started=1_700_000_300)

    runs = {r.run_id: r for r in list_runs(None, base)}
    assert {k: r.status for k, r in runs.items()} == {
        "a-finished": "finished", "b-failed": "failed", "c-killed": "interrupted",
        "d-live": "running", "e-interrupted": "interrupted"}
    # a SIGKILLed run says so in its message instead of a stale one
    assert "is gone" in runs["c-killed"].message
    a = runs["a-finished"]
    assert a.best.metric == "val.accuracy" and a.best.value == pytest.approx(0.81) and a.best.step == 30
    assert a.phases == {"size": "big", "mode": "hard"}
    assert a.duration_s == pytest.approx(125)
    # a live run's duration runs up to now, not to its last status update
    assert runs["d-live"].duration_s == pytest.approx(30, abs=10)
    assert str(live) == runs["d-live"].path


def test_a_killed_runs_step_comes_from_its_log_when_run_json_lags(tmp_path):
    """run.json's progress is written at most once a second: a run killed early still says step 40."""
    base = tmp_path / "runs"
    make_run(base, "toy", "killed", status="running", pid=dead_pid(), step=0)
    make_run(base, "toy", "done", status="finished", step=40)
    runs = {r.run_id: r for r in list_runs(None, base)}
    assert runs["killed"].status == "interrupted" and runs["killed"].step == 40
    assert runs["done"].step == 40


def test_table_columns_and_order(tmp_path):
    base = tmp_path / "runs"
    make_run(base, "toy", "late", started=1_700_000_500)
    make_run(base, "toy", "early", started=1_700_000_000, status="running", pid=dead_pid())
    result = CliRunner().invoke(runs_command, ["--base", str(base)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["SPEC", "RUN", "PROFILE", "OVERRIDES", "STATUS", "STEP", "PHASE", "BEST", "STARTED",
                                "DURATION"]
    assert [ln.split()[1] for ln in lines[1:]] == ["early", "late"]  # oldest first
    late = lines[2]
    assert "finished" in late and "size=big, mode=hard" in late and "val.accuracy 0.81 @30" in late
    assert late.split()[2:4] == ["smoke", "-"]
    assert "2m05s" in late
    assert "interrupted" in lines[1]


def test_profile_and_overrides_tell_runs_of_one_spec_apart(tmp_path):
    make_run(tmp_path, "toy", "a", plan={**PLAN, "overrides": ["optimizer.lr=1e-3", "batch=8"]})
    make_run(tmp_path, "toy", "b", plan={**PLAN, "profile": None, "overrides": ["x" * 60]})
    make_run(tmp_path, "toy", "c", plan={**PLAN, "profile": 3, "overrides": "not a list"})  # untrusted plan.json
    lines = CliRunner().invoke(runs_command, ["toy", "--base", str(tmp_path)]).output.splitlines()
    cells = {line.split()[1]: line.split()[2:4] for line in lines[1:]}
    assert cells["a"] == ["smoke", "optimizer.lr=1e-3,batch=8"]
    assert cells["b"] == ["-", "x" * 37 + "..."] and cells["c"] == ["-", "-"]
    rows = {r["run_id"]: r for r in json.loads(CliRunner().invoke(
        runs_command, ["toy", "--base", str(tmp_path), "--json"]).output)}
    assert rows["a"]["overrides"] == ["optimizer.lr=1e-3", "batch=8"] and rows["b"]["profile"] is None


def test_best_falls_back_to_val_loss_and_to_events(tmp_path):
    base = tmp_path / "runs"
    plan = {**PLAN, "settings": {}}  # no checkpoint.best: judged by val.loss, lower is better
    make_run(base, "toy", "csv", plan=plan)
    events = [{"time": 1, "step": 50, "event": "validation", "metrics": {"loss": 0.42, "accuracy": 0.9}},
              {"time": 2, "step": 100, "event": "validation", "metrics": {"loss": 0.47, "accuracy": 0.93}}]
    make_run(base, "toy", "events", plan=plan, csv="step,train.loss\n10,1.0\n", events=events)
    runs = {r.run_id: r for r in list_runs("toy", base)}
    assert (runs["csv"].best.metric, runs["csv"].best.value, runs["csv"].best.step) == ("val.loss", 0.9, 30)
    assert (runs["events"].best.value, runs["events"].best.step) == (0.42, 50)


def test_best_mode_max_for_a_loss_named_metric(tmp_path):
    plan = {**PLAN, "settings": {"checkpoint": {"best": {"metric": "val.loss", "mode": "max"}}}}
    make_run(tmp_path, "toy", "r", plan=plan)
    (run,) = list_runs("toy", tmp_path)
    assert run.best.value == 1.3


def test_resumed_metrics_last_row_wins(tmp_path):
    csv = "step,segment,train.loss\n10,0,1.0\n20,0,0.9\n30,0,0.8\n20,1,0.95\n30,1,0.85\n40,1,0.7\n"
    path = make_run(tmp_path, "toy", "r", csv=csv)
    assert read_metrics(path)["train.loss"] == [(10, 1.0), (20, 0.95), (30, 0.85), (40, 0.7)]


def test_torn_event_line_and_missing_files(tmp_path):
    path = make_run(tmp_path, "toy", "r", csv=None, events=[{"time": 1, "step": 0, "event": "start"}])
    with open(path / "events.jsonl", "a") as fh:
        fh.write('{"time": 2, "step": 5, "ev')  # a writer killed mid-line
    (run,) = list_runs("toy", tmp_path)
    assert run.best.value is None and run.status == "finished"
    bare = tmp_path / "toy" / "bare"
    bare.mkdir()
    (bare / "plan.json").write_text(json.dumps(PLAN))  # created, never reached set_status
    assert {r.run_id: r.status for r in list_runs("toy", tmp_path)}["bare"] == "unknown"


def test_json_output(tmp_path):
    make_run(tmp_path, "toy", "r", status="running", pid=dead_pid())
    result = CliRunner().invoke(runs_command, ["toy", "--base", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["status"] == "interrupted" and row["run_id"] == "r" and row["spec"] == "toy"
    assert row["best"] == {"metric": "val.accuracy", "value": 0.81, "step": 30}
    assert row["phases"] == {"size": "big", "mode": "hard"} and row["step"] == 40
    assert row["started_iso"].startswith("2023-11-1")


def test_spec_given_as_train_path(tmp_path):
    make_run(tmp_path / "runs", "named_in_file", "r")
    make_run(tmp_path / "runs", "someone_else", "s")
    spec = tmp_path / "whatever.train"
    spec.write_text("# a comment\nspec named_in_file\nseed 0\n")
    assert spec_name(str(spec)) == "named_in_file"
    assert [p.name for p in find_runs(str(spec), tmp_path / "runs")] == ["r"]
    result = CliRunner().invoke(runs_command, [str(spec), "--base", str(tmp_path / "runs")])
    assert result.exit_code == 0 and "named_in_file" in result.output and "someone_else" not in result.output


def test_no_runs(tmp_path):
    result = CliRunner().invoke(runs_command, ["--base", str(tmp_path / "nothing")])
    assert result.exit_code == 0 and "no runs" in result.output
    result = CliRunner().invoke(runs_command, ["--base", str(tmp_path / "nothing"), "--json"])
    assert json.loads(result.output) == []


def test_resolve_run(tmp_path):
    make_run(tmp_path, "toy", "old", started=1_700_000_000)
    newest = make_run(tmp_path, "toy", "new", started=1_700_000_900)
    assert resolve_run("toy", tmp_path) == newest
    assert resolve_run(str(tmp_path / "toy" / "old"), tmp_path).name == "old"
    assert resolve_run(str(tmp_path / "toy"), tmp_path) == newest
    with pytest.raises(FileNotFoundError, match="no runs of spec 'absent'"):
        resolve_run("absent", tmp_path)


@pytest.mark.parametrize("seconds, text", [(None, "-"), (4.4, "4s"), (65, "1m05s"), (3 * 3600 + 120, "3h02m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
