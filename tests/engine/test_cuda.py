"""What only a GPU shows: CUDA host-device syncs, fp16 loss scaling, exact resume on the device.

Marked ``gpu`` and left out of the default tier: run ``pytest -m gpu`` on a machine with
CUDA (a CUDA build of torch). Without one they are skipped with that reason. The CPU
tests cover the same paths as far as a CPU can (test_sync_points counts the calls that
would sync; test_precision the fallbacks); these check what the device really does.

``SPECRUN_TEST_DEVICE=cpu pytest -m gpu tests/engine/test_cuda.py`` runs the tests' own
plumbing on the CPU, where there is nothing to sync and fp16 falls back (so those
assertions fail there by design).
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from specrun.engine.console import Console

from .conftest import FAST_SPEC, events, resumes_bit_for_bit, run_inproc, train_losses, write_spec

DEVICE = os.environ.get("SPECRUN_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU and a CUDA build of torch: run `pytest -m gpu` on one"),
]

ON_DEVICE = FAST_SPEC + f"device {DEVICE}\n"

# Intervals as in test_sync_points: rows every 5 steps, validation and a checkpoint every 10,
# an expectation judged at 15, a memory check every 3 (host-side: no device sync).
INTERVALS = ON_DEVICE.replace("max_steps 12", "max_steps 20").replace("log { every 1 step }", """
log { every 5 steps }
validation {
  every 10 steps
  batches 2
}
expect train.loss < 5 by 15 steps
memory {
  ram_limit 1000GB
  check_every 3 steps
}
""").replace("every 4 steps", "every 10 steps")


@pytest.fixture
def syncs_per_step(monkeypatch):
    """() -> {step: the CUDA syncs made while it ran}, for steps 2 on (step 1's share holds
    setup's copies to the device). torch's sync debug mode warns on every operation that
    makes the host wait for the device; where a step ends, the count of warnings so far is
    noted (the loop calls Console.progress once per finished step)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ended = {}  # step -> len(record) when it ended
        original = Console.progress

        def progress(self, done, *args, **kwargs):
            ended[done] = len(record)
            return original(self, done, *args, **kwargs)

        monkeypatch.setattr(Console, "progress", progress)
        if DEVICE == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield lambda: {step: [str(w.message) for w in record[ended[step - 1]:ended[step]]
                                  if "synchroniz" in str(w.message)]
                           for step in ended if step - 1 in ended}
        finally:
            if DEVICE == "cuda":
                torch.cuda.set_sync_debug_mode("default")


def test_steps_between_intervals_never_sync_the_gpu(tmp_path, monkeypatch, syncs_per_step):
    monkeypatch.chdir(tmp_path)
    out = run_inproc(write_spec(tmp_path, INTERVALS), tmp_path / "run")
    assert out.code == 0, out.message
    decided = {5, 10, 15, 20}  # log rows, validation + checkpoint (10, 20), the expectation (15)
    synced = syncs_per_step()
    assert {s for s, msgs in synced.items() if msgs} <= decided, synced


def _notes(run_dir) -> list[str]:
    """What the run could not do as asked (precision fallbacks), as it told the user."""
    return [e["message"] for e in events(run_dir, "note")]


def _final(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)


def test_fp16_with_dynamic_loss_scaling_trains_on_the_gpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = ON_DEVICE + "precision {\n  type fp16\n  loss_scale dynamic\n}\n"
    out = run_inproc(write_spec(tmp_path, spec), tmp_path / "run")
    assert out.code == 0, out.message
    assert _notes(tmp_path / "run") == []  # nothing fell back
    final = _final(tmp_path / "run")
    assert final["precision"] == "fp16" and final["scaler"]["scale"] > 0  # the GradScaler's state is saved
    losses = train_losses(tmp_path / "run", float)
    assert losses[max(losses)] < losses[1]


def test_bf16_autocast_trains_on_the_gpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run_inproc(write_spec(tmp_path, ON_DEVICE + "precision { type bf16 }\n"), tmp_path / "run")
    assert out.code == 0, out.message
    assert _notes(tmp_path / "run") == [] and _final(tmp_path / "run")["precision"] == "bf16"
    losses = train_losses(tmp_path / "run", float)
    assert losses[max(losses)] < losses[1]


def test_an_interrupted_gpu_run_resumes_bit_for_bit(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    resumes_bit_for_bit(write_spec(tmp_path, ON_DEVICE), tmp_path, signal_at)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL between two ranks needs two GPUs")
def test_two_ranks_on_nccl_match_one_gpu(tmp_path):
    from .conftest import two_processes_match_one

    spec = write_spec(tmp_path, ON_DEVICE.replace("batch 8", "batch 4") + """
distributed {
  nproc_per_node 2
  backend nccl
}
""")
    two_processes_match_one(spec, tmp_path, steps=12, batch=8)


def test_async_sharded_checkpoints_from_the_device_hold_what_blocking_ones_hold(tmp_path, monkeypatch):
    """checkpoint.async stages the shards from device memory into host memory at the save's
    step; what lands on disk is what a blocking save of the same step writes."""
    from specrun.engine.sharded import full_state_dict

    from .test_async_checkpoint import ASYNC, same_state
    from .test_sharded_checkpoint import SPEC as SHARDED

    monkeypatch.chdir(tmp_path)
    for name, text in (("blocking", SHARDED), ("async", ASYNC)):
        out = run_inproc(write_spec(tmp_path, text + f"device {DEVICE}\n", f"{name}.train"), tmp_path / name)
        assert out.code == 0, out.message
    assert train_losses(tmp_path / "async") == train_losses(tmp_path / "blocking")
    for name in ("step_8.pt", "step_12.pt", "final.pt"):
        same_state(full_state_dict(tmp_path / "async" / "checkpoints" / name),
                   full_state_dict(tmp_path / "blocking" / "checkpoints" / name), name)
