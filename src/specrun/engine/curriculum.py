"""The curriculum: independent axes of phases, each promoted by its own gate.

The task (and model, optimizer) see the merged ``set`` parameters of every
axis's current phase; later axes win on a clash, in the order the spec lists
them. Promotion is checked after every optimizer step, one phase at a time,
so a gate that already holds in the next phase promotes on the next step.

A gate reads only the evidence of its own phase: the latest value of a metric and
the ``mean/min/max(x, n)`` windows count what was recorded since the phase began
(``first``, ``best``, ``ema`` and ``plateau`` span the run). Without that, a phase
entered at step 151 would pass ``val.valid_grid_rate >= 0.8`` on the step-144
validation of the easier phase before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from specrun.spec import expr as ex
from specrun.plan import Axis


@dataclass
class AxisState:
    index: int = 0
    start_step: int = 0
    start_micro: int = 0  # micro-batch index when the phase began (phase.epochs)
    since: dict = field(default_factory=dict)  # each series' count when the phase began


@dataclass
class Promotion:
    axis: str
    old: str
    new: str
    values: dict  # what the gate read when it passed


class Curriculum:
    def __init__(self, axes: list[Axis]):
        self.axes = axes
        self.states = [AxisState(axis.start) for axis in axes]

    def __bool__(self) -> bool:
        return bool(self.axes)

    def phase(self, i: int):
        return self.axes[i].phases[self.states[i].index]

    def phase_names(self) -> dict[str, str]:
        return {axis.name: self.phase(i).name for i, axis in enumerate(self.axes)}

    def merged(self) -> dict[str, dict]:
        """{"task": {...}, "model": {...}, ...}: what the phases so far apply.

        A parameter a phase sets stays set in later phases of its axis until one sets
        it again, whether the run got there uninterrupted or through a resume.
        """
        out: dict[str, dict] = {}
        for i, axis in enumerate(self.axes):
            for phase in axis.phases[: self.states[i].index + 1]:
                for target, params in phase.set.items():
                    out.setdefault(target, {}).update(params)
        return out

    def reached(self, dotted: str) -> bool:
        axis_name, _, phase_name = dotted.rpartition(".")
        for i, axis in enumerate(self.axes):
            if axis_name in ("", axis.name):
                names = [p.name for p in axis.phases]
                if phase_name in names:
                    return self.states[i].index >= names.index(phase_name)
        return False

    def gate_context(self, ctx: ex.Context, i: int, step: int, micro: int, per_epoch: int | None) -> None:
        st = self.states[i]
        ctx.scalars["phase.steps"] = step - st.start_step
        ctx.scalars["phase.index"] = st.index
        ctx.scalars["phase.epochs"] = (micro - st.start_micro) / per_epoch if per_epoch else 0.0
        ctx.scalars["phase.micro_steps"] = micro - st.start_micro
        ctx.phase_reached = self.reached

    def check(self, ctx: ex.Context, step: int, micro: int, per_epoch: int | None) -> list[Promotion]:
        """Promote every axis whose gate holds now; return what moved."""
        moved = []
        for i, axis in enumerate(self.axes):
            phase = self.phase(i)
            if phase.promote is None or self.states[i].index + 1 >= len(axis.phases):
                continue
            self.gate_context(ctx, i, step, micro, per_epoch)
            ctx.since = self.states[i].since
            try:
                passed = ex.evaluate(phase.promote.expr, ctx)
                values = ex.explain(phase.promote.expr, ctx) if passed else {}
            finally:
                ctx.since = None  # stop and expect gates read the whole run
            if passed:
                self.states[i] = AxisState(self.states[i].index + 1, step, micro, dict(ctx.counts))
                moved.append(Promotion(axis.name, phase.name, self.phase(i).name, values))
        return moved

    def restart(self, step: int, micro: int, counts: dict[str, int]) -> None:
        """Back to each axis's start phase (the sha256 document's start_round rule)."""
        self.states = [AxisState(axis.start, step, micro, dict(counts)) for axis in self.axes]

    def state_dict(self) -> dict:
        return {"axes": [[a.name, s.index, s.start_step, s.start_micro, s.since]
                         for a, s in zip(self.axes, self.states)]}

    def load_state_dict(self, state: dict) -> None:
        by_name = {row[0]: row[1:] for row in state["axes"]}
        for i, axis in enumerate(self.axes):
            if axis.name in by_name:
                idx, start, micro, *since = by_name[axis.name]  # older checkpoints lack `since`
                self.states[i] = AxisState(min(idx, len(axis.phases) - 1), start, micro,
                                           dict(since[0]) if since else {})
