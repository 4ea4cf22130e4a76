"""The spans only the data can settle (epochs, a share of a run in epochs) are resolved once,
by resolve_timeline, and the plan is never edited on the way."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specrun.engine.clock import WallClock
from specrun.engine.timeline import (DEFAULT_GUARD_EVERY, TimelineError, falls_due, next_decision,
                                      resolve_timeline)

from .conftest import FAST_SPEC, load_plan, make_run, write_spec

# FAST_SPEC's task: 128 examples in batches of 8 = 16 micro-batches an epoch; accumulate 2.
IN_EPOCHS = FAST_SPEC.replace("max_steps 12", "max_epochs 3").replace("every 4 steps", "every 1 epoch") + """
schedule warmup_cosine {
  warmup 5%
}
validation {
  every 2 epochs
  batches 1
}
expect train.loss < 100 by 2 epochs
expect train.loss < 100 by 10 micro_steps warn
expect train.loss < 100 throughout
memory { ram_limit 1000GB }
"""


def test_epoch_spans_become_steps_once_the_epoch_length_is_known(tmp_path):
    _, plan = load_plan(write_spec(tmp_path, IN_EPOCHS))
    timeline = resolve_timeline(plan, per_epoch=16)
    assert timeline.total_steps == 24  # 3 epochs of 16 micro-batches, 2 a step
    assert timeline.per_epoch == 16
    assert timeline.warmup == 1  # 5% of 24 steps
    assert timeline.every["checkpoint"] == ("epochs", 1)  # counted in micro-batches, not rounded steps
    assert timeline.every["validation"] == ("epochs", 2)
    assert timeline.every["log"] == 1
    assert timeline.every["memory"] == DEFAULT_GUARD_EVERY  # a ram_limit alone is still guarded
    assert timeline.deadlines == (16, ("micro_steps", 10), None)


def test_a_fractional_epoch_is_rounded_only_where_it_must_be(tmp_path):
    text = IN_EPOCHS.replace("every 1 epoch", "every 0.5 epochs")
    _, plan = load_plan(write_spec(tmp_path, text))
    assert resolve_timeline(plan, per_epoch=20).every["checkpoint"] == 5  # half of 10 steps


def test_epochs_of_a_task_without_epochs_are_an_error(tmp_path):
    _, plan = load_plan(write_spec(tmp_path, IN_EPOCHS))
    with pytest.raises(TimelineError, match="max_epochs is set but this task has no epochs"):
        resolve_timeline(plan, per_epoch=None)
    steps = IN_EPOCHS.replace("max_epochs 3", "max_steps 30")
    _, plan = load_plan(write_spec(tmp_path, steps))
    with pytest.raises(TimelineError, match="validation.every 2 epochs: this task has no epochs to count"):
        resolve_timeline(plan, per_epoch=None)


def test_setup_resolves_the_timeline_without_editing_the_plan(tmp_path):
    _, plan = load_plan(write_spec(tmp_path, IN_EPOCHS))
    before = json.dumps(plan.to_json())
    run = make_run(tmp_path, IN_EPOCHS)
    assert json.dumps(run.plan.to_json()) == before
    assert run.timeline == resolve_timeline(plan, per_epoch=16)
    assert (run.total_steps, run.per_epoch, run.every) == (24, 16, run.timeline.every)


# ---- the steps that decide nothing ---------------------------------------------------------------

TRIGGERS = st.one_of(st.integers(1, 9), st.tuples(st.just("micro_steps"), st.integers(1, 20)),
                     st.tuples(st.just("epochs"), st.integers(1, 3)))
EVERY = st.dictionaries(st.sampled_from(["log", "validation", "checkpoint", "memory"]),
                        st.one_of(TRIGGERS, st.lists(TRIGGERS, min_size=2, max_size=3)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(every=EVERY, accumulate=st.integers(1, 4), per_epoch=st.integers(1, 30), start=st.integers(0, 40))
def test_the_loop_skips_exactly_the_steps_on_which_nothing_falls(every, accumulate, per_epoch, start):
    """next_decision is the first later step on which a trigger falls (falls_due) or an epoch
    ends: never later (the loop would miss a log row, a check, an epoch's report), and never
    earlier for step and micro-step triggers (or the quiet steps would not be quiet)."""
    micro = start * accumulate
    epoch_seen = micro // per_epoch
    step = start
    while True:
        step += 1
        micro += accumulate
        epoch_done = micro // per_epoch if micro // per_epoch > epoch_seen else None
        if epoch_done is not None or any(falls_due(every, s, step, epoch_done, (micro - accumulate, micro))
                                         for s in every):
            break
    assert next_decision(every, start, start * accumulate, accumulate, per_epoch) == step


def test_without_epochs_only_the_triggers_decide():
    assert next_decision({"log": 10, "checkpoint": ("micro_steps", 7)}, 12, 36, 3, None) == 14  # micro 42 > 35
    assert next_decision({"log": 10}, 12, 12, 1, None) == 20
    assert next_decision({}, 12, 12, 1, None) == math.inf  # no trigger, no epochs: every step is quiet


def test_a_wall_clock_is_asked_on_every_step():
    """`checkpoint every 30min` cannot be predicted in steps (and across ranks it is a collective)."""
    assert next_decision({"log": 100, "checkpoint": WallClock(1800)}, 5, 5, 1, None) == 6
    assert next_decision({"checkpoint": [500, WallClock(1800)]}, 5, 5, 1, 1000) == 6
