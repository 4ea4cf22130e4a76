"""metrics.csv is append-only: resuming appends, never truncates, keeps one header and its columns."""

import signal

from specrun.engine.rundir import CsvLog

from .conftest import FAST_SPEC, csv_rows, events, run_inproc, write_spec


def test_csvlog_appends_under_the_original_header(tmp_path):
    path = tmp_path / "m.csv"
    log = CsvLog(path, ["step", "a", "b"])
    log.write({"step": 1, "a": 0.5, "b": 2})
    log.write({"step": 2, "a": 0.25})
    first = path.read_bytes()

    again = CsvLog(path, ["step", "a", "c"])  # a resumed run that logs other columns
    assert again.columns == ["step", "a", "b"]
    again.write({"step": 3, "a": 1.5, "c": 9})
    text = path.read_bytes()
    assert text.startswith(first)
    lines = text.decode().splitlines()
    assert lines == ["step,a,b", "1,0.5,2", "2,0.25,", "3,1.5,"]


def test_each_row_reaches_the_file_before_the_log_closes(tmp_path):
    """The file stays open for the run; a process killed between rows loses none of them."""
    path = tmp_path / "m.csv"
    log = CsvLog(path, ["x"])
    for x in range(3):
        log.write({"x": x})
        assert path.read_text().splitlines()[-1] == str(x)
    log.close()
    log.close()  # twice: the run's end and a failing sink's cleanup may both close it
    log.write({"x": 3})  # a row after close (a sink written to at the very end) opens it again
    log.close()
    assert path.read_text().splitlines() == ["x", "0", "1", "2", "3"]


def test_csvlog_on_an_empty_file_writes_the_header(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("")
    CsvLog(path, ["x", "y"]).write({"x": 1, "y": 2})
    assert path.read_text().splitlines() == ["x,y", "1,2"]


def test_disabled_csvlog_writes_nothing(tmp_path):
    path = tmp_path / "m.csv"
    log = CsvLog(path, ["x"], enabled=False)
    log.write({"x": 1})
    assert not path.exists()


def test_resume_appends_and_counts_segments(interrupted, signal_at):
    spec, run_dir = interrupted(5)
    first = (run_dir / "metrics.csv").read_bytes()
    signal_at(9, signal.SIGTERM)
    assert run_inproc(spec, run_dir).code == 143
    second = (run_dir / "metrics.csv").read_bytes()
    assert run_inproc(spec, run_dir).code == 0
    third = (run_dir / "metrics.csv").read_bytes()

    assert second.startswith(first) and third.startswith(second)  # never truncated
    text = third.decode()
    assert text.count("step,epoch,segment") == 1  # one header
    header, rows = csv_rows(run_dir / "metrics.csv")
    assert header[:3] == ["step", "epoch", "segment"]
    assert [(int(r["step"]), int(r["segment"])) for r in rows] == \
        [(s, 0) for s in range(1, 6)] + [(s, 1) for s in range(6, 10)] + [(s, 2) for s in range(10, 13)]
    assert [e["segment"] for e in events(run_dir, "start")] == [0, 1, 2]


def test_changed_columns_keep_the_original_header(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    signal_at(4, signal.SIGINT)
    assert run_inproc(write_spec(tmp_path, FAST_SPEC), run_dir).code == 130
    header_before, _ = csv_rows(run_dir / "metrics.csv")
    assert "ram_gb" not in header_before and "val.loss" not in header_before

    changed = FAST_SPEC.replace("log { every 1 step }", "log {\n  every 1 step\n  include [ram]\n}") \
        + "validation {\n  every 4 steps\n  batches 1\n}\n"
    out = run_inproc(write_spec(tmp_path, changed), run_dir, allow_spec_change=True)
    assert out.code == 0, out.message
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert lines[0] == ",".join(header_before)
    assert sum(1 for line in lines if line.startswith("step,")) == 1
    assert all(line.count(",") == len(header_before) - 1 for line in lines)  # every row fits the header
    header, rows = csv_rows(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert {r["segment"] for r in rows[4:]} == {"1"}
