"""fmt: the canonical layout of a .train file. A pure function of the text.

- one setting per line, blocks indented by two spaces, one blank line kept
  where the author left one or more;
- values printed canonically (``500 steps``, ``10GB``, ``[0.9, 0.99]``), numbers
  keep their spelling (``1e-4`` stays ``1e-4``, ``80_000`` stays); a list with
  comments inside, or longer than the line, goes one item per line;
- expressions with single spaces around operators and only the parentheses
  the meaning needs;
- comments kept: a comment on its own line stays before what follows it, a
  comment at the end of a line stays at the end of that setting's line.

``format_source`` proves its output by re-parsing: the trees must be equal
without their spans, and formatting the output again must change nothing.
"""

from __future__ import annotations

import re

from specrun.spec import syntax as s
from specrun.spec.parse import parse
from specrun.spec.printer import expect_entry_tail, expect_tail, format_expr, format_value, quote
from specrun.spec.schema import spec_schema
from specrun.spec.values import Gate, IntRange, Qty

INDENT = "  "
MAX_WIDTH = 88
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RESERVED = {"when", "by", "and", "or", "not", "true", "false", "expect"}


class FormatError(Exception):
    """The formatter would change the meaning of the file: a bug, never the user's fault."""


# ---- documents ----------------------------------------------------------------------------

def _pos(c: s.Comment) -> tuple[int, int]:
    return (c.line, c.col)


def _start(node) -> tuple[int, int]:
    return (node.span.line, node.span.col)


def _end(node) -> tuple[int, int]:
    return (node.span.end_line, node.span.end_col)


class _Printer:
    """Statements out, comments threaded back in by position.

    A comment belongs to what it sits on: a comment alone on its line stays before
    the statement that follows it (or before the closing '}' of its block); a
    comment at the end of a line stays at the end of that line's (last) statement.
    A list with comments inside, or too long for one line, is written one item
    per line so its comments keep their place.
    """

    def __init__(self, comments):
        self.comments = sorted(comments, key=_pos)
        self.lines: list[str] = []
        self.last_line = 0  # last source line accounted for

    # -- comments ---------------------------------------------------------------

    def take(self, keep) -> list[s.Comment]:
        """Remove and return the comments for which ``keep(comment)`` holds, in order."""
        taken = [c for c in self.comments if keep(c)]
        if taken:
            self.comments = [c for c in self.comments if not keep(c)]
        return taken

    def emit(self, depth: int, text: str, comment: s.Comment | None = None) -> None:
        line = INDENT * depth + text if text else ""
        if comment is not None:
            line = f"{line}  {comment.text}" if text else INDENT * depth + comment.text
        self.lines.append(line)

    def gap(self, start_line: int) -> None:
        """One blank line where the source had at least one."""
        if self.lines and start_line > self.last_line + 1 and self.lines[-1] != "" \
                and not self.lines[-1].rstrip().endswith(("{", "[")):
            self.lines.append("")

    def leading(self, depth: int, line: int) -> None:
        """Own-line comments before source line ``line``."""
        for c in self.take(lambda c: c.line < line):
            self.gap(c.line)
            self.emit(depth, c.text)
            self.last_line = c.line

    # -- statements -------------------------------------------------------------

    def statements(self, items, depth: int, outer_next=None) -> None:
        """``outer_next``: where the statement after the enclosing block starts, if on a shared line."""
        for i, item in enumerate(items):
            nxt = _start(items[i + 1]) if i + 1 < len(items) else outer_next
            self.leading(depth, item.span.line)
            self.gap(item.span.line)
            self.statement(item, depth, nxt)

    def _mine(self, item, next_start):
        """Comments within ``item``'s lines that are not a later statement's on a shared line."""
        return lambda c: (item.span.line <= c.line <= item.span.end_line and _pos(c) > _start(item)
                          and (next_start is None or _pos(c) < next_start))

    def statement(self, item, depth: int, next_start=None) -> None:
        if isinstance(item, s.Setting) and item.block is not None:
            self.block_setting(item, depth, next_start)
            return
        inside = self.take(self._mine(item, next_start))
        value = item.value if isinstance(item, s.Setting) else None
        if isinstance(value, s.List) and self._explode(value, inside, depth, self.head(item, bare=True)):
            self.list_setting(item, value, inside, depth)
        else:
            trailing = [c for c in inside if c.line == item.span.end_line]
            for c in inside:  # comments from inside a multi-line expression go above it
                if c not in trailing:
                    self.emit(depth, c.text)
            self.emit(depth, self.head(item), trailing[-1] if trailing else None)
        self.last_line = item.span.end_line

    def head(self, item, bare: bool = False) -> str:
        """The one-line text of a statement (``bare``: without its value)."""
        if isinstance(item, s.Expect):
            tail = expect_tail(item.when, format_value(item.by) if item.by is not None else None,
                               item.severity, item.written_when, item.written_severity)
            return f"expect {format_expr(item.expr)}{tail}"
        parts = [item.dotted]
        if item.gate is not None:
            parts += ["when", format_expr(item.gate)]
        if item.value is not None and not bare:
            parts.append(format_value(item.value))
        return " ".join(parts)

    def block_setting(self, item: s.Setting, depth: int, next_start=None) -> None:
        block = item.block
        open_line = block.span.line
        first = block.items[0].span.line if block.items else block.span.end_line
        # comments inside a multi-line value before '{' go above the header
        for c in self.take(lambda c: item.span.line <= c.line < open_line and _pos(c) > _start(item)):
            self.emit(depth, c.text)
        on_header = []
        if first > open_line:
            on_header = self.take(lambda c: c.line == open_line and _pos(c) > _start(block))
        header = self.head(item)
        empty = not block.items and not any(open_line < c.line < block.span.end_line for c in self.comments)
        if empty:
            closing = self.take(lambda c: c.line == block.span.end_line and _pos(c) > _start(block)
                                and (next_start is None or _pos(c) < next_start))
            comment = (on_header + closing)[-1] if on_header or closing else None
            for c in (on_header + closing)[:-1]:
                self.emit(depth, c.text)
            self.emit(depth, header + " {}", comment)
            self.last_line = block.span.end_line
            return
        self.emit(depth, header + " {", on_header[-1] if on_header else None)
        self.last_line = open_line
        self.statements(block.items, depth + 1, next_start)
        self.leading(depth + 1, block.span.end_line)
        closing = self.take(lambda c: c.line == block.span.end_line and _pos(c) > _start(block)
                            and (next_start is None or _pos(c) < next_start))
        self.emit(depth, "}", closing[-1] if closing else None)
        self.last_line = block.span.end_line

    # -- lists one item per line -------------------------------------------------

    def _explode(self, node: s.List, comments, depth: int, head: str) -> bool:
        """Whether ``node`` goes one item per line: it holds comments or is too long."""
        if not node.items and not any(_start(node) < _pos(c) < _end(node) for c in comments):
            return False
        if any(_start(node) < _pos(c) < _end(node) for c in comments):
            return True
        prefix = f"{head} " if head else ""
        return len(INDENT * depth + prefix + format_value(node)) > MAX_WIDTH

    def list_setting(self, item: s.Setting, value: s.List, comments, depth: int) -> None:
        inside = [c for c in comments if _start(value) < _pos(c) < _end(value)]
        after = [c for c in comments if _pos(c) >= _end(value)]
        before = [c for c in comments if _pos(c) <= _start(value)]
        for c in before:
            self.emit(depth, c.text)
        self.list_lines(value, inside, depth, self.head(item, bare=True) + " ", "", after[-1] if after else None)

    def list_lines(self, node: s.List, comments, depth: int, prefix: str, suffix: str,
                   closing_comment: s.Comment | None) -> None:
        """``prefix[`` / one item per line / ``]suffix``; ``comments`` lie inside ``node``."""
        items = node.items
        open_line = node.span.line
        remaining = list(comments)

        def grab(keep):
            nonlocal remaining
            got = [c for c in remaining if keep(c)]
            remaining = [c for c in remaining if not keep(c)]
            return got

        first_start = _start(items[0]) if items else _end(node)
        on_open = grab(lambda c: c.line == open_line and _pos(c) < first_start)
        self.emit(depth, prefix + "[", on_open[-1] if on_open else None)
        for c in on_open[:-1]:
            self.emit(depth + 1, c.text)
        for i, it in enumerate(items):
            for c in grab(lambda c: _pos(c) < _start(it)):
                self.emit(depth + 1, c.text)
            nxt = _start(items[i + 1]) if i + 1 < len(items) else _end(node)
            mine = grab(lambda c: _pos(c) < nxt)
            nested = [c for c in mine if _start(it) < _pos(c) < _end(it)]
            trailing = [c for c in mine if c not in nested and c.line == it.span.end_line]
            for c in mine:
                if c not in nested and c not in trailing:  # own-line comments after it: before the next
                    remaining.append(c)
            remaining.sort(key=_pos)
            if isinstance(it, s.List) and self._explode(it, nested, depth + 1, ""):
                self.list_lines(it, nested, depth + 1, "", ",", trailing[-1] if trailing else None)
            else:
                self.emit(depth + 1, format_value(it) + ",", trailing[-1] if trailing else None)
        for c in remaining:  # own-line comments before ']'
            self.emit(depth + 1, c.text)
        self.emit(depth, "]" + suffix, closing_comment)



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

def _is_name(text: str) -> bool:
    return bool(_NAME.match(text)) and not any(part in _RESERVED for part in text.split("."))


def data_value(value) -> str:
    """A plain value as the spec writes it (``--set`` takes the same text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if _is_name(value) else quote(value)
    if isinstance(value, Qty):
        return str(value)
    if isinstance(value, IntRange):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(data_value(v) for v in value) + "]"
    if isinstance(value, Gate):
        raise TypeError("a gate is written with `when`, not as a value")
    raise TypeError(value)


_COMPONENT_KEYS = {"task", "model", "loss", "optimizer", "schedule", "precision", "metrics"}  # document.COMPONENT_KEYS


def _data_lines(data: dict, depth: int, order=None, where: tuple = ()) -> list[str]:
    lines = []
    rank = {k: i for i, k in enumerate(order or ())}
    keys = sorted(data, key=lambda k: rank.get(k, len(rank)))
    pad = INDENT * depth
    for key in keys:
        value = data[key]
        collection = key in ("phases", "axes") and isinstance(value, list) and (
            where == ("curriculum",) or (key == "phases" and where[:2] == ("curriculum", "axes")))
        if collection:
            word = "phase" if key == "phases" else "axis"
            for entry in value:
                body = {k: v for k, v in entry.items() if k not in ("name", "set")}
                sets = [INDENT * (depth + 1) + line for line in _flat(entry.get("set", {}), ())]
                inner = sets + _data_lines(body, depth + 1, where=where + (key, entry["name"]))
                head = f"{pad}{word} {data_value(entry['name'])}"
                lines += [head + " {"] + inner + [f"{pad}}}"] if inner else [head + " {}"]
        elif key == "expect" and where == () and isinstance(value, list):
            for e in value:
                tail = expect_entry_tail(e, data_value(e["by"]) if "by" in e else None)
                lines.append(f"{pad}expect {e['expr']}{tail}")
        elif isinstance(value, Gate):
            lines.append(f"{pad}{key} when {value}")
        elif isinstance(value, dict):
            rest = {k: v for k, v in value.items() if k != "type"}
            head = f"{pad}{key} {data_value(value['type'])}" if "type" in value else f"{pad}{key}"
            if rest or "type" not in value:
                lines += [head + " {"] + _data_lines(rest, depth + 1, where=where + (key,)) + [f"{pad}}}"]
            elif where == () and key in _COMPONENT_KEYS:
                lines.append(head)  # `loss cross_entropy`
            else:
                lines.append(head + " {}")  # elsewhere `key name` would be a plain value
        else:
            lines.append(f"{pad}{key} {data_value(value)}")
    return lines


def _flat(data: dict, prefix: tuple) -> list[str]:
    """What a phase sets, as ``task.rounds 8`` lines."""
    out = []
    for k, v in data.items():
        key = ".".join(prefix + (k,))
        if isinstance(v, dict) and v:
            out += _flat(v, prefix + (k,))
        elif isinstance(v, dict):
            out.append(f"{key} {{}}")
        elif isinstance(v, Gate):
            out.append(f"{key} when {v}")
        else:
            out.append(f"{key} {data_value(v)}")
    return out


def format_data(data: dict) -> str:
    """Canonical .train text for checked plain data (profiles already applied).

    ``check(parse(format_data(spec.data))).data == spec.data``: a run's spec.train
    means exactly what was run.
    """
    order = list(spec_schema()["properties"])
    text = "\n".join(_data_lines(data, 0, order)) + "\n"
    return format_document(parse(text, "spec.train"))  # long lists one item per line, as fmt does


