"""lint: settings that are valid but can never take effect, as W-code warnings.

A gate that cannot hold before ``max_steps``, an expectation judged after the run
ends, a validation or checkpoint interval longer than the run, an input file that
is not there: each is legal, and each would pass silently until the run showed
nothing happened. They are warnings, located like errors; ``validate`` fails on
them only under ``--strict``. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from specrun.spec import catalog as cat
from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic
from specrun.spec.document import Located
from specrun.spec.values import Gate, Qty

_CEIL = {">=": 0, ">": 1}  # step >= N holds from N on, step > N from N + 1
_FLIP = {"<=": ">=", "<": ">"}  # N <= step is step >= N
_COUNTERS = {"step": "step", "phase.steps": "phase_steps", "epoch": "epoch", "phase.epochs": "phase_epochs"}
_NONE = {"step": 0, "phase_steps": 0, "epoch": 0, "phase_epochs": 0}


def _count(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    return None


def _number(node) -> float | None:
    if isinstance(node, s.Number):
        return node.value
    if isinstance(node, s.Quantity):
        from specrun.spec.values import plain

        qty = plain(node)
        return qty.value if isinstance(qty, Qty) and qty.span_unit in ("steps", "epochs") else None
    return None


def lower_bounds(expr) -> dict[str, float]:
    """The least step / phase.steps / epoch / phase.epochs at which ``expr`` can hold."""
    if isinstance(expr, s.BinOp) and expr.op in ("and", "or"):
        left, right = lower_bounds(expr.left), lower_bounds(expr.right)
        pick = max if expr.op == "and" else min
        return {k: pick(left[k], right[k]) for k in _NONE}
    if isinstance(expr, s.BinOp) and expr.op in (">=", ">", "<=", "<", "=="):
        ref, op, other = expr.left, expr.op, expr.right
        if not isinstance(ref, s.Ref):
            ref, other, op = expr.right, expr.left, _FLIP.get(expr.op, expr.op)
        value = _number(other)
        if isinstance(ref, s.Ref) and ref.dotted in _COUNTERS and value is not None and op in (">=", ">", "=="):
            return {**_NONE, _COUNTERS[ref.dotted]: value + _CEIL.get(op, 0)}
    return dict(_NONE)


def _run_length(data: dict) -> tuple[int | None, int | None]:
    steps, epochs = _count(data.get("max_steps")), _count(data.get("max_epochs"))
    return (int(steps) if steps and steps > 0 else None), (int(epochs) if epochs and epochs > 0 else None)


def _steps_of(value) -> tuple[float | None, float | None]:
    """(steps, epochs) a span setting names; None for what it does not say."""
    if isinstance(value, Qty) and value.dimension == "span":
        if value.span_unit == "steps":
            return value.value, None
        if value.span_unit == "epochs":
            return None, value.value
        return None, None
    n = _count(value)
    return n, None


def _d(value) -> dict:
    return value if isinstance(value, dict) else {}


# ---- W100: gates that cannot hold before the run ends ---------------------------------------------

def _curriculum_warnings(loc: Located, data: dict, steps: int | None, epochs: int | None) -> list[Diagnostic]:
    out = []
    cur = _d(data.get("curriculum"))
    if isinstance(cur.get("axes"), list):
        axes = [(("curriculum", "axes", i), a) for i, a in enumerate(cur["axes"]) if isinstance(a, dict)]
    else:
        axes = [(("curriculum",), cur)]
    for base, axis in axes:
        phases = axis.get("phases") if isinstance(axis.get("phases"), list) else []
        at_step, at_epoch, bounded = 0.0, 0.0, False
        for i, phase in enumerate(phases):
            gate = _d(phase).get("promote")
            if not isinstance(gate, Gate) or i + 1 >= len(phases):
                continue
            b = lower_bounds(gate.expr)
            bounded = bounded or any(b.values())
            at_step = max(at_step + max(b["phase_steps"], 1), b["step"])
            at_epoch = max(at_epoch + b["phase_epochs"], b["epoch"])
            names = [str(_d(p).get("name")) for p in phases[i + 1:]]
            later = f"{', '.join(names)} never train{'s' if len(names) == 1 else ''}"
            for unit, at, limit in (("step", at_step, steps), ("epoch", at_epoch, epochs)):
                if bounded and limit and at > 0 and at >= limit:
                    out.append(Diagnostic(
                        "W100", f"phase {_d(phase).get('name')} cannot be promoted before {unit} {at:,g} "
                                f"and the run ends at max_{unit}s {limit:,}: {later}",
                        loc.value_span(base + ("phases", i, "promote")),
                        f"lower the gate's {unit} count, or lengthen the run"))
                    break
            else:
                continue
            break
    return out


def _gate_paths(data, path: tuple = ()):
    if isinstance(data, Gate):
        yield path, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _gate_paths(v, path + (k,))


def _other_gate_warnings(loc: Located, data: dict, steps: int | None, epochs: int | None) -> list[Diagnostic]:
    """Switches in component blocks (``enable when step > 5000``) and the stop gate."""
    out = []
    found = [(("stop",), data["stop"])] if isinstance(data.get("stop"), Gate) else []
    for kind in cat.KINDS:
        found += list(_gate_paths(_d(data.get(kind)), (kind,)))
    for path, gate in found:
        b = lower_bounds(gate.expr)
        what = "the stop gate" if path == ("stop",) else f"switch {'.'.join(path)}"
        if steps and b["step"] > steps:
            out.append(Diagnostic("W100", f"{what} cannot hold before step {int(b['step']):,} and the run ends at "
                                          f"max_steps {steps:,}: it never takes effect", loc.value_span(path)))
        elif epochs and b["epoch"] > epochs:
            out.append(Diagnostic("W100", f"{what} cannot hold before epoch {b['epoch']:g} and the run ends at "
                                          f"max_epochs {epochs}: it never takes effect", loc.value_span(path)))
    return out


# ---- W101: expectations judged after the end ----------------------------------------------------------

def _expect_warnings(loc: Located, data: dict, steps: int | None, epochs: int | None) -> list[Diagnostic]:
    out = []
    for i, exp in enumerate(data.get("expect") if isinstance(data.get("expect"), list) else ()):
        by_steps, by_epochs = _steps_of(_d(exp).get("by"))
        if steps and by_steps is not None and by_steps > steps:
            late = f"by {by_steps:g} steps, after the run ends at max_steps {steps:,}"
        elif epochs and by_epochs is not None and by_epochs > epochs:
            late = f"by {by_epochs:g} epochs, after the run ends at max_epochs {epochs}"
        else:
            continue
        out.append(Diagnostic("W101", f"this expectation is judged {late}: it is never checked",
                              loc.value_span(("expect", i, "by")), "judge it within the run, or drop `by`"))
    return out


# ---- W102: intervals longer than the run -----------------------------------------------------------------

_INTERVALS = (
    ("validation", "every", "validation never runs"),
    ("checkpoint", "every", "only the final checkpoint is written"),
    ("log", "every", "no metric row is written until the end of the run"),
    ("memory", "check_every", "the memory guard never looks"),
)


def _interval_warnings(loc: Located, data: dict, steps: int | None, epochs: int | None) -> list[Diagnostic]:
    out = []
    for section, key, consequence in _INTERVALS:
        every = _d(data.get(section)).get(key)
        values = every if isinstance(every, list) else [every]
        longer = []
        for value in values:
            n_steps, n_epochs = _steps_of(value)
            longer.append(bool(steps and n_steps is not None and n_steps > steps)
                          or bool(epochs and n_epochs is not None and n_epochs > epochs))
        if every is None or not all(longer):
            continue
        length = f"max_steps {steps:,}" if steps else f"max_epochs {epochs}"
        shown = loc.written((section, key)) or str(every)
        out.append(Diagnostic("W102", f"{section}.{key} {shown} is longer than the run ({length}): {consequence}",
                              loc.value_span((section, key)), "make it shorter than the run, or remove it"))
    return out


# ---- W103: input files that are not there -------------------------------------------------------------------

def input_files(data: dict) -> list[tuple[tuple, str]]:
    """(path in the spec, file) for every component parameter declared ``"format": "input-file"``."""
    out = []
    for kind in cat.KINDS:
        block = _d(data.get(kind))
        comp = cat.lookup(kind, block.get("type")) if isinstance(block.get("type"), str) else None
        if comp is None:
            continue
        for key, schema in (comp.params.get("properties") or {}).items():
            if not isinstance(schema, dict) or schema.get("format") != "input-file":
                continue
            value = block.get(key)
            files = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            out += [((kind, key) + ((i,) if isinstance(value, list) else ()), f)
                    for i, f in enumerate(files) if isinstance(f, str)]
    return out


def _file_warnings(loc: Located, data: dict) -> list[Diagnostic]:
    return [Diagnostic("W103", f"{'.'.join(str(p) for p in path[:2])}: input file {name!r} does not exist",
                       loc.value_span(path), "paths are relative to the directory specrun runs in")
            for path, name in input_files(data) if not Path(name).exists()]


# ---- entry point ----------------------------------------------------------------------------------------------

def warnings(loc: Located) -> list[Diagnostic]:
    """Every W-code warning for a located (and already error-free) spec."""
    data = loc.data
    steps, epochs = _run_length(data)
    out = _curriculum_warnings(loc, data, steps, epochs)
    out += _other_gate_warnings(loc, data, steps, epochs)
    out += _expect_warnings(loc, data, steps, epochs)
    out += _interval_warnings(loc, data, steps, epochs)
    out += _file_warnings(loc, data)
    out += _own_code_warnings(loc, data)
    return out


def _own_code_warnings(loc: Located, data: dict) -> list[Diagnostic]:
    """The user's code validate cannot read (no source, a constructor from elsewhere): said,
    and its settings are checked when the run starts."""
    from specrun.spec import owncode

    out = []
    for kind in cat.KINDS:
        block = data.get(kind)
        name = block.get("type") if isinstance(block, dict) else None
        if not owncode.is_reference(name):
            continue
        try:
            comp = cat.resolve(kind, name, loc.path)
        except owncode.CodeProblem:  # an error, reported by check
            continue
        if comp is not None and comp.extra.get("unchecked"):
            out.append(Diagnostic("W300", f"{kind} {name}: {comp.extra['unchecked']}",
                                  loc.value_span((kind, "type")),
                                  "validate reads the source; where there is none, the run checks the settings"))
    return out
