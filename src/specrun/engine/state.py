"""What a checkpoint holds, and putting it back.

Everything an uninterrupted run would still have in memory: model,
optimizer, LR scheduler, GradScaler, curriculum (phase of each axis and when
it began), the metric windows gates read, counters (step, data position,
skips), RNG states (Python, NumPy, torch, CUDA), the task's own state where
it has one, the precision in use and the spec hash. Only tensors, dicts,
lists and plain numbers: ``torch.load(weights_only=True)`` reads it back.
"""

from __future__ import annotations

import random
from dataclasses import asdict

import numpy as np
import torch

from specrun.engine.schedule import fast_forward
from specrun.engine.setup import Counters, Run

FORMAT = 1


def _unwrapped(run: Run) -> torch.nn.Module:
    return run.model


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": list(_tuple_to_lists(random.getstate())),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _tuple_to_lists(value):
    return [_tuple_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _lists_to_tuple(value):
    return tuple(_lists_to_tuple(v) for v in value) if isinstance(value, list) else value


def set_rng_state(state: dict) -> None:
    random.setstate(_lists_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def snapshot(run: Run) -> dict:
    state = {
        "format": FORMAT,
        "spec_hash": run.plan.spec_hash,
        "precision": run.precision.compute,
        "weights_dtype": run.precision.weights,
        "counters": asdict(run.counters),
        "model": _unwrapped(run).state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "curriculum": run.curriculum.state_dict(),
        "history": run.history.state_dict(),
        "switches": dict(run.switch_state),
        "rng": rng_state(),
    }
    if run.precision.scaler is not None:
        state["scaler"] = run.precision.scaler.state_dict()
    if hasattr(run.task, "state_dict"):
        state["task"] = run.task.state_dict()
    return state


def restore(run: Run, state: dict, resume_phase: str, warn) -> None:
    """Load ``state`` into ``run``. Weights must fit; an optimizer that no longer fits starts fresh."""
    _unwrapped(run).load_state_dict(state["model"])
    try:
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, RuntimeError, IndexError) as exc:
        warn("optimizer_reset", f"optimizer/scheduler state does not fit this spec ({exc}); "
                                "weights loaded, optimizer starts fresh")
        fast_forward(run.scheduler, state["counters"]["step"])
    if run.precision.scaler is not None and "scaler" in state:
        run.precision.scaler.load_state_dict(state["scaler"])
    run.counters = Counters(**state["counters"])
    run.history.load_state_dict(state["history"])
    run.switch_state = dict(state.get("switches", {}))
    if resume_phase == "start":
        run.curriculum.restart(run.counters.step, run.counters.micro)
    else:
        run.curriculum.load_state_dict(state["curriculum"])
    if "task" in state and hasattr(run.task, "load_state_dict"):
        run.task.load_state_dict(state["task"])
    set_rng_state(state["rng"])
