"""sha256_trace producers: every way the training process can end leaves no process or segment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import specrun.components.sha256.producers as P

from sha256_helpers import alive, needs_shm

pytestmark = needs_shm

SRC = str(Path(P.__file__).resolve().parents[3])  # the directory holding the specrun package


SCRIPT = textwrap.dedent("""
    import os, sys, time
    if __name__ == "__main__":
        mode, use_task = sys.argv[1], sys.argv[2] == "task"
        if use_task:  # the whole task (torch imported), as the engine uses it
            import torch
            from specrun.components.api import Context
            from specrun.components.sha256.task import build_task
            task = build_task({"rounds": 4, "producers": 2},
                              Context(seed=0, device=torch.device("cpu"), batch_size=8))
            it = task.train_batches(0)
            take = lambda: next(it)
            loader = task.loader
        else:  # the loader alone: same lifecycle, starts faster
            from specrun.components.sha256.producers import SharedMemoryLoader
            loader = SharedMemoryLoader(seed=0, rank=0, batch_size=8,
                                        params={"rounds": 4, "init_state": "iv"}, producers=2)
            loader.restart(0)
            take = loader.next_slot
        take()
        print(" ".join(map(str, loader.pids)), loader.segment_name, flush=True)
        if mode == "raise":
            raise RuntimeError("boom in the training loop")
        if mode == "exit":
            sys.exit(0)  # no close(): the finaliser must clean up
        while True:
            take()
            time.sleep(0.01)
""")


def run_script(tmp_path, mode, send=None, group=False, use_task=False):
    path = tmp_path / "consumer.py"
    path.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(path), mode, "task" if use_task else "loader"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 3, proc.stderr.read()
        pids, name = [int(p) for p in line[:2]], line[2]
        if send is not None:
            time.sleep(0.2)
            if group:
                os.killpg(proc.pid, send)
            else:
                os.kill(proc.pid, send)
        code = proc.wait(30)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (alive(pids) or name in os.listdir("/dev/shm")):
        time.sleep(0.05)
    assert alive(pids) == [], err
    assert name not in os.listdir("/dev/shm"), err
    return code, err


@pytest.mark.parametrize("mode, send, group, use_task, expect", [
    ("exit", None, False, False, 0),
    ("raise", None, False, True, 1),
    ("loop", signal.SIGTERM, False, False, 128 + signal.SIGTERM),
    ("loop", signal.SIGINT, True, False, -signal.SIGINT),  # Ctrl-C reaches the whole process group
    ("loop", signal.SIGKILL, False, False, -signal.SIGKILL),  # workers notice; the tracker unlinks
])
def test_consumer_exit_paths_leave_nothing(tmp_path, mode, send, group, use_task, expect):
    code, err = run_script(tmp_path, mode, send, group, use_task)
    assert code == expect, err
    if mode == "raise":
        assert "boom in the training loop" in err
    if send == signal.SIGINT:
        assert "KeyboardInterrupt" in err
