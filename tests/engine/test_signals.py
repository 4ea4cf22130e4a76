"""SIGINT and SIGTERM against a real `specrun run` process: save final.pt, exit 130 / 143, resume."""

import json
import signal
import subprocess

import pytest
import torch

from .conftest import FAST_SPEC, env, events, index_entries, specrun_cmd, wait_rows, write_spec

# long enough that the signal lands mid-run, short enough that the resumed run finishes quickly
SPEC = FAST_SPEC.replace("max_steps 12", "max_steps 150").replace("every 4 steps", "every 1000 steps")


def _start(spec, run_dir):
    return subprocess.Popen(specrun_cmd("run", spec, "--run-dir", run_dir), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_final_and_the_rerun_resumes(tmp_path, sig, code):
    spec = write_spec(tmp_path, SPEC)
    run_dir = tmp_path / "run"
    proc = _start(spec, run_dir)
    wait_rows(proc, run_dir, 5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    name = signal.Signals(sig).name
    assert proc.returncode == code, stderr

    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "interrupted"
    step = status["step"]
    assert 5 <= step < 150
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: interrupted by {name} at step {step}; state saved; "), last
    finals = [e for e in index_entries(run_dir) if e["kind"] == "final"]
    assert [(e["file"], e["step"]) for e in finals] == [("final.pt", step)]
    saved = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert saved["counters"]["step"] == step
    assert [e["signal"] for e in events(run_dir, "interrupted")] == [name]

    again = subprocess.run(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet"), env=env(),
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "finished: finished 150 steps"
    resume = events(run_dir, "resume")
    assert len(resume) == 1 and resume[0]["step"] == step and resume[0]["checkpoint"].endswith("final.pt")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
