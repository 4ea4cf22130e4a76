"""A checkpoint write that fails loses nothing: earlier checkpoints and the index stay as they were."""

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess

import pytest
import torch
from click.testing import CliRunner

import specrun.engine.checkpoint as ckmod
import specrun.engine.setup as setup_mod
from specrun.cli import main
from specrun.engine.checkpoint import Checkpointer, CheckpointError, load_file

from .conftest import FAST_SPEC, events, index_entries, write_spec


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((64,), float(step))}, "counters": {"step": step}}


def _enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _checkpointer(directory, save=torch.save, keep=3):
    return Checkpointer(directory, keep, "step_{step}.pt", "best.pt", "final.pt", save=save)


def _snapshot_dir(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_enospc_leaves_earlier_checkpoints_and_the_index_alone(tmp_path):
    ck_dir = tmp_path / "ck"
    calls = []

    def save(state, fh):
        calls.append(state["counters"]["step"])
        if len(calls) > 2:
            fh.write(b"half a checkpoint")  # something reached the disk before it filled up
            raise _enospc()
        torch.save(state, fh)

    ck = _checkpointer(ck_dir, save)
    ck.save(_state(1), "regular", 1, 0)
    ck.save(_state(2), "final", 2, 0)
    before = _snapshot_dir(ck_dir)

    with pytest.raises(CheckpointError) as err:
        ck.save(_state(3), "regular", 3, 0)
    message = str(err.value)
    assert "could not write checkpoint" in message and "step_3.pt" in message
    assert "No space left on device" in message and "earlier checkpoints are intact" in message
    assert "\n" not in message

    assert _snapshot_dir(ck_dir) == before  # same files, same bytes: no step_3.pt, no .partial
    state, path = ck.load_latest(lambda msg: pytest.fail(msg))
    assert path.name == "final.pt" and state["counters"]["step"] == 2


class FillsUp(io.RawIOBase):
    """A file that takes 100 bytes and then reports a full disk, as a real one does."""

    def __init__(self, fh):
        self.fh, self.written = fh, 0

    def writable(self):
        return True

    def write(self, data):
        self.written += len(data)
        if self.written > 100:
            raise _enospc()
        return self.fh.write(data)


def _full_disk_save(state, fh):
    torch.save(state, FillsUp(fh))  # torch turns the writer's OSError into a RuntimeError


def test_enospc_inside_torch_save_is_a_checkpoint_error(tmp_path):
    ck_dir = tmp_path / "ck"
    ck = _checkpointer(ck_dir)
    ck.save(_state(1), "regular", 1, 0)
    before = _snapshot_dir(ck_dir)
    ck = _checkpointer(ck_dir, _full_disk_save)  # the same directory, now on a full disk
    with pytest.raises(CheckpointError, match="could not write checkpoint .*step_2.pt"):
        ck.save(_state(2), "regular", 2, 0)
    assert _snapshot_dir(ck_dir) == before  # no .partial left behind, index unchanged


def test_enospc_inside_torch_save_names_the_cause(tmp_path):
    ck = _checkpointer(tmp_path / "ck", _full_disk_save)
    with pytest.raises(CheckpointError, match="No space left on device"):
        ck.save(_state(1), "regular", 1, 0)


def test_enospc_on_the_index_is_a_checkpoint_error(tmp_path, monkeypatch):
    ck_dir = tmp_path / "ck"
    ck = _checkpointer(ck_dir)
    ck.save(_state(1), "regular", 1, 0)
    index_before = (ck_dir / "index.json").read_bytes()

    def full(path, data):
        raise _enospc()

    monkeypatch.setattr(ckmod, "write_json_atomic", full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        ck.save(_state(2), "regular", 2, 0)
    assert (ck_dir / "index.json").read_bytes() == index_before


def test_a_run_whose_checkpoint_write_fails_exits_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writes = []

    def flaky(state, fh):
        writes.append(state["counters"]["step"])
        if len(writes) >= 2:
            raise _enospc()
        torch.save(state, fh)

    class Flaky(Checkpointer):
        def __init__(self, *a, **k):
            super().__init__(*a, save=flaky, **k)

    monkeypatch.setattr(setup_mod, "Checkpointer", Flaky)
    run_dir = tmp_path / "run"
    spec = write_spec(tmp_path, FAST_SPEC)  # a checkpoint every 4 steps: step 4 is written, step 8 fails
    result = CliRunner().invoke(main, ["run", str(spec), "--run-dir", str(run_dir), "--quiet"])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("failed: could not write checkpoint ")
    assert "step_8.pt: No space left on device; earlier checkpoints are intact" in last

    assert writes == [4, 8]
    assert [e["file"] for e in index_entries(run_dir)] == ["step_4.pt"]
    assert load_file(run_dir / "checkpoints" / "step_4.pt")["counters"]["step"] == 4
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["index.json", "step_4.pt"]
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "failed" and "No space left on device" in status["message"]
    assert events(run_dir, "end")[-1]["status"] == "failed"


@contextlib.contextmanager
def _read_only(directory):
    """``directory`` made unwritable for this process: mode 555, or, for root (whom modes do
    not stop), the immutable attribute; skipped only where neither can be had."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(directory)],
                                                         capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without the immutable attribute")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_a_read_only_directory_is_a_checkpoint_error(tmp_path):
    ck_dir = tmp_path / "ck"
    ck = _checkpointer(ck_dir)
    ck.save(_state(1), "regular", 1, 0)
    before = _snapshot_dir(ck_dir)
    with _read_only(ck_dir):
        with pytest.raises(CheckpointError, match="could not write checkpoint .*step_2.pt"):
            ck.save(_state(2), "regular", 2, 0)
        assert _snapshot_dir(ck_dir) == before
