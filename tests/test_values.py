"""Plain values of a checked spec (specrun.spec.values), through their public names."""

from __future__ import annotations

import json

from specrun.spec.parse import parse_expression
from specrun.spec.values import Gate, IntRange, Qty, canonical_json, describe, to_json


def test_quantities_know_their_dimension_and_amount():
    assert Qty(10, "GB").dimension == "bytes" and Qty(10, "GB").bytes == 10**10
    assert Qty(2, "GiB").bytes == 2 * 2**30
    assert Qty(2, "min").dimension == "duration" and Qty(2, "min").seconds == 120.0
    assert Qty(3, "epochs").dimension == "span" and Qty(3, "epochs").span_unit == "epochs"
    assert Qty(5, "%").span_unit == "%"


def test_text_of_each_value():
    assert str(Qty(1, "steps")) == "1 step" and str(Qty(80000, "steps")) == "80_000 steps"
    assert str(IntRange(3, 16)) == "3..16"
    assert str(Gate(parse_expression("mean(train.loss,10)<0.5"))) == "mean(train.loss, 10) < 0.5"


def test_gates_compare_by_meaning_not_layout():
    a = Gate(parse_expression("step >= 10 and (val.loss < 1)"))
    b = Gate(parse_expression("(step>=10) and val.loss<1"))
    assert a == b and hash(a) == hash(b)
    assert a != Gate(parse_expression("step >= 11 and val.loss < 1"))


def test_describe_reads_as_messages_do():
    assert describe(True) == "true" and describe(None) == "(unset)"
    assert describe([1, "a", Qty(2, "s")]) == "[1, a, 2s]" and describe({"x": 1}) == "{...}"


def test_json_forms_are_text_and_canonical():
    data = {"b": [Qty(10, "GB"), IntRange(1, 2)], "a": Gate(parse_expression("step > 1"))}
    assert to_json(data) == {"b": ["10GB", "1..2"], "a": "step > 1"}
    assert canonical_json(data) == json.dumps({"a": "step > 1", "b": ["10GB", "1..2"]}, sort_keys=True)
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})
