"""messages: schema errors in the user's words, at the user's spans.

jsonschema reports paths and validator names; a user wrote `lr -1e-3` on line 14.
Here each error becomes a Diagnostic with the dotted setting name (``label``), the
span of what was written, and a hint for the usual mistakes.
"""

from __future__ import annotations

from specrun.spec import catalog as cat
from specrun.spec.diagnostics import Diagnostic, did_you_mean
from specrun.spec.document import Located
from specrun.spec.schema import SPEC_TYPES, first_repeat, resolve_ref, validator_for
from specrun.spec.values import Gate, IntRange, Qty, describe

TYPE_WORDS = {
    "bytes": "a size such as 10GB or 512MiB", "duration": "a duration such as 30s or 5min",
    "span": "a training span such as 500 steps, 3 epochs or 5%", "range": "a range such as 3..16",
    "gate": "an expression after `when`", "integer": "a whole number", "number": "a number",
    "string": "a name or a string", "boolean": "true or false", "array": "a list [a, b]",
    "object": "a block { ... }",
}


def _type_words(types) -> str:
    types = [types] if isinstance(types, str) else list(types)
    return " or ".join(TYPE_WORDS.get(t, t) for t in types)


def schema_diagnostics(loc: Located, instance, schema: dict, base: tuple, what: str) -> list[Diagnostic]:
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
    if validator == "uniqueItems" and isinstance(value, list):
        again = first_repeat(value)
        if again is not None:
            return [Diagnostic("E201", f"{dotted} lists {_shown(value[again])} twice", loc.value_span(path + (again,)),
                               "each item may appear once")]
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
