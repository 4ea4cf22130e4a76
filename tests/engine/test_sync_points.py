"""No host-device synchronisation on a step where nothing is decided.

Every call that would make the host wait for the device (``.item()``, ``.tolist()``,
``float()``, ``int()``, ``bool()``, ``.cpu()``, ``.numpy()`` on a tensor) made by specrun's
own code is counted per step, in a run with a curriculum, validation, checkpoints, an
expectation and a memory guard. On CPU none of them waits, but each one would on a GPU:
the count is what a GPU run would pay.
"""

import sys
from pathlib import Path

import pytest
import torch

import specrun
from specrun.engine.console import Console
from specrun.engine.readout import Readout

from .conftest import FAST_SPEC, run_inproc, write_spec

SRC = str(Path(specrun.__file__).parent)
SYNCING = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy")

SPEC = FAST_SPEC.replace("max_steps 12", "max_steps 20").replace("log { every 1 step }", """
log { every 5 steps }
validation { every 10 steps; batches 2 }
expect train.loss < 5 by 15 steps
memory { ram_limit 1000GB; check_every 3 steps }
""").replace("every 4 steps", "every 10 steps")


@pytest.fixture
def sync_calls(monkeypatch):
    """step -> [method, ...] of the syncing tensor calls specrun's code made during that step.

    On the CPU the engine reads the skip flag on the host, where it costs nothing: here
    the CPU is treated as a GPU would be, so the count is the GPU path's."""
    monkeypatch.setattr(Readout, "free_reads", ())
    calls: dict[int, list[str]] = {}
    step = [1]  # the step in progress: Console.progress ends each one
    original_progress = Console.progress

    def progress(self, done, *args, **kwargs):
        step[0] = done + 1
        return original_progress(self, done, *args, **kwargs)

    monkeypatch.setattr(Console, "progress", progress)
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, __original=original, __name=name, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(SRC):
                calls.setdefault(step[0], []).append(__name)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_steps_between_intervals_never_sync(tmp_path, monkeypatch, sync_calls):
    monkeypatch.chdir(tmp_path)
    out = run_inproc(write_spec(tmp_path, SPEC), tmp_path / "run")
    assert out.code == 0, out.message
    decided = {5, 10, 15, 20, 21}  # log rows, validation + checkpoint (10, 20), the expectation (15), the end
    assert set(sync_calls) <= decided, {s: c for s, c in sync_calls.items() if s not in decided}
    # Where something is decided, one transfer brings every pending step's numbers
    assert sync_calls[5] == ["tolist"], sync_calls[5]


def test_a_gate_on_a_train_series_reads_every_step(tmp_path, monkeypatch, sync_calls):
    """The spec asks for a per-step decision on train.accuracy: then the host reads every step."""
    monkeypatch.chdir(tmp_path)
    spec = SPEC.replace("promote when phase.steps >= 3", "promote when mean(train.accuracy, 2) > 2")
    out = run_inproc(write_spec(tmp_path, spec), tmp_path / "run")
    assert out.code == 0, out.message
    assert all(sync_calls.get(s) == ["tolist"] for s in range(1, 21) if s not in (10, 20)), sync_calls
