"""A run killed with SIGKILL at an arbitrary step and resumed matches the uninterrupted run bit for bit."""

import csv
import signal
import subprocess
import time

import pytest
import torch

from .conftest import env, specrun_cmd


def _losses(run_dir) -> dict[int, str]:
    rows = {}
    with open(run_dir / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows[int(row["step"])] = row["train.loss"]  # a re-run step overwrites: the last word counts
    return rows


def _final_weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]


def _run(spec, run_dir, timeout=240):
    return subprocess.run(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet"), env=env(),
                          capture_output=True, text=True, timeout=timeout)


def _kill_at(spec, run_dir, step: int) -> None:
    proc = subprocess.Popen(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet"), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 200
    metrics = run_dir / "metrics.csv"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and sum(1 for _ in open(metrics)) - 1 >= step:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(spec_file, tmp_path):
    spec = spec_file()
    reference = tmp_path / "reference"
    done = _run(spec, reference)
    assert done.returncode == 0, done.stderr
    expected_losses = _losses(reference)
    expected_weights = _final_weights(reference)

    for kill_step in (7, 23):
        run_dir = tmp_path / f"killed_{kill_step}"
        _kill_at(spec, run_dir, kill_step)
        resumed = _run(spec, run_dir)
        assert resumed.returncode == 0, resumed.stderr
        assert _losses(run_dir) == expected_losses
        weights = _final_weights(run_dir)
        assert weights.keys() == expected_weights.keys()
        for name in weights:
            assert torch.equal(weights[name], expected_weights[name]), name
