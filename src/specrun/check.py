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
import json
from dataclasses import dataclass, field
from functools import lru_cache

import jsonschema
from jsonschema import Draft202012Validator

from specrun import catalog as cat
from specrun import expr as ex
from specrun import syntax as s
from specrun.diagnostics import Diagnostic, SpecError, did_you_mean
from specrun.document import COLLECTIONS, PHASE_TARGETS, Located, fill, merge, assign, locate
from specrun.parse import parse, parse_statements, read_source
from specrun.resources import resource_dir
from specrun.values import Gate, IntRange, Qty, describe

SPEC_TYPES = {
    "bytes": lambda c, v: isinstance(v, Qty) and v.dimension == "bytes",
    "duration": lambda c, v: isinstance(v, Qty) and v.dimension == "duration",
    "span": lambda c, v: isinstance(v, Qty) and v.dimension == "span",
    "range": lambda c, v: isinstance(v, IntRange),
    "gate": lambda c, v: isinstance(v, Gate),
}
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

    @property
    def hash(self) -> str:
        from specrun.fmt import canonical_json

        return hashlib.sha256(canonical_json(self.data).encode()).hexdigest()[:16]


# ---- schema machinery -------------------------------------------------------------

@lru_cache(maxsize=1)
def spec_schema() -> dict:
    return json.loads((resource_dir("schemas") / "spec.schema.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator_class():
    checker = Draft202012Validator.TYPE_CHECKER.redefine_many(SPEC_TYPES)
    return jsonschema.validators.extend(Draft202012Validator, type_checker=checker)


def _validator(schema: dict):
    return _validator_class()(schema)


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/"):
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        return _resolve(node, root)
    return schema


def _type_words(types) -> str:
    types = [types] if isinstance(types, str) else list(types)
    return " or ".join(TYPE_WORDS.get(t, t) for t in types)


def _schema_diagnostics(loc: Located, instance, schema: dict, base: tuple, what: str) -> list[Diagnostic]:
    out = []
    for err in _validator(schema).iter_errors(instance):
        out.extend(_translate(loc, err, base, what, schema))
    return out


def _translate(loc: Located, err, base: tuple, what: str, root: dict) -> list[Diagnostic]:
    path = base + tuple(err.absolute_path)
    dotted = ".".join(str(p) for p in path if not isinstance(p, int)) or what
    validator, value = err.validator, err.instance
    if validator == "additionalProperties":
        props = _resolve(err.schema, root).get("properties", {})
        extras = [k for k in value if k not in props]
        parent = ".".join(str(p) for p in path) or "the spec"
        return [
            Diagnostic("E200", f"unknown setting '{k}' in {parent}", loc.span(path + (k,), key=True),
                       did_you_mean(k, props) or f"known settings: {', '.join(sorted(props)) or 'none'}")
            for k in extras
        ]
    span = loc.span(path)
    if validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        where = f"in {'.'.join(map(str, path))}" if path else "in the spec"
        return [Diagnostic("E204", f"missing setting '{missing}' {where}", loc.span(path, key=True),
                           _required_hint(missing))]
    if validator == "type":
        expected = _type_words(err.validator_value)
        if isinstance(value, Qty) and any(t in SPEC_TYPES for t in
                                          ([err.validator_value] if isinstance(err.validator_value, str)
                                           else err.validator_value)):
            return [Diagnostic("E202", f"{dotted} expects {expected}, got {value} ({value.dimension})", span)]
        return [Diagnostic("E201", f"{dotted} expects {expected}, got {describe(value)}", span)]
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
        node = loc.data
        for part in base:
            node = node[part]
        for k, v in tmp.data.items():
            if isinstance(v, dict) and isinstance(node.get(k), dict):
                merge(node[k], v)  # a block in an override merges into the block it overrides
            else:
                assign(loc, node, base, (k,), v, st.span, st.key_span, override=True)


def _plain(value):
    from specrun.values import plain

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


def _axes(data: dict) -> list[tuple[str, list[dict]]]:
    cur = data.get("curriculum") or {}
    if isinstance(cur.get("axes"), list):
        return [(a.get("name"), a.get("phases") or []) for a in cur["axes"] if isinstance(a, dict)]
    if isinstance(cur.get("phases"), list):
        return [("curriculum", cur["phases"])]
    return []


def known_metrics(data: dict) -> dict[str, set[str]]:
    task = cat.lookup("task", (data.get("task") or {}).get("type", ""))
    model = cat.lookup("model", (data.get("model") or {}).get("type", ""))
    task_metrics = set(task.metrics) if task else set()
    model_metrics = set(model.metrics) if model else set()
    return {
        "train": {"loss", "grad_norm", "lr"} | task_metrics | model_metrics,
        "val": {"loss"} | task_metrics | model_metrics,
    }


def _check_expr(loc: Located, path: tuple, gate: Gate, data: dict, in_phase: bool) -> list[Diagnostic]:
    out = []
    metrics = known_metrics(data)
    phase_names = {f"{axis}.{p.get('name')}" for axis, phases in _axes(data) for p in phases}
    single = _axes(data)[0][0] == "curriculum" if _axes(data) else False
    if single:
        phase_names |= {p.get("name") for _, phases in _axes(data) for p in phases}
    for node in ex.walk(gate.expr):
        if isinstance(node, s.Ref):
            out += _check_ref(node, metrics, in_phase)
        elif isinstance(node, s.Call):
            out += _check_call(node, phase_names)
    return out


def _check_ref(node: s.Ref, metrics: dict, in_phase: bool) -> list[Diagnostic]:
    name = node.dotted
    if node.parts[0] in ("train", "val") and len(node.parts) == 2:
        split, metric = node.parts
        if metric in metrics[split]:
            return []
        return [Diagnostic("E400", f"unknown metric '{name}'", node.span,
                           did_you_mean(metric, metrics[split])
                           or f"{split} metrics: {', '.join(sorted(metrics[split]))}")]
    if name in ex.CONTEXT_NAMES:
        if name.startswith("phase.") and not in_phase:
            return [Diagnostic("E400", f"'{name}' only has a meaning in a phase's promote gate", node.span,
                               "use `step` or `epoch` here")]
        return []
    everything = list(ex.CONTEXT_NAMES) + [f"{sp}.{m}" for sp, ms in metrics.items() for m in ms]
    hint = did_you_mean(name, everything)
    if hint is None and len(node.parts) == 1 and node.parts[0] in metrics["train"]:
        hint = f"metrics are read per split: did you mean 'train.{name}'?"
    return [Diagnostic("E400", f"unknown name '{name}' in expression", node.span,
                       hint or "names: step, epoch, phase.steps, phase.epochs, train.METRIC, val.METRIC")]


def _check_call(node: s.Call, phase_names: set[str]) -> list[Diagnostic]:
    fn = ex.FUNCTIONS.get(node.name)
    if fn is None:
        return [Diagnostic("E401", f"unknown function '{node.name}'", node.span,
                           did_you_mean(node.name, ex.FUNCTIONS)
                           or f"functions: {', '.join(sorted(ex.FUNCTIONS))}")]
    out = []
    if not fn.min_args <= len(node.args) <= fn.max_args:
        want = fn.min_args if fn.min_args == fn.max_args else f"{fn.min_args} to {fn.max_args}"
        out.append(Diagnostic("E404", f"{node.name}() takes {want} argument(s), got {len(node.args)}",
                              node.span, fn.doc))
    for key, value in node.kwargs:
        if key not in fn.kwargs:
            out.append(Diagnostic("E404", f"{node.name}() has no argument '{key}'", value.span,
                                  did_you_mean(key, fn.kwargs) or fn.doc))
    if node.args and fn.series_first:
        first = node.args[0]
        if not (isinstance(first, s.Ref) and first.parts[0] in ("train", "val")):
            out.append(Diagnostic("E405", f"{node.name}() reads a metric series such as train.loss",
                                  first.span, fn.doc))
    if node.name == "reached" and node.args:
        target = node.args[0]
        if not isinstance(target, s.Ref) or target.dotted not in phase_names:
            out.append(Diagnostic("E402", f"reached() names no phase: {getattr(target, 'dotted', '?')}",
                                  target.span, f"phases: {', '.join(sorted(phase_names)) or 'none'}"))
    return out


def _semantic_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    out = []
    for axis, phases in _axes(data):
        seen: dict[str, int] = {}
        for i, phase in enumerate(phases):
            name = phase.get("name")
            if name in seen:
                path = ("curriculum",) + ((("axes", _axis_index(data, axis)) if axis != "curriculum" else ()))
                out.append(Diagnostic("E403", f"phase '{name}' appears twice in {axis}",
                                      loc.span(path + ("phases", i, "name"))))
            seen[name] = i
    axes = [a for a, _ in _axes(data)]
    for dup in {a for a in axes if axes.count(a) > 1}:
        out.append(Diagnostic("E403", f"axis '{dup}' appears twice", loc.span(("curriculum",))))
    for path, gate in _gates(data):
        in_phase = len(path) >= 2 and path[-1] == "promote" and "phases" in path
        out += _check_expr(loc, path, gate, data, in_phase)
    out += _cross_field(loc, data)
    return out


def _axis_index(data: dict, axis: str) -> int:
    return [a.get("name") for a in data["curriculum"]["axes"]].index(axis)


def _cross_field(loc: Located, data: dict) -> list[Diagnostic]:
    out = []
    prec = data.get("precision") or {}
    if prec.get("loss_scale") == "dynamic" and prec.get("type") != "fp16":
        out.append(Diagnostic("E600", f"loss_scale dynamic only applies to fp16, not {prec.get('type')}",
                              loc.span(("precision", "loss_scale")),
                              "bf16 and fp32 have fp32's exponent range: drop loss_scale"))
    sched = data.get("schedule") or {}
    steps = data.get("max_steps")
    warm = sched.get("warmup")
    if isinstance(warm, Qty) and warm.span_unit == "%" and not 0 <= warm.value <= 100:
        out.append(Diagnostic("E203", f"schedule.warmup must be between 0% and 100%, got {warm}",
                              loc.span(("schedule", "warmup"))))
    if isinstance(warm, Qty) and warm.span_unit == "%" and not (steps or data.get("max_epochs")):
        out.append(Diagnostic("E600", "a warmup in % needs a finite run: set max_steps or max_epochs",
                              loc.span(("schedule", "warmup"))))
    warm_steps = warm if isinstance(warm, int) else (warm.value if isinstance(warm, Qty)
                                                     and warm.span_unit == "steps" else None)
    if steps and warm_steps is not None and warm_steps >= steps:
        out.append(Diagnostic("E600", f"warmup of {warm_steps} steps is not shorter than the run "
                                      f"(max_steps {steps})", loc.span(("schedule", "warmup"))))
    if sched.get("type") in ("cosine", "warmup_cosine") and not (steps or data.get("max_epochs")):
        out.append(Diagnostic("E600", f"a {sched['type']} schedule decays over the run's length: "
                                      "set max_steps or max_epochs", loc.span(("schedule", "type"))))
    if "min_ratio" in sched and "eta_min" in sched:
        out.append(Diagnostic("E600", "set either schedule.min_ratio or schedule.eta_min, not both",
                              loc.span(("schedule", "eta_min"))))
    uses_val = any(r.startswith("val.") for _, g in _gates(data) for r in ex.series_refs(g.expr))
    best = ((data.get("checkpoint") or {}).get("best") or {}).get("metric", "")
    if (uses_val or best.startswith("val.")) and not data.get("validation"):
        out.append(Diagnostic("E600", "validation metrics are read but there is no validation block",
                              loc.span(("checkpoint", "best")) if best else s.Span(loc.path, 1, 1, 1, 1),
                              "add `validation { every 500 steps  batches 10 }`"))
    if best:
        split, _, metric = best.partition(".")
        metrics = known_metrics(data)
        if split not in metrics or metric not in metrics[split]:
            out.append(Diagnostic("E400", f"checkpoint.best.metric: unknown metric '{best}'",
                                  loc.span(("checkpoint", "best", "metric")),
                                  did_you_mean(best, [f"{a}.{m}" for a in metrics for m in metrics[a]])))
    return out


# ---- entry points ---------------------------------------------------------------------------------

def _diagnose(loc: Located) -> list[Diagnostic]:
    data = loc.data
    out = list(loc.diagnostics)
    out += _schema_diagnostics(loc, data, spec_schema(), (), "the spec")
    out += _component_diagnostics(loc, data)
    out += _semantic_diagnostics(loc, data)
    return _dedupe(out)


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
    text = f"{key} {value}"  # same length, so columns in messages match what was typed
    try:
        items = parse_statements(text, origin)
    except SpecError as err:
        return err.diagnostics[0]
    if len(items) != 1 or not isinstance(items[0], s.Setting):
        return Diagnostic("E502", f"--set takes exactly one setting, got {option!r}", s.Span(origin, 1, 1, 1, 2))
    return items[0]


def check(doc: s.Document, profile: str | None = None, overrides: tuple[str, ...] = ()) -> Spec:
    """The checked Spec for ``doc`` with a profile and ``--set`` overrides applied."""
    sources = {doc.path: doc.source}
    loc = locate(doc)
    if profile is not None:
        if profile not in loc.profiles:
            raise SpecError([Diagnostic("E501", f"no profile '{profile}' in {doc.path}", s.Span(doc.path, 1, 1, 1, 1),
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
    return Spec(loc.data.get("spec"), loc.data, loc, doc.path, profile, tuple(overrides), sources)


def check_all_profiles(doc: s.Document) -> list[Diagnostic]:
    """What ``validate`` reports: the file itself, then each profile applied to it."""
    loc = locate(doc)
    diags = _diagnose(loc)
    for name, prof in loc.profiles.items():
        variant = locate(doc)
        apply_overrides(variant, prof.statements, f"profile {name}")
        diags += _diagnose(variant)
    return _dedupe(diags)


def load(path: str, profile: str | None = None, overrides: tuple[str, ...] = ()) -> Spec:
    text = read_source(path)
    return check(parse(text, path), profile, overrides)


def copy_data(data: dict) -> dict:
    return copy.deepcopy(data)
