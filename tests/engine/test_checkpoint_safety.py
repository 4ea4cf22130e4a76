"""Loading a checkpoint never unpickles arbitrary objects (torch.load(weights_only=True))."""

import os
from dataclasses import dataclass

import pytest
import torch

from specrun.engine.checkpoint import CheckpointError, load_file

from .conftest import FAST_SPEC, events, run_inproc, write_spec


@dataclass
class Opaque:
    value: int = 3


class Payload:
    """Unpickling this would create a directory: the test's stand-in for running code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_plain_state_loads(tmp_path):
    path = tmp_path / "ok.pt"
    state = {"model": {"w": torch.ones(3)}, "counters": {"step": 4}, "rng": [1, "x", 2.5, None, True]}
    torch.save(state, path)
    loaded = load_file(path)
    assert torch.equal(loaded["model"]["w"], torch.ones(3)) and loaded["counters"] == {"step": 4}


def test_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "opaque.pt"
    torch.save({"model": {"w": torch.ones(3)}, "extra": Opaque()}, path)
    with pytest.raises(CheckpointError, match="is not a loadable checkpoint"):
        load_file(path)


def test_a_code_carrying_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(3)}, "x": Payload(marker)}, path)
    with pytest.raises(CheckpointError):
        load_file(path)
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_file(tmp_path / "nope.pt")


def test_a_real_run_checkpoint_loads_weights_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    assert run_inproc(write_spec(tmp_path, FAST_SPEC.replace("max_steps 12", "max_steps 4")), run_dir).code == 0
    state = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "curriculum", "history", "counters", "rng"} <= set(state)


def test_resuming_from_a_code_carrying_checkpoint_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Payload(marker)}, evil)
    spec = write_spec(tmp_path, FAST_SPEC.replace("resume latest", f'resume "{evil}"'))
    out = run_inproc(spec)  # no --run-dir: a new run that starts from the named checkpoint
    assert out.code == 1
    assert "is not a loadable checkpoint" in out.message and str(evil) in out.message
    assert not marker.exists()
    run_dirs = list((tmp_path / "runs" / "fast_test").iterdir())
    assert len(run_dirs) == 1 and events(run_dirs[0], "end")[0]["status"] == "failed"
