"""The syntax tree of a .train file: frozen dataclasses, a Span on every node.

Values are what a setting holds (``lr 1e-4``); expressions are what a gate
evaluates (``promote when mean(train.accuracy, 100) >= 0.95``). The two share
literal node types. ``shape()`` strips spans so trees can be compared for
equality regardless of layout: the formatter's proof of equivalence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Union

# A quantity token: a number and its unit, with or without a space between.
QUANTITY = re.compile(r"(?P<number>[0-9][0-9_.eE+-]*?)[ \t]*(?P<unit>[A-Za-z_%]+)$")


@dataclass(frozen=True)
class Span:
    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


# ---- literals (values and expressions) ---------------------------------------

@dataclass(frozen=True)
class Number:
    value: int | float
    text: str
    span: Span


@dataclass(frozen=True)
class Quantity:
    value: int | float
    unit: str
    text: str
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


# ---- values ------------------------------------------------------------------

@dataclass(frozen=True)
class Name:
    """An identifier, possibly dotted: ``ternary``, ``val.loss``."""

    parts: tuple[str, ...]
    span: Span

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class List:
    items: tuple["Value", ...]
    span: Span


@dataclass(frozen=True)
class Range:
    """Inclusive range ``3..16``; in a sweep also ``1e-4..1e-2`` and ``log 1e-4..1e-2``."""

    lo: Number
    hi: Number
    span: Span
    scale: str | None = None  # `log` in `log 1e-4..1e-2`


Value = Union[Number, Quantity, String, Bool, Name, List, Range]


# ---- expressions -------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    """A name the run supplies: ``step``, ``phase.steps``, ``train.loss``."""

    parts: tuple[str, ...]
    span: Span

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple["Expr", ...]
    kwargs: tuple[tuple[str, "Expr"], ...]
    span: Span
    kwarg_spans: tuple[Span, ...] = field(default=(), compare=False)  # where each keyword's name is


@dataclass(frozen=True)
class BinOp:
    op: str  # and or + - * / < <= > >= == !=
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Not:
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    span: Span


Expr = Union[Number, Quantity, String, Bool, Ref, Call, BinOp, Not, Neg]


# ---- statements --------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    items: tuple["Statement", ...]
    span: Span


@dataclass(frozen=True)
class Setting:
    """``key value``, ``key value { ... }``, ``key { ... }`` or ``key when expr``."""

    key: tuple[str, ...]
    key_span: Span
    value: Value | None
    block: Block | None
    gate: Expr | None
    span: Span

    @property
    def dotted(self) -> str:
        return ".".join(self.key)


@dataclass(frozen=True)
class Expect:
    """``expect EXPR [by SPAN | at end | throughout] [warn | fail]``.

    ``by``: judged once, at the first step at or past the span; ``at end`` (also when
    nothing is said): once, when the run ends; ``throughout``: after every step whose
    values are known. A broken ``fail`` expectation (the default) stops the run; a
    broken ``warn`` one is an event and a console line, and the run goes on.
    """

    expr: Expr
    by: Value | None
    span: Span
    when: str = "end"  # "by", "end" or "throughout"
    severity: str = "fail"  # "fail" or "warn"
    written_when: bool = False  # `at end` spelled out (fmt keeps what was written)
    written_severity: bool = False  # `fail` spelled out


Statement = Union[Setting, Expect]


@dataclass(frozen=True)
class Comment:
    text: str  # including the leading '#'
    line: int
    col: int


@dataclass(frozen=True)
class Document:
    items: tuple[Statement, ...]
    comments: tuple[Comment, ...]
    path: str
    source: str


def shape(node):
    """The node without spans or source text: equal shapes mean equal meaning."""
    if isinstance(node, (tuple, list)):
        return tuple(shape(n) for n in node)
    if isinstance(node, Document):
        return ("Document", shape(node.items))
    if is_dataclass(node):
        skip = {"span", "key_span", "text", "kwarg_spans", "written_when", "written_severity"}
        return (type(node).__name__,) + tuple(
            shape(getattr(node, f.name)) for f in fields(node) if f.name not in skip
        )
    return node
