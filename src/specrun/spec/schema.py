"""schema: the spec's JSON Schema and the validators that apply it.

``schemas/spec.schema.json`` says what a spec may contain; the spec types beyond
JSON's own (``bytes``, ``duration``, ``span``, ``range``, ``gate``) are added to
Draft 2020-12's type checker. A small subset validator covers what our schemas use,
with jsonschema's semantics, so `specrun validate` does not pay for importing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from specrun.resources import resource_dir
from specrun.spec.values import Gate, IntRange, Qty

SPEC_TYPES = {
    # a whole number is written as one: JSON Schema would take 32.0 for an integer, the
    # engine would then get a float where it counts
    "integer": lambda c, v: isinstance(v, int) and not isinstance(v, bool),
    "bytes": lambda c, v: isinstance(v, Qty) and v.dimension == "bytes",
    "duration": lambda c, v: isinstance(v, Qty) and v.dimension == "duration",
    "span": lambda c, v: isinstance(v, Qty) and v.dimension == "span",
    "range": lambda c, v: (isinstance(v, IntRange) and all(isinstance(x, int) and not isinstance(x, bool)
                                                            for x in (v.lo, v.hi)) and v.lo <= v.hi
                            and v.scale is None),
    "gate": lambda c, v: isinstance(v, Gate),
}


@lru_cache(maxsize=1)
def spec_schema() -> dict:
    return json.loads((resource_dir("schemas") / "spec.schema.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def reference_validator():
    """jsonschema's Draft 2020-12 validator with the spec types: the reference implementation,
    used for any schema that needs more than ``SubsetValidator`` knows (imported only then)."""
    import jsonschema
    from jsonschema import Draft202012Validator

    checker = Draft202012Validator.TYPE_CHECKER.redefine_many(SPEC_TYPES)
    return jsonschema.validators.extend(Draft202012Validator, type_checker=checker)


def validator_for(schema: dict):
    """A validator for ``schema``: the fast subset validator when it covers the schema."""
    if SubsetValidator.covers(schema):
        return SubsetValidator(schema)
    return reference_validator()(schema)


# ---- the subset validator -------------------------------------------------------------------
#
# Importing jsonschema (and the metaschemas it loads) costs more than parsing and checking
# every reference spec; `specrun validate` must stay quick. The spec and component schemas
# use a small part of JSON Schema, which SubsetValidator implements with jsonschema's semantics and
# error objects. A schema using anything else goes to jsonschema itself; a test holds the two
# to the same errors.

_ANNOTATIONS = {"$schema", "$id", "$defs", "definitions", "$comment", "title", "description", "default",
                "examples", "deprecated", "readOnly", "writeOnly", "format"}
_KEYWORDS = {"type", "properties", "additionalProperties", "required", "enum", "const", "minimum", "maximum",
             "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "items", "uniqueItems",
             "pattern", "minLength", "maxLength", "multipleOf", "$ref", "anyOf", "oneOf", "allOf", "not"}
_JSON_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _equal(a, b) -> bool:
    """jsonschema's equality: true is not 1, 1 is 1.0, containers compare by content."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return False


def _identity(value):
    """A hashable key equal for two values exactly when ``_equal`` says they are equal."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)  # 1 and 1.0 hash alike and are equal, as in jsonschema
    if isinstance(value, list):
        return ("list", tuple(_identity(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((k, _identity(v)) for k, v in value.items()))
    try:
        hash(value)
        return ("value", value)
    except TypeError:
        return ("repr", type(value).__name__, repr(value))


def first_repeat(items: list) -> int | None:
    """The index of the first item equal to an earlier one, or None: one pass, not all pairs."""
    seen = set()
    for i, item in enumerate(items):
        key = _identity(item)
        if key in seen:
            return i
        seen.add(key)
    return None


@dataclass
class _Error:
    """The parts of jsonschema.ValidationError that _translate reads."""

    message: str
    validator: str
    validator_value: object
    instance: object
    schema: dict
    absolute_path: tuple


class SubsetValidator:
    def __init__(self, schema: dict):
        self.root = schema

    @staticmethod
    @lru_cache(maxsize=None)
    def _covers_json(text: str) -> bool:
        def ok(node, where_keywords: bool) -> bool:
            if isinstance(node, list):
                return all(ok(n, True) for n in node)
            if not isinstance(node, dict):
                return True
            if where_keywords:  # a schema object: every key must be known
                for key, value in node.items():
                    if key in ("properties", "$defs", "definitions"):
                        if not isinstance(value, dict) or not all(ok(v, True) for v in value.values()):
                            return False
                    elif key in ("items", "additionalProperties", "not"):
                        if not (isinstance(value, bool) or (isinstance(value, dict) and ok(value, True))):
                            return False
                    elif key in ("anyOf", "oneOf", "allOf"):
                        if not isinstance(value, list) or not all(ok(v, True) for v in value):
                            return False
                    elif key == "$ref":
                        if not (isinstance(value, str) and value.startswith("#/")):
                            return False
                    elif key not in _KEYWORDS and key not in _ANNOTATIONS:
                        return False
            return True

        return ok(json.loads(text), True)

    @classmethod
    def covers(cls, schema: dict) -> bool:
        try:
            return cls._covers_json(json.dumps(schema, sort_keys=True, default=str))
        except (TypeError, ValueError):
            return False

    def is_type(self, value, kind: str) -> bool:
        check = SPEC_TYPES.get(kind)
        if check is not None:
            return bool(check(None, value))
        check = _JSON_TYPES.get(kind)
        return bool(check and check(value))

    def is_valid(self, instance, schema=None) -> bool:
        return next(self._errors(instance, self.root if schema is None else schema, ()), None) is None

    def iter_errors(self, instance):
        yield from self._errors(instance, self.root, ())

    def _ref(self, ref: str) -> dict:
        node = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _errors(self, inst, schema, path):
        if schema is True:
            return
        if schema is False:
            yield _Error("False schema does not allow the value", "false", False, inst, schema, path)
            return
        for key, value in schema.items():
            if key in _ANNOTATIONS:
                continue
            yield from getattr(self, "_k_" + key.lstrip("$"))(value, inst, schema, path)

    def _err(self, message, keyword, value, inst, schema, path):
        return _Error(message, keyword, value, inst, schema, path)

    def _k_ref(self, value, inst, schema, path):
        yield from self._errors(inst, self._ref(value), path)

    def _k_type(self, value, inst, schema, path):
        kinds = [value] if isinstance(value, str) else value
        if not any(self.is_type(inst, k) for k in kinds):
            yield self._err(f"{inst!r} is not of type {', '.join(map(repr, kinds))}", "type", value, inst, schema, path)

    def _k_properties(self, value, inst, schema, path):
        if isinstance(inst, dict):
            for name, sub in value.items():
                if name in inst:
                    yield from self._errors(inst[name], sub, path + (name,))

    def _k_additionalProperties(self, value, inst, schema, path):
        if not isinstance(inst, dict):
            return
        extras = [k for k in inst if k not in schema.get("properties", {})]
        if value is False:
            if extras:
                yield self._err(f"Additional properties are not allowed ({', '.join(map(repr, extras))} "
                                f"{'was' if len(extras) == 1 else 'were'} unexpected)",
                                "additionalProperties", value, inst, schema, path)
        elif isinstance(value, dict):
            for k in extras:
                yield from self._errors(inst[k], value, path + (k,))

    def _k_required(self, value, inst, schema, path):
        if isinstance(inst, dict):
            for name in value:
                if name not in inst:
                    yield self._err(f"{name!r} is a required property", "required", value, inst, schema, path)

    def _k_enum(self, value, inst, schema, path):
        if not any(_equal(inst, v) for v in value):
            yield self._err(f"{inst!r} is not one of {value!r}", "enum", value, inst, schema, path)

    def _k_const(self, value, inst, schema, path):
        if not _equal(inst, value):
            yield self._err(f"{value!r} was expected", "const", value, inst, schema, path)

    def _number(self, inst) -> bool:
        return self.is_type(inst, "number")

    def _k_minimum(self, value, inst, schema, path):
        if self._number(inst) and inst < value:
            yield self._err(f"{inst!r} is less than the minimum of {value!r}", "minimum", value, inst, schema, path)

    def _k_maximum(self, value, inst, schema, path):
        if self._number(inst) and inst > value:
            yield self._err(f"{inst!r} is greater than the maximum of {value!r}", "maximum", value, inst,
                            schema, path)

    def _k_exclusiveMinimum(self, value, inst, schema, path):
        if self._number(inst) and inst <= value:
            yield self._err(f"{inst!r} is less than or equal to the minimum of {value!r}", "exclusiveMinimum",
                            value, inst, schema, path)

    def _k_exclusiveMaximum(self, value, inst, schema, path):
        if self._number(inst) and inst >= value:
            yield self._err(f"{inst!r} is greater than or equal to the maximum of {value!r}",
                            "exclusiveMaximum", value, inst, schema, path)

    def _k_multipleOf(self, value, inst, schema, path):
        if self._number(inst):
            if isinstance(value, float):
                quotient = inst / value
                try:
                    failed = int(quotient) != quotient
                except OverflowError:
                    failed = True
            else:
                failed = inst % value
            if failed:
                yield self._err(f"{inst!r} is not a multiple of {value}", "multipleOf", value, inst, schema, path)

    def _k_minItems(self, value, inst, schema, path):
        if isinstance(inst, list) and len(inst) < value:
            yield self._err(f"{inst!r} should be non-empty" if value == 1 else f"{inst!r} is too short",
                            "minItems", value, inst, schema, path)

    def _k_maxItems(self, value, inst, schema, path):
        if isinstance(inst, list) and len(inst) > value:
            yield self._err(f"{inst!r} is too long", "maxItems", value, inst, schema, path)

    def _k_uniqueItems(self, value, inst, schema, path):
        if value and isinstance(inst, list):
            if first_repeat(inst) is not None:
                yield self._err(f"{inst!r} has non-unique elements", "uniqueItems", value, inst, schema, path)

    def _k_items(self, value, inst, schema, path):
        if isinstance(inst, list):
            for i, item in enumerate(inst):
                yield from self._errors(item, value, path + (i,))

    def _k_pattern(self, value, inst, schema, path):
        import re

        if isinstance(inst, str) and not re.search(value, inst):
            yield self._err(f"{inst!r} does not match {value!r}", "pattern", value, inst, schema, path)

    def _k_minLength(self, value, inst, schema, path):
        if isinstance(inst, str) and len(inst) < value:
            yield self._err(f"{inst!r} is too short", "minLength", value, inst, schema, path)

    def _k_maxLength(self, value, inst, schema, path):
        if isinstance(inst, str) and len(inst) > value:
            yield self._err(f"{inst!r} is too long", "maxLength", value, inst, schema, path)

    def _k_anyOf(self, value, inst, schema, path):
        if not any(self.is_valid(inst, sub) for sub in value):
            yield self._err(f"{inst!r} is not valid under any of the given schemas", "anyOf", value, inst,
                            schema, path)

    def _k_oneOf(self, value, inst, schema, path):
        matches = sum(self.is_valid(inst, sub) for sub in value)
        if matches == 0:
            yield self._err(f"{inst!r} is not valid under any of the given schemas", "oneOf", value, inst,
                            schema, path)
        elif matches > 1:
            yield self._err(f"{inst!r} is valid under each of several given schemas", "oneOf", value, inst,
                            schema, path)

    def _k_allOf(self, value, inst, schema, path):
        for sub in value:
            yield from self._errors(inst, sub, path)

    def _k_not(self, value, inst, schema, path):
        if self.is_valid(inst, value):
            yield self._err(f"{value!r} should not be valid under {inst!r}", "not", value, inst, schema, path)


def resolve_ref(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/"):
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        return resolve_ref(node, root)
    return schema
