"""Learning-rate schedules as multiplicative factors of the optimizer's base LR."""

from __future__ import annotations

import math

from specrun.sections import SchedulePolicy


def lr_factor(kind: str, step: int, total: int | None, warmup: int, warmup_start: float,
              floor: float) -> float:
    """Factor for optimizer step ``step`` (0-based: the step about to be taken).

    - constant:       1 (after the warmup, if any)
    - linear_warmup:  warmup_start -> 1 over ``warmup`` steps, then 1
    - cosine:         1 -> floor over the run, half a cosine wave
    - warmup_cosine:  the warmup, then the cosine over the remaining steps
    ``floor`` is min_ratio, or eta_min / lr.
    """
    if warmup and step < warmup:
        return warmup_start + (1.0 - warmup_start) * step / warmup
    if kind in ("constant", "linear_warmup") or not total:
        return 1.0
    start = warmup if kind == "warmup_cosine" else 0
    span = max(1, total - start)
    progress = min(1.0, max(0.0, (step - start) / span))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, schedule: SchedulePolicy, total: int | None, warmup: int):
    import torch

    kind, start = schedule.type, schedule.warmup_start

    def factor_for(group: dict):
        # eta_min is an LR, as in torch's CosineAnnealingLR: each group (Muon's and AdamW's
        # in mugrokfast) ends at it, whatever its own base LR. min_ratio is a share of each.
        floor = schedule.min_ratio or 0.0
        if schedule.eta_min is not None:
            floor = schedule.eta_min / group["lr"] if group["lr"] else 0.0
        return lambda step: lr_factor(kind, step, total, warmup, start, floor)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(g) for g in optimizer.param_groups])


def fast_forward(scheduler, step: int) -> None:
    """Put a fresh scheduler at ``step`` (after an optimizer reset on resume)."""
    import warnings

    scheduler.last_epoch = step - 1
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore")
        scheduler.step()
