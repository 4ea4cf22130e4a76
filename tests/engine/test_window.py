"""engine/window.py: the log window's means, its reset, and its place in a checkpoint."""

import json

import pytest

from specrun.engine.window import Window


def test_means_are_per_metric_over_the_steps_that_reported_it():
    w = Window()
    w.add({"train.loss": 1.0, "lr": 0.1})
    w.add({"train.loss": 3.0, "lr": 0.2, "train.accuracy": 0.5})  # a task metric on a log step only
    w.tokens += 64
    means, steps_per_s, tokens_per_s = w.take()
    assert means == pytest.approx({"train.loss": 2.0, "lr": 0.15, "train.accuracy": 0.5})
    assert steps_per_s > 0 and tokens_per_s == pytest.approx(64 * steps_per_s / 2)


def test_last_holds_the_latest_step_alone():
    w = Window()
    w.add({"train.loss": 1.0, "train.accuracy": 0.25})
    w.add({"train.loss": 3.0})
    assert w.last == {"train.loss": 3.0}


def test_take_starts_a_new_window():
    w = Window()
    w.add({"train.loss": 5.0})
    w.tokens = 10
    w.take()
    assert (w.sums, w.counts, w.count, w.steps, w.tokens, w.last) == ({}, {}, 0, 0, 0, {})
    w.add({"train.loss": 1.0})
    assert w.take()[0] == {"train.loss": 1.0}  # nothing of the window before


def test_empty_window_takes_no_means():
    means, steps_per_s, tokens_per_s = Window().take()
    assert means == {} and steps_per_s == 0 and tokens_per_s == 0


def test_a_restored_window_gives_the_uninterrupted_means():
    """A checkpoint between two log rows: the row after the resume averages the same steps."""
    whole, cut = Window(), Window()
    for value in (1.0, 2.0):
        whole.add({"train.loss": value})
        cut.add({"train.loss": value})
    state = json.loads(json.dumps(cut.state_dict()))  # plain data: what a checkpoint stores
    resumed = Window()
    resumed.load_state_dict(state)
    for w in (whole, resumed):
        w.add({"train.loss": 6.0, "train.accuracy": 1.0})
    assert resumed.take()[0] == whole.take()[0] == pytest.approx({"train.loss": 3.0, "train.accuracy": 1.0})
    assert resumed.count == 0


def test_loading_replaces_what_the_window_held():
    w = Window()
    w.add({"val.loss": 9.0})
    w.load_state_dict({"sums": {"train.loss": 4.0}, "counts": {"train.loss": 2}, "count": 2})
    assert w.count == 2 and w.take()[0] == {"train.loss": 2.0}


def test_the_state_is_a_copy():
    w = Window()
    w.add({"train.loss": 1.0})
    state = w.state_dict()
    w.add({"train.loss": 3.0})
    assert state == {"sums": {"train.loss": 1.0}, "counts": {"train.loss": 1}, "count": 1}
