"""Gates promote exactly when every condition holds.

The curriculum and the metric history are driven here with synthetic metric
streams, in the order the loop uses them: record the step's train metrics, set
the step scalars, ask the curriculum. Gates come from real specs (parsed,
checked and compiled), so what is tested is what a `.train` file means.
"""

import random

import pytest

from specrun.spec import expr as ex
from specrun.engine.curriculum import Curriculum
from specrun.engine.history import History, window_sizes

from .conftest import load_plan, write_spec

HEAD = """
spec gates
task rule_classification { features 4 }
model mlp
loss cross_entropy
optimizer sgd { lr 0.1 }
batch 4
max_steps 1000
validation { every 10 steps }
"""


class Driver:
    """The loop's view of one run: step counters, the history, the curriculum."""

    def __init__(self, tmp_path, body: str, per_epoch=None, accumulate=1):
        _, self.plan = load_plan(write_spec(tmp_path, HEAD + body))
        self.history = History(*window_sizes(self.plan.gates))
        self.curriculum = Curriculum(self.plan.axes)
        self.per_epoch = per_epoch
        self.accumulate = accumulate
        self.step = 0
        self.micro = 0
        self.log = []  # (step, axis, old, new)

    @property
    def ctx(self):
        return self.history.context

    def train(self, **metrics):
        """One optimizer step with these train metrics; returns the promotions it caused."""
        self.step += 1
        self.micro += self.accumulate
        self.history.record_all("train", metrics)
        self.ctx.scalars["step"] = self.step
        moved = self.curriculum.check(self.ctx, self.step, self.micro, self.per_epoch)
        self.log += [(self.step, p.axis, p.old, p.new) for p in moved]
        return moved

    def val(self, **metrics):
        self.history.record_all("val", metrics)

    def fresh(self):
        """The same plan at step 0: a new history and curriculum, no re-parsing."""
        other = Driver.__new__(Driver)
        other.__dict__.update(plan=self.plan, per_epoch=self.per_epoch, accumulate=self.accumulate, step=0,
                              micro=0, log=[], curriculum=Curriculum(self.plan.axes),
                              history=History(*window_sizes(self.plan.gates)))
        return other

    def phases(self):
        return self.curriculum.phase_names()

    def gate(self, name: str):
        return self.plan.settings[name]


def promotion_steps(driver) -> list[int]:
    return [step for step, *_ in driver.log]


# ---- and / or / not ---------------------------------------------------------------------------

AND_GATE = """
curriculum {
  phase a { promote when phase.steps >= 5 and mean(train.accuracy, 3) >= 0.75 }
  phase b {}
}
"""


def test_and_waits_for_the_minimum_steps(tmp_path):
    d = Driver(tmp_path, AND_GATE)
    for _ in range(4):
        assert d.train(accuracy=1.0) == []  # the mean holds from step 3, the steps do not
    moved = d.train(accuracy=1.0)
    assert [(p.old, p.new) for p in moved] == [("a", "b")]
    assert d.step == 5
    assert moved[0].values["phase.steps"] == 5
    assert moved[0].values["mean(train.accuracy, 3)"] == 1.0


def test_and_waits_for_the_running_mean(tmp_path):
    d = Driver(tmp_path, AND_GATE)
    stream = [0.0] * 6 + [0.5, 0.75, 1.0, 1.0]  # mean of the last 3: step 9 -> 0.75 exactly
    for acc in stream:
        d.train(accuracy=acc)
    assert promotion_steps(d) == [9]
    assert d.phases() == {"curriculum": "b"}


def test_running_mean_needs_a_full_window(tmp_path):
    d = Driver(tmp_path, """
curriculum {
  phase a { promote when mean(train.accuracy, 3) >= 0.5 }
  phase b {}
}
""")
    d.train(accuracy=1.0)
    d.train(accuracy=1.0)
    assert d.log == []  # two values are not a mean over 3
    d.train(accuracy=1.0)
    assert promotion_steps(d) == [3]


def test_and_matches_a_reference_on_random_streams(tmp_path):
    """Promotion happens at the first step where both conditions hold, never earlier or later."""
    d0 = Driver(tmp_path, AND_GATE)
    rng = random.Random(1234)
    for trial in range(40):
        d = d0.fresh()
        stream = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(30)]
        expected = next((i + 1 for i in range(30)
                         if i + 1 >= 5 and i >= 2 and sum(stream[i - 2:i + 1]) / 3 >= 0.75), None)
        for acc in stream:
            d.train(accuracy=acc)
        assert promotion_steps(d) == ([expected] if expected else []), (trial, stream)


def test_or_promotes_on_either_side(tmp_path):
    body = """
curriculum {
  phase a { promote when step >= 10 or train.loss < 0.25 }
  phase b {}
}
"""
    d = Driver(tmp_path, body)
    for _ in range(12):
        d.train(loss=1.0)
    assert promotion_steps(d) == [10]

    d = Driver(tmp_path, body)
    for loss in (1.0, 0.5, 0.125, 1.0):
        d.train(loss=loss)
    assert promotion_steps(d) == [3]


def test_not_negates(tmp_path):
    d = Driver(tmp_path, """
curriculum {
  phase a { promote when not train.loss > 0.5 }
  phase b {}
}
""")
    for loss in (0.9, 0.75, 0.5, 0.25):
        d.train(loss=loss)
    assert promotion_steps(d) == [3]  # 0.5 > 0.5 is false


# ---- missing data ------------------------------------------------------------------------------

def test_missing_val_data_keeps_the_gate_false(tmp_path):
    d = Driver(tmp_path, """
curriculum {
  phase a { promote when val.accuracy >= 0.5 }
  phase b { promote when mean(val.loss, 2) < 10 }
  phase c { promote when ema(val.loss, 0.5) < 10 and val.loss * 2 < 100 }
  phase d {}
}
""")
    for _ in range(5):
        d.train(loss=1.0, accuracy=1.0)
    assert d.log == []  # no validation yet: the gate waits
    d.val(accuracy=0.75, loss=1.0)
    d.train(loss=1.0, accuracy=1.0)
    assert promotion_steps(d) == [6]
    d.val(loss=1.0)
    d.train(loss=1.0)
    assert promotion_steps(d) == [6]  # one val.loss in phase b is not a mean over 2
    d.val(loss=1.0)
    d.train(loss=1.0)
    assert promotion_steps(d) == [6, 8]
    d.train(loss=1.0)
    assert promotion_steps(d) == [6, 8]  # c began at step 8: no val.loss measured in c yet
    d.val(loss=1.0)
    d.train(loss=1.0)
    assert promotion_steps(d) == [6, 8, 10]


# ---- a gate reads its own phase's evidence --------------------------------------------------------

PHASED = """
curriculum {
  phase easy { promote when mean(train.accuracy, 3) >= 0.8 }
  phase medium { promote when mean(train.accuracy, 3) >= 0.8 and val.accuracy >= 0.8 }
  phase hard {}
}
"""


def test_a_new_phase_does_not_pass_on_the_last_phases_values(tmp_path):
    d = Driver(tmp_path, PHASED)
    d.val(accuracy=0.9)  # measured in phase easy
    for _ in range(3):
        d.train(accuracy=0.9)
    assert d.log == [(3, "curriculum", "easy", "medium")]
    d.train(accuracy=0.9)
    d.train(accuracy=0.9)
    assert d.phases() == {"curriculum": "medium"}  # two values of medium; the window needs three
    d.train(accuracy=0.9)
    assert d.phases() == {"curriculum": "medium"}  # the window is full, but val is from easy
    d.val(accuracy=0.85)
    d.train(accuracy=0.9)
    assert d.log[-1] == (7, "curriculum", "medium", "hard")


def test_phase_evidence_survives_a_checkpoint(tmp_path):
    d = Driver(tmp_path, PHASED)
    d.val(accuracy=0.9)
    for _ in range(6):
        d.train(accuracy=0.9)
    resumed = d.fresh()
    resumed.step, resumed.micro = d.step, d.micro
    resumed.history.load_state_dict(d.history.state_dict())
    resumed.curriculum.load_state_dict(d.curriculum.state_dict())
    for driver in (d, resumed):  # the step-0 validation still does not count after the resume
        driver.train(accuracy=0.9)
        assert driver.phases() == {"curriculum": "medium"}
        driver.val(accuracy=0.85)
        driver.train(accuracy=0.9)
        assert driver.phases() == {"curriculum": "hard"}


def test_stop_gates_read_the_whole_run(tmp_path):
    d = Driver(tmp_path, PHASED + "stop when val.accuracy >= 0.8\n")
    d.val(accuracy=0.9)
    for _ in range(6):
        d.train(accuracy=0.9)
    assert d.phases() == {"curriculum": "medium"}  # the phase gate waits for a val of its own
    assert ex.evaluate(d.gate("stop").expr, d.ctx) is True  # early stopping does not


def test_expressions_on_missing_data_evaluate_false(tmp_path):
    d = Driver(tmp_path, "stop when val.loss < 1 or mean(val.accuracy, 3) > 0.5 or ema(val.loss, 0.1) < 5\n")
    assert ex.evaluate(d.gate("stop").expr, d.ctx) is False


def test_not_on_missing_data_waits(tmp_path):
    d = Driver(tmp_path, """
curriculum {
  phase a { promote when not (val.loss > 2.0) }
  phase b {}
}
""")
    d.train(loss=1.0)
    assert d.log == []  # no validation has run: val.loss is unknown, the gate must wait
    d.val(loss=1.0)
    d.train(loss=1.0)
    assert promotion_steps(d) == [2]


def test_three_valued_logic_on_missing_data(tmp_path):
    d = Driver(tmp_path, "stop when not (val.loss > 2.0) or step >= 3\n")
    stop = d.gate("stop").expr
    d.ctx.scalars["step"] = 2
    assert ex.evaluate(stop, d.ctx) is False  # unknown or false: waits
    d.ctx.scalars["step"] = 3
    assert ex.evaluate(stop, d.ctx) is True  # unknown or true: holds
    d = Driver(tmp_path, "stop when step >= 1 and not (val.loss > 2.0)\n")
    d.ctx.scalars["step"] = 5
    assert ex.evaluate(d.gate("stop").expr, d.ctx) is False  # true and unknown: waits


# ---- several axes ----------------------------------------------------------------------------------

AXES = """
curriculum {
  axis size {
    phase s1 { task.noise 0.1; promote when phase.steps >= 3 }
    phase s2 { task.noise 0.2; promote when phase.steps >= 4 }
    phase s3 {}
  }
  axis mode {
    phase m1 { loss.label_smoothing 0.25; promote when train.accuracy >= 0.75 }
    phase m2 { loss.label_smoothing 0.5 }
  }
}
"""


def test_axes_advance_independently(tmp_path):
    d = Driver(tmp_path, AXES)
    for acc in (0.5, 0.5, 0.5, 0.5, 0.5, 0.75, 0.5, 0.5, 0.5):
        d.train(accuracy=acc)
    assert d.log == [(3, "size", "s1", "s2"), (6, "mode", "m1", "m2"), (7, "size", "s2", "s3")]
    assert d.phases() == {"size": "s3", "mode": "m2"}


def test_merged_params_follow_the_phases(tmp_path):
    d = Driver(tmp_path, AXES)
    assert d.curriculum.merged() == {"task": {"noise": 0.1}, "loss": {"label_smoothing": 0.25}}
    d.train(accuracy=0.75)  # mode m1 -> m2 at step 1
    assert d.phases() == {"size": "s1", "mode": "m2"}
    assert d.curriculum.merged() == {"task": {"noise": 0.1}, "loss": {"label_smoothing": 0.5}}
    d.train(accuracy=0.0)
    d.train(accuracy=0.0)  # size s1 -> s2 at step 3
    assert d.curriculum.merged() == {"task": {"noise": 0.2}, "loss": {"label_smoothing": 0.5}}
    for _ in range(4):
        d.train(accuracy=0.0)  # size s2 -> s3 at step 7; s3 sets nothing: what s2 set stays set
    assert d.phases() == {"size": "s3", "mode": "m2"}
    assert d.curriculum.merged() == {"task": {"noise": 0.2}, "loss": {"label_smoothing": 0.5}}
    restarted = Curriculum(d.plan.axes)
    restarted.load_state_dict(d.curriculum.state_dict())  # a resumed run applies the same parameters
    assert restarted.merged() == d.curriculum.merged()


def test_reached_reads_another_axis(tmp_path):
    d = Driver(tmp_path, """
curriculum {
  axis size {
    phase s1 { promote when phase.steps >= 2 }
    phase s2 {}
  }
  axis mode {
    phase m1 { promote when reached(size.s2) and phase.steps >= 4 }
    phase m2 {}
  }
}
""")
    assert d.curriculum.reached("size.s1") and not d.curriculum.reached("size.s2")
    for _ in range(5):
        d.train(accuracy=0.0)
    assert d.log == [(2, "size", "s1", "s2"), (4, "mode", "m1", "m2")]

    d = Driver(tmp_path, """
curriculum {
  axis size {
    phase s1 { promote when phase.steps >= 6 }
    phase s2 {}
  }
  axis mode {
    phase m1 { promote when reached(size.s2) }
    phase m2 {}
  }
}
""")
    for _ in range(8):
        d.train(accuracy=0.0)
    # mode is checked after size in the same step: it sees s2 the moment it is reached
    assert d.log == [(6, "size", "s1", "s2"), (6, "mode", "m1", "m2")]


def test_reached_in_a_stop_gate(tmp_path):
    d = Driver(tmp_path, """
curriculum {
  phase a { promote when step >= 2 }
  phase b {}
}
stop when reached(b)
""")
    d.ctx.phase_reached = d.curriculum.reached
    stop = d.gate("stop").expr
    d.train(loss=1.0)
    assert ex.evaluate(stop, d.ctx) is False
    d.train(loss=1.0)
    assert ex.evaluate(stop, d.ctx) is True


def test_one_phase_per_check(tmp_path):
    d = Driver(tmp_path, """
curriculum {
  phase a { promote when step >= 2 }
  phase b { promote when step >= 1 }
  phase c {}
}
""")
    for _ in range(4):
        d.train(loss=1.0)
    assert d.log == [(2, "curriculum", "a", "b"), (3, "curriculum", "b", "c")]


def test_phase_steps_restart_in_each_phase(tmp_path):
    d = Driver(tmp_path, """
curriculum {
  phase a { promote when phase.steps >= 3 }
  phase b { promote when phase.steps >= 3 }
  phase c {}
}
""")
    for _ in range(10):
        d.train(loss=1.0)
    assert promotion_steps(d) == [3, 6]


def test_phase_epochs(tmp_path):
    # 8 micro-batches an epoch, 2 per step: one epoch is 4 optimizer steps
    d = Driver(tmp_path, """
curriculum {
  phase a { promote when phase.epochs >= 1 }
  phase b { promote when phase.epochs >= 0.5 }
  phase c {}
}
""", per_epoch=8, accumulate=2)
    for _ in range(8):
        d.train(loss=1.0)
    assert promotion_steps(d) == [4, 6]


# ---- plateau and ema -----------------------------------------------------------------------------

PLATEAU = "stop when plateau(val.loss, patience=3, min_delta=0.01)\n"


def _plateau_trace(tmp_path, values):
    d = Driver(tmp_path, PLATEAU)
    stop = d.gate("stop").expr
    out = []
    for v in values:
        d.val(loss=v)
        out.append(ex.evaluate(stop, d.ctx))
    return out


def test_plateau_fires_after_patience_values_without_improvement(tmp_path):
    # best before the last three is 0.8; 0.795, 0.799, 0.792 all fail to beat it by 0.01
    assert _plateau_trace(tmp_path, [1.0, 0.9, 0.8, 0.795, 0.799, 0.792]) == [False] * 5 + [True]


def test_plateau_resets_on_an_improvement_by_min_delta(tmp_path):
    assert _plateau_trace(tmp_path, [1.0, 0.9, 0.8, 0.795, 0.799, 0.78]) == [False] * 6
    # a steady slow improvement below min_delta per value is a plateau
    assert _plateau_trace(tmp_path, [1.0, 0.998, 0.996, 0.994]) == [False, False, False, True]


def test_plateau_needs_more_than_patience_values(tmp_path):
    assert _plateau_trace(tmp_path, [1.0, 1.0, 1.0]) == [False, False, False]


def test_plateau_compares_against_the_best_so_far(tmp_path):
    # best 0.5 at the first validation; four evaluations since, none within 0.01 of it
    values = [0.5, 0.9, 0.8, 0.7, 0.6]
    full = ex.Context(series={"val.loss": list(values)})
    d = Driver(tmp_path, PLATEAU)
    assert ex.evaluate(d.gate("stop").expr, full) is True  # the expression's own meaning
    assert _plateau_trace(tmp_path, values)[-1] is True  # what the engine's history makes of it


def test_ema_gate(tmp_path):
    d = Driver(tmp_path, """
curriculum {
  phase a { promote when ema(train.loss, 0.5) < 0.3 }
  phase b {}
}
""")
    ema = None
    for loss in (1.0, 0.25, 0.25, 0.25, 0.25, 0.25):
        d.train(loss=loss)
        ema = loss if ema is None else 0.5 * loss + 0.5 * ema
        assert d.ctx.emas[("train.loss", 0.5)] == pytest.approx(ema)
    # 1, 0.625, 0.4375, 0.34375, 0.296875: first below 0.3 at step 5
    assert promotion_steps(d) == [5]


def test_history_round_trip_keeps_what_gates_see(tmp_path):
    d = Driver(tmp_path, AND_GATE + "stop when ema(train.loss, 0.5) < 0.1\n")
    for acc, loss in ((0.25, 1.0), (0.75, 0.5), (1.0, 0.25)):
        d.train(accuracy=acc, loss=loss)
    state = d.history.state_dict()
    fresh = History(*window_sizes(d.plan.gates))
    fresh.load_state_dict(state)
    for name in ("train.accuracy", "train.loss"):
        assert list(fresh.context.series[name]) == list(d.ctx.series[name])
    assert fresh.context.emas == d.ctx.emas
    assert fresh.context.firsts == d.ctx.firsts
    assert fresh.context.counts == d.ctx.counts


# ---- the loop's use of the gates ------------------------------------------------------------------

def test_the_loop_promotes_one_phase_per_step_on_validation_steps_too(tmp_path, monkeypatch):
    from .conftest import FAST_SPEC, events, run_inproc

    monkeypatch.chdir(tmp_path)
    spec = FAST_SPEC.replace("max_steps 12", "max_steps 4").replace(
        "  phase a { promote when phase.steps >= 3 }\n  phase b {}",
        "  phase a { promote when step >= 2 }\n  phase b { promote when step >= 1 }\n  phase c {}",
    ) + "validation {\n  every 2 steps\n  batches 1\n}\n"
    run_dir = tmp_path / "run"
    assert run_inproc(write_spec(tmp_path, spec), run_dir).code == 0
    # b's gate already holds when b begins: it promotes on the next step, as on any other step
    assert [(e["step"], e["old"], e["new"]) for e in events(run_dir, "phase")] == [(2, "a", "b"), (3, "b", "c")]


# ---- the keenkenning spec's own gates: the document's four kinds of transition ---------------------

def test_keenkenning_transitions_epoch_loss_valid_rate_and_combined():
    from .conftest import ROOT

    _, plan = load_plan(ROOT / "specs" / "keenkenning.train")
    history, cur = History(*window_sizes(plan.gates)), Curriculum(plan.axes)
    ctx, per_epoch, moved = history.context, 100, []  # 100 steps an epoch (accumulate 1)
    val_at = {250: (0.45, 0.1), 300: (0.45, 0.85), 350: (0.35, 0.6), 400: (0.35, 0.75)}
    for step in range(1, 1601):
        history.record_all("train", {"loss": 1.0, "cell_accuracy": 0.5})
        if step % 50 == 0:
            loss, rate = val_at.get(step, (0.6, 0.0))
            history.record_all("val", {"loss": loss, "valid_grid_rate": rate})
        ctx.scalars.update({"step": step, "epoch": step / per_epoch, "run.progress": step / per_epoch / 30})
        moved += [(step, p.axis, p.new) for p in cur.check(ctx, step, step, per_epoch)]
    assert moved == [
        (250, "fill", "medium"),  # loss-based: val.loss < 0.5
        (300, "fill", "hard"),  # valid-rate-based, on a validation of its own phase
        (400, "fill", "expert"),  # combined: at 350 the loss held and the rate did not
        (500, "size", "n8"),  # epoch-based: phase.epochs >= 5
        (1000, "size", "n12"),
        (1500, "mode", "zero_inclusive"),  # run-relative: run.progress >= 50%, epoch 15 of 30
    ]
