"""A run killed with SIGKILL at an arbitrary step and resumed matches the uninterrupted run bit for bit."""

import pytest
import torch

from .conftest import kill_at, run_cli, train_losses


def _final_weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(spec_file, tmp_path):
    spec = spec_file()
    reference = tmp_path / "reference"
    done = run_cli(spec, reference, timeout=240)
    assert done.returncode == 0, done.stderr
    expected_losses = train_losses(reference)
    expected_weights = _final_weights(reference)

    for kill_step in (7, 23):
        run_dir = tmp_path / f"killed_{kill_step}"
        kill_at(spec, run_dir, kill_step)
        resumed = run_cli(spec, run_dir, timeout=240)
        assert resumed.returncode == 0, resumed.stderr
        assert train_losses(run_dir) == expected_losses
        weights = _final_weights(run_dir)
        assert weights.keys() == expected_weights.keys()
        for name in weights:
            assert torch.equal(weights[name], expected_weights[name]), name
