"""The end of a run: the summary (event, API, console), progress off a terminal, and the rows."""

from __future__ import annotations

import signal

import pytest
from click.testing import CliRunner

import specrun
from specrun.cli import main

from .conftest import FAST_SPEC, csv_rows, events, run_inproc, write_spec

SPEC = FAST_SPEC + """validation {
  every 6 steps
  batches 2
}
checkpoint.best { metric val.accuracy }
expect train.loss < 2 * first(train.loss) by 4 steps
expect count(val.loss) >= 2
"""


def test_summary_event_says_how_the_run_went(tmp_path):
    result = specrun.run(write_spec(tmp_path, SPEC), run_dir=str(tmp_path / "run"))
    assert result.ok
    (summary,) = events(tmp_path / "run", "summary")
    assert [e["event"] for e in events(tmp_path / "run")][-2:] == ["summary", "end"]
    assert result.summary == {k: v for k, v in summary.items() if k not in ("time", "event")}
    assert summary["run_dir"] == str(tmp_path / "run") and summary["step"] == 12 and summary["total_steps"] == 12
    assert summary["duration_s"] > 0 and summary["status"] == "finished"
    assert summary["phases"] == {"curriculum": "b"}
    assert summary["promotions"] == [{"step": 3, "axis": "curriculum", "old": "a", "new": "b"}]
    assert summary["final"]["val.loss"] == events(tmp_path / "run", "validation")[-1]["metrics"]["loss"]
    assert summary["best"]["metric"] == "val.accuracy" and summary["best"]["step"] in (6, 12)
    assert [(e["expect"], e["outcome"]) for e in summary["expectations"]] == [
        ("train.loss < 2 * first(train.loss)", "met"), ("count(val.loss) >= 2", "met")]
    assert {k: v["path"] for k, v in summary["checkpoints"].items()} == {
        "final": str(tmp_path / "run" / "checkpoints" / "final.pt"),
        "best": str(tmp_path / "run" / "checkpoints" / "best.pt"),
        "latest": str(tmp_path / "run" / "checkpoints" / "final.pt")}
    assert summary["next"] == {"plot": f"specrun plot {tmp_path / 'run'}",
                               "export": f"specrun export {tmp_path / 'run'} --which best"}


def test_a_missed_expectation_is_in_the_summary(tmp_path):
    spec = write_spec(tmp_path, SPEC.replace("count(val.loss) >= 2", "count(val.loss) >= 5"))
    result = specrun.run(spec, run_dir=str(tmp_path / "run"))
    assert result.status == "failed" and "expectation broken" in result.message
    assert [e["outcome"] for e in result.summary["expectations"]] == ["met", "missed"]


def test_warn_only_expectations_are_warned_and_the_run_finishes(tmp_path):
    """`expect ... warn`: the run goes on, and the summary says which held and which did not."""
    text = write_spec(tmp_path, FAST_SPEC).read_text() + (
        "expect train.loss < 0.0001 at end warn\n"
        "expect train.loss < 1000 throughout\n")
    spec = tmp_path / "warn.train"
    spec.write_text(text)
    result = specrun.run(spec, run_dir=str(tmp_path / "run"))
    assert result.status == "finished"
    outcomes = [e["outcome"] for e in result.summary["expectations"]]
    assert outcomes[-2:] == ["warned", "met"]


def test_an_interrupted_run_summary_says_how_to_continue(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    signal_at(5, signal.SIGINT)
    out = run_inproc(write_spec(tmp_path, SPEC), tmp_path / "run")
    assert out.summary["next"]["continue"] == f"specrun run {tmp_path / 'spec.train'} --run-dir {tmp_path / 'run'}"
    assert out.summary["expectations"][1]["outcome"].startswith("not judged")


def test_run_prints_the_summary_unless_quiet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, SPEC)
    result = CliRunner().invoke(main, ["run", "spec.train", "--run-dir", "run"])
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "  run         run " in err and "  best        val.accuracy" in err
    assert "  expect      met: train.loss < 2 * first(train.loss) by step 4" in err
    assert "  next        specrun plot run" in err and result.stdout == "finished: finished 12 steps\n"
    quiet = CliRunner().invoke(main, ["run", "spec.train", "--run-dir", "run2", "-q"])
    assert quiet.stderr == "" and quiet.stdout == "finished: finished 12 steps\n"


def test_progress_lines_without_a_terminal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, FAST_SPEC)
    result = CliRunner().invoke(main, ["run", "spec.train", "--run-dir", "run", "--progress", "0.000001"])
    lines = [line for line in result.stderr.splitlines() if "steps/s" in line]
    assert len(lines) == 12 and lines[-1].startswith("b | step 12/12 | ") and "\r" not in result.stderr
    silent = CliRunner().invoke(main, ["run", "spec.train", "--run-dir", "run2", "--progress", "0"])
    assert "steps/s" not in silent.stderr


def test_the_progress_rate_counts_steps_between_log_rows(tmp_path, monkeypatch):
    """Steps between log rows are read back only at the next row; the rate still counts them."""
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, FAST_SPEC.replace("log { every 1 step }", "log { every 5 steps }"))
    result = CliRunner().invoke(main, ["run", "spec.train", "--run-dir", "run", "--progress", "0.000001"])
    rates = [float(line.split(" | ")[2].split()[0]) for line in result.stderr.splitlines() if "steps/s" in line]
    assert len(rates) == 12 and min(rates) > 0, rates


def test_progress_interval_from_the_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, FAST_SPEC.replace("log { every 1 step }", "log {\n  every 1 step\n  progress 1ms\n}"))
    result = CliRunner().invoke(main, ["run", "spec.train", "--run-dir", "run"])
    assert sum("steps/s" in line for line in result.stderr.splitlines()) >= 6  # 12 steps of a few ms each


def test_rows_report_loss_and_lr_at_their_step_and_the_window_mean(tmp_path):
    every_step = tmp_path / "a"
    run_inproc(write_spec(tmp_path, FAST_SPEC), every_step)
    run_inproc(write_spec(tmp_path, FAST_SPEC.replace("every 1 step", "every 3 steps")), tmp_path / "b")
    _, each = csv_rows(every_step / "metrics.csv")
    columns, rows = csv_rows(tmp_path / "b" / "metrics.csv")
    assert columns.index("train.loss_mean") == columns.index("train.loss") + 1
    by_step = {int(r["step"]): r for r in each}
    for row in rows:
        step = int(row["step"])
        assert row["train.loss"] == by_step[step]["train.loss"] and row["train.lr"] == by_step[step]["train.lr"]
        window = [float(by_step[s]["train.loss"]) for s in range(step - 2, step + 1)]
        assert float(row["train.loss_mean"]) == pytest.approx(sum(window) / 3, rel=1e-5)


def test_rows_without_a_log_block(tmp_path):
    text = FAST_SPEC.replace("log { every 1 step }\n", "")
    assert specrun.build_plan(write_spec(tmp_path, text.replace("max_steps 12", "max_steps 5000"))) \
        .settings["log"]["every"] == 50
    run_inproc(write_spec(tmp_path, text), tmp_path / "run")
    _, rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 13))  # 12 steps: a row every step
