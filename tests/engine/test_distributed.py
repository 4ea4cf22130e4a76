"""Two CPU processes on gloo: same losses as one process, kill-and-resume, a dead rank ends the run.

Each for DDP and for FSDP (fully_shard: each rank holds half of every weight and
its optimizer state, and writes its own shards of each checkpoint through DCP).
"""

import os
import signal
import subprocess
import time

import psutil
import pytest
import torch

from .conftest import (env, events, index_entries, kill_launch, run_cli, specrun_cmd, train_losses,
                       two_processes_match_one)

SPEC = """
spec dist_test
seed 3
task rule_classification { features 8; classes 3 }
model mlp { width 32; depth 2 }
loss cross_entropy
optimizer adamw { lr 1e-2 }
batch 8
max_steps 16
distributed { strategy ddp; nproc_per_node 2; backend gloo }
checkpoint { every 4 steps; resume latest }
log { every 1 step }
"""


@pytest.fixture(params=["ddp", "fsdp"])
def spec(tmp_path, request):
    path = tmp_path / "dist_test.train"
    path.write_text(SPEC.replace("strategy ddp", f"strategy {request.param}"))
    return path


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(spec, tmp_path):
    two = two_processes_match_one(spec, tmp_path, steps=16)
    assert two.stdout.count("finished:") + two.stderr.count("finished:") == 1  # one final line, not one per rank


@pytest.mark.slow
def test_fsdp_checkpoints_are_sharded_and_resume_on_another_world_size(tmp_path):
    """Each rank writes its own shards; 2 -> 1 and 1 -> 2 processes load them exactly (resharded)."""
    from specrun.engine.sharded import full_state_dict

    path = tmp_path / "fsdp.train"
    path.write_text(SPEC.replace("strategy ddp", "strategy fsdp"))
    two = run_cli(path, tmp_path / "run")
    assert two.returncode == 0, two.stderr
    final = tmp_path / "run" / "checkpoints" / "final.pt"
    assert {"__0_0.distcp", "__1_0.distcp"} <= set(os.listdir(final))  # no gather: each rank its shards
    saved = full_state_dict(final)  # whole again, offline, in this process
    assert saved["model"]["net.0.weight"].shape == (32, 8) and saved["world_size"] == 2

    def same_state(state):
        for part in ("model",):
            for k, v in saved[part].items():
                assert torch.equal(state[part][k], v), k
        for fqn, slots in saved["optimizer"]["state"].items():
            for key, v in slots.items():
                assert torch.equal(torch.as_tensor(state["optimizer"]["state"][fqn][key]), torch.as_tensor(v))

    one = ("--set", "distributed.nproc_per_node=1")
    refused = run_cli(path, tmp_path / "run", *one)  # each rank's data shard would change: said, not done
    assert refused.returncode == 1 and "--allow-spec-change" in refused.stderr, refused.stderr
    # 2 -> 1 at the last step: the single process writes back exactly what it loaded
    down = run_cli(path, tmp_path / "run", *one, "--allow-spec-change")
    assert down.returncode == 0, down.stderr
    assert full_state_dict(final)["world_size"] == 1
    same_state(full_state_dict(final))
    # 1 -> 2: the same again, from the single process's checkpoint
    up = run_cli(path, tmp_path / "run", "--allow-spec-change")
    assert up.returncode == 0, up.stderr
    assert full_state_dict(final)["world_size"] == 2
    same_state(full_state_dict(final))
    # and training goes on from it on one process
    longer = run_cli(path, tmp_path / "run", *one, "--set", "max_steps=20", "--allow-spec-change")
    assert longer.returncode == 0, longer.stderr
    assert max(train_losses(tmp_path / "run")) == 20


@pytest.mark.slow
def test_distributed_kill_and_resume(spec, tmp_path):
    reference = run_cli(spec, tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet"), env=env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "checkpoints" / "step_8.pt").exists():
            break
        time.sleep(0.05)
    kill_launch(proc)
    resumed = run_cli(spec, run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert train_losses(run_dir, float) == pytest.approx(train_losses(tmp_path / "ref", float), rel=1e-5)


@pytest.mark.slow
def test_a_dead_rank_ends_the_run_without_hanging(spec, tmp_path):
    path = tmp_path / "slow.train"
    path.write_text(SPEC.replace("max_steps 16", "max_steps 100000"))
    run_dir = tmp_path / "dead"
    proc = subprocess.Popen(specrun_cmd("run", path, "--run-dir", run_dir, "--quiet"), env=env(),
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (run_dir / "metrics.csv").exists():
        time.sleep(0.1)
    ranks = [p for p in psutil.Process(proc.pid).children(recursive=True) if "specrun.cli" in " ".join(p.cmdline())]
    victim = [p for p in ranks if p.environ().get("RANK") == "1"]
    assert victim, [p.cmdline() for p in ranks]
    victim[0].kill()
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run hung after a rank died")
    assert proc.returncode != 0
    assert "exitcode" in out or "failed" in out.lower(), out[-2000:]


# Loaded by every process of a run started with this folder on PYTHONPATH: DCP's shard
# writer stops, for good, once it has written the shards of the checkpoint named by
# SPECRUN_TEST_STALL_WRITE (its metadata and the commit never come), as a write would
# that the machine's death interrupted.
_STALL_WRITE = """
import os
if os.environ.get("SPECRUN_TEST_STALL_WRITE"):
    import threading
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    _write_data = FileSystemWriter.write_data

    def write_data(self, plan, planner):
        written = _write_data(self, plan, planner)
        if "." + os.environ["SPECRUN_TEST_STALL_WRITE"] + ".partial" in str(self.path):
            threading.Event().wait()
        return written

    FileSystemWriter.write_data = write_data
"""


@pytest.mark.slow
def test_fsdp_async_checkpoints_resume_exactly_and_a_kill_mid_write_keeps_the_previous(tmp_path):
    """checkpoint.async on 2 ranks: the same losses and checkpoints as blocking saves; killed while
    step 8's shards are written (training went on past it), the run resumes from step 4, exactly."""
    from specrun.engine.sharded import full_state_dict

    blocking = tmp_path / "blocking.train"
    blocking.write_text(SPEC.replace("strategy ddp", "strategy fsdp"))
    path = tmp_path / "async.train"
    path.write_text(SPEC.replace("strategy ddp", "strategy fsdp").replace("resume latest }", "resume latest; async true }"))
    ref, reference = run_cli(blocking, tmp_path / "ref"), run_cli(path, tmp_path / "async")
    assert ref.returncode == 0 and reference.returncode == 0, ref.stderr + reference.stderr
    assert train_losses(tmp_path / "async") == train_losses(tmp_path / "ref")
    for name in ("step_12.pt", "final.pt"):
        a, b = (full_state_dict(tmp_path / run / "checkpoints" / name) for run in ("async", "ref"))
        assert all(torch.equal(a["model"][k], v) for k, v in b["model"].items()), name

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_STALL_WRITE)
    stalled = {**env(), "SPECRUN_TEST_STALL_WRITE": "step_8.pt"}
    stalled["PYTHONPATH"] = f"{hooks}{os.pathsep}{stalled['PYTHONPATH']}"
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(specrun_cmd("run", path, "--run-dir", run_dir, "--quiet"), env=stalled,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and 11 not in _losses_if_any(run_dir):
        time.sleep(0.05)
    listed = [e["file"] for e in index_entries(run_dir)]
    partial = (run_dir / "checkpoints" / ".step_8.pt.partial").is_dir()
    kill_launch(proc)  # mid-write
    assert 11 in train_losses(run_dir), "training did not go on while step 8 was written"
    assert listed == ["step_4.pt"] and partial
    resumed = run_cli(path, run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert events(run_dir, "resume")[-1]["step"] == 4  # never the half-written step 8
    assert train_losses(run_dir) == train_losses(tmp_path / "ref")  # bit for bit


def _losses_if_any(run_dir):
    try:
        return train_losses(run_dir)
    except (FileNotFoundError, ValueError, KeyError):
        return {}
