"""Setup: turn a Plan into live objects, in an order that makes runs reproducible.

Seeds first (model initialisation draws from them), then the task (it knows
the data's shapes), the model (moved to the device, cast, optionally
checkpointed and compiled), the loss, the optimizer and its schedule. Nothing
here trains; ``loop.train`` does.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
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
from specrun.engine.timeline import Timeline, TimelineError, resolve_timeline
from specrun.plan import Plan


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
    timeline: Timeline  # the run's spans in steps (engine/timeline.py)
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
    def total_steps(self) -> int | None:
        return self.timeline.total_steps

    @property
    def per_epoch(self) -> int | None:  # micro-batches per epoch
        return self.timeline.per_epoch

    @property
    def every(self) -> dict:  # "validation"/"checkpoint"/"log"/"memory" -> a trigger (timeline.py)
        return self.timeline.every

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


def _val_batches(plan: Plan, task) -> int:
    wanted = plan.validation.batches if plan.validation else 10
    if wanted != "all":
        return wanted
    if not hasattr(task, "val_batch_count"):
        raise SetupError(f"validation.batches all: task {plan.components['task']['type']} generates its "
                         "validation data without end; give a number of batches")
    return task.val_batch_count()


def setup(plan: Plan, run_dir: RunDir, console: Console, dist=None) -> Run:
    seed_everything(plan.seed)  # the same on every rank: DDP needs identical initial weights
    device = dist.device if dist else dev.pick_device(plan.device)
    precision = dev.setup_precision(plan.precision, device)
    ctx = Context(
        seed=plan.seed, device=device, batch_size=plan.batch,
        rank=dist.rank if dist else 0, world_size=dist.world_size if dist else 1,
        cache_dir=str(Path(".specrun-cache")), run_dir=str(run_dir.path), log=console.say,
        extras={"dataloader": asdict(plan.dataloader),
                "spec_dir": str(Path(plan.source).parent) if plan.source and not plan.source.startswith("<")
                else "."},
    )
    task = with_spec_metrics(plan, _factory(plan, "task")(plan.components["task"]["params"], ctx), ctx)
    try:
        model = _factory(plan, "model")(plan.components["model"]["params"], task.model_info(), ctx)
        model = _prepare_model(model, plan, precision, device)
        if dist is not None and dist.strategy == "fsdp":
            try:
                model = dist.shard(model)  # before the optimizer: it must hold the shards
            except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
                raise SetupError(f"distributed.strategy fsdp: cannot shard {type(model).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                                 "use strategy ddp") from exc
        loss_fn = explain_loss(plan, _factory(plan, "loss")(plan.components["loss"]["params"], ctx))
        optimizer = _factory(plan, "optimizer")(plan.components["optimizer"]["params"], model, ctx)
        try:  # every span the data decides, settled once the task knows an epoch's length
            timeline = resolve_timeline(plan, task.batches_per_epoch(), dist)
        except TimelineError as exc:
            raise SetupError(str(exc)) from None
        scheduler = build_scheduler(optimizer, plan.schedule, timeline.total_steps, timeline.warmup)
        train_model = dev.maybe_compile(model, plan.compile, plan.precision, device, precision.notes)
        if dist is not None:
            train_model = dist.wrap(train_model)
        dev.cap_vram(plan.memory.vram_limit, device, precision.notes)
        needs = _history_needs(plan)
        store = None  # one torch.save file per checkpoint, written by rank 0
        if sharded(plan):  # FSDP: each rank writes its own shards
            store = ShardedStore(run_dir.checkpoints, lambda: live_template(model, optimizer), dist,
                                 background=plan.checkpoint.background)
        checkpointer = Checkpointer.of(run_dir.checkpoints, plan.checkpoint, repair=run_dir.main, store=store)
        guard = MemoryGuard(plan.memory, lambda: dev.empty_cache(device))
        val_batches = _val_batches(plan, task)
    except BaseException:
        task.close()
        raise
    return Run(plan, run_dir, console, ctx, task, model, train_model, loss_fn, optimizer, scheduler,
               precision, Curriculum(plan.axes), History(*needs), checkpointer, guard, timeline,
               dist=dist, lr_changes=plan.schedule.type != "constant" or timeline.warmup > 0,
               metrics_every_step=_gates_read_train_metrics(plan),
               initial_lrs=list(scheduler.base_lrs), val_batches=val_batches)


def _history_needs(plan: Plan):
    """What the metric history keeps: the windows the gates read, plus the series the best
    checkpoint and a sweep's objective read."""
    needs = window_sizes(plan.gates)
    if plan.checkpoint.best:
        needs[0].setdefault(plan.checkpoint.best.metric, 1)
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


def _prepare_model(model: torch.nn.Module, plan: Plan, precision: dev.Precision, device) -> torch.nn.Module:
    if plan.gradient_checkpointing:
        if getattr(model, "supports_gradient_checkpointing", False):
            model.set_gradient_checkpointing(True)
        else:
            msg = f"gradient_checkpointing: model {type(model).__name__} does not support it"
            if plan.precision.on_unsupported == "error":
                raise SetupError(msg)
            precision.notes.append(msg + "; running without")
    model = model.to(device)
    if precision.weights == "bf16":
        model = model.to(torch.bfloat16)  # pure-bf16 weights, as the savant document trains
    return model
