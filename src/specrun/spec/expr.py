"""The expression language: which functions exist, what names mean, how to evaluate.

One small language serves every decision taken during a run: phase promotion,
early stopping, time switches and expectations. This module is torch-free:
``check`` uses ``FUNCTIONS`` and ``series_refs`` to validate, the engine uses
``evaluate`` with a ``Context`` of plain numbers and metric histories.

Missing data is not an error: before the first validation ``val.loss`` is
unknown, and so is any comparison with it. ``and``, ``or`` and ``not`` follow
three-valued logic (unknown and false is false, unknown or true is true, not
unknown is unknown), and a gate holds only when its value is known and true: a
gate that reads missing data waits, even under a ``not``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from specrun.spec import syntax as s
from specrun.spec.printer import format_expr
from specrun.spec.units import BYTE_UNITS, TIME_UNITS

CONTEXT_NAMES = {
    "step": "optimizer steps taken",
    "micro_step": "micro-batches taken (accumulate of them make an optimizer step)",
    "epoch": "epochs completed (fractional)",
    "run.progress": "share of the run done, 0 to 1: steps of max_steps, or epochs of max_epochs",
    "phase.steps": "steps in the current phase (promotion gates only)",
    "phase.micro_steps": "micro-batches in the current phase (promotion gates only)",
    "phase.epochs": "epochs in the current phase (promotion gates only)",
    "phase.index": "index of the current phase (promotion gates only)",
    "lr": "current learning rate of the first parameter group",
}

LOWER_IS_BETTER = ("loss", "perplexity", "error")


def lower_is_better(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1].endswith(LOWER_IS_BETTER)


def walk(expr):
    """Every node of an expression, parents first."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, s.BinOp):
            stack += [node.right, node.left]
        elif isinstance(node, (s.Not, s.Neg)):
            stack.append(node.operand)
        elif isinstance(node, s.Call):
            stack += [v for _, v in reversed(node.kwargs)] + list(reversed(node.args))


def series_refs(expr) -> set[str]:
    """The metric series an expression reads (``train.loss``, ``val.accuracy``)."""
    return {n.dotted for n in walk(expr) if isinstance(n, s.Ref) and n.parts[0] in ("train", "val")}


# ---- evaluation ----------------------------------------------------------------

@dataclass
class Context:
    """What a gate sees at one moment of the run."""

    scalars: dict[str, float] = field(default_factory=dict)  # step, epoch, phase.steps, lr
    series: dict[str, deque] = field(default_factory=dict)  # "train.loss" -> recent values
    firsts: dict[str, float] = field(default_factory=dict)  # first value of each series
    bests: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    emas: dict[tuple, float] = field(default_factory=dict)  # (series, alpha) -> running ema
    plateaus: dict[tuple, list] = field(default_factory=dict)  # plateau_key -> [best, values since]
    phase_reached: Callable[[str], bool] | None = None
    # While a promote gate is read: each series' count when its phase began. The latest
    # value and mean/min/max windows then see only what was measured in this phase, so a
    # gate never passes on the previous phase's (easier) evidence.
    since: dict[str, int] | None = None


def _fresh(ctx: Context, name: str) -> int:
    """How many of a series' retained values the gate may read."""
    values = ctx.series.get(name) or ()
    if ctx.since is None:
        return len(values)
    return max(0, min(len(values), ctx.counts.get(name, 0) - ctx.since.get(name, 0)))


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _window(ctx: Context, name: str, n: int | None):
    fresh = _fresh(ctx, name)
    values = list(ctx.series.get(name) or ())[-fresh:] if fresh else []
    if n is None:
        return values
    return values[-int(n):] if fresh >= int(n) else None


def plateau_key(node: s.Call) -> tuple:
    """(series, min_delta, lower-is-better): what one plateau() call tracks."""
    name = node.args[0].dotted
    kw = dict(node.kwargs)
    min_delta = float(literal(kw["min_delta"])) if "min_delta" in kw else 0.0
    mode = literal(kw["mode"]) if "mode" in kw else None
    lower = lower_is_better(name) if mode is None else mode == "min"
    return (name, min_delta, lower)


def _plateau(ctx: Context, node: s.Call, patience: int) -> bool:
    """True once `patience` values in a row failed to beat the best so far by min_delta."""
    key = plateau_key(node)
    tracker = ctx.plateaus.get(key)
    if tracker is None:  # no running tracker (a context built by hand): replay the series
        tracker = [None, 0]
        for value in ctx.series.get(key[0]) or ():
            update_plateau(tracker, value, key[1], key[2])
    return tracker[0] is not None and tracker[1] >= patience


def update_plateau(tracker: list, value: float, min_delta: float, lower: bool) -> None:
    """[best, values since the best]: early stopping's bookkeeping, one value at a time."""
    best = tracker[0]
    improved = best is None or (value < best - min_delta if lower else value > best + min_delta)
    tracker[:] = [value, 0] if improved else [best, tracker[1] + 1]


# ---- the gate functions ---------------------------------------------------------------
#
# One table: what a function is called, what it takes, what it gives, how many recent
# values of its series it reads, and how it is evaluated. check reads the arguments'
# kinds, the history reads the windows and trackers, evaluate() calls the evaluator.
# A new function is one entry here (and a test).
#
# Argument kinds: `series` (a metric, train.x or val.x), `phase` (axis.phase), `number`
# (any number expression), `count` (a whole number written out, >= 1: a window length,
# fixed when the plan is built), `literal` (a number written out), or a tuple of the
# strings allowed.

ALL_VALUES = 10_000  # min/max over everything: bounded so a checkpoint stays small


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple  # the kinds of the positional arguments
    required: int  # how many of them must be given
    returns: str  # "number" or "condition"
    evaluate: Callable  # (call node, Context) -> value, None when unknown
    kwargs: dict = field(default_factory=dict)  # keyword -> kind
    window: Callable = lambda node: 1  # recent values of its series it reads
    tracker: str | None = None  # running state the history keeps for it: "ema" or "plateau"
    doc: str = ""

    @property
    def reads_series(self) -> bool:
        return bool(self.params) and self.params[0] == "series"


def _series(node: s.Call) -> str:
    return node.args[0].dotted


def _windowed(reduce):
    """A function of the last n values (or of all retained values when n is not given)."""
    def run(node: s.Call, ctx: Context):
        n = int(literal(node.args[1])) if len(node.args) > 1 else None
        window = _window(ctx, _series(node), n)
        return reduce(window) if window else None
    return run


def _window_arg(node: s.Call) -> int:
    return int(literal(node.args[1])) if len(node.args) > 1 else ALL_VALUES


def _last(node, ctx):
    values = ctx.series.get(_series(node)) or ()
    return values[-1] if _fresh(ctx, _series(node)) else None


def _abs(node, ctx):
    x = evaluate(node.args[0], ctx)
    return None if x is None else abs(x)


FUNCTIONS = {f.name: f for f in (
    Function("mean", ("series", "count"), 2, "number", _windowed(lambda w: sum(w) / len(w)),
             window=_window_arg, doc="mean(series, n): mean of the last n values"),
    Function("min", ("series", "count"), 1, "number", _windowed(min), window=_window_arg,
             doc="min(series[, n]): smallest of the last n (or all) values"),
    Function("max", ("series", "count"), 1, "number", _windowed(max), window=_window_arg,
             doc="max(series[, n]): largest of the last n (or all) values"),
    Function("ema", ("series", "literal"), 2, "number",
             lambda node, ctx: ctx.emas.get((_series(node), float(literal(node.args[1])))),
             tracker="ema", doc="ema(series, alpha): exponential moving average"),
    Function("first", ("series",), 1, "number", lambda node, ctx: ctx.firsts.get(_series(node)),
             doc="first(series): the first value recorded"),
    Function("last", ("series",), 1, "number", _last,
             doc="last(series): the latest value (same as the bare name)"),
    Function("best", ("series",), 1, "number", lambda node, ctx: ctx.bests.get(_series(node)),
             doc="best(series): min for losses/perplexity, max otherwise"),
    Function("count", ("series",), 1, "number", lambda node, ctx: ctx.counts.get(_series(node), 0),
             doc="count(series): how many values were recorded"),
    Function("plateau", ("series",), 1, "condition",
             lambda node, ctx: _plateau(ctx, node, int(literal(dict(node.kwargs)["patience"]))
                                        if "patience" in dict(node.kwargs) else 3),
             kwargs={"patience": "count", "min_delta": "literal", "mode": ("min", "max")}, tracker="plateau",
             doc="plateau(series, patience=3, min_delta=0): no improvement by min_delta "
                 "over the best for `patience` consecutive values"),
    Function("reached", ("phase",), 1, "condition",
             lambda node, ctx: bool(ctx.phase_reached and ctx.phase_reached(node.args[0].dotted)),
             doc="reached(axis.phase): that axis is at or past that phase"),
    Function("abs", ("number",), 1, "number", _abs, doc="abs(x)"),
)}


_ARITH = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
          "/": lambda a, b: a / b if b else math.inf}
_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


def literal(node) -> float | str | bool:
    if isinstance(node, s.Quantity):
        if node.unit in BYTE_UNITS:
            return node.value * BYTE_UNITS[node.unit]
        if node.unit in TIME_UNITS:
            return node.value * TIME_UNITS[node.unit]
        if node.unit == "%":
            return node.value / 100  # a share, as run.progress counts it
        return node.value  # steps/epochs/micro_steps compare as plain counts
    return node.value


def evaluate(node, ctx: Context):
    """The value of an expression; None where data is missing.

    A condition (a comparison, ``and``, ``or``, ``not``) whose value is unknown is
    False here: the gate does not hold, it waits.
    """
    value = _value(node, ctx)
    if value is None and (isinstance(node, s.Not) or (isinstance(node, s.BinOp) and node.op not in _ARITH)):
        return False
    return value


def evaluate_known(node, ctx: Context) -> bool | None:
    """A condition's truth, or None while the values it reads are unknown (three-valued)."""
    return _truth(_value(node, ctx))


def _value(node, ctx: Context):
    """evaluate() without the last step: unknown conditions stay None (three-valued logic)."""
    if isinstance(node, (s.Number, s.String, s.Bool, s.Quantity)):
        return literal(node)
    if isinstance(node, s.Ref):
        name = node.dotted
        if name in ctx.scalars:
            return _num(ctx.scalars[name])
        values = ctx.series.get(name)
        return values[-1] if _fresh(ctx, name) else None
    if isinstance(node, s.Call):
        return FUNCTIONS[node.name].evaluate(node, ctx)
    if isinstance(node, s.Not):
        value = _truth(_value(node.operand, ctx))
        return None if value is None else not value
    if isinstance(node, s.Neg):
        x = _value(node.operand, ctx)
        return None if x is None else -x
    op = node.op
    if op in ("and", "or"):
        decisive = op == "or"  # True decides an `or`, False an `and`
        left = _truth(_value(node.left, ctx))
        if left is decisive:
            return decisive
        right = _truth(_value(node.right, ctx))
        if right is decisive:
            return decisive
        return None if left is None or right is None else not decisive
    left, right = _value(node.left, ctx), _value(node.right, ctx)
    if left is None or right is None:
        return None  # unknown: a gate waits
    return (_COMPARE.get(op) or _ARITH[op])(left, right)


def _truth(value):
    """A value as a condition: True, False, or None when unknown."""
    return None if value is None else bool(value)


def explain(node, ctx: Context) -> dict[str, float | None]:
    """The values an expression read: logged with a promotion or a broken expectation."""
    out = {}
    for n in walk(node):
        if isinstance(n, (s.Call, s.Ref)) and not (isinstance(n, s.Call) and n.name == "reached"):
            value = evaluate(n, ctx)
            out[format_expr(n)] = value if not isinstance(value, float) else round(value, 6)
    return out
