"""check: syntax tree -> Spec, or every problem at once with its location.

Order: overrides (profile, then ``--set``) are applied to the located data
first, so they are checked exactly like the file and errors point at them;
then the JSON Schema (``schemas/spec.schema.json``); then each component's
parameters against its catalog entry; then semantic rules the schema cannot
say (names in gate expressions, duplicate phases, settings that contradict
each other). Nothing here imports torch.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

from specrun.spec import catalog as cat
from specrun.spec import expr as ex
from specrun.spec import sweep
from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic, SpecError, did_you_mean
from specrun.spec.document import COLLECTIONS, PHASE_TARGETS, Located, fill, merge, assign, locate
from specrun.spec.parse import parse, parse_statements, read_source
from specrun.spec.printer import format_expr
from specrun.spec.schema import SPEC_TYPES, resolve_ref, spec_schema, validator_for
from specrun.spec.values import Gate, IntRange, Qty, canonical_json, describe

TYPE_WORDS = {
    "bytes": "a size such as 10GB or 512MiB", "duration": "a duration such as 30s or 5min",
    "span": "a training span such as 500 steps, 3 epochs or 5%", "range": "a range such as 3..16",
    "gate": "an expression after `when`", "integer": "a whole number", "number": "a number",
    "string": "a name or a string", "boolean": "true or false", "array": "a list [a, b]",
    "object": "a block { ... }",
}


@dataclass
class Spec:
    """A checked spec: plain data that satisfies the schema and every rule."""

    name: str
    data: dict
    located: Located
    path: str
    profile: str | None = None
    overrides: tuple[str, ...] = ()
    sources: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # W-code Diagnostics: settings that never take effect

    @property
    def hash(self) -> str:
        """The experiment's identity. `checkpoint.resume` and `sweep` are left out: where a
        run starts from, or how others around it are searched, is not what it is."""
        data = {k: v for k, v in self.data.items() if k != "sweep"}  # how to search is not what a run is
        if isinstance(data.get("checkpoint"), dict):
            data["checkpoint"] = {k: v for k, v in data["checkpoint"].items() if k != "resume"}
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]


def _type_words(types) -> str:
    types = [types] if isinstance(types, str) else list(types)
    return " or ".join(TYPE_WORDS.get(t, t) for t in types)


def _schema_diagnostics(loc: Located, instance, schema: dict, base: tuple, what: str) -> list[Diagnostic]:
    out = []
    for err in validator_for(schema).iter_errors(instance):
        out.extend(_translate(loc, err, base, what, schema))
    out += _range_bounds(loc, instance, schema, schema, base)
    return out


def _range_bounds(loc: Located, instance, schema: dict, root: dict, path: tuple) -> list[Diagnostic]:
    """minimum/maximum on a `range` (``sizes 3..16``): JSON Schema applies them to numbers only."""
    schema = resolve_ref(schema, root)
    if isinstance(instance, IntRange):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        where = label(loc.data, path)
        if lo is not None and instance.lo < lo or hi is not None and instance.hi > hi:
            return [Diagnostic("E203", f"{where} must lie within {lo}..{hi}, got {instance}", loc.span(path))]
        return []
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        return [d for k, v in instance.items() if isinstance(props.get(k), dict)
                for d in _range_bounds(loc, v, props[k], root, path + (k,))]
    return []


def label(data: dict, path: tuple) -> str:
    """A data path as the user addresses it: ``curriculum.r8.task.rounds`` (phases by name,
    the ``set`` of a phase left out), the way profiles and --set name it too."""
    parts, node = [], data
    for i, p in enumerate(path):
        prev = path[i - 1] if i else None
        if isinstance(p, int):
            entry = node[p] if isinstance(node, list) and 0 <= p < len(node) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            if prev in ("phases", "axes") and isinstance(name, str):
                parts[-1] = name
            elif prev != "expect":
                parts.append(str(p))
        elif not (p == "set" and prev is not None and isinstance(prev, int)):
            parts.append(str(p))
        node = node.get(p) if isinstance(node, dict) else (
            node[p] if isinstance(node, list) and isinstance(p, int) and 0 <= p < len(node) else None)
    return ".".join(parts)


def _owners_hint(path: tuple, key: str) -> str | None:
    """`optimizer adamw { galore {...} }`: name the components of that kind that have the setting."""
    if len(path) != 1 or path[0] not in cat.KINDS:
        return None
    owners = [n for n in cat.names(path[0]) if key in (cat.lookup(path[0], n).params.get("properties") or {})]
    return f"'{key}' is a setting of {path[0]} {', '.join(owners)}" if owners else None


def _override_hint(loc: Located, path: tuple, key: str) -> str | None:
    """--set names a whole path: suggest whole paths (`lr` -> `optimizer.lr`)."""
    from specrun.spec.suggest import full_path_hint

    where = label(loc.data, path)
    return full_path_hint(f"{where}.{key}" if where else key, loc.data)


def _translate(loc: Located, err, base: tuple, what: str, root: dict) -> list[Diagnostic]:
    path = base + tuple(err.absolute_path)
    dotted = label(loc.data, path) or what
    validator, value = err.validator, err.instance
    if validator == "additionalProperties":
        props = resolve_ref(err.schema, root).get("properties", {})
        extras = [k for k in value if k not in props]
        parent = label(loc.data, path) or "the spec"
        if {"name", "promote", "set"} <= set(props):  # a phase: what it sets lives under set
            props = {"promote": None, "task.NAME": None, "model.NAME": None, "optimizer.NAME": None,
                     "loss.NAME": None}
        return [
            Diagnostic("E200", f"unknown setting '{k}' in {parent}", at,
                       (_override_hint(loc, path, k) if at.path.startswith("<--set") else None)
                       or did_you_mean(k, props) or _owners_hint(path, k)
                       or f"known settings: {', '.join(sorted(props)) or 'none'}")
            for k in extras for at in (loc.span(path + (k,), key=True),)
        ]
    span = loc.value_span(path)
    if validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        where = f"in {label(loc.data, path)}" if path else "in the spec"
        hint = _required_hint(missing)
        if missing == "type" and path and isinstance(path[-1], str):  # `precision.loss_scale` with no precision
            choices = (resolve_ref(err.schema, root).get("properties", {}).get("type") or {}).get("enum") or []
            hint = f"name it first: `{path[-1]} {choices[0] if choices else 'NAME'} {{ ... }}`" + (
                f" (one of {', '.join(choices)})" if choices else "")
        return [Diagnostic("E204", f"missing setting '{missing}' {where}", loc.span(path, key=True), hint)]
    if validator == "type":
        expected = _type_words(err.validator_value)
        if isinstance(value, Qty) and any(t in SPEC_TYPES for t in
                                          ([err.validator_value] if isinstance(err.validator_value, str)
                                           else err.validator_value)):
            kind = {"span": "a training time", "bytes": "a size", "duration": "a wall-clock time"}[value.dimension]
            key = dotted.rsplit(".", 1)[-1]
            hint = None
            if key == "max_steps" and value.dimension == "span" and value.span_unit == "epochs":
                hint = f"for a length in epochs: `max_epochs {value.value}`"
            elif value.dimension == "span" and "integer" in str(err.validator_value):
                hint = f"a plain count: `{key} {value.value}`"
            return [Diagnostic("E202", f"{dotted} expects {expected}, got {value} ({kind})", span, hint)]
        written = loc.written(path)
        return [Diagnostic("E201", f"{dotted} expects {expected}, got {written or _shown(value)}", span,
                           _type_hint(value, err.validator_value, written))]
    if validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {"minimum": "at least", "exclusiveMinimum": "greater than",
                 "maximum": "at most", "exclusiveMaximum": "less than"}[validator]
        return [Diagnostic("E203", f"{dotted} must be {words} {err.validator_value}, got {describe(value)}", span)]
    if validator in ("minItems", "maxItems"):
        return [Diagnostic("E203", f"{dotted} needs {'at least' if validator == 'minItems' else 'at most'} "
                                   f"{err.validator_value} items", span)]
    if validator == "enum":
        options = [describe(o) for o in err.validator_value]
        hint = did_you_mean(describe(value), options) if isinstance(value, str) else None
        return [Diagnostic("E206", f"{dotted} must be one of {', '.join(options)}; got {describe(value)}",
                           span, hint)]
    if validator == "pattern":
        return [Diagnostic("E201", f"{dotted} '{describe(value)}' is not a valid name "
                                   "(letters, digits and _; not starting with a digit)", span)]
    if validator in ("anyOf", "oneOf"):
        return [Diagnostic("E201", f"{dotted}: {describe(value)} is not a valid value", span)]
    return [Diagnostic("E201", f"{dotted}: {err.message}", span)]


def _shown(value) -> str:
    """A value in a message: strings quoted, so `got "two"` reads as the text it was."""
    if isinstance(value, str):
        return '"' + value + '"' if len(value) <= 40 else '"' + value[:37] + '..."'
    if isinstance(value, IntRange):
        return f"the range {value}"
    if isinstance(value, Gate):
        return f"`when {value}`"
    if isinstance(value, dict):
        return "a block { ... }"
    return describe(value)


def _type_hint(value, types, written: str | None = None) -> str | None:
    types = [types] if isinstance(types, str) else list(types)
    if isinstance(value, IntRange) and (value.scale or "range" not in types):
        return "a range of values to search belongs in a `sweep` block (docs/sweeps.md)"
    if isinstance(value, str) and any(t in ("integer", "number") for t in types) and (
            written is None or written.startswith('"')):
        return "numbers are written without quotes"
    if isinstance(value, float) and "integer" in types and value.is_integer():
        return f"write {int(value)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and set(types) & {"bytes", "duration", "span"}:
        unit = {"bytes": "GB", "duration": "s", "span": " steps"}[next(t for t in types if t in ("bytes", "duration", "span"))]
        return f"give the unit: {value}{unit}"
    return None


def _required_hint(key: str) -> str | None:
    examples = {
        "spec": "start the file with `spec NAME`", "task": "e.g. `task sha256_trace { ... }`",
        "model": "e.g. `model causal_lm { width 256 }`", "loss": "e.g. `loss cross_entropy`",
        "optimizer": "e.g. `optimizer adamw { lr 3e-4 }`", "batch": "e.g. `batch 32`",
        "type": "name the component: `task NAME { ... }`", "name": None,
    }
    return examples.get(key)


# ---- components -----------------------------------------------------------------------

def _component_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    out = []
    for kind in cat.KINDS:
        block = data.get(kind)
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            continue
        name = block["type"]
        comp = cat.lookup(kind, name)
        if comp is None:
            out.append(Diagnostic("E300", f"unknown {kind} '{name}'", loc.span((kind, "type")),
                                  did_you_mean(name, cat.names(kind))
                                  or f"known {kind}s: {', '.join(cat.names(kind))}"))
            continue
        params = {k: v for k, v in block.items() if k != "type"}
        out += _schema_diagnostics(loc, params, comp.params, (kind,), f"{kind} {name}")
    out += _phase_set_diagnostics(loc, data)
    return out


def _phase_set_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    """What a phase applies (``task.rounds 16``) is checked against the component's
    parameters like the component block itself, except that nothing is required."""
    out = []
    cur = _d(data.get("curriculum"))
    if isinstance(cur.get("axes"), list):
        lists = [(("curriculum", "axes", i), a.get("phases")) for i, a in enumerate(cur["axes"]) if isinstance(a, dict)]
    else:
        lists = [(("curriculum",), cur.get("phases"))]
    for base, raw in lists:
        for i, phase in enumerate(raw if isinstance(raw, list) else ()):
            if not isinstance(phase, dict):
                continue
            for kind, params in _d(phase.get("set")).items():
                comp = _component(data, kind)
                if comp is None or not isinstance(params, dict):
                    continue
                schema = {k: v for k, v in comp.params.items() if k != "required"}
                out += _schema_diagnostics(loc, params, schema, base + ("phases", i, "set", kind),
                                           f"{kind} {comp.name}")
    return out


def component_params(data: dict, kind: str) -> dict:
    block = data.get(kind) or {}
    return {k: v for k, v in block.items() if k != "type"}


# ---- overrides ---------------------------------------------------------------------------

def apply_overrides(loc: Located, statements, origin: str) -> None:
    """Apply profile or --set statements to ``loc`` in place, recording their spans."""
    for st in statements:
        if isinstance(st, s.Expect):
            entries = loc.data.setdefault("expect", [])
            path = ("expect", len(entries))
            entries.append({"expr": Gate(st.expr)} | ({"by": _plain(st.by)} if st.by else {}))
            loc.spans[path] = loc.key_spans[path] = st.span
            continue
        target = _resolve_path(loc, st, origin)
        if target is None:
            continue
        base, key = target
        tmp = Located({}, path=loc.path)
        fill(tmp, tmp.data, base, (s.Setting(key, st.key_span, st.value, st.block, st.gate, st.span),),
              in_phase=False)
        loc.diagnostics += tmp.diagnostics
        loc.spans.update(tmp.spans)
        loc.key_spans.update(tmp.key_spans)
        loc.value_spans.update(tmp.value_spans)
        node = loc.data
        for part in base:
            node = node[part]
        for k, v in tmp.data.items():
            if isinstance(v, dict) and isinstance(node.get(k), dict):
                merge(node[k], v)  # a block in an override merges into the block it overrides
            else:
                assign(loc, node, base, (k,), v, st.span, st.key_span, override=True)


def _plain(value):
    from specrun.spec.values import plain

    return plain(value)


def _resolve_path(loc: Located, st: s.Setting, origin: str):
    """Split an override's dotted key into (resolved base path, remaining key)."""
    node, base = loc.data, ()
    parts = list(st.key)
    while len(parts) > 1:
        part = parts[0]
        if isinstance(node, dict) and part in node and isinstance(node[part], (dict, list)):
            node, base = node[part], base + (part,)
            parts.pop(0)
            continue
        if isinstance(node, dict) and any(c in node for c in COLLECTIONS.values()):
            coll = "phases" if "phases" in node else "axes"
            names = [e.get("name") for e in node[coll]]
            if part in names:
                i = names.index(part)
                node, base = node[coll][i], base + (coll, i)
                parts.pop(0)
                if coll == "phases" and parts[0] in PHASE_TARGETS:
                    node = node.setdefault("set", {})
                    base = base + ("set",)
                continue
            kind = "phase" if coll == "phases" else "axis"
            loc.diagnostics.append(Diagnostic(
                "E500", f"{origin} targets no setting: there is no {kind} '{part}'", st.key_span,
                did_you_mean(part, names) or f"{kind}s: {', '.join(names)}"))
            return None
        if isinstance(node, dict) and part not in node:
            break  # a new block: create it below, the schema judges whether it may exist
        loc.diagnostics.append(Diagnostic(
            "E500", f"{origin} targets no setting: '{'.'.join(st.key)}' goes through a value",
            st.key_span))
        return None
    return base, tuple(parts)


# ---- semantic rules ------------------------------------------------------------------------

def _gates(data: dict, path: tuple = ()):
    """(path, Gate) for every gate anywhere in the data."""
    if isinstance(data, Gate):
        yield path, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _gates(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _gates(v, path + (i,))


def _d(value) -> dict:
    """``value`` if it is a block, else {}: semantic rules run beside the schema's, on data
    that may not have the expected shape, and must not trip over it."""
    return value if isinstance(value, dict) else {}


def _num(value):
    """``value`` if it is a plain number (not a bool), else None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _axes(data: dict) -> list[tuple[str, list[dict]]]:
    """(axis name, its phase entries) for the curriculum; one axis 'curriculum' without axes."""
    cur = _d(data.get("curriculum"))
    if isinstance(cur.get("axes"), list):
        return [(a.get("name"), [p for p in a.get("phases") if isinstance(p, dict)]
                 if isinstance(a.get("phases"), list) else [])
                for a in cur["axes"] if isinstance(a, dict)]
    if isinstance(cur.get("phases"), list):
        return [("curriculum", [p for p in cur["phases"] if isinstance(p, dict)])]
    return []


def _component(data: dict, kind: str):
    name = _d(data.get(kind)).get("type")
    return cat.lookup(kind, name) if isinstance(name, str) else None


def known_metrics(data: dict) -> dict[str, set[str]]:
    task, model = _component(data, "task"), _component(data, "model")
    task_metrics = set(task.metrics) if task else set()
    model_metrics = set(model.metrics) if model else set()
    return {
        "train": {"loss", "grad_norm", "lr"} | task_metrics | model_metrics,
        "val": {"loss"} | task_metrics | model_metrics,
    }


def _phase_names(data: dict) -> set[str]:
    """What reached() may name: axis.phase, and the bare phase name without axes."""
    axes = _axes(data)
    names = {f"{axis}.{p.get('name')}" for axis, phases in axes for p in phases}
    if axes and axes[0][0] == "curriculum":
        names |= {str(p.get("name")) for _, phases in axes for p in phases}
    return names


def _check_expr(loc: Located, path: tuple, gate: Gate, data: dict, in_phase: bool,
                metrics: dict | None = None, phase_names: set | None = None) -> list[Diagnostic]:
    out = []
    metrics = known_metrics(data) if metrics is None else metrics
    phase_names = _phase_names(data) if phase_names is None else phase_names
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
_COUNTS = {"step": "steps", "phase.steps": "steps", "epoch": "epochs", "phase.epochs": "epochs"}
_COUNTED_BY = {"steps": "step or phase.steps", "epochs": "epoch or phase.epochs"}


def _unit_family(q: s.Quantity) -> str:
    """steps, epochs, time or bytes."""
    v = Qty(q.value, q.unit)
    return v.span_unit if v.dimension == "span" else {"duration": "time"}.get(v.dimension, v.dimension)


def _unit_diagnostics(expr) -> list[Diagnostic]:
    """`phase.steps >= 2 epochs` would compare steps with 2; `step > 50%` with 50: both refused."""
    out = []
    for node in ex.walk(expr):
        if isinstance(node, s.Quantity) and node.unit == "%":
            out.append(Diagnostic("E405", f"`{node.text}` has no meaning in an expression", node.span,
                                  "write a count: `step >= 500`; `expect ... by 5%` takes a share of the run"))
        if not (isinstance(node, s.BinOp) and node.op in _COMPARE_OPS):
            continue
        for ref, q in ((node.left, node.right), (node.right, node.left)):
            if not isinstance(q, s.Quantity) or q.unit == "%":
                continue
            if not isinstance(ref, s.Ref):
                continue
            family, counts = _unit_family(q), _COUNTS.get(ref.dotted)
            if family == counts:
                continue
            what = f"counts {counts}" if counts else "is a plain number"
            if family in ("steps", "epochs"):
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
                       hint or "names: step, epoch, lr, phase.steps, phase.epochs, train.METRIC, val.METRIC")]


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


def _semantic_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    out = []
    cur = _d(data.get("curriculum"))
    axes = _axes(data)
    for index, (axis, phases) in enumerate(axes):
        path = ("curriculum",) + (("axes", index) if isinstance(cur.get("axes"), list) else ())
        seen: dict = {}
        for i, phase in enumerate(phases):
            name = phase.get("name")
            if not isinstance(name, str):
                continue
            if name in seen:
                first = loc.span(path + ("phases", seen[name], "name"))
                out.append(Diagnostic("E403", f"phase '{name}' appears twice in {axis}",
                                      loc.span(path + ("phases", i, "name")),
                                      f"the first is at line {first.line}; phase names must differ"))
            seen.setdefault(name, i)
        start = (cur["axes"][index] if isinstance(cur.get("axes"), list) else cur).get("start")
        if isinstance(start, str) and seen and start not in seen:
            out.append(Diagnostic("E402", f"start: {axis} has no phase '{start}'", loc.value_span(path + ("start",)),
                                  did_you_mean(start, list(seen)) or f"phases: {', '.join(seen)}"))
    first_axis: dict = {}
    for index, (axis, _) in enumerate(axes):
        if axis in first_axis and isinstance(axis, str):
            first = loc.span(("curriculum", "axes", first_axis[axis], "name"))
            out.append(Diagnostic("E403", f"axis '{axis}' appears twice",
                                  loc.span(("curriculum", "axes", index, "name")),
                                  f"the first is at line {first.line}; axis names must differ"))
        first_axis.setdefault(axis, index)
    metrics, phase_names = known_metrics(data), _phase_names(data)
    for path, gate in _gates(data):
        in_phase = len(path) >= 2 and path[-1] == "promote" and "phases" in path
        out += _check_expr(loc, path, gate, data, in_phase, metrics, phase_names)
    out += _cross_field(loc, data)
    return out


def _ref_at(data: dict, span: s.Span) -> tuple[str, ...]:
    for _, gate in _gates(data):
        for node in ex.walk(gate.expr):
            if isinstance(node, s.Ref) and node.span == span:
                return node.parts
    return ("val",)


_FILE_FIELDS = {"step", "epoch"}


def _checkpoint_name_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    """File names a checkpoint is saved under: placeholders that exist, no way out of the folder."""
    import string

    ck = _d(data.get("checkpoint"))
    out = []
    for path, value in ((("checkpoint", "name"), ck.get("name")), (("checkpoint", "final"), ck.get("final")),
                        (("checkpoint", "best", "name"), _d(ck.get("best")).get("name")),
                        (("checkpoint", "dir"), ck.get("dir"))):
        if not isinstance(value, str):
            continue
        where, key = loc.value_span(path), ".".join(path)
        parts = value.replace("\\", "/").split("/")
        if value.startswith("/") or ".." in parts:
            out.append(Diagnostic("E203", f"{key} {value!r} must stay inside the run directory", where,
                                  "a folder below the run directory" if path[-1] == "dir" else "a file name"))
            continue
        if path[-1] != "dir" and len(parts) > 1:
            out.append(Diagnostic("E203", f"{key} {value!r} must be a file name", where,
                                  "the folder is checkpoint.dir"))
            continue
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            out.append(Diagnostic("E203", f"{key} {value!r}: {exc}", where, "placeholders are {step} and {epoch}"))
            continue
        unknown = sorted(fields - _FILE_FIELDS) if path[-1] != "dir" else sorted(fields)
        if unknown:
            out.append(Diagnostic("E203", f"{key} {value!r} names {{{unknown[0]}}}, which is not filled in", where,
                                  "placeholders are {step} and {epoch}: e.g. \"neuro_sha_step_{step}.pt\""
                                  if path[-1] != "dir" else "a folder name takes no placeholders"))
    return out


def _fsdp_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    """FSDP hands the optimizer a shard of each weight: only elementwise optimizers can use it."""
    if _d(data.get("distributed")).get("strategy") != "fsdp":
        return []
    name = _d(data.get("optimizer")).get("type")
    comp = cat.lookup("optimizer", name) if isinstance(name, str) else None
    if comp is None or comp.extra.get("fsdp"):
        return []
    fits = [n for n in cat.names("optimizer") if (c := cat.lookup("optimizer", n)) and c.extra.get("fsdp")]
    return [Diagnostic("E600", f"optimizer {name} cannot run under distributed.strategy fsdp: it needs whole "
                               "weight matrices and FSDP gives each rank a shard of them",
                       loc.value_span(("distributed", "strategy")),
                       f"use strategy ddp, or an optimizer made for shards: {', '.join(fits)}")]


def _cross_field(loc: Located, data: dict) -> list[Diagnostic]:
    out = []
    prec = _d(data.get("precision"))
    if prec.get("loss_scale") == "dynamic" and prec.get("type") not in ("fp16", None):
        out.append(Diagnostic("E600", f"loss_scale dynamic only applies to fp16, not {describe(prec.get('type'))}",
                              loc.span(("precision", "loss_scale")),
                              "bf16 and fp32 have fp32's exponent range: drop loss_scale"))
    sched = _d(data.get("schedule"))
    steps = data.get("max_steps")
    steps = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else None
    epochs = data.get("max_epochs")
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None
    # A run length that is set but invalid has its own error already: no second one here.
    unbounded = "max_steps" not in data and "max_epochs" not in data
    warm = sched.get("warmup")
    warm_at = loc.value_span(("schedule", "warmup"))
    if isinstance(warm, Qty) and warm.span_unit == "%" and not 0 <= warm.value < 100:
        out.append(Diagnostic("E203", f"schedule.warmup must be at least 0% and less than 100%, got {warm}",
                              warm_at))
    if isinstance(warm, Qty) and warm.span_unit == "epochs" and epochs and warm.value >= epochs:
        out.append(Diagnostic("E600", f"warmup of {warm} is not shorter than the run (max_epochs {epochs})",
                              warm_at, "shorten the warmup, or give it as a share of the run: warmup 5%"))
    if isinstance(warm, Qty) and warm.span_unit == "%" and unbounded:
        out.append(Diagnostic("E600", "a warmup in % needs a finite run: set max_steps or max_epochs", warm_at))
    warm_steps = warm if isinstance(warm, int) and not isinstance(warm, bool) else (
        warm.value if isinstance(warm, Qty) and warm.span_unit == "steps" else None)
    if steps and warm_steps is not None and warm_steps >= steps:
        out.append(Diagnostic("E600", f"warmup of {warm_steps} steps is not shorter than the run "
                                      f"(max_steps {steps})", warm_at,
                              "shorten the warmup, or give it as a share of the run: warmup 5%"))
    for section, key in (("validation", "every"), ("checkpoint", "every"), ("log", "every"),
                         ("memory", "check_every")):
        every = _d(data.get(section)).get(key)
        for i, one in enumerate(every if isinstance(every, list) else [every]):
            if isinstance(one, Qty) and one.dimension == "span" and one.value <= 0:
                at = (section, key, i) if isinstance(every, list) else (section, key)
                out.append(Diagnostic("E203", f"{section}.{key} must be more than 0, got {one}",
                                      loc.value_span(at), "how often: e.g. 500 steps, 1 epoch or 5%"))
    for i, exp in enumerate(data.get("expect") if isinstance(data.get("expect"), list) else ()):
        by = exp.get("by") if isinstance(exp, dict) else None
        if isinstance(by, Qty) and by.dimension == "span" and by.value <= 0:
            out.append(Diagnostic("E203", f"expect ... by must be more than 0, got {by}",
                                  loc.value_span(("expect", i, "by"))))
    out += _fsdp_diagnostics(loc, data)
    out += _checkpoint_name_diagnostics(loc, data)
    kind = sched.get("type")
    if kind in ("cosine", "warmup_cosine") and unbounded:
        out.append(Diagnostic("E600", f"a {kind} schedule decays over the run's length: "
                                      "set max_steps or max_epochs", loc.value_span(("schedule", "type"))))
    if "min_ratio" in sched and "eta_min" in sched:
        out.append(Diagnostic("E600", "set either schedule.min_ratio or schedule.eta_min, not both",
                              loc.span(("schedule", "eta_min"))))
    val_refs = sorted((n.span for _, g in _gates(data) for n in ex.walk(g.expr)
                       if isinstance(n, s.Ref) and n.parts[0] == "val"),
                      key=lambda sp: (sp.path != loc.path, sp.path, sp.line, sp.col))
    best = _d(_d(data.get("checkpoint")).get("best")).get("metric", "")
    best = best if isinstance(best, str) else ""
    if (val_refs or best.startswith("val.")) and not data.get("validation"):
        where = val_refs[0] if val_refs else loc.value_span(("checkpoint", "best", "metric"))
        what = ".".join(_ref_at(data, where)) if val_refs else best
        out.append(Diagnostic("E600", f"{what} is read but there is no validation block", where,
                              "add `validation { every 500 steps; batches 10 }`"))
    if best:
        split, _, metric = best.partition(".")
        metrics = known_metrics(data)
        if split not in metrics or metric not in metrics[split]:
            out.append(Diagnostic("E400", f"checkpoint.best.metric: unknown metric '{best}'",
                                  loc.value_span(("checkpoint", "best", "metric")),
                                  did_you_mean(best, [f"{a}.{m}" for a in metrics for m in metrics[a]])))
    return out


# ---- entry points ---------------------------------------------------------------------------------

def _diagnose(loc: Located) -> list[Diagnostic]:
    data = loc.data
    out = list(loc.diagnostics)
    out += _schema_diagnostics(loc, data, spec_schema(), (), "the spec")
    out += _component_diagnostics(loc, data)
    out += _semantic_diagnostics(loc, data)
    if isinstance(data.get("sweep"), dict):
        out += _sweep_diagnostics(loc, data)
    return _dedupe(out)


def _sweep_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    """The sweep block (spec/sweep.py), each choice checked as the --set it becomes."""

    def without_sweep() -> Located:
        return Located(copy_data({k: v for k, v in data.items() if k != "sweep"}), dict(loc.spans),
                       dict(loc.key_spans), dict(loc.value_spans), loc.profiles, [], loc.path, loc.source)

    base = {(d.code, d.span, d.message) for d in _diagnose(without_sweep())}

    def try_set(setting: s.Setting) -> list[Diagnostic]:
        variant = without_sweep()
        apply_overrides(variant, (setting,), "sweep")
        return [d for d in _diagnose(variant) if (d.code, d.span, d.message) not in base]

    return sweep.diagnostics(loc, data, known_metrics(data), try_set)


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diags:
        key = (d.code, d.span, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def parse_set(option: str, index: int) -> s.Statement | Diagnostic:
    """``path=value`` from the command line -> a statement spanned at ``<--set N>``."""
    origin = f"<--set {index}>"
    key, eq, value = option.partition("=")
    if not eq or not key.strip():
        return Diagnostic("E502", f"--set expects path=value, got {option!r}", s.Span(origin, 1, 1, 1, 2),
                          "e.g. --set optimizer.lr=3e-4")
    if not value.strip():
        return Diagnostic("E502", f"--set {key.strip()}= has no value", s.Span(origin, 1, len(key) + 1,
                                                                                  1, len(key) + 2),
                          f"e.g. --set {key.strip()}=VALUE; a list is [a, b], a string \"in quotes\"")
    text = f"{key} {value}"  # same length, so columns in messages match what was typed
    try:
        items = parse_statements(text, origin)
    except SpecError as err:
        diag = err.diagnostics[0]
        raw = value.strip()
        if ";" in value or (diag.hint and diag.hint.startswith("one setting per line")):
            diag = Diagnostic(diag.code, diag.message, diag.span,
                              "--set takes one PATH=VALUE: quote the value if it has spaces, "
                              "repeat --set for another setting")
        elif diag.code == "E100" and not raw.startswith(('"', "[", "{")):
            diag = Diagnostic(diag.code, diag.message, diag.span,
                              f'a string value goes in double quotes: --set \'{key.strip()}="{raw}"\'')
        return diag
    if len(items) != 1 or not isinstance(items[0], s.Setting):
        return Diagnostic("E502", f"--set takes exactly one setting, got {option!r}", s.Span(origin, 1, 1, 1, 2),
                          "repeat --set for each setting")
    return items[0]


def check(doc: s.Document, profile: str | None = None, overrides: tuple[str, ...] = ()) -> Spec:
    """The checked Spec for ``doc`` with a profile and ``--set`` overrides applied."""
    sources = {doc.path: doc.source}
    loc = locate(doc)
    if profile is not None:
        if profile not in loc.profiles:
            raise SpecError([Diagnostic("E501", f"no profile '{profile}' in {doc.path}", loc.top_span(),
                                        did_you_mean(profile, loc.profiles)
                                        or f"profiles: {', '.join(loc.profiles) or 'none'}")], sources)
        apply_overrides(loc, loc.profiles[profile].statements, f"profile {profile}")
    for i, option in enumerate(overrides, 1):
        sources[f"<--set {i}>"] = option.replace("=", " ", 1)
        st = parse_set(option, i)
        if isinstance(st, Diagnostic):
            loc.diagnostics.append(st)
        else:
            apply_overrides(loc, (st,), "--set")
    diags = _diagnose(loc)
    if diags:
        raise SpecError(diags, sources)
    return Spec(loc.data.get("spec"), loc.data, loc, doc.path, profile, tuple(overrides), sources,
                _warnings(loc))


def _warnings(loc: Located) -> list[Diagnostic]:
    from specrun.spec.lint import warnings

    return warnings(loc)


def check_all_profiles(doc: s.Document) -> list[Diagnostic]:
    """What ``validate`` reports: the file itself, then each profile applied to it."""
    loc = locate(doc)
    diags = _diagnose(loc)
    warned = _warnings(loc) if not diags else []
    for name, prof in loc.profiles.items():
        variant = locate(doc)
        apply_overrides(variant, prof.statements, f"profile {name}")
        errors = _diagnose(variant)
        diags += errors
        if not errors:  # a warning only this profile causes says so
            seen = {(w.code, w.span, w.message) for w in warned}
            warned += [Diagnostic(w.code, f"{w.message} (with profile {name})", w.span, w.hint)
                       for w in _warnings(variant) if (w.code, w.span, w.message) not in seen]
    return _dedupe(diags + warned)


def load(path: str, profile: str | None = None, overrides: tuple[str, ...] = ()) -> Spec:
    text = read_source(path)
    return check(parse(text, path), profile, overrides)


def copy_data(data: dict) -> dict:
    return copy.deepcopy(data)
