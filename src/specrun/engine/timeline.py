"""When things happen, in optimizer steps: the spans only the data can settle, resolved once.

``build_plan`` resolves every span the spec alone decides (``500 steps``, ``5%`` of
``max_steps``, a warmup in micro-steps). What is left needs an epoch's length, which
the task knows only once it is built: ``max_epochs``, ``every 1 epoch``, ``warmup
1 epoch``, ``5%`` of a run in epochs, ``expect ... by 2 epochs``. ``resolve_timeline``
settles all of them in one place, right after setup builds the task; the plan itself is
never edited.

A trigger (how often something happens) is one of:
- an int: every N optimizer steps;
- ("epochs", n): at the step that completes every nth epoch (an epoch of 312.5 steps
  must not round to 312, so whole epochs are counted in micro-batches);
- ("micro_steps", n): at the step whose micro-batches pass each multiple of n;
- a WallClock: every so many seconds (``checkpoint every 30min``);
- a list of those: whichever comes first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from specrun.plan import Plan, resolve_span
from specrun.spec.values import Qty

DEFAULT_GUARD_EVERY = 10  # steps between memory checks when the spec gives a ram_limit alone


class TimelineError(RuntimeError):
    """A span this task cannot settle (epochs of a task without epochs)."""


@dataclass(frozen=True)
class Timeline:
    total_steps: int | None  # optimizer steps in the run; None: until a gate stops it
    per_epoch: int | None  # micro-batches per epoch; None: the task has no epochs
    warmup: int  # optimizer steps of LR warmup
    every: dict = field(default_factory=dict)  # "validation"/"checkpoint"/"log"/"memory" -> trigger
    deadlines: tuple = ()  # one per plan.expectations: None, steps, or ("micro_steps", n)


def resolve_timeline(plan: Plan, per_epoch: int | None, dist=None) -> Timeline:
    """The run's spans in steps, given the task's micro-batches per epoch (None: no epochs)."""
    steps_per_epoch = per_epoch / plan.accumulate if per_epoch else None
    total = _total_steps(plan, steps_per_epoch)
    whole = steps_per_epoch and max(1, round(steps_per_epoch))
    warmup = resolve_span(plan.schedule.warmup, total, whole)
    if not isinstance(warmup, int):
        raise TimelineError(f"schedule.warmup {warmup}: cannot resolve without a finite run or epochs")
    return Timeline(total, per_epoch, warmup, _every(plan, total, steps_per_epoch, dist),
                    tuple(_deadline(e.by, total, whole) for e in plan.expectations))


def _total_steps(plan: Plan, steps_per_epoch: float | None) -> int | None:
    if plan.max_steps:
        return plan.max_steps
    if plan.max_epochs:
        if not steps_per_epoch:
            raise TimelineError("max_epochs is set but this task has no epochs; use max_steps")
        return math.ceil(plan.max_epochs * steps_per_epoch)
    return None


def _every(plan: Plan, total: int | None, steps_per_epoch: float | None, dist) -> dict:
    out = {}
    for section, value in (("validation", plan.validation and plan.validation.every),
                           ("checkpoint", plan.checkpoint.every), ("log", plan.log.every)):
        if value is None:
            continue
        triggers = [_trigger(section, v, total, steps_per_epoch, dist)
                    for v in (value if isinstance(value, list) else [value])]
        out[section] = triggers[0] if len(triggers) == 1 else triggers  # a list: whichever comes first
    if plan.memory.check_every is not None:
        out["memory"] = _trigger("memory", plan.memory.check_every, total, steps_per_epoch)
    elif plan.memory.ram_limit:
        out["memory"] = DEFAULT_GUARD_EVERY  # a limit with no check_every is still guarded
    return out


def _trigger(section: str, value, total: int | None, steps_per_epoch: float | None, dist=None):
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
        raise TimelineError(f"{section}.every {value}: this task has no epochs to count")
    return max(1, steps)


def _deadline(by, total: int | None, steps_per_epoch: int | None):
    """`expect ... by SPAN` as the step it is judged at (micro-steps: the step that passes it)."""
    if by is None:
        return None
    if isinstance(by, Qty) and by.span_unit == "micro_steps":
        return ("micro_steps", int(by.value))
    steps = resolve_span(by, total, steps_per_epoch)
    if not isinstance(steps, int):
        raise TimelineError(f"expect ... by {by}: this task has no epochs to count")
    return steps


def falls_due(every: dict, section: str, step: int, epoch_done: int | None, micro: tuple[int, int] = (0, 0)) -> bool:
    """Whether `section.every` falls on this step: N steps, the step that completes every Nth
    epoch, or the step whose micro-batches (``micro``: the count before and after it) pass a
    multiple of N micro-steps."""
    n = every.get(section)
    if type(n) is int:  # the common case first
        return step % n == 0
    if isinstance(n, list):
        return any(falls_due({section: one}, section, step, epoch_done, micro) for one in n)
    if hasattr(n, "due"):  # a wall-clock interval (engine/clock.py): checkpoint every 30min
        return n.due()
    if isinstance(n, tuple) and n[0] == "micro_steps":
        return micro[1] // n[1] > micro[0] // n[1]
    if isinstance(n, tuple):
        return epoch_done is not None and epoch_done % n[1] == 0
    return n is not None and step % n == 0


def next_decision(every: dict, step: int, micro: int, accumulate: int, per_epoch: int | None) -> float:
    """The first step after ``step`` on which a trigger in ``every`` can fall, or an epoch can
    end (``micro``: the micro-batches taken by the end of ``step``; every step takes
    ``accumulate``). The steps before it decide nothing. A wall clock is asked on every step
    (across ranks it is a collective): then the answer is the next step. ``math.inf``: never.
    """
    def passing(multiple: int) -> int:  # the step whose micro-batches pass the next multiple
        target = (micro // multiple + 1) * multiple
        return step + -(-(target - micro) // accumulate)

    steps = [passing(per_epoch)] if per_epoch else []  # an epoch's end: its report, `every N epochs`
    for trigger in every.values():
        for one in trigger if isinstance(trigger, list) else [trigger]:
            if type(one) is int:
                steps.append((step // one + 1) * one)
            elif isinstance(one, tuple) and one[0] == "micro_steps":
                steps.append(passing(one[1]))
            elif not (isinstance(one, tuple) and per_epoch):  # a wall clock: not counted in steps
                return step + 1
    return min(steps, default=math.inf)
