"""One writer per run directory, and writes that stay inside it (issue #14 items 3, 7, 10, 11)."""

import json
import os
import signal
import subprocess
import time

import pytest

from specrun.engine.lock import RunLocked, lock_run_dir

from .conftest import FAST_SPEC, csv_rows, env, events, run_inproc, specrun_cmd, wait_rows, write_spec

LONG = FAST_SPEC.replace("max_steps 12", "max_steps 100000").replace("every 4 steps", "every 100000 steps")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC)
    run_dir = tmp_path / "run"
    assert run_inproc(spec, run_dir).code == 0  # and its lock went with it: the next run may write
    rows_before = csv_rows(run_dir / "metrics.csv")[1]
    held = lock_run_dir(run_dir)  # another open file: flock refuses it as it would another process
    try:
        out = run_inproc(spec, run_dir)
        assert out.code == 1
        assert f"is being written by process {os.getpid()}" in out.message and "--new" in out.message
        assert csv_rows(run_dir / "metrics.csv")[1] == rows_before  # nothing written
        with pytest.raises(RunLocked):
            lock_run_dir(run_dir)
    finally:
        held.release()
    assert lock_run_dir(run_dir).held


def test_a_planted_lock_link_is_refused(tmp_path):
    (tmp_path / "precious").write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.lock").symlink_to(tmp_path / "precious")
    with pytest.raises(RunLocked, match="symbolic link"):
        lock_run_dir(tmp_path / "run")
    assert (tmp_path / "precious").read_text() == "keep me"


@pytest.mark.parametrize("link", ["metrics.csv", "logs"])
def test_a_link_out_of_the_run_directory_is_refused(tmp_path, monkeypatch, link):
    """A copied run directory whose metrics.csv (or the spec's log folder) leads elsewhere."""
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC.replace("log { every 1 step }", 'log {\n  every 1 step\n  csv "logs/x.csv"\n}'))
    run_dir = tmp_path / "run"
    assert run_inproc(spec, run_dir).code == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.csv").write_text("mine\n")
    target = run_dir / link
    (target.rename(tmp_path / "moved") if target.is_dir() else target.unlink())
    target.symlink_to(outside / "x.csv" if link == "metrics.csv" else outside)
    out = run_inproc(spec, run_dir)
    assert out.code == 1 and "outside the run directory" in out.message and str(outside) in out.message
    assert (outside / "x.csv").read_text() == "mine\n"


def test_a_dangling_link_as_run_directory_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").symlink_to(tmp_path / "gone")
    out = run_inproc(write_spec(tmp_path, FAST_SPEC), tmp_path / "run")
    assert out.code == 1 and "symbolic link" in out.message and "does not exist" in out.message


def _running(run_dir, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if json.loads((run_dir / "run.json").read_text()).get("status") == "running":
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run did not start")


@pytest.mark.slow
def test_two_processes_one_run_directory_and_sigkill_leaves_no_stale_lock(tmp_path):
    spec = write_spec(tmp_path, LONG)
    run_dir = tmp_path / "run"
    first = subprocess.Popen(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet"), env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _running(run_dir, first)
    second = subprocess.run(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet"), env=env(),
                            capture_output=True, text=True, timeout=240)
    assert second.returncode == 1
    assert f"is being written by process {first.pid}" in second.stderr + second.stdout
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert lock_run_dir(run_dir).held  # the kernel dropped the dead process's lock: nothing stale


@pytest.mark.slow
def test_a_job_killed_before_its_first_checkpoint_is_requeued_with_the_same_command(tmp_path):
    spec = write_spec(tmp_path, LONG.replace("max_steps 100000", "max_steps 60"))
    run_dir = tmp_path / "run"
    cmd = specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet")
    first = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_rows(first, run_dir, 3)
    first.send_signal(signal.SIGKILL)  # preempted: no handler runs, no checkpoint
    first.wait(timeout=60)
    again = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    _, rows = csv_rows(run_dir / "metrics.csv")
    segments = [r["segment"] for r in rows]
    assert segments[0] == "0" and segments[-1] == "1" and rows[-1]["step"] == "60"
    assert [r["step"] for r in rows if r["segment"] == "1"][0] == "1"  # from step 0 again
    assert events(run_dir, "restart")[0]["segment"] == 1


def test_ctrl_c_before_the_run_starts_exits_130(monkeypatch):
    """Ctrl+C in the first seconds (while torch imports) is an interrupt too, not click's "Aborted!"."""
    from click.testing import CliRunner

    import specrun.engine.execute as execute_mod
    from specrun.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(execute_mod, "execute", interrupted)
    result = CliRunner().invoke(main, ["run", "specs/builtin_rule.train", "--quiet"])
    assert result.exit_code == 130 and "Aborted" not in result.output


def test_ctrl_c_during_setup_exits_130_under_the_emergency_save_policy(tmp_path, monkeypatch):
    """A signal between the handlers going in and the first step: the loop sees it before
    training and applies checkpoint.on_interrupt (save: final.pt at step 0)."""
    import specrun.engine.execute as execute_mod

    from .conftest import index_entries

    monkeypatch.chdir(tmp_path)
    real = execute_mod.setup

    def setup_then_ctrl_c(*args, **kwargs):
        run = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return run

    monkeypatch.setattr(execute_mod, "setup", setup_then_ctrl_c)
    out = run_inproc(write_spec(tmp_path, FAST_SPEC), tmp_path / "run")
    assert out.code == 130 and out.status == "interrupted" and "state saved" in out.message
    assert [(e["file"], e["step"]) for e in index_entries(tmp_path / "run")] == [("final.pt", 0)]


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """DataLoader workers are forked: a run killed while they live must not leave its lock held."""
    lock = lock_run_dir(tmp_path)
    ready, told = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child outlives its parent's hold on the lock
        os.write(told, b"x")
        time.sleep(3)
        os._exit(0)
    try:
        os.read(ready, 1)  # the child is running (fork's hooks ran before it could write)
        lock.release()
        again = lock_run_dir(tmp_path)  # the parent let go; the sleeping child holds nothing
        again.release()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready)
        os.close(told)
