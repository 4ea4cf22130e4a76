"""A full disk or a refused write anywhere ends the run cleanly (issue #14 item 6): exit 1, one
line saying what failed, run.json saying so, every earlier checkpoint intact and resumable."""

import errno
import json
import os
import resource
import signal
import subprocess

import pytest

from specrun.engine.sinks.csv import MetricsCsv

from .conftest import FAST_SPEC, env, events, index_entries, run_inproc, specrun_cmd, write_spec


def test_a_refused_metrics_write_ends_the_run_cleanly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = MetricsCsv.row

    def fills_up(self, row):
        if row["step"] >= 7:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "metrics.csv"))
        real(self, row)

    monkeypatch.setattr(MetricsCsv, "row", fills_up)
    out = run_inproc(write_spec(tmp_path, FAST_SPEC), tmp_path / "run")
    assert out.code == 1 and out.status == "failed"
    assert out.message.startswith("a write failed at step 7 (No space left on device: ")
    assert "earlier checkpoints are intact" in out.message and "\n" not in out.message
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "failed" and "No space left on device" in status["message"]
    assert not (tmp_path / "run" / "error.txt").exists()  # not a bug: no traceback file
    monkeypatch.setattr(MetricsCsv, "row", real)
    again = run_inproc(write_spec(tmp_path, FAST_SPEC), tmp_path / "run")
    assert again.code == 0 and events(tmp_path / "run", "resume")[0]["step"] == 4


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead

    return apply


@pytest.mark.slow
def test_a_file_size_limit_on_the_process_ends_the_run_cleanly(tmp_path):
    """A real refused write: RLIMIT_FSIZE on the child, so metrics.csv stops growing mid-run."""
    spec = write_spec(tmp_path, FAST_SPEC.replace("max_steps 12", "max_steps 2000"))
    run_dir = tmp_path / "run"
    limited = subprocess.run(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet"), env=env(),
                             capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size(48_000))
    assert limited.returncode == 1, limited.stderr
    last = limited.stderr.strip().splitlines()[-1]
    assert last.startswith("failed: a write failed at step ") and "File too large" in last, limited.stderr
    assert "Traceback" not in limited.stderr
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "failed" and "File too large" in status["message"]
    stopped = status["step"]
    saved = [e["step"] for e in index_entries(run_dir)]
    assert saved and max(saved) <= stopped
    again = subprocess.run(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet"),
                           env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert events(run_dir, "resume")[-1]["step"] == max(saved)  # from the latest checkpoint it had
