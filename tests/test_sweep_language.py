"""The sweep block as language: parsed, checked like --set, ignored by a run, kept by fmt.

The command that runs a sweep is tested in tests/engine/test_sweep.py.
"""

from __future__ import annotations

import pytest

from specrun.plan import build_plan
from specrun.spec.check import check
from specrun.spec.diagnostics import SpecError
from specrun.spec.fmt import format_data
from specrun.spec.parse import parse
from specrun.spec.sweep import CONTROL, Dimension, definition, set_option

BASE = """spec swept
task rule_classification { features 16; classes 4 }
model mlp { width 64; depth 2 }
loss cross_entropy
optimizer adamw { lr 3e-3 }
batch 32
max_steps 200
schedule warmup_cosine { warmup 20 steps }
validation { every 50 steps }
"""

SWEEP = BASE + """sweep {
  minimize val.loss
  trials 6
  prune when step >= 100 and val.loss > 1.5 * best(val.loss)
  optimizer.lr log 1e-4..1e-2
  model.width [32, 64, 128]
  model.depth 1..3
}

profile quick {
  sweep.trials 2
  sweep.optimizer.lr log 1e-3..1e-2
}
"""


def _problems(text: str, profile=None, sets=()) -> list[tuple[str, int, str]]:
    try:
        check(parse(text, "x.train"), profile, tuple(sets))
    except SpecError as err:
        return [(d.code, d.span.line, d.message) for d in err.diagnostics]
    return []


def test_a_sweep_reads_as_its_dimensions_and_objective():
    sweep = definition(check(parse(SWEEP, "x.train")).data)
    assert (sweep.metric, sweep.direction, sweep.trials, sweep.sampler, sweep.pruner) == \
        ("val.loss", "minimize", 6, "tpe", "none")
    assert str(sweep.prune) == "step >= 100 and val.loss > 1.5 * best(val.loss)"
    assert sweep.dimensions == (Dimension("optimizer.lr", lo=1e-4, hi=1e-2, log=True),
                                Dimension("model.width", choices=(32, 64, 128)),
                                Dimension("model.depth", lo=1, hi=3))
    assert [d.integer for d in sweep.dimensions] == [False, False, True]
    assert sweep.grid_size is None


def test_a_profile_and_set_change_the_sweep_like_any_setting():
    sweep = definition(check(parse(SWEEP, "x.train"), "quick", ("sweep.sampler=random",)).data)
    assert sweep.trials == 2 and sweep.sampler == "random"
    assert sweep.dimensions[0] == Dimension("optimizer.lr", lo=1e-3, hi=1e-2, log=True)


def test_a_run_ignores_the_sweep_block():
    with_sweep, without = check(parse(SWEEP, "x.train")), check(parse(BASE, "x.train"))
    assert with_sweep.hash == without.hash  # editing the sweep never makes a run's resume refuse
    plan = build_plan(with_sweep)
    assert "sweep" not in plan.settings and plan.to_json() == build_plan(without).to_json() | {
        "source": plan.to_json()["source"], "spec_text": plan.spec_text}  # spec.train keeps the block


def test_the_sweep_block_survives_a_round_trip_through_the_run_directory_text():
    spec = check(parse(SWEEP, "x.train"))
    again = check(parse(format_data(spec.data), "spec.train"))
    assert again.data == spec.data


def test_a_chosen_value_becomes_set_text_that_checks():
    assert set_option("optimizer.lr", 0.00123) == "optimizer.lr=0.00123"
    assert set_option("task.source", "data/x.jsonl") == 'task.source="data/x.jsonl"'
    assert _problems(BASE, sets=(set_option("model.width", 128), set_option("optimizer.lr", 1e-05))) == []


def test_a_trial_spec_has_no_sweep_and_no_profile_statement_about_one():
    from specrun.spec.sweep import without_sweep

    doc = without_sweep(parse(SWEEP, "x.train"))
    spec = check(doc, "quick")
    assert "sweep" not in spec.data and spec.hash == check(parse(BASE, "x.train")).hash


def test_grid_size_multiplies_the_choices():
    text = BASE + "sweep {\n  minimize val.loss\n  sampler grid\n  model.width [32, 64]\n  seed [0, 1, 2]\n}\n"
    assert definition(check(parse(text, "x.train")).data).grid_size == 6


@pytest.mark.parametrize("lines, code, line, words", [
    (["maximize val.acc"], "E400", 11, "unknown metric 'val.acc'"),
    (["minimize accuracy"], "E400", 11, "unknown metric 'accuracy'"),
    (["minimize val.loss", "maximize val.accuracy"], "E600", 12, "one objective"),
    (["optimizer.lr log 1e-2..1e-4"], "E203", 11, "runs from low to high"),
    (["optimizer.lr log -1..1"], "E203", 11, "bounds above 0"),
    (["model.width []"], "E203", 11, "has no choices"),
    (["model.type [mlp, transformerr]"], "E300", 11, "unknown model 'transformerr'"),
    (["model.width 8.5..64.5"], "E201", 11, "expects a whole number"),
    (["optimizer.type 1..2"], "E201", 11, "optimizer.type"),
    (["model.width 64"], "E201", 11, "needs a list of choices or a range"),
    (["sampler grid", "optimizer.lr 1e-4..1e-2"], "E600", 12, "sampler grid"),
    (["optimizer.lr lin 1e-4..1e-2"], "E206", 11, "unknown scale 'lin'"),
    (["model.widht [32, 64]"], "E200", 11, "unknown setting 'widht'"),
    (["max_steps [10, 400]"], "E600", 8, "not shorter than the run"),  # a consequence, told where it lands
])
def test_bad_sweeps_are_located(lines, code, line, words):
    if not any(x.split()[0] in ("minimize", "maximize") for x in lines):
        lines = lines + ["minimize val.loss"]  # after the lines under test: they start at line 11
    text = BASE + "sweep {\n" + "".join(f"  {x}\n" for x in lines) + "}\n"
    found = _problems(text)
    assert any(c == code and ln == line and words in msg for c, ln, msg in found), found


def test_a_sweep_needs_an_objective_and_a_dimension():
    found = _problems(BASE + "sweep {\n  trials 3\n}\n")
    assert {(c, m) for c, _, m in found} == {("E204", "the sweep has no objective"),
                                             ("E204", "the sweep searches no setting")}


def test_an_objective_on_validation_needs_a_validation_block():
    text = BASE.replace("validation { every 50 steps }\n", "") + \
        "sweep {\n  minimize val.loss\n  model.width [32, 64]\n}\n"
    assert ("E600", 10, "val.loss is read but there is no validation block") in _problems(text)


def test_a_prune_gate_is_checked_like_any_gate():
    text = BASE + "sweep {\n  minimize val.loss\n  model.width [32, 64]\n  prune when val.los > 2\n}\n"
    assert any(c == "E400" and "val.los" in m for c, _, m in _problems(text))


def test_a_scaled_range_outside_a_sweep_says_where_it_belongs():
    text = BASE.replace("lr 3e-3", "lr log 1e-4..1e-2")
    with pytest.raises(SpecError) as err:
        check(parse(text, "x.train"))
    assert err.value.diagnostics[0].hint.startswith("a range of values to search belongs in a `sweep` block")


def test_no_spec_setting_is_named_like_a_sweep_control():
    from specrun.spec.schema import spec_schema

    assert not set(spec_schema()["properties"]) & set(CONTROL)
