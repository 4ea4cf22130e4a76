"""fmt: the canonical layout of a .train file. A pure function of the text.

- one setting per line, blocks indented by two spaces, one blank line kept
  where the author left one or more;
- values printed canonically (``500 steps``, ``10GB``, ``[0.9, 0.99]``), numbers
  keep their spelling (``1e-4`` stays ``1e-4``, ``80_000`` stays);
- expressions with single spaces around operators and only the parentheses
  the meaning needs;
- comments kept: a comment on its own line stays before what follows it, a
  comment at the end of a line stays at the end of that setting's line.

``format_source`` proves its output by re-parsing: the trees must be equal
without their spans, and formatting the output again must change nothing.
"""

from __future__ import annotations

import json
import re

from specrun import syntax as s
from specrun.parse import _QUANTITY, parse
from specrun.values import BYTE_UNITS, TIME_UNITS, Gate, IntRange, Qty

INDENT = "  "
MAX_WIDTH = 88
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RESERVED = {"when", "by", "and", "or", "not", "true", "false", "expect"}


class FormatError(Exception):
    """The formatter would change the meaning of the file: a bug, never the user's fault."""


# ---- leaves ------------------------------------------------------------------------

def quantity_text(number_text: str, unit: str) -> str:
    if unit in BYTE_UNITS or unit in TIME_UNITS or unit == "%":
        return f"{number_text}{unit}"
    return f"{number_text} {unit}"


def _quantity(node: s.Quantity) -> str:
    m = _QUANTITY.match(node.text)
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
        return f"{node.lo.text}..{node.hi.text}"
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


# ---- documents ----------------------------------------------------------------------------

class _Printer:
    def __init__(self, comments):
        self.comments = sorted(comments, key=lambda c: (c.line, c.col))
        self.lines: list[str] = []
        self.last_line = 0  # last source line accounted for

    def take(self, upto: int, after: int = 0):
        """Pop comments on lines in [after, upto)."""
        taken = [c for c in self.comments if after <= c.line < upto]
        self.comments = [c for c in self.comments if not after <= c.line < upto]
        return taken

    def emit(self, depth: int, text: str, source_line: int | None = None) -> None:
        self.lines.append(INDENT * depth + text if text else "")

    def blank_if_gap(self, start_line: int) -> None:
        if self.lines and start_line > self.last_line + 1 and self.lines[-1] != "" \
                and not self.lines[-1].rstrip().endswith("{"):
            self.lines.append("")

    def leading(self, depth: int, line: int) -> None:
        for c in self.take(line):
            self.blank_if_gap(c.line)
            self.emit(depth, c.text)
            self.last_line = c.line

    def statements(self, items, depth: int) -> None:
        for item in items:
            self.leading(depth, item.span.line)
            self.blank_if_gap(item.span.line)
            self.statement(item, depth)

    def statement(self, item, depth: int) -> None:
        if isinstance(item, s.Setting) and item.block is not None:
            self.block_setting(item, depth)
            return
        inside = self.take(item.span.end_line + 1, item.span.line)
        for c in inside[:-1]:  # comments from inside a multi-line list or expression
            self.emit(depth, c.text)
        text = self.head(item)
        if inside:
            text += "  " + inside[-1].text
        self.emit(depth, text)
        self.last_line = item.span.end_line

    def head(self, item) -> str:
        if isinstance(item, s.Expect):
            by = f" by {format_value(item.by)}" if item.by is not None else ""
            return f"expect {format_expr(item.expr)}{by}"
        parts = [item.dotted]
        if item.gate is not None:
            parts += ["when", format_expr(item.gate)]
        if item.value is not None:
            parts.append(format_value(item.value))
        return " ".join(parts)

    def block_setting(self, item: s.Setting, depth: int) -> None:
        block = item.block
        open_line = block.span.line
        first = block.items[0].span.line if block.items else block.span.end_line
        header_comments = self.take(min(first, block.span.end_line) if first > open_line else open_line + 1,
                                    item.span.line)
        on_header = [c for c in header_comments if c.line == open_line]
        for c in header_comments:
            if c not in on_header:
                self.emit(depth + 1 if c.line > open_line else depth, c.text)
        if not block.items and not self._has_comments(open_line, block.span.end_line):
            self.emit(depth, self.head(item) + " {}" + (f"  {on_header[0].text}" if on_header else ""))
            self.last_line = block.span.end_line
            return
        self.emit(depth, self.head(item) + " {" + (f"  {on_header[0].text}" if on_header else ""))
        self.last_line = open_line
        self.statements(block.items, depth + 1)
        self.leading(depth + 1, block.span.end_line)
        closing = self.take(block.span.end_line + 1, block.span.end_line)
        self.emit(depth, "}" + (f"  {closing[0].text}" if closing else ""))
        for c in closing[1:]:
            self.emit(depth, c.text)
        self.last_line = block.span.end_line

    def _has_comments(self, start: int, end: int) -> bool:
        return any(start <= c.line <= end for c in self.comments)


def format_document(doc: s.Document) -> str:
    printer = _Printer(doc.comments)
    printer.statements(doc.items, 0)
    printer.leading(0, 10**9)
    return "\n".join(printer.lines).rstrip("\n") + "\n"


def format_source(text: str, path: str = "<string>") -> str:
    """Canonical text for ``text``; raises SpecError on bad input, FormatError on a bug."""
    doc = parse(text, path)
    out = format_document(doc)
    again = parse(out, path)
    if s.shape(again) != s.shape(doc):
        raise FormatError(f"{path}: formatting would change the meaning; please report this")
    if sorted(c.text for c in again.comments) != sorted(c.text.rstrip() for c in doc.comments):
        raise FormatError(f"{path}: formatting would lose a comment; please report this")
    if format_document(again) != out:
        raise FormatError(f"{path}: formatting is not stable; please report this")
    return out


# ---- plain data -> text (spec.train of a run) ---------------------------------------------------

def _data_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if _NAME.match(value) and value.split(".")[0] not in _RESERVED else quote(value)
    if isinstance(value, Qty):
        return str(value)
    if isinstance(value, IntRange):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_data_value(v) for v in value) + "]"
    raise TypeError(value)


def _data_lines(data: dict, depth: int, order=None) -> list[str]:
    lines = []
    keys = sorted(data, key=lambda k: order.index(k) if order and k in order else len(order or ()))
    for key in keys:
        value = data[key]
        pad = INDENT * depth
        if key in ("phases", "axes") and isinstance(value, list):
            word = "phase" if key == "phases" else "axis"
            for entry in value:
                body = {k: v for k, v in entry.items() if k not in ("name", "set")}
                sets = [INDENT * (depth + 1) + f"{k} {v}" for k, v in _flat(entry.get("set", {}), ())]
                inner = sets + _data_lines(body, depth + 1)
                lines += [f"{pad}{word} {entry['name']} {{"] + inner + [f"{pad}}}"] if inner else [f"{pad}{word} {entry['name']} {{}}"]
        elif key == "expect" and isinstance(value, list):
            for e in value:
                by = f" by {_data_value(e['by'])}" if "by" in e else ""
                lines.append(f"{pad}expect {e['expr']}{by}")
        elif isinstance(value, Gate):
            lines.append(f"{pad}{key} when {value}")
        elif isinstance(value, dict):
            rest = {k: v for k, v in value.items() if k != "type"}
            head = f"{pad}{key} {_data_value(value['type'])}" if "type" in value else f"{pad}{key}"
            if rest or "type" not in value:
                lines += [head + " {"] + _data_lines(rest, depth + 1) + [f"{pad}}}"]
            else:
                lines.append(head)
        else:
            lines.append(f"{pad}{key} {_data_value(value)}")
    return lines


def _flat(data: dict, prefix: tuple):
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            out += _flat(v, prefix + (k,))
        else:
            out.append((".".join(prefix + (k,)), _data_value(v)))
    return out


def format_data(data: dict) -> str:
    """Canonical .train text for checked plain data (profiles already applied)."""
    from specrun.check import spec_schema

    order = list(spec_schema()["properties"])
    return "\n".join(_data_lines(data, 0, order)) + "\n"


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
