"""Expectations: ``expect EXPR [by SPAN | at end | throughout] [warn | fail]``, judged in a run.

A ``by`` expectation is judged once, at the first step at or past its span (a span in
micro-steps: the step whose micro-batches pass it); ``throughout`` after every step
whose values are known (a value not yet known, such as ``val.loss`` before the first
validation, is not a breach); ``at end`` (also when nothing is said) when the run ends.

Every judgement is an ``expectation`` event in events.jsonl: ``outcome broken`` when
it happens (a ``throughout`` one once per stretch of broken steps, not on each), and
when the run ends one event per expectation with its final outcome: ``held``,
``broken``, ``unknown`` (its values were never known) or ``unchecked`` (the run ended
before its span). A broken ``fail`` expectation (the default) stops the run; a broken
``warn`` one is a console warning, and the run goes on. The outcomes so far travel in
every checkpoint, so a resumed run reports what the whole run did.
"""

from __future__ import annotations

from specrun.sections import Expectation
from specrun.spec import expr as ex
from specrun.spec.printer import expect_tail


class ExpectationBroken(RuntimeError):
    """A ``fail`` expectation broke; the message is the one line the user sees."""


def deadline_text(by) -> str | None:
    """A resolved deadline (timeline.py) in words: ``100 steps``, ``500 micro_steps``."""
    if isinstance(by, tuple):  # ("micro_steps", n)
        return f"{by[1]} micro_step{'s' if by[1] != 1 else ''}"
    return None if by is None else f"{by} step{'s' if by != 1 else ''}"


def describe(exp: Expectation, by) -> str:
    """``expect train.loss < 1 by 100 steps warn``, as the run shows it (``by``: its deadline)."""
    when = "by" if by is not None else exp.when or "end"
    return f"expect {exp.expr}{expect_tail(when, deadline_text(by), exp.severity, spell_end=True)}"


def _reached(by, step: int, micro: int) -> bool:
    if isinstance(by, tuple):
        return micro >= by[1]
    return step >= by


def _due(run, i: int, by) -> bool:
    c = run.counters
    return by is not None and i not in run.expectations_checked and _reached(by, c.step, c.micro)


def _each(run):
    """(index, expectation, its deadline) for every expectation of the run."""
    return zip(range(len(run.plan.expectations)), run.plan.expectations, run.timeline.deadlines)


def _values_text(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _judge(run, i: int, exp: Expectation, by, when_text: str) -> None:
    """Evaluate one expectation now; record a breach and act on it.

    ``throughout`` waits while its values are unknown; a ``by`` expectation whose values
    are still unknown at its span is broken: nothing showed it held in time.
    """
    ctx = run.history.context
    record = run.expectation_outcomes.setdefault(i, {"outcome": "unknown", "broken_steps": 0, "broken": False})
    value = ex.evaluate_known(exp.expr.expr, ctx)
    step = run.counters.step
    if value is None and exp.throughout:
        return
    if value:
        record["broken"] = False
        if record["outcome"] == "unknown":
            record["outcome"] = "held"
        return
    record["broken_steps"] += 1
    record["outcome"] = "broken"
    if record["broken"]:
        return  # the same stretch of broken steps: said once
    record["broken"] = True
    values = ex.explain(exp.expr.expr, ctx)
    severity = exp.severity
    text = describe(exp, by)
    run.dir.event("expectation", step, expect=text, outcome="broken", severity=severity, values=values)
    if severity == "fail":
        run.dir.event("expectation_failed", step, expect=str(exp.expr), values=values)
        raise ExpectationBroken(f"expectation broken {when_text}: {text} ({_values_text(values)})")
    run.console.say(f"warning: expectation broken {when_text}: {text} ({_values_text(values)}); going on")


def due(run) -> bool:
    """Whether a ``by`` expectation is judged at this step (the host must read its numbers)."""
    return any(_due(run, i, by) for i, _, by in _each(run))


def judge_step(run) -> None:
    """After a step: the ``by`` expectations now due and every ``throughout`` one."""
    c = run.counters
    for i, exp, by in _each(run):
        if exp.throughout:
            _judge(run, i, exp, by, f"at step {c.step}")
        elif _due(run, i, by):
            run.expectations_checked.add(i)  # judged once, at the first step at or past `by`
            _judge(run, i, exp, by, f"at step {c.step}")


def judge_end(run) -> None:
    """When the run ends: the ``at end`` expectations, then one outcome event for each."""
    c = run.counters
    for i, exp, by in _each(run):
        if exp.at_end:
            _judge_at_end(run, i, exp)
    for i, exp, by in _each(run):
        record = run.expectation_outcomes.get(i) or {"outcome": "unknown", "broken_steps": 0}
        outcome = record["outcome"]
        if by is not None and i not in run.expectations_checked:
            outcome = "unchecked"
            message = f"expectation never checked: the run ended at step {c.step}, before `{describe(exp, by)}`"
            run.dir.event("warning", c.step, message=message, expect=str(exp.expr))
            run.console.say(f"warning: {message}")
        fields = {"broken_steps": record["broken_steps"]} if exp.throughout else {}
        run.dir.event("expectation", c.step, expect=describe(exp, by), outcome=outcome,
                      severity=exp.severity, final=True, **fields)


def _judge_at_end(run, i: int, exp: Expectation) -> None:
    """An ``at end`` expectation whose values are unknown then is broken, as a ``by`` one."""
    ctx = run.history.context
    record = run.expectation_outcomes.setdefault(i, {"outcome": "unknown", "broken_steps": 0, "broken": False})
    if ex.evaluate(exp.expr.expr, ctx):
        record["outcome"] = "held"
        return
    record["outcome"] = "broken"
    values = ex.explain(exp.expr.expr, ctx)
    text = describe(exp, None)
    severity = exp.severity
    run.dir.event("expectation", run.counters.step, expect=text, outcome="broken", severity=severity,
                  values=values)
    if severity == "fail":
        raise ExpectationBroken(f"expectation broken at the end of the run: expect {exp.expr} "
                                f"({_values_text(values)})")
    run.console.say(f"warning: expectation broken at the end of the run: {text} ({_values_text(values)})")
