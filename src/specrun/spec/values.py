"""Plain values of a checked spec: what a setting means, without where it was written.

``Qty``, ``IntRange`` and ``Gate`` are the spec types beyond JSON's own; the
JSON Schema names them ``bytes``/``duration``/``span``, ``range`` and ``gate``
(see ``check.py``). Equality ignores layout, so two specs that differ only in
spacing or comments compare equal: ``specrun diff`` builds on that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from specrun.spec import syntax as s
from specrun.spec.printer import format_expr
from specrun.spec.units import BYTE_UNITS, SPAN_UNITS, TIME_UNITS


@dataclass(frozen=True)
class Qty:
    value: int | float
    unit: str

    @property
    def dimension(self) -> str:
        if self.unit in BYTE_UNITS:
            return "bytes"
        if self.unit in TIME_UNITS:
            return "duration"
        return "span"

    @property
    def bytes(self) -> int:
        return int(self.value * BYTE_UNITS[self.unit])

    @property
    def seconds(self) -> float:
        return float(self.value) * TIME_UNITS[self.unit]

    @property
    def span_unit(self) -> str:
        """steps, epochs or % (singular and plural spellings mean the same)."""
        return SPAN_UNITS[self.unit]

    def __str__(self) -> str:
        value = self.value
        text = f"{value:_}" if isinstance(value, int) and abs(value) >= 10_000 else str(value)
        if self.unit in BYTE_UNITS or self.unit in TIME_UNITS or self.unit == "%":
            return f"{text}{self.unit}"
        return f"{text} {self.unit[:-1] if self.value == 1 else self.unit}"


@dataclass(frozen=True)
class IntRange:
    """``3..16`` (a setting's value: whole numbers); in a sweep, a search range whose bounds
    may be floats and which may carry a scale: ``log 1e-4..1e-2``."""

    lo: int | float
    hi: int | float
    scale: str | None = None

    def __str__(self) -> str:
        return (f"{self.scale} " if self.scale else "") + f"{self.lo}..{self.hi}"


@dataclass(frozen=True, eq=False)
class Gate:
    """An expression evaluated during the run (after ``when`` or ``expect``)."""

    expr: s.Expr

    def __eq__(self, other) -> bool:
        return isinstance(other, Gate) and s.shape(self.expr) == s.shape(other.expr)

    def __hash__(self) -> int:
        return hash(s.shape(self.expr))

    def __str__(self) -> str:
        return format_expr(self.expr)


def plain(value: s.Value):
    """A syntax value -> its plain meaning."""
    if isinstance(value, (s.Number, s.Bool, s.String)):
        return value.value
    if isinstance(value, s.Quantity):
        return Qty(value.value, SPAN_UNITS.get(value.unit, value.unit))
    if isinstance(value, s.Name):
        return value.dotted
    if isinstance(value, s.List):
        return [plain(v) for v in value.items]
    if isinstance(value, s.Range):
        return IntRange(value.lo.value, value.hi.value, value.scale)
    raise TypeError(f"not a value: {value!r}")


def describe(value) -> str:
    """How a plain value reads in messages and diffs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{...}"
    if value is None:
        return "(unset)"
    return str(value)

def to_json(value):
    """Plain data -> JSON-ready data (Qty, ranges and gates as their text)."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, (Qty, IntRange, Gate)):
        return str(value)
    return value


def canonical_json(data: dict) -> str:
    return json.dumps(to_json(data), sort_keys=True)
