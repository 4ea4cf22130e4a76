"""One trial: the spec with the trial's settings applied, run as an ordinary run.

The trial's run directory is a normal one (spec.train with the chosen values, plan.json,
metrics, checkpoints): `specrun run --run-dir DIR` continues it, export reads it. The
spec is checked again with the trial's `--set` options, so a choice is never run
unchecked, and `checkpoint.resume latest` is set so that a trial cut short continues
from its checkpoint in its own folder.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from specrun.spec import expr as ex
from specrun.spec.check import check
from specrun.spec.sweep import Sweep, set_option, without_sweep


@dataclass
class TrialRun:
    number: int
    params: dict  # path -> chosen plain value
    run_dir: Path

    @property
    def sets(self) -> tuple[str, ...]:
        return tuple(set_option(path, value) for path, value in self.params.items())


def trial_plan(doc, profile, overrides: tuple, trial: TrialRun, sweep: Sweep, sweep_name: str):
    """The plan of one trial; raises SpecError if a choice does not check."""
    from specrun.plan import build_plan

    # Checked without its sweep: a trial is one run, and its choices were checked one by one.
    overrides = tuple(o for o in overrides if o.partition("=")[0].strip().split(".")[0] != "sweep")
    spec = check(without_sweep(doc), profile, overrides + trial.sets + ("checkpoint.resume=latest",))
    plan = build_plan(spec)
    plan.trial = {"sweep": sweep_name, "number": trial.number, "objective": sweep.metric,
                  "prune": sweep.prune}
    return plan


def can_continue(plan, run_dir: Path) -> bool:
    """Whether ``run_dir`` is new, or holds a run with a checkpoint to continue from."""
    from specrun.engine.checkpoint import Checkpointer

    if not (run_dir / "plan.json").exists():
        return True
    return bool(Checkpointer.of(run_dir / plan.checkpoint.dir, plan.checkpoint, repair=False).candidates())


class Watch:
    """Asked after each step's gates: report the objective to Optuna, say whether to prune."""

    def __init__(self, sweep: Sweep, trial, beat):
        self.sweep, self.trial, self.beat = sweep, trial, beat
        self.seen: int | None = None  # how many values of the objective were already reported
        self.last_beat = time.monotonic()

    def __call__(self, run) -> str | None:
        from specrun.sweep.study import BEAT_S

        now = time.monotonic()
        if now - self.last_beat > BEAT_S:
            self.beat()
            self.last_beat = now
        ctx, step, metric = run.history.context, run.counters.step, self.sweep.metric
        count = ctx.counts.get(metric, 0)
        if self.seen is None:  # a resumed trial reports again only the latest value it had
            self.seen = 0 if run.counters.segment == 0 else max(0, count - 1)
        if count > self.seen and ctx.series.get(metric):
            self.seen = count
            value = ctx.series[metric][-1]
            if math.isfinite(value):
                self.trial.report(value, step)
                if self.sweep.pruner == "median" and self.trial.should_prune():
                    return f"pruned at step {step}: {metric} {value:.4g} is behind the median of earlier trials"
        gate = self.sweep.prune
        if gate is not None and ex.evaluate(gate.expr, ctx):
            values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in ex.explain(gate.expr, ctx).items())
            return f"pruned at step {step}: prune when {gate} ({values})"
        return None


def objective(run_dir: Path, metric: str) -> float | None:
    """The metric's last value in the trial's run directory (validation events keep full precision)."""
    from specrun.cli.runs import read_events, read_metrics, validation_series

    series = validation_series(read_events(run_dir)).get(metric) if metric.startswith("val.") else None
    series = series or read_metrics(run_dir).get(metric)
    if not series:
        return None
    value = series[-1][1]
    return value if math.isfinite(value) else None
