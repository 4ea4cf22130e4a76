"""Setup: turn a Plan into live objects, in an order that makes runs reproducible.

Seeds first (model initialisation draws from them), then the task (it knows
the data's shapes), the model (moved to the device, cast, optionally
checkpointed and compiled), the loss, the optimizer and its schedule. Nothing
here trains; ``loop.train`` does.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from specrun.spec import catalog as cat
from specrun.components.api import Context
from specrun.engine import device as dev
from specrun.engine.checkpoint import Checkpointer
from specrun.engine.console import Console
from specrun.engine.curriculum import Curriculum
from specrun.engine.guard import MemoryGuard
from specrun.engine.history import History, window_sizes
from specrun.engine.rundir import RunDir
from specrun.engine.schedule import build_scheduler
from specrun.engine.sharded import ShardedStore, live_template, sharded
from specrun.engine.window import Window
from specrun.plan import Plan, resolve_span
from specrun.spec.values import Qty


class SetupError(RuntimeError):
    pass


@dataclass
class Counters:
    """Where the run is. Saved in every checkpoint."""

    step: int = 0  # optimizer steps attempted (skipped ones included: data and LR move on)
    micro: int = 0  # micro-batches consumed: the data position
    skipped: int = 0
    consecutive_skips: int = 0
    skipped_micro: int = 0  # micro-batches dropped under nonfinite.scope micro_batch
    segment: int = 0  # 0 for the first launch, +1 for each resume


@dataclass
class Run:
    plan: Plan
    dir: RunDir
    console: Console
    ctx: Context
    task: object
    model: torch.nn.Module
    train_model: torch.nn.Module  # the compiled / wrapped module the loop calls
    loss_fn: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    precision: dev.Precision
    curriculum: Curriculum
    history: History
    checkpointer: Checkpointer
    guard: MemoryGuard
    total_steps: int | None
    per_epoch: int | None  # micro-batches per epoch
    every: dict  # "validation"/"checkpoint"/"log"/"memory" -> steps, ("epochs", n), or a list of both
    counters: Counters = field(default_factory=Counters)
    window: Window = field(default_factory=Window)  # train metrics since the last log row
    val_batches: int = 10  # validation.batches resolved (`all`: the task's whole split)
    switch_state: dict = field(default_factory=dict)  # "model.memory.enable" -> on
    best_value: float | None = None  # of checkpoint.best.metric, for best.pt
    expectations_checked: set = field(default_factory=set)  # indexes of `expect ... by` already judged
    expectation_outcomes: dict = field(default_factory=dict)  # index -> outcome so far (expectations.py)
    dist: object = None  # specrun.engine.distributed.Dist when running under torchrun
    batches: object = None  # the live training iterator
    initial_lrs: list = field(default_factory=list)  # each group's lr as built (curriculum scales them)
    metrics_every_step: bool = True  # a gate reads a train.* series other than loss/grad_norm/lr
    lr_changes: bool = True  # False for a constant schedule without warmup: no scheduler step needed
    profiler_step: object = None  # torch.profiler's step() while a trace is being recorded
    readout: object = None  # readout.Readout: the steps' numbers still on the device
    reads_every_step: bool = False  # a per-step gate reads a train series: the host reads every step
    last_values: dict = field(default_factory=dict)  # the last step's numbers the host read (console)

    @property
    def base_lr(self) -> float:
        return self.initial_lrs[0]

    @property
    def main(self) -> bool:
        return self.dist is None or self.dist.rank == 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _factory(plan: Plan, kind: str):
    try:
        return cat.factory(plan.components[kind], kind)
    except cat.ComponentUnavailable as exc:
        raise SetupError(f"{exc}. The catalog declares it, but its implementation is missing "
                         f"from this install") from None


def component_factory(plan: Plan, kind: str):
    """The factory of the plan's ``kind`` component, as a run builds it (export rebuilds models with it)."""
    return _factory(plan, kind)


def _trigger(section: str, value, total: int | None, steps_per_epoch: float | None, dist=None):
    """Steps between events; ("epochs", n): at the step that completes every nth epoch;
    ("micro_steps", n): at the step whose micro-batches pass each multiple of n; or a
    WallClock for a time (``{"seconds": 1800}`` in the plan: checkpoint every 30min)."""
    if isinstance(value, dict) and "seconds" in value:
        from specrun.engine.clock import WallClock

        return WallClock(value["seconds"], dist)
    if isinstance(value, Qty) and value.span_unit == "micro_steps":
        return ("micro_steps", max(1, int(value.value)))
    if isinstance(value, Qty) and value.span_unit == "epochs" and steps_per_epoch \
            and float(value.value).is_integer():
        return ("epochs", max(1, int(value.value)))  # 312.5 steps an epoch must not round to 312
    steps = resolve_span(value, total, steps_per_epoch and max(1, round(steps_per_epoch)))
    if not isinstance(steps, int):
        raise SetupError(f"{section}.every {value}: this task has no epochs to count")
    return max(1, steps)


def _val_batches(plan: Plan, task) -> int:
    wanted = (plan.settings.get("validation") or {}).get("batches", 10)
    if wanted != "all":
        return wanted
    if not hasattr(task, "val_batch_count"):
        raise SetupError(f"validation.batches all: task {plan.components['task']['type']} generates its "
                         "validation data without end; give a number of batches")
    return task.val_batch_count()


DEFAULT_GUARD_EVERY = 10  # steps between memory checks when the spec gives a ram_limit alone


def _resolve_every(plan: Plan, total: int | None, steps_per_epoch: float | None, dist=None) -> dict:
    st = plan.settings
    out = {}
    for section in ("validation", "checkpoint", "log"):
        value = (st.get(section) or {}).get("every")
        if value is None:
            continue
        triggers = [_trigger(section, v, total, steps_per_epoch, dist)
                    for v in (value if isinstance(value, list) else [value])]
        out[section] = triggers[0] if len(triggers) == 1 else triggers  # a list: whichever comes first
    memory = st.get("memory") or {}
    guard = memory.get("check_every")
    if guard is not None:
        out["memory"] = _trigger("memory", guard, total, steps_per_epoch)
    elif memory.get("ram_limit"):
        out["memory"] = DEFAULT_GUARD_EVERY  # a limit with no check_every is still guarded
    return out


def setup(plan: Plan, run_dir: RunDir, console: Console, dist=None) -> Run:
    st = plan.settings
    seed_everything(plan.seed)  # the same on every rank: DDP needs identical initial weights
    device = dist.device if dist else dev.pick_device(st.get("device", "auto"))
    precision = dev.setup_precision(st, device)
    ctx = Context(
        seed=plan.seed, device=device, batch_size=plan.batch,
        rank=dist.rank if dist else 0, world_size=dist.world_size if dist else 1,
        cache_dir=str(Path(".specrun-cache")), run_dir=str(run_dir.path), log=console.say,
        extras={"dataloader": st.get("dataloader") or {},
                "spec_dir": str(Path(plan.source).parent) if plan.source and not plan.source.startswith("<")
                else "."},
    )
    task = with_spec_metrics(plan, _factory(plan, "task")(plan.components["task"]["params"], ctx), ctx)
    try:
        model = _factory(plan, "model")(plan.components["model"]["params"], task.model_info(), ctx)
        model = _prepare_model(model, st, precision, device)
        if dist is not None and dist.strategy == "fsdp":
            try:
                model = dist.shard(model)  # before the optimizer: it must hold the shards
            except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
                raise SetupError(f"distributed.strategy fsdp: cannot shard {type(model).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                                 "use strategy ddp") from exc
        loss_fn = explain_loss(plan, _factory(plan, "loss")(plan.components["loss"]["params"], ctx))
        optimizer = _factory(plan, "optimizer")(plan.components["optimizer"]["params"], model, ctx)
        per_epoch = task.batches_per_epoch()
        steps_per_epoch = per_epoch / plan.accumulate if per_epoch else None
        total = _total_steps(st, steps_per_epoch)
        sched = st.get("schedule") or {"type": "constant"}
        warmup = resolve_span(sched.get("warmup", 0), total, steps_per_epoch and round(steps_per_epoch))
        if not isinstance(warmup, int):
            raise SetupError(f"schedule.warmup {warmup}: cannot resolve without a finite run or epochs")
        scheduler = build_scheduler(optimizer, sched, total, warmup)
        train_model = dev.maybe_compile(model, st, device, precision.notes)
        if dist is not None:
            train_model = dist.wrap(train_model)
        dev.cap_vram((st.get("memory") or {}).get("vram_limit"), device, precision.notes)
        needs = _history_needs(plan)
        ck = st["checkpoint"]
        store = None  # one torch.save file per checkpoint, written by rank 0
        if sharded(plan):  # FSDP: each rank writes its own shards
            store = ShardedStore(run_dir.checkpoints, lambda: live_template(model, optimizer), dist)
        checkpointer = Checkpointer.from_settings(run_dir.checkpoints, ck, repair=run_dir.main, store=store)
        guard = MemoryGuard(st.get("memory") or {}, lambda: dev.empty_cache(device))
        every = _resolve_every(plan, total, steps_per_epoch, dist)
        val_batches = _val_batches(plan, task)
    except BaseException:
        task.close()
        raise
    _resolve_expectations(plan, total, steps_per_epoch)
    return Run(plan, run_dir, console, ctx, task, model, train_model, loss_fn, optimizer, scheduler,
               precision, Curriculum(plan.axes), History(*needs), checkpointer, guard, total,
               per_epoch, every, dist=dist, lr_changes=sched["type"] != "constant" or warmup > 0,
               metrics_every_step=_gates_read_train_metrics(plan),
               initial_lrs=list(scheduler.base_lrs), val_batches=val_batches)


def _history_needs(plan: Plan):
    """What the metric history keeps: the windows the gates read, plus the series the best
    checkpoint and a sweep's objective read."""
    needs = window_sizes(plan.gates)
    best = plan.settings["checkpoint"].get("best") or {}
    if best:
        needs[0].setdefault(best["metric"], 1)
    if plan.trial:
        needs[0].setdefault(plan.trial["objective"], 1)  # a sweep reports its objective as it goes
    return needs


def with_spec_metrics(plan: Plan, task, ctx: Context):
    """The task, reporting also what the spec's `metrics` asks for."""
    if "metrics" not in plan.components:
        return task
    from specrun.components.own.metrics import WithMetrics

    entry = plan.components["metrics"]
    try:
        return WithMetrics(task, _factory(plan, "metrics")(entry["params"], ctx))
    except BaseException:
        task.close()
        raise


def explain_loss(plan: Plan, loss_fn):
    """With the user's model or data, a built-in loss that does not fit says so instead of raising."""
    comps = plan.components
    if comps["loss"].get("code") or not (comps["model"].get("code") or comps["task"].get("code")):
        return loss_fn
    from specrun.components.own.loss import explained

    return explained(loss_fn, comps["loss"]["type"])


def _gates_read_train_metrics(plan: Plan) -> bool:
    from specrun.spec import expr as ex

    engine_own = {"train.loss", "train.grad_norm", "train.lr"}
    return any(ref.startswith("train.") and ref not in engine_own
               for gate in plan.gates for ref in ex.series_refs(gate.expr))


def _resolve_expectations(plan: Plan, total: int | None, steps_per_epoch: float | None) -> None:
    """`expect ... by 2 epochs` becomes a step once the epoch length is known."""
    for exp in plan.settings.get("expect", []):
        if exp.get("by") is None:
            continue
        if isinstance(exp["by"], Qty) and exp["by"].span_unit == "micro_steps":
            exp["by"] = ("micro_steps", int(exp["by"].value))  # judged at the step that passes it
            continue
        by = resolve_span(exp["by"], total, steps_per_epoch and max(1, round(steps_per_epoch)))
        if not isinstance(by, int):
            raise SetupError(f"expect ... by {exp['by']}: this task has no epochs to count")
        exp["by"] = by


def _total_steps(st: dict, steps_per_epoch: float | None) -> int | None:
    if st.get("max_steps"):
        return st["max_steps"]
    if st.get("max_epochs"):
        if not steps_per_epoch:
            raise SetupError("max_epochs is set but this task has no epochs; use max_steps")
        return math.ceil(st["max_epochs"] * steps_per_epoch)
    return None


def _prepare_model(model: torch.nn.Module, st: dict, precision: dev.Precision, device) -> torch.nn.Module:
    if st.get("gradient_checkpointing"):
        if getattr(model, "supports_gradient_checkpointing", False):
            model.set_gradient_checkpointing(True)
        else:
            msg = f"gradient_checkpointing: model {type(model).__name__} does not support it"
            if st["precision"].get("on_unsupported") == "error":
                raise SetupError(msg)
            precision.notes.append(msg + "; running without")
    model = model.to(device)
    if precision.weights == "bf16":
        model = model.to(torch.bfloat16)  # pure-bf16 weights, as the savant document trains
    return model
