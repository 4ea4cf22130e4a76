"""Micro-step spans, run-relative gates and expectation modes: parsed, checked, formatted,
compared and planned (the engine side is tests/engine/test_expectations.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specrun.spec.check import check
from specrun.spec.diagnostics import SpecError
from specrun.spec.diff import diff
from specrun.spec.fmt import format_source
from specrun.spec.parse import parse
from specrun.spec import syntax as s
from specrun.plan import build_plan

KEENKENNING = str(Path(__file__).resolve().parents[1] / "specs" / "keenkenning.train")

HEAD = """\
spec forms
task rule_classification {
  features 4
}
model mlp
loss cross_entropy
optimizer sgd {
  lr 0.1
}
batch 4
accumulate 32
"""


def _check(body: str, head: str = HEAD + "max_steps 100\n"):
    return check(parse(head + body, "forms.train"))


def _errors(body: str, head: str = HEAD + "max_steps 100\n") -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        _check(body, head)
    return [(d.code, d.message) for d in info.value.diagnostics]


@pytest.mark.parametrize("text, when, severity, by", [
    ("expect train.loss < 1", "end", "fail", None),
    ("expect train.loss < 1 at end", "end", "fail", None),
    ("expect train.loss < 1 at end warn", "end", "warn", None),
    ("expect train.loss < 1 by 10 steps fail", "by", "fail", "10 steps"),
    ("expect train.grad_norm >= 0.1 and train.grad_norm <= 10 throughout warn", "throughout", "warn", None),
    ("expect train.loss < 1 by 500 micro_steps", "by", "fail", "500 micro_steps"),
])
def test_expect_forms_parse(text, when, severity, by):
    (item,) = parse(text, "x.train").items
    assert isinstance(item, s.Expect)
    assert (item.when, item.severity) == (when, severity)
    assert (item.by.text if item.by is not None else None) == by


@pytest.mark.parametrize("text", [
    "expect train.loss < 1 at end warn",
    "expect train.loss < 1 by 10 steps fail",
    "expect train.loss < 1 throughout",
    "expect train.loss < 1",
])
def test_fmt_keeps_what_was_written(text):
    head = HEAD + "max_steps 100\n"
    assert format_source(head + text + "\n", "x.train") == head + text + "\n"


def test_at_end_and_fail_are_the_defaults_in_meaning():
    head = HEAD + "max_steps 100\n"
    plain = parse(head + "expect train.loss < 1\n", "a.train")
    spelled = parse(head + "expect train.loss < 1 at end fail\n", "b.train")
    assert diff(plain, spelled) == []
    assert _check("expect train.loss < 1\n").hash == _check("expect train.loss < 1 at end fail\n").hash
    warn = parse(head + "expect train.loss < 1 throughout warn\n", "c.train")
    assert diff(plain, warn) != []


def test_words_of_expectations_stay_usable_as_names():
    spec = _check("log {\n  csv \"warn.csv\"\n}\n")
    assert spec.data["log"]["csv"] == "warn.csv"
    (item,) = parse("warn 1", "x.train").items
    assert item.key == ("warn",)


def test_micro_steps_compare_with_micro_step_counts_only():
    assert _errors("stop when step >= 500 micro_steps\n")[0][0] == "E405"
    assert _errors("curriculum {\n  phase a {\n    promote when phase.steps >= 5 micro_steps\n  }\n"
                   "  phase b {}\n}\n")[0][0] == "E405"
    _check("curriculum {\n  phase a {\n    promote when phase.micro_steps >= 500 micro_steps\n  }\n"
           "  phase b {}\n}\nstop when micro_step > 1000\n")


def test_a_share_is_read_against_run_progress_only():
    codes = _errors("stop when step > 50%\n")
    assert codes[0][0] == "E405" and "a share of what" in codes[0][1]
    _check("stop when run.progress >= 50%\n")
    _check("stop when 0.5 <= run.progress\n")


def test_run_progress_needs_a_run_length():
    assert _errors("stop when run.progress >= 50%\n", HEAD) == [
        ("E600", "run.progress is a share of the run, and this run has no set length")]


def test_plan_resolves_micro_steps_and_progress():
    plan = build_plan(_check(
        "schedule linear_warmup {\n  warmup 640 micro_steps\n}\n"
        "checkpoint {\n  every 500 micro_steps\n}\n"
        "curriculum {\n  phase a {\n    promote when run.progress >= 50%\n  }\n  phase b {}\n}\n"))
    assert plan.settings["schedule"]["warmup"] == 20  # 640 micro-batches of 32 a step
    assert str(plan.settings["checkpoint"]["every"]) == "500 micro_steps"  # the engine counts them
    assert "at the step that passes each multiple of 500" in plan.resolved["checkpoint.every"]
    assert plan.resolved["curriculum.a.promote: run.progress >= 50%"] == "step 50 of 100"


def test_progress_in_epochs_resolves_to_an_epoch():
    plan = build_plan(_check(
        "curriculum {\n  phase a {\n    promote when run.progress >= 50%\n  }\n  phase b {}\n}\n",
        HEAD + "max_epochs 30\n"))
    assert plan.resolved["curriculum.a.promote: run.progress >= 50%"] == "epoch 15 of 30"


def test_set_precision_type_alone_carries_loss_scaling_with_it():
    from specrun.spec.check import load

    spec = load(KEENKENNING, None, ("precision.type=bf16",))
    assert spec.data["precision"]["type"] == "bf16" and spec.data["precision"]["loss_scale"] == "none"
    plan = build_plan(spec)
    assert plan.resolved["precision.loss_scale"].startswith("none: follows --set precision.type=bf16")
    with pytest.raises(SpecError) as info:  # asked for both: the contradiction is the user's, and said
        load(KEENKENNING, None, ("precision.type=bf16", "precision.loss_scale=dynamic"))
    assert [d.code for d in info.value.diagnostics] == ["E600"]
    assert load(KEENKENNING, None, ("precision.type=fp16",)).data["precision"]["loss_scale"] == "dynamic"
