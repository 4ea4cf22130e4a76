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


class ResumeRefused(RuntimeError):
    """The checkpoint cannot continue this run; the message says why and what to do."""


def _fsdp(run: Run) -> bool:
    return run.dist is not None and run.dist.strategy == "fsdp"


def _sharded(run: Run) -> bool:
    """Checkpoints through DCP (engine/sharded.py): each rank keeps and writes its own shards."""
    return getattr(run.checkpointer.store, "every_rank_writes", False)


def _model_state(run: Run) -> dict:
    if _sharded(run):  # this rank's shards (DTensors under FSDP), nothing gathered
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(run.model)
    if _fsdp(run):  # a collective: every rank takes part, rank 0 gets the full tensors
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(run.train_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return run.model.state_dict()


def _optimizer_state(run: Run) -> dict:
    if _sharded(run):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(run.model, run.optimizer)
    if _fsdp(run):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(run.train_model, run.optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return run.optimizer.state_dict()


def _load_model(run: Run, state: dict, sharded: bool) -> None:
    if sharded:  # keyed by parameter name, this rank's shards: any world size, FSDP or not
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(run.model, state)
    elif _fsdp(run):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(run.train_model, state, options=StateDictOptions(full_state_dict=True))
    else:
        run.model.load_state_dict(state)


def _load_optimizer(run: Run, state: dict, sharded: bool) -> None:
    if sharded:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        if not state:
            raise ValueError("the checkpoint holds no state for this optimizer")
        set_optimizer_state_dict(run.model, run.optimizer, state)
    elif _fsdp(run):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(run.train_model, run.optimizer, state,
                                 options=StateDictOptions(full_state_dict=True))
    else:
        run.optimizer.load_state_dict(state)


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
        "world_size": run.dist.world_size if run.dist else 1,
        "model": _model_state(run),
        "optimizer": _optimizer_state(run),
        "scheduler": run.scheduler.state_dict(),
        "curriculum": run.curriculum.state_dict(),
        "history": run.history.state_dict(),
        "window": run.window.state_dict(),
        "switches": dict(run.switch_state),
        "best_value": run.best_value,
        "expectations_checked": sorted(run.expectations_checked),
        "expectation_outcomes": {i: dict(r) for i, r in run.expectation_outcomes.items()},
        "optimizer_type": run.plan.components["optimizer"]["type"],
        "model_info": run.task.model_info(),  # the shapes the model was built for: export rebuilds it
        "rng": rng_state(),
    }
    if run.precision.scaler is not None:
        state["scaler"] = run.precision.scaler.state_dict()
    if hasattr(run.task, "state_dict"):
        state["task"] = run.task.state_dict()
    return state


def restore(run: Run, state: dict, resume_phase: str, warn, allow_world_change: bool = False) -> None:
    """Load ``state`` into ``run``. Weights must fit; an optimizer that no longer fits starts fresh.

    Checkpoints hold full (gathered) state, so any world size can load them; a different
    one changes which samples each rank sees, so it is refused unless allowed.
    """
    world, saved = (run.dist.world_size if run.dist else 1), state.get("world_size", 1)
    if saved != world:
        message = (f"the checkpoint was written by {saved} process(es) and this run has {world}: each rank's "
                   "data shard changes, so the run goes on, but not exactly as it would have")
        if not allow_world_change:
            raise ResumeRefused(message.replace("the run goes on, but not", "it could not continue")
                                + f". Resume with {saved} process(es), or go on anyway with --allow-spec-change")
        warn("world_size", message)
    try:
        _load_model(run, state["model"], bool(state.get("sharded")))
    except RuntimeError as exc:
        raise ResumeRefused(f"the checkpoint's weights do not fit this model: {str(exc).splitlines()[0]}") from None
    # What the spec says of each group (lr, betas, weight decay...): a checkpoint restores the
    # values it was saved with, and a spec changed under --allow-spec-change must win.
    spec_groups = [{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")}
                   for g in run.optimizer.param_groups]
    try:
        saved_type = state.get("optimizer_type")
        if saved_type not in (None, run.plan.components["optimizer"]["type"]):
            raise ValueError(f"it belongs to optimizer {saved_type}")
        _load_optimizer(run, state["optimizer"], bool(state.get("sharded")))
        run.scheduler.load_state_dict(state["scheduler"])
        for group, settings, base in zip(run.optimizer.param_groups, spec_groups, run.initial_lrs):
            group.update(settings, initial_lr=base)
        run.scheduler.base_lrs = list(run.initial_lrs)
        fast_forward(run.scheduler, state["counters"]["step"])  # this step's LR from the spec's base LR
    except (ValueError, KeyError, RuntimeError, IndexError) as exc:
        if run.plan.checkpoint.optimizer_mismatch == "error":
            raise ResumeRefused(f"the checkpoint's optimizer/scheduler state does not fit this spec ({exc}) "
                                "and checkpoint.optimizer_mismatch is error") from None
        warn("optimizer_reset", f"optimizer/scheduler state does not fit this spec ({exc}); "
                                "weights loaded, optimizer starts fresh")
        fast_forward(run.scheduler, state["counters"]["step"])
    if run.precision.scaler is not None and "scaler" in state:
        run.precision.scaler.load_state_dict(state["scaler"])
    run.counters = Counters(**state["counters"])
    run.history.load_state_dict(state["history"])
    if "window" in state:  # older checkpoints: the first row after a resume covers fewer steps
        run.window.load_state_dict(state["window"])
    run.switch_state = dict(state.get("switches", {}))
    run.best_value = state.get("best_value")
    run.expectations_checked = set(state.get("expectations_checked", []))
    run.expectation_outcomes = {int(i): dict(r) for i, r in state.get("expectation_outcomes", {}).items()}
    if resume_phase == "start":
        run.curriculum.restart(run.counters.step, run.counters.micro, run.history.context.counts)
    else:
        run.curriculum.load_state_dict(state["curriculum"])
    if "task" in state and hasattr(run.task, "load_state_dict"):
        run.task.load_state_dict(state["task"])
    set_rng_state(state["rng"])
