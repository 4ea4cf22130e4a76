"""parse: text -> syntax tree (``specrun.syntax``), or a SpecError with positions.

Lark LALR with a contextual lexer, built once per process from
``grammar/train.lark``. A small post-lexer drops newlines inside brackets (so
lists and expressions may span lines) and bounds nesting. Lark's exceptions
never reach the user: ``_explain`` maps them to diagnostics with a location and,
for the mistakes people actually make, a hint.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from specrun import syntax as s
from specrun.diagnostics import Diagnostic, SpecError
from specrun.resources import resource_dir

MAX_BYTES = 1_000_000
MAX_DEPTH = 64  # brackets, blocks and expression nesting

RESERVED = {"when", "by", "and", "or", "not", "true", "false", "expect"}

_OPEN = {"LSQB": "RSQB", "LPAR": "RPAR", "LBRACE": "RBRACE"}
_CLOSE = {v: k for k, v in _OPEN.items()}


class _NestingTooDeep(Exception):
    def __init__(self, token: Token):
        self.token = token


class _PostLex:
    """Drop newlines inside [...] and (...), merge runs of them; refuse absurd nesting."""

    always_accept = ("_NL",)

    def process(self, stream):
        brackets = 0  # [ and ( only: inside them a newline is just space
        depth = 0
        after_newline = False  # comment lines split newlines in two; the grammar wants one
        for tok in stream:
            if tok.type == "_NL":
                if brackets or after_newline:
                    continue
                after_newline = True
                yield tok
                continue
            after_newline = False
            if tok.type in _OPEN:
                depth += 1
                brackets += tok.type != "LBRACE"
                if depth > MAX_DEPTH:
                    raise _NestingTooDeep(tok)
            elif tok.type in _CLOSE:
                depth = max(0, depth - 1)
                if tok.type != "RBRACE":
                    brackets = max(0, brackets - 1)
            yield tok


class _Comments:
    """Lexer callback sink; the parser is shared, so parsing holds a lock."""

    def __init__(self):
        self.items: list[Token] = []

    def __call__(self, tok: Token) -> Token:
        self.items.append(tok)
        return tok


_comments = _Comments()
_lock = threading.Lock()


@lru_cache(maxsize=None)
def _parser(start: str = "start") -> Lark:
    grammar = (resource_dir("grammar") / "train.lark").read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        start=start,
        propagate_positions=True,
        maybe_placeholders=False,
        postlex=_PostLex(),
        lexer_callbacks={"COMMENT": _comments},
    )


def _span(path: str, meta_or_tok) -> s.Span:
    m = meta_or_tok
    return s.Span(path, m.line, m.column, m.end_line, m.end_column)


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _unquote(text: str) -> str:
    out, chars = [], iter(text[1:-1])
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
        else:
            out.append(ch)
    return "".join(out)


def _number(text: str) -> int | float:
    plain = text.replace("_", "")
    if any(c in plain for c in ".eE"):
        return float(plain)
    return int(plain)


_QUANTITY = re.compile(r"(?P<number>[0-9][0-9_.eE+-]*?)[ \t]*(?P<unit>[A-Za-z%]+)$")


def _quantity(text: str, span: s.Span) -> s.Quantity:
    m = _QUANTITY.match(text)
    assert m, f"lexer produced a quantity without a unit: {text!r}"
    return s.Quantity(_number(m["number"]), m["unit"], text, span)


@v_args(meta=True)
class _ToSyntax(Transformer_NonRecursive):
    """Lark tree -> frozen dataclasses, bottom-up without recursion."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _sp(self, meta) -> s.Span:
        return _span(self.path, meta)

    def _tok(self, tok: Token) -> s.Span:
        return _span(self.path, tok)

    # statements
    def start(self, meta, items):
        return tuple(items)

    def block(self, meta, items):
        return s.Block(tuple(items), self._sp(meta))

    def key(self, meta, names):
        return (tuple(str(n) for n in names), self._sp(meta))

    def setting(self, meta, children):
        (key, key_span), rest = children[0], children[1:]
        value = next((c for c in rest if not isinstance(c, s.Block)), None)
        block = next((c for c in rest if isinstance(c, s.Block)), None)
        return s.Setting(key, key_span, value, block, None, self._sp(meta))

    def gate(self, meta, children):
        (key, key_span), expr = children
        return s.Setting(key, key_span, None, None, expr, self._sp(meta))

    def expect(self, meta, children):
        expr = children[0]
        by = children[1] if len(children) > 1 else None
        return s.Expect(expr, by, self._sp(meta))

    # values
    def number(self, meta, children):
        tok = children[0]
        return s.Number(_number(tok), str(tok), self._tok(tok))

    def negative(self, meta, children):
        tok = children[0]
        return s.Number(-_number(tok), "-" + str(tok), self._sp(meta))

    def num(self, meta, children):
        return self.number(meta, children)

    def quantity(self, meta, children):
        tok = children[0]
        return _quantity(str(tok), self._tok(tok))

    def string(self, meta, children):
        return s.String(_unquote(str(children[0])), self._tok(children[0]))

    def true(self, meta, children):
        return s.Bool(True, self._sp(meta))

    def false(self, meta, children):
        return s.Bool(False, self._sp(meta))

    def name(self, meta, children):
        return s.Name(tuple(str(c) for c in children), self._sp(meta))

    def list(self, meta, children):
        return s.List(tuple(children), self._sp(meta))

    def range(self, meta, children):
        return s.Range(children[0], children[1], self._sp(meta))

    # expressions
    def ref(self, meta, children):
        return s.Ref(tuple(str(c) for c in children), self._sp(meta))

    def call(self, meta, children):
        name, args = str(children[0]), children[1:]
        pos = tuple(a for a in args if not isinstance(a, tuple))
        kw = tuple(a for a in args if isinstance(a, tuple))
        return s.Call(name, pos, kw, self._sp(meta))

    def kwarg(self, meta, children):
        return (str(children[0]), children[1])

    def _binop(self, meta, op, left, right):
        return s.BinOp(op, left, right, self._sp(meta))

    def or_(self, meta, children):
        return self._binop(meta, "or", children[0], children[1])

    def and_(self, meta, children):
        return self._binop(meta, "and", children[0], children[1])

    def not_(self, meta, children):
        return s.Not(children[0], self._sp(meta))

    def neg(self, meta, children):
        return s.Neg(children[0], self._sp(meta))

    def compare(self, meta, children):
        return self._binop(meta, str(children[1]), children[0], children[2])

    def binop(self, meta, children):
        return self._binop(meta, str(children[1]), children[0], children[2])


def read_source(path: str) -> str:
    """Read a spec file as text, or raise a SpecError saying why it can't be."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError([Diagnostic("E900", f"cannot read {path}: {exc.strerror}", s.Span(path, 1, 1, 1, 1))])
    return decode_source(raw, path)


def decode_source(raw: bytes, path: str) -> str:
    if len(raw) > MAX_BYTES:
        raise SpecError([Diagnostic(
            "E106", f"spec file is larger than {MAX_BYTES // 1000} kB", s.Span(path, 1, 1, 1, 1),
            "a .train file describes one run; data belongs in the files it points at")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = raw[: exc.start]
        line = head.count(b"\n") + 1
        col = exc.start - (head.rfind(b"\n") + 1) + 1
        raise SpecError([Diagnostic(
            "E103", f"byte 0x{raw[exc.start]:02x} is not valid UTF-8",
            s.Span(path, line, col, line, col + 1), "save the file as UTF-8")])
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def parse(text: str, path: str = "<string>") -> s.Document:
    """Parse a whole file. Raises SpecError (never a Lark exception)."""
    items, comments = _run(text, path, "start")
    if not items:
        raise SpecError([Diagnostic(
            "E104", "the spec is empty", s.Span(path, 1, 1, 1, 1),
            "a spec starts with `spec NAME`; see specs/ for complete examples")], {path: text})
    return s.Document(items, comments, path, text)


def parse_statements(text: str, path: str) -> tuple[s.Statement, ...]:
    """Parse override text (``--set`` values): statements without the empty-file rule."""
    return _run(text, path, "start")[0]


def _check_text(text: str, path: str) -> None:
    for lineno, line in enumerate(text.splitlines(), 1):
        for col, ch in enumerate(line, 1):
            if ch == "\x00" or (not ch.isprintable() and ch not in "\t\f\r"):
                raise SpecError([Diagnostic(
                    "E101", f"control character U+{ord(ch):04X} in the spec",
                    s.Span(path, lineno, col, lineno, col + 1),
                    "is this a binary file? a .train file is plain text")], {path: text})


def _run(text: str, path: str, start: str):
    _check_text(text, path)
    with _lock:
        _comments.items = []
        try:
            tree = _parser(start).parse(text)
        except _NestingTooDeep as exc:
            raise SpecError([Diagnostic(
                "E105", f"brackets and blocks nest deeper than {MAX_DEPTH} levels",
                _span(path, exc.token))], {path: text}) from None
        except UnexpectedInput as exc:
            raise SpecError([_explain(exc, text, path)], {path: text}) from None
        comments = tuple(s.Comment(str(t).rstrip(), t.line, t.column) for t in _comments.items)
    try:
        items = _ToSyntax(path).transform(tree)
    except _NestingTooDeep as exc:  # pragma: no cover - the post-lexer catches brackets first
        raise SpecError([Diagnostic("E105", "nesting too deep", _span(path, exc.token))], {path: text})
    _check_depth(items, text, path)
    return items, comments


def _check_depth(items, text: str, path: str) -> None:
    """Refuse expression trees deeper than MAX_DEPTH (``- - - - x``, 10k-term sums).

    Later stages walk trees recursively; this keeps them far from Python's limit.
    """
    stack = [(node, 1) for node in items]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            span = getattr(node, "span", s.Span(path, 1, 1, 1, 1))
            raise SpecError([Diagnostic(
                "E105", f"expression nests deeper than {MAX_DEPTH} levels", span,
                "split it with intermediate settings or simplify it")], {path: text})
        children = []
        if isinstance(node, s.Setting):
            children = [c for c in (node.value, node.block, node.gate) if c is not None]
        elif isinstance(node, s.Block):
            children = list(node.items)
        elif isinstance(node, s.Expect):
            children = [c for c in (node.expr, node.by) if c is not None]
        elif isinstance(node, s.BinOp):
            children = [node.left, node.right]
        elif isinstance(node, (s.Not, s.Neg)):
            children = [node.operand]
        elif isinstance(node, s.Call):
            children = list(node.args) + [v for _, v in node.kwargs]
        elif isinstance(node, s.List):
            children = list(node.items)
        stack.extend((c, depth + 1) for c in children)


# ---- friendly errors ----------------------------------------------------------

_TOKEN_WORDS = {
    "_NL": "end of line", "$END": "end of file", "NAME": "a name", "NUMBER": "a number",
    "QUANTITY": "a quantity such as 500 steps", "STRING": "a string", "LBRACE": "'{'",
    "RBRACE": "'}'", "LSQB": "'['", "RSQB": "']'", "LPAR": "'('", "RPAR": "')'",
    "COMMA": "','", "DOT": "'.'", "COMPARE": "a comparison", "ADD": "'+' or '-'",
    "MUL": "'*' or '/'", "EQUAL": "'='", "MINUS": "'-'", "__ANON_0": "'..'",
}


def _word(tok_type: str) -> str:
    if tok_type in _TOKEN_WORDS:
        return _TOKEN_WORDS[tok_type]
    if tok_type.isupper() and tok_type.lower() in RESERVED:
        return f"'{tok_type.lower()}'"
    return tok_type


def _expected(exc) -> str:
    words = sorted({_word(t) for t in getattr(exc, "expected", ()) or getattr(exc, "allowed", ())})
    return ", ".join(words[:8]) + (" ..." if len(words) > 8 else "")


def _explain(exc: UnexpectedInput, text: str, path: str) -> Diagnostic:
    line = getattr(exc, "line", 1) or 1
    col = getattr(exc, "column", 1) or 1
    if line < 1:  # lark reports EOF as line -1
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    span = s.Span(path, line, col, line, col + 1)

    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if ch == '"':
            return Diagnostic("E102", "string is never closed on this line", span,
                              'close it with " before the end of the line')
        if ch == ":":
            return Diagnostic("E101", "unexpected ':'", span,
                              "settings are written `key value`, without ':' or '='")
        if ch == "'":
            return Diagnostic("E101", "unexpected \"'\"", span, 'strings use double quotes: "text"')
        return Diagnostic("E101", f"unexpected character {ch!r}", span)

    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        opened = _unclosed(text)
        if opened:
            kind, (oline, ocol) = opened
            return Diagnostic("E100", f"'{kind}' opened at line {oline}, column {ocol} is never closed",
                              s.Span(path, oline, ocol, oline, ocol + 1),
                              f"add the matching '{ {'{': '}', '[': ']', '(': ')'}[kind] }'")
        return Diagnostic("E100", "the file ends in the middle of a setting", span,
                          f"expected {_expected(exc)}")

    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    span = _span(path, tok) if tok.line else span
    value = str(tok)
    expected = set(exc.expected or ())
    if tok.type == "EQUAL" and "_NL" in expected:
        return Diagnostic("E100", "unexpected '='", span,
                          "settings are written `key value`: drop the '='")
    if value in RESERVED and "NAME" in expected:
        return Diagnostic("E107", f"'{value}' is a reserved word and cannot be used as a name", span)
    if tok.type == "RBRACE" and "RBRACE" not in expected:
        if not _unclosed(text[: exc.pos_in_stream], "{"):
            return Diagnostic("E100", "'}' without a matching '{'", span)
    if "_NL" in expected and tok.type in ("NAME", "NUMBER", "QUANTITY", "STRING", "LSQB"):
        return Diagnostic("E100", f"unexpected {_word(tok.type)} {value!r} after a complete setting", span,
                          "one setting per line: start a new line (or separate with ';')")
    if tok.type == "_NL":
        return Diagnostic("E108" if expected & {"NUMBER", "NAME", "STRING", "LBRACE"} else "E100",
                          "the line ends before the setting is complete", span,
                          f"expected {_expected(exc)}")
    return Diagnostic("E100", f"unexpected {_word(tok.type)} {value!r}", span,
                      f"expected {_expected(exc)}")


def _unclosed(text: str, only: str | None = None):
    """The innermost bracket left open in ``text`` (ignoring strings and comments)."""
    stack = []
    line, col, i = 1, 1, 0
    in_str = in_comment = False
    while i < len(text):
        ch = text[i]
        if in_comment:
            if ch == "\n":
                in_comment = False
        elif in_str:
            if ch == "\\":
                i += 1
                col += 1
            elif ch in '"\n':
                in_str = False
        elif ch == "#":
            in_comment = True
        elif ch == '"':
            in_str = True
        elif ch in "{[(":
            stack.append((ch, (line, col)))
        elif ch in "}])" and stack:
            stack.pop()
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1
        i += 1
    stack = [x for x in stack if only is None or x[0] == only]
    return stack[-1] if stack else None
