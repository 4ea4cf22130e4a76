"""`specrun runs` and `specrun plot` on real runs of specs/builtin_rule.train (slow: -m slow).

One smoke run per session (module fixture), and one run killed with SIGKILL mid-way:
its run.json still says `running`, the table must say `interrupted`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specrun.cli.runs import list_runs

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "builtin_rule.train"

pytestmark = pytest.mark.slow


def _specrun(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from specrun.cli import main; main(prog_name='specrun')", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "builtin_rule" / "smoke"
    proc = _specrun("run", str(SPEC), "-p", "smoke", "--run-dir", str(run_dir), "--quiet")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return run_dir


def test_table_of_a_real_run(smoke_run):
    (run,) = list_runs("builtin_rule", smoke_run.parent.parent)
    assert run.status == "finished" and run.step == 100  # the smoke profile's max_steps
    assert run.phases == {"curriculum": "main"}
    # validation every 50 steps: the best is one of the two validations
    assert run.best.metric == "val.accuracy" and 0 < run.best.value <= 1 and run.best.step in (50, 100)
    assert run.duration_s > 0 and run.profile == "smoke"


def test_plot_of_a_real_run(smoke_run, tmp_path):
    from matplotlib.image import imread

    from specrun.cli.plot import build_figure, load, plot_runs

    run = load(smoke_run)
    fig, _ = build_figure([run])
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    out, _ = plot_runs([run], tmp_path / "real.png")
    assert imread(out)[..., :3].std() > 0.05


def test_sigkill_reads_as_interrupted(tmp_path):
    run_dir = tmp_path / "runs" / "builtin_rule" / "killed"
    # Long enough to be caught running: run.json's progress is rewritten at most once a second.
    proc = _specrun("run", str(SPEC), "--run-dir", str(run_dir), "--quiet", "--set", "max_steps=100000",
                    "--set", "schedule.warmup=10",
                    start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            status = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
            if status.get("status") == "running" and status.get("step", 0) >= 10:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        (live,) = list_runs("builtin_rule", tmp_path / "runs")
        assert live.status == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # nobody updated it
    (dead,) = list_runs("builtin_rule", tmp_path / "runs")
    assert dead.status == "interrupted" and "is gone" in dead.message
