"""The subset validator (schema.SubsetValidator) against jsonschema itself, the reference.

`specrun validate` avoids importing jsonschema (it costs more than checking every
reference spec); schema.SubsetValidator implements the part of JSON Schema the spec and component
schemas use. Here both validate the same data and must report the same errors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specrun.spec import catalog as cat
from specrun.spec.schema import SubsetValidator, reference_validator, spec_schema
from specrun.spec.diagnostics import SpecError
from specrun.spec.document import locate
from specrun.spec.parse import parse
from specrun.spec.values import Gate, IntRange, Qty

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = [("spec", spec_schema())] + [(f"{c.kind} {c.name}", c.params) for c in cat.catalog().values()]


def _errors(validator, instance):
    return sorted((e.validator, tuple(e.absolute_path), repr(e.validator_value),
                   e.message if e.validator == "required" else "") for e in validator.iter_errors(instance))


def _same(schema: dict, instance):
    assert SubsetValidator.covers(schema)
    assert _errors(SubsetValidator(schema), instance) == _errors(reference_validator()(schema), instance)


def test_every_schema_is_covered():
    """Were one not covered it would still be checked (by jsonschema), only slower."""
    assert [name for name, schema in SCHEMAS if not SubsetValidator.covers(schema)] == []
    assert not SubsetValidator.covers({"type": "object", "patternProperties": {"^x": {}}})
    assert not SubsetValidator.covers({"items": [{"type": "integer"}]})
    assert not SubsetValidator.covers({"$ref": "https://example.com/x.json"})


def _corpus():
    paths = sorted((REPO / "specs").glob("*.train")) + sorted((REPO / "tests" / "data").rglob("*.train"))
    for path in paths:
        try:
            yield path, locate(parse(path.read_bytes().decode("utf-8"), str(path))).data
        except (SpecError, UnicodeDecodeError):
            continue


@pytest.mark.parametrize("path,data", list(_corpus()), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_corpus(path, data):
    _same(spec_schema(), data)
    for kind in cat.KINDS:
        block = data.get(kind)
        comp = cat.lookup(kind, block.get("type")) if isinstance(block, dict) and isinstance(
            block.get("type"), str) else None
        if comp:
            _same(comp.params, {k: v for k, v in block.items() if k != "type"})


GATE = Gate(parse("x when step > 1\n").items[0].gate)
LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 5000), st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["", "adamw", "cosine", "fp16", "dynamic", "none", "val.loss", "a b", "latest", "system"]),
    st.builds(Qty, st.sampled_from([0, 1, 5, 30, 150]), st.sampled_from(["steps", "epochs", "%", "GB", "s"])),
    st.builds(IntRange, st.integers(-1, 5), st.integers(-1, 20)), st.just(GATE))


def _instances(schema: dict):
    names = set()

    def collect(node):
        if isinstance(node, dict):
            names.update(k for k in node.get("properties", {}) if isinstance(k, str))
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    collect(schema)
    keys = st.sampled_from(sorted(names | {"bogus", "type", "name"}))
    return st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(keys, inner, max_size=6)), max_leaves=25)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_data(data):
    name, schema = data.draw(st.sampled_from(SCHEMAS))
    _same(schema, data.draw(st.dictionaries(st.sampled_from(sorted(schema.get("properties", {})) + ["bogus"]),
                                            _instances(schema), max_size=8)))
