"""The gate functions, through the one table that check, the history and the
evaluator read (specrun.spec.expr.FUNCTIONS)."""

from __future__ import annotations

from collections import deque

import pytest

from spec_helpers import BASE, codes, one
from specrun.engine.history import History, window_sizes
from specrun.spec.expr import FUNCTIONS, Context, evaluate
from specrun.spec.parse import parse
from specrun.spec.values import Gate


def gate(text: str):
    return parse(f"x when {text}\n").items[0].gate


def ctx(values: list[float]) -> Context:
    history = History({"train.loss": 100}, {("train.loss", 0.5)}, {("train.loss", 0.0, True)})
    for v in values:
        history.record("train.loss", v)
    return history.context


@pytest.mark.parametrize("text, value", [
    ("mean(train.loss, 2)", 1.5), ("min(train.loss)", 1.0), ("max(train.loss, 2)", 2.0),
    ("first(train.loss)", 4.0), ("last(train.loss)", 1.0), ("best(train.loss)", 1.0),
    ("count(train.loss)", 4), ("ema(train.loss, 0.5)", 1.875), ("abs(0 - last(train.loss))", 1.0),
])
def test_each_number_function(text, value):
    assert evaluate(gate(text), ctx([4.0, 3.0, 2.0, 1.0])) == value


def test_every_function_is_tested_here():
    """A new entry in the table comes with a test in this file."""
    source = open(__file__, encoding="utf-8").read()
    assert all(f"{name}(" in source for name in FUNCTIONS)


def test_plateau_and_reached_are_conditions():
    assert evaluate(gate("plateau(train.loss, patience=2)"), ctx([1.0, 2.0, 3.0])) is True
    assert evaluate(gate("plateau(train.loss, patience=2)"), ctx([3.0, 2.0, 1.0])) is False
    reached = Context(phase_reached=lambda name: name == "rounds.r8")
    assert evaluate(gate("reached(rounds.r8)"), reached) is True
    assert evaluate(gate("reached(rounds.r16)"), reached) is False


def test_window_of_a_series_is_the_longest_any_function_reads():
    sizes, emas, plateaus = window_sizes([Gate(gate("mean(train.loss, 50) < 1 and max(val.acc, 7) > 0.5")),
                                          Gate(gate("ema(train.loss, 0.1) < 2 and plateau(val.loss)"))])
    assert sizes == {"train.loss": 50, "val.acc": 7, "val.loss": 1}
    assert emas == {("train.loss", 0.1)} and plateaus == {("val.loss", 0.0, True)}


def test_missing_data_is_unknown_not_an_error():
    assert evaluate(gate("mean(train.loss, 5)"), ctx([1.0, 2.0])) is None
    assert evaluate(gate("mean(train.loss, 5) < 3"), Context(series={"train.loss": deque()})) is False


@pytest.mark.parametrize("text, code, message", [
    ("mean(train.loss, step) < 1", "E405", "mean() takes a whole number such as 100 written out"),
    ("mean(train.loss, 0) < 1", "E405", "mean() takes a whole number of at least 1, got 0"),
    ("ema(train.loss, 0.5 + 0.1) < 1", "E405", "ema() takes a number such as 0.1 written out"),
    ("plateau(train.loss, mode=\"lowest\")", "E405", "plateau(mode=...) is one of 'min', 'max'"),
    ("plateau(train.loss, patience=2.5)", "E405", "plateau(patience=...) takes a whole number of at least 1"),
    ("mean(step, 10) < 1", "E405", "mean() reads a metric series such as train.loss"),
    ("mean(train.loss) < 1", "E404", "mean() takes 2 argument(s), got 1"),
    ("medain(train.loss, 3) < 1", "E401", "unknown function 'medain'"),
])
def test_arguments_checked_from_the_table(text, code, message):
    found = one(BASE + f"stop when {text}\n")
    assert found.code == code and found.message.startswith(message), found.message


def test_valid_calls_pass():
    assert codes(BASE + "stop when mean(train.loss, 100 steps) < 1 and plateau(train.loss, patience=3, "
                        "min_delta=0.01, mode=\"min\")\n") == []
