"""schemas/components/lm.json: well-formed entries whose defaults match the code."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from specrun.components.lm import size, synthetic
from specrun.components.lm.task import DEFAULTS as TASK_DEFAULTS
from specrun.components.optim.muon import DEFAULTS as OPT_DEFAULTS

ENTRIES = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "components" / "lm.json").read_text())
BY_NAME = {e["name"]: e for e in ENTRIES}
SPECIAL = {"bytes", "duration", "span", "range", "gate"}


def _plain(schema):
    """The schema with spec-level types swapped for strings, for JSON Schema's own checker."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") in SPECIAL:
                node["type"] = "string"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _objects(schema, path="params"):
    if schema.get("type") == "object":
        yield path, schema
        for name, sub in schema.get("properties", {}).items():
            yield from _objects(sub, f"{path}.{name}")


def defaults_of(schema) -> dict:
    out = {}
    for name, sub in schema["properties"].items():
        if sub.get("type") == "gate":
            continue
        if sub.get("type") == "object":
            out[name] = defaults_of(sub)
        else:
            out[name] = sub["default"]
    return out


def test_entries_name_the_three_components():
    assert {(e["kind"], e["name"]) for e in ENTRIES} == {
        ("task", "text_lm"), ("model", "causal_lm"), ("optimizer", "mugrokfast")}
    assert BY_NAME["text_lm"]["metrics"] == ["token_accuracy", "perplexity"]
    assert BY_NAME["causal_lm"]["estimate"] == "specrun.components.lm.size:estimate_parameters"


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_schema_is_valid_and_closed(name):
    schema = BY_NAME[name]["params"]
    jsonschema.Draft202012Validator.check_schema(_plain(schema))
    for path, obj in _objects(schema):
        assert obj.get("additionalProperties") is False, path
        for key, sub in obj["properties"].items():
            if sub.get("type") != "gate":
                assert "default" in sub, f"{path}.{key} has no default"
    jsonschema.validate(defaults_of(schema), _plain(schema))


def test_schema_defaults_match_the_code():
    assert defaults_of(BY_NAME["causal_lm"]["params"]) == size.MODEL_DEFAULTS
    task = dict(TASK_DEFAULTS)
    assert defaults_of(BY_NAME["text_lm"]["params"]) == task
    assert task["synthetic"] == synthetic.DEFAULTS
    assert defaults_of(BY_NAME["mugrokfast"]["params"]) == OPT_DEFAULTS


def test_memory_enable_is_a_gate():
    memory = BY_NAME["causal_lm"]["params"]["properties"]["memory"]
    assert memory["properties"]["enable"]["type"] == "gate"


def test_bad_values_are_rejected():
    schema = _plain(BY_NAME["causal_lm"]["params"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"memory": {"place_cells": 10, "typo": 1}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"stage": 4}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"packing": "zip"}, _plain(BY_NAME["text_lm"]["params"]))


def test_muon_is_another_name_for_mugrokfast():
    from specrun.spec import catalog as cat

    assert cat.lookup("optimizer", "muon") is cat.lookup("optimizer", "mugrokfast")
    assert "muon" in cat.names("optimizer")  # offered by 'did you mean' and completion too
