"""printer: one value or expression as canonical text. No lark: a gate prints itself
during training without loading the parser."""

from __future__ import annotations

from specrun.spec import syntax as s
from specrun.spec.units import BYTE_UNITS, TIME_UNITS

# ---- leaves ------------------------------------------------------------------------

def quantity_text(number_text: str, unit: str) -> str:
    if unit in BYTE_UNITS or unit in TIME_UNITS or unit == "%":
        return f"{number_text}{unit}"
    return f"{number_text} {unit}"


def _quantity(node: s.Quantity) -> str:
    m = s.QUANTITY.match(node.text)
    return quantity_text(m["number"], m["unit"])


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def format_value(node) -> str:
    if isinstance(node, s.Number):
        return node.text
    if isinstance(node, s.Quantity):
        return _quantity(node)
    if isinstance(node, s.String):
        return quote(node.value)
    if isinstance(node, s.Bool):
        return "true" if node.value else "false"
    if isinstance(node, s.Name):
        return node.dotted
    if isinstance(node, s.Range):
        return (f"{node.scale} " if node.scale else "") + f"{node.lo.text}..{node.hi.text}"
    if isinstance(node, s.List):
        return "[" + ", ".join(format_value(v) for v in node.items) + "]"
    raise TypeError(node)


# ---- expressions -----------------------------------------------------------------------

_PREC = {"or": 1, "and": 2, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4,
         "+": 5, "-": 5, "*": 6, "/": 6}


def _prec(node) -> int:
    if isinstance(node, s.BinOp):
        return _PREC[node.op]
    if isinstance(node, s.Not):
        return 3
    if isinstance(node, s.Neg):
        return 7
    return 8


def format_expr(node) -> str:
    if isinstance(node, (s.Number, s.Quantity, s.String, s.Bool)):
        return format_value(node)
    if isinstance(node, s.Ref):
        return node.dotted
    if isinstance(node, s.Call):
        args = [format_expr(a) for a in node.args] + [f"{k}={format_expr(v)}" for k, v in node.kwargs]
        return f"{node.name}({', '.join(args)})"
    if isinstance(node, s.Not):
        return "not " + _wrap(node.operand, 3)
    if isinstance(node, s.Neg):
        return "-" + _wrap(node.operand, 7)
    prec = _PREC[node.op]
    # Left-associative: an equal-precedence right operand keeps its parentheses;
    # comparisons do not chain, so both sides of one need them.
    left = _wrap(node.left, prec + (1 if prec == 4 else 0))
    right = _wrap(node.right, prec + 1)
    return f"{left} {node.op} {right}"


def _wrap(node, min_prec: int) -> str:
    text = format_expr(node)
    return f"({text})" if _prec(node) < min_prec else text


# ---- expectations ------------------------------------------------------------------

def expect_tail(when: str, by_text: str | None, severity: str, spell_end: bool = False,
                spell_fail: bool = False) -> str:
    """What follows an expectation's expression: `` by 100 steps``, `` throughout warn``.

    ``at end`` and ``fail`` are the defaults: written only where the source spelled them.
    """
    tail = {"by": f" by {by_text}", "throughout": " throughout"}.get(when, " at end" if spell_end else "")
    if severity == "warn" or spell_fail:
        tail += f" {severity}"
    return tail


def expect_entry_tail(entry: dict, by_text: str | None = None) -> str:
    """The tail of a located ``expect`` entry (``{"expr", "by"?, "when"?, "severity"?}``)."""
    when = "by" if "by" in entry else entry.get("when", "end")
    return expect_tail(when, by_text, entry.get("severity", "fail"))
