"""How a Plan reads to a person (``specrun plan``)."""

from __future__ import annotations

from specrun.spec.printer import format_expr, quote
from specrun.plan import Plan
from specrun.spec.schema import spec_schema
from specrun.spec.units import BYTE_UNITS, TIME_UNITS
from specrun.spec.values import Qty, describe


def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else describe(x)


def _flat(params: dict, prefix: str = ""):
    for k, v in params.items():
        if isinstance(v, dict) and set(v) == {"seconds"}:  # a wall-clock interval: checkpoint every 30min
            yield f"{prefix}{k}", Qty(v["seconds"], "s")
        elif isinstance(v, dict) and v:
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _bytes(n: int) -> str:
    """10737418240 -> 10GiB, 10000000000 -> 10GB: the plan resolved the unit, a person reads it back."""
    for unit, size in sorted(BYTE_UNITS.items(), key=lambda kv: -kv[1]):
        if size > 1 and n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n:,} bytes"


def _seconds(s: float) -> str:
    for unit, size in sorted(TIME_UNITS.items(), key=lambda kv: -kv[1]):
        if s >= size and float(s / size).is_integer():
            return f"{int(s / size)}{unit}"
    return f"{s:g}s"


def _value(value, kind: str | None = None) -> str:
    """One setting's value as a person writes it: sizes and durations with their unit, strings
    holding line breaks or tabs quoted (a raw separator would break the line)."""
    if kind == "bytes" and isinstance(value, int):
        return _bytes(value)
    if kind == "duration" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _seconds(value)
    if isinstance(value, str) and (not value.isprintable() or value != value.strip()):
        return quote(value)
    if isinstance(value, dict) and set(value) == {"seconds"}:
        return _seconds(value["seconds"])
    if isinstance(value, Qty) and value.unit == "s":
        return _seconds(value.value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return describe(value)


def _kinds(section: str) -> dict:
    """key -> spec type (bytes, duration) of a top-level section's settings."""
    props = (spec_schema()["properties"].get(section) or {}).get("properties") or {}
    return {k: v.get("type") for k, v in props.items() if isinstance(v.get("type"), str)}


def _params(params: dict, section: str | None = None) -> str:
    """``k=v`` pairs; nested blocks spelled out (``best.metric=val.accuracy``), not ``{...}``."""
    kinds = _kinds(section) if section else {}
    return "  ".join(f"{k}={_value(v, kinds.get(k))}" for k, v in _flat(params)) or "(defaults)"


def _span(value, total) -> str:
    if isinstance(value, Qty) and value.span_unit == "micro_steps":
        return f"{value} (at the step that passes each multiple)"
    if isinstance(value, Qty):
        return f"{value} (resolved when the epoch length is known)"
    return f"{_n(value)} steps"


def describe_plan(plan: Plan) -> str:
    st = plan.settings
    total = st.get("max_steps")
    lines = [f"spec {plan.name}   hash {plan.spec_hash}"
             + (f"   profile {plan.profile}" if plan.profile else "")
             + (f"   overrides {', '.join(plan.overrides)}" if plan.overrides else "")]
    for kind in ("task", "model", "loss", "optimizer"):
        comp = plan.components[kind]
        extra = ""
        if kind == "model" and "parameters" in plan.estimates:
            extra = f"   (~{plan.estimates['parameters']:,} parameters)"
        if comp.get("code", {}).get("file"):
            extra += f"   ({comp['code']['file']})"
        lines.append(f"{kind:<11}{comp['type']}{extra}")
        lines.append(f"{'':<11}{_params(comp['params'])}")
        if comp.get("from_data"):
            lines.append(f"{'':<11}from the data: {', '.join(comp['from_data'])}")
        if comp.get("unchecked"):
            lines.append(f"{'':<11}note: {comp['unchecked']}")
    if "metrics" in plan.components:
        lines.append(f"{'metrics':<11}{', '.join(plan.components['metrics']['names'])}")
    ws = plan.world_size
    lines.append(f"{'batch':<11}{plan.batch} per micro-batch x {plan.accumulate} accumulated"
                 + (f" x {ws} processes" if ws > 1 else "")
                 + f" = {plan.effective_batch} samples per optimizer step"
                 + (f" ({plan.batch * plan.accumulate} per rank)" if ws > 1 else ""))
    if total:
        length = f"{_n(total)} optimizer steps"
    elif st.get("max_epochs"):
        length = f"{st['max_epochs']} epochs"
    elif st.get("stop"):
        length = "until the stop gate holds (or the run is interrupted)"
    else:
        length = "no end: no max_steps, max_epochs or stop gate; runs until interrupted"
    lines.append(f"{'length':<11}{length}")
    sched = st.get("schedule") or {"type": "constant"}
    text = sched["type"]
    if sched.get("warmup"):
        raw = plan.resolved.get("schedule.warmup")
        text += f", warmup {raw + ' = ' if raw else ''}{_span(sched['warmup'], total)}"
        if sched.get("warmup_start"):
            text += f" from {sched['warmup_start']} x lr"
    if "min_ratio" in sched:
        text += f", floor {sched['min_ratio']} x lr"
    if "eta_min" in sched:
        text += f", down to {sched['eta_min']}"
    lines.append(f"{'schedule':<11}{text}")
    prec = st.get("precision") or {"type": "fp32"}
    lines.append(f"{'precision':<11}{_params(prec)}")
    if "precision.loss_scale" in plan.resolved:
        lines.append(f"{'':<11}loss_scale {plan.resolved['precision.loss_scale']}")
    lines.append(f"{'device':<11}{st.get('device')}   compile={describe(st.get('compile'))}"
                 f"   gradient_checkpointing={describe(st.get('gradient_checkpointing'))}")
    if plan.axes:
        lines.append("curriculum")
        for axis in plan.axes:
            lines.append(f"  axis {axis.name}" + (f" (starts in {axis.phases[axis.start].name})"
                                                  if axis.start else ""))
            for i, phase in enumerate(axis.phases, 1):
                sets = "  ".join(f"{k}={_value(v)}" for k, v in _flat(phase.set))
                gate = f"promote when {format_expr(phase.promote.expr)}" if phase.promote else "final phase"
                lines.append(f"    {i}. {phase.name:<10} {sets}".rstrip())
                lines.append(f"       {gate}")
    for sw in plan.switches:
        lines.append(f"{'switch':<11}{sw.target}.{sw.name} when {format_expr(sw.gate.expr)}")
    if st.get("stop"):
        lines.append(f"{'stop':<11}when {st['stop']}")
    for exp in st.get("expect", []):
        by = exp.get("by")
        if by is None:
            when = " throughout (after every step)" if exp.get("when") == "throughout" else " at the end"
        elif isinstance(by, Qty) and by.span_unit == "micro_steps":
            when = f" by {by} (at the step that passes it)"
        elif isinstance(by, Qty):
            when = f" by {by} (resolved when the epoch length is known)"
        else:
            when = f" by step {_n(by)}"
        severity = ", warn and go on" if exp.get("severity") == "warn" else ""
        lines.append(f"{'expect':<11}{exp['expr']}{when}{severity}")
    for where, value in plan.resolved.items():
        if "run.progress" in where:
            lines.append(f"{'progress':<11}{where} -> {value}")
    for section in ("validation", "checkpoint", "memory", "log", "distributed", "profiler"):
        if st.get(section):
            lines.append(f"{section:<10} {_params(st[section], section)}")  # distributed: 11 letters
    return "\n".join(lines)
