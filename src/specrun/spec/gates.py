"""gates: the rules for expressions after `when` and `expect`.

Every name must exist (metrics per split from the task and model entries, context
names), every function and its arguments match the function table in expr.py, a
quantity fits what it is compared with, and a gate is a condition.
"""

from __future__ import annotations

from specrun.spec import expr as ex
from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic, did_you_mean
from specrun.spec.document import Located
from specrun.spec.own_rules import component_of, metric_names
from specrun.spec.printer import format_expr
from specrun.spec.values import Gate, Qty

# ---- semantic rules ------------------------------------------------------------------------

def gates_in(data: dict, path: tuple = ()):
    """(path, Gate) for every gate anywhere in the data."""
    if isinstance(data, Gate):
        yield path, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from gates_in(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from gates_in(v, path + (i,))


def as_block(value) -> dict:
    """``value`` if it is a block, else {}: semantic rules run beside the schema's, on data
    that may not have the expected shape, and must not trip over it."""
    return value if isinstance(value, dict) else {}


def _num(value):
    """``value`` if it is a plain number (not a bool), else None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def curriculum_axes(data: dict) -> list[tuple[str, list[dict]]]:
    """(axis name, its phase entries) for the curriculum; one axis 'curriculum' without axes."""
    cur = as_block(data.get("curriculum"))
    if isinstance(cur.get("axes"), list):
        return [(a.get("name"), [p for p in a.get("phases") if isinstance(p, dict)]
                 if isinstance(a.get("phases"), list) else [])
                for a in cur["axes"] if isinstance(a, dict)]
    if isinstance(cur.get("phases"), list):
        return [("curriculum", [p for p in cur["phases"] if isinstance(p, dict)])]
    return []


def known_metrics(data: dict, spec_path: str = "") -> dict[str, set[str]]:
    task, model = component_of(data, "task", spec_path), component_of(data, "model", spec_path)
    task_metrics = set(task.metrics) if task else set()
    model_metrics = set(model.metrics) if model else set()
    declared = {name for name, _ in metric_names(data, spec_path)}  # the spec's `metrics`
    return {
        "train": {"loss", "grad_norm", "lr"} | task_metrics | model_metrics | declared,
        "val": {"loss"} | task_metrics | model_metrics | declared,
    }


def phase_names_of(data: dict) -> set[str]:
    """What reached() may name: axis.phase, and the bare phase name without axes."""
    axes = curriculum_axes(data)
    names = {f"{axis}.{p.get('name')}" for axis, phases in axes for p in phases}
    if axes and axes[0][0] == "curriculum":
        names |= {str(p.get("name")) for _, phases in axes for p in phases}
    return names


def check_expr(loc: Located, path: tuple, gate: Gate, data: dict, in_phase: bool,
                metrics: dict | None = None, phase_names: set | None = None) -> list[Diagnostic]:
    out = []
    metrics = known_metrics(data, loc.path) if metrics is None else metrics
    phase_names = phase_names_of(data) if phase_names is None else phase_names
    targets = {id(n.args[0]) for n in ex.walk(gate.expr)
               if isinstance(n, s.Call) and n.name == "reached" and n.args}
    for node in ex.walk(gate.expr):
        if isinstance(node, s.Ref) and id(node) not in targets:  # reached(axis.phase) names a phase
            out += _check_ref(node, metrics, in_phase)
        elif isinstance(node, s.Call):
            out += _check_call(node, phase_names)
    kinds: list[Diagnostic] = []
    _want(gate.expr, "condition", kinds, "a gate is a condition, true or false")
    return out + kinds + _unit_diagnostics(gate.expr)


# ---- units: a quantity is compared with a count of the same unit ------------------------------

_COMPARE_OPS = ("<", "<=", ">", ">=", "==", "!=")
_COUNTS = {"step": "steps", "phase.steps": "steps", "epoch": "epochs", "phase.epochs": "epochs",
           "micro_step": "micro_steps", "phase.micro_steps": "micro_steps", "run.progress": "%"}
_COUNTED_BY = {"steps": "step or phase.steps", "epochs": "epoch or phase.epochs",
               "micro_steps": "micro_step or phase.micro_steps", "%": "run.progress"}


def _unit_family(q: s.Quantity) -> str:
    """steps, epochs, time or bytes."""
    v = Qty(q.value, q.unit)
    return v.span_unit if v.dimension == "span" else {"duration": "time"}.get(v.dimension, v.dimension)


def _unit_diagnostics(expr) -> list[Diagnostic]:
    """`phase.steps >= 2 epochs` would compare steps with 2; `step > 50%` with 50: both refused."""
    out = []
    shares = {id(q) for node in ex.walk(expr) if isinstance(node, s.BinOp) and node.op in _COMPARE_OPS
              for ref, q in ((node.left, node.right), (node.right, node.left))
              if isinstance(ref, s.Ref) and ref.dotted == "run.progress" and isinstance(q, s.Quantity)}
    for node in ex.walk(expr):
        if isinstance(node, s.Quantity) and node.unit == "%" and id(node) not in shares:
            out.append(Diagnostic("E405", f"`{node.text}` has no meaning here: a share of what?", node.span,
                                  "compare the run's share with it: `run.progress >= 50%`; "
                                  "`expect ... by 5%` takes a share of the run too"))
        if not (isinstance(node, s.BinOp) and node.op in _COMPARE_OPS):
            continue
        for ref, q in ((node.left, node.right), (node.right, node.left)):
            if not isinstance(q, s.Quantity) or (q.unit == "%" and id(q) not in shares):
                continue
            if not isinstance(ref, s.Ref):
                continue
            family, counts = _unit_family(q), _COUNTS.get(ref.dotted)
            if family == counts:
                continue
            what = f"counts {counts}" if counts else "is a plain number"
            if family in ("steps", "epochs", "micro_steps"):
                hint = f"compare {_COUNTED_BY[family]} with it"
            elif counts:
                hint = f"compare `{ref.dotted}` with a number of {counts}"
            else:
                hint = "compare with a plain number"
            out.append(Diagnostic("E405", f"`{ref.dotted}` {what}; `{q.text}` is {family}", q.span, hint))
    return out


# ---- kinds: conditions, numbers, strings ------------------------------------------------------
#
# A gate must be a condition (`promote when phase.steps` would promote at once, since any
# number but 0 is true); `and`, `or` and `not` join conditions; arithmetic and <, > take
# numbers. The kinds are few, so they are inferred, not declared.

_KIND_WORDS = {"condition": "a condition", "number": "a number", "string": "a string"}


def _kind(node, out: list) -> str:
    """``condition``, ``number``, ``string`` or ``any`` (unknown functions); mismatches go to ``out``."""
    if isinstance(node, s.Bool):
        return "condition"
    if isinstance(node, (s.Number, s.Quantity, s.Ref)):
        return "number"
    if isinstance(node, s.String):
        return "string"
    if isinstance(node, s.Not):
        _want(node.operand, "condition", out, "'not' negates a condition")
        return "condition"
    if isinstance(node, s.Neg):
        _want(node.operand, "number", out, "'-' negates a number")
        return "number"
    if isinstance(node, s.Call):
        fn = ex.FUNCTIONS.get(node.name)
        if fn is None:
            return "any"
        for arg, kind in zip(node.args, fn.params):
            if kind in ("number", "count", "literal"):
                _want(arg, "number", out, f"{node.name}() takes a number there")
        for key, value in node.kwargs:
            kind = fn.kwargs.get(key)
            if kind is not None:
                _want(value, "string" if isinstance(kind, tuple) else "number", out, f"{node.name}({key}=...)")
        return fn.returns
    op = node.op
    if op in ("and", "or"):
        _want(node.left, "condition", out, f"'{op}' joins conditions")
        _want(node.right, "condition", out, f"'{op}' joins conditions")
        return "condition"
    if op in ("==", "!="):
        left, right = _kind(node.left, out), _kind(node.right, out)
        if "any" not in (left, right) and left != right:
            out.append(Diagnostic("E405", f"'{op}' compares {_KIND_WORDS[left]} with {_KIND_WORDS[right]}",
                                  node.span, "both sides must be of the same kind"))
        return "condition"
    _want(node.left, "number", out, f"'{op}' works on numbers")
    _want(node.right, "number", out, f"'{op}' works on numbers")
    return "condition" if op in ("<", "<=", ">", ">=") else "number"


def _want(node, kind: str, out: list, why: str) -> None:
    got = _kind(node, out)
    if got in (kind, "any"):
        return

    text = format_expr(node)
    text = text if len(text) <= 40 else text[:37] + "..."
    hint = why
    if kind == "condition" and got == "number":
        hint += f"; compare it, e.g. `{text} >= 1`" if isinstance(node, s.Ref) else f"; compare it, e.g. `{text} > 0`"
    out.append(Diagnostic("E405", f"expected {_KIND_WORDS[kind]}, but `{text}` is {_KIND_WORDS[got]}",
                          node.span, hint))


def _check_ref(node: s.Ref, metrics: dict, in_phase: bool) -> list[Diagnostic]:
    name = node.dotted
    if node.parts[0] in ("train", "val") and len(node.parts) == 2:
        split, metric = node.parts
        if metric in metrics[split]:
            return []
        close = did_you_mean(metric, metrics[split])
        return [Diagnostic("E400", f"unknown metric '{name}'", node.span,
                           (f"did you mean '{split}.{close.split(chr(39))[1]}'?" if close else None)
                           or f"{split} metrics: {', '.join(sorted(metrics[split]))}")]
    if name in ex.CONTEXT_NAMES:
        if name.startswith("phase.") and not in_phase:
            return [Diagnostic("E400", f"'{name}' only has a meaning in a phase's promote gate", node.span,
                               "use `step` or `epoch` here")]
        return []
    hint = None
    if len(node.parts) == 1 and node.parts[0] in metrics["train"]:
        hint = f"metrics are read per split: did you mean 'train.{name}'?"
    everything = list(ex.CONTEXT_NAMES) + [f"{sp}.{m}" for sp, ms in metrics.items() for m in ms]
    hint = hint or did_you_mean(name, everything)
    return [Diagnostic("E400", f"unknown name '{name}' in expression", node.span,
                       hint or "names: step, micro_step, epoch, run.progress, lr, phase.steps, "
                               "phase.micro_steps, phase.epochs, train.METRIC, val.METRIC")]


def _check_call(node: s.Call, phase_names: set[str]) -> list[Diagnostic]:
    fn = ex.FUNCTIONS.get(node.name)
    if fn is None:
        return [Diagnostic("E401", f"unknown function '{node.name}'", node.span,
                           did_you_mean(node.name, ex.FUNCTIONS)
                           or f"functions: {', '.join(sorted(ex.FUNCTIONS))}")]
    out = []
    if not fn.required <= len(node.args) <= len(fn.params):
        want = fn.required if fn.required == len(fn.params) else f"{fn.required} to {len(fn.params)}"
        out.append(Diagnostic("E404", f"{node.name}() takes {want} argument(s), got {len(node.args)}",
                              node.span, fn.doc))
    for arg, kind in zip(node.args, fn.params):
        out += _check_argument(node, fn, arg, kind, phase_names)
    for i, (key, value) in enumerate(node.kwargs):
        if key not in fn.kwargs:
            at = node.kwarg_spans[i] if i < len(node.kwarg_spans) else value.span
            out.append(Diagnostic("E404", f"{node.name}() has no argument '{key}'", at,
                                  did_you_mean(key, fn.kwargs) or fn.doc))
        else:
            out += _check_argument(node, fn, value, fn.kwargs[key], phase_names, key)
    return out


def _check_argument(node: s.Call, fn, arg, kind, phase_names: set[str], key: str | None = None) -> list[Diagnostic]:
    """One argument against its kind in the function table (numbers in general are _kind's)."""
    where = f"{node.name}({key}=...)" if key else f"{node.name}()"
    if kind == "series" and not (isinstance(arg, s.Ref) and arg.parts[0] in ("train", "val")):
        return [Diagnostic("E405", f"{node.name}() reads a metric series such as train.loss", arg.span, fn.doc)]
    if kind == "phase" and (not isinstance(arg, s.Ref) or arg.dotted not in phase_names):
        named = getattr(arg, "dotted", "?")
        return [Diagnostic("E402", f"{node.name}() names no phase: {named}", arg.span,
                           did_you_mean(named, phase_names)
                           or f"phases: {', '.join(sorted(phase_names)) or 'none'}")]
    if kind in ("count", "literal") and not isinstance(arg, s.Number):
        if isinstance(arg, s.Quantity) and kind == "count" and arg.unit in ("step", "steps"):
            return []  # mean(x, 100 steps) reads as 100 values
        what = "a whole number such as 100" if kind == "count" else "a number such as 0.1"
        return [Diagnostic("E405", f"{where} takes {what} written out", arg.span,
                           "it is fixed when the plan is built, so it cannot depend on the run")]
    if kind == "count" and not (isinstance(arg.value, int) and arg.value >= 1):
        return [Diagnostic("E405", f"{where} takes a whole number of at least 1, got {arg.text}", arg.span, fn.doc)]
    if isinstance(kind, tuple) and not (isinstance(arg, s.String) and arg.value in kind):
        return [Diagnostic("E405", f"{where} is one of {', '.join(map(repr, kind))}", arg.span, fn.doc)]
    return []
