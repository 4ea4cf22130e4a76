"""`checkpoint { async true }`: sharded checkpoints written while training goes on.

In one process (DCP's no-process-group mode; two ranks are in the slow tier,
tests/engine/test_distributed.py): an async save holds exactly what a blocking one
holds; training goes on while the shards are written, and a checkpoint is listed
only once written (a copy of the run directory taken mid-write, as a kill would
leave it, resumes from the previous checkpoint, exactly); a failed background
write ends the run with the store's own error and keeps the earlier checkpoints.
"""

import errno
import shutil
import threading

import pytest
import torch

from specrun.engine.console import Console
from specrun.engine.sharded import full_state_dict

from spec_helpers import BASE, diags, one
from .conftest import events, index_entries, load_plan, run_inproc, train_losses, write_spec
from .test_sharded_checkpoint import SPEC

ASYNC = SPEC.replace("keep 2", "keep 2\n  async true")


def same_state(a, b, path="") -> None:
    """Two checkpoint states, equal to the bit: tensors, numbers, lists and dicts alike."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _writes(monkeypatch, name: str, then, before: bool = False):
    """Make DCP's shard writer call ``then()`` once it has written checkpoint ``name``'s shards
    (before the metadata and the commit), or ``before`` it writes them: ``then`` blocks or
    raises, on the writing thread."""
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    original = FileSystemWriter.write_data

    def write_data(self, plan, planner):
        if before and f".{name}.partial" in str(self.path):
            then()
        written = original(self, plan, planner)
        if not before and f".{name}.partial" in str(self.path):
            then()
        return written

    monkeypatch.setattr(FileSystemWriter, "write_data", write_data)


def _at_steps(monkeypatch, actions: dict):
    """Call ``actions[step]()`` after optimizer step ``step`` (the loop's Console.progress)."""
    original = Console.progress

    def progress(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step in actions:
            actions.pop(step)()

    monkeypatch.setattr(Console, "progress", progress)


def test_an_async_save_holds_what_a_blocking_save_holds(tmp_path, monkeypatch):
    """Also when the weights moved on before the write began: the state was copied at its step."""
    monkeypatch.chdir(tmp_path)
    blocking = run_inproc(write_spec(tmp_path, SPEC, "blocking.train"), tmp_path / "blocking")
    release = threading.Event()
    _writes(monkeypatch, "step_8.pt", lambda: release.wait(120), before=True)
    _at_steps(monkeypatch, {10: release.set})  # two optimizer steps taken before step 8's shards are written
    background = run_inproc(write_spec(tmp_path, ASYNC, "async.train"), tmp_path / "async")
    assert blocking.code == background.code == 0, (blocking.message, background.message)
    assert train_losses(tmp_path / "async") == train_losses(tmp_path / "blocking")
    files = [e["file"] for e in index_entries(tmp_path / "blocking")]
    assert [e["file"] for e in index_entries(tmp_path / "async")] == files == ["step_8.pt", "step_12.pt", "final.pt"]
    for name in files:
        same_state(full_state_dict(tmp_path / "async" / "checkpoints" / name),
              full_state_dict(tmp_path / "blocking" / "checkpoints" / name), name)
    saved = {e["file"]: e for e in events(tmp_path / "async", "checkpoint")}
    assert all("stall" in saved[n] and saved[n]["committed_at"] >= saved[n]["step"] for n in ("step_4.pt", "step_8.pt"))
    assert "stall" not in saved["final.pt"]  # the end of the run writes, and waits, at once


def test_training_goes_on_while_shards_are_written_and_a_kill_mid_write_resumes_from_the_previous(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, ASYNC)
    assert run_inproc(spec, tmp_path / "ref").code == 0
    release, seen = threading.Event(), {}
    _writes(monkeypatch, "step_8.pt", lambda: release.wait(120))
    run_dir = tmp_path / "run"

    def killed_here():  # step 10, step 8's shards half written: what a SIGKILL now would leave
        seen["listed"] = [e["file"] for e in index_entries(run_dir)]
        seen["partial"] = (run_dir / "checkpoints" / ".step_8.pt.partial").is_dir()
        shutil.copytree(run_dir, tmp_path / "killed")

    _at_steps(monkeypatch, {10: killed_here, 11: release.set})
    out = run_inproc(spec, run_dir)
    assert out.code == 0, out.message
    assert seen == {"listed": ["step_4.pt"], "partial": True}  # two steps on, step 8 not yet listed
    committed = {e["file"]: e["committed_at"] for e in events(run_dir, "checkpoint") if "committed_at" in e}
    assert committed["step_8.pt"] >= 11  # training went on; committed once written
    assert [e["file"] for e in index_entries(run_dir)] == ["step_8.pt", "step_12.pt", "final.pt"]

    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    resumed = run_inproc(spec, tmp_path / "killed")
    assert resumed.code == 0, resumed.message
    assert events(tmp_path / "killed", "resume")[-1]["step"] == 4  # never the half-written step 8
    assert train_losses(tmp_path / "killed") == train_losses(tmp_path / "ref")  # bit for bit


def test_a_failed_background_write_ends_the_run_and_keeps_the_earlier_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, ASYNC)
    assert run_inproc(spec, tmp_path / "ref").code == 0

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device")

    _writes(monkeypatch, "step_8.pt", full_disk)
    out = run_inproc(spec, tmp_path / "run")
    assert out.status == "failed" and 8 <= out.step <= 12, out.message  # found at a step boundary
    assert "could not write checkpoint" in out.message and "step_8.pt" in out.message
    assert "No space left on device" in out.message and "earlier checkpoints are intact" in out.message
    ck = tmp_path / "run" / "checkpoints"
    assert [e["file"] for e in index_entries(tmp_path / "run")] == ["step_4.pt"]
    assert not (ck / ".step_8.pt.partial").exists() and not (ck / "step_8.pt").exists()

    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    resumed = run_inproc(spec, tmp_path / "run")
    assert resumed.code == 0, resumed.message
    assert events(tmp_path / "run", "resume")[-1]["step"] == 4
    assert train_losses(tmp_path / "run") == train_losses(tmp_path / "ref")


@pytest.mark.parametrize("distributed, found", [("", True), ("distributed { strategy ddp }", True),
                                                ("distributed { strategy fsdp }", False)])
def test_async_without_sharded_checkpoints_is_refused_where_it_is_set(distributed, found):
    text = BASE + distributed + "\ncheckpoint {\n  every 10 steps\n  async true\n}\n"
    if not found:
        assert diags(text) == []
        return
    d = one(text)
    line = text.splitlines().index("  async true") + 1
    assert (d.code, d.span.line, d.span.col) == ("E600", line, 9)
    assert "distributed.strategy fsdp" in d.message


def test_async_is_not_part_of_the_experiment(tmp_path):
    """Switching background saves on or off resumes the same run: the spec's hash stays."""
    _, blocking = load_plan(write_spec(tmp_path, SPEC, "a.train"))
    _, background = load_plan(write_spec(tmp_path, ASYNC, "b.train"))
    assert background.checkpoint.background is True and background.settings["checkpoint"]["async"] is True
    assert blocking.spec_hash == background.spec_hash
