"""parse: text -> syntax tree (``specrun.spec.syntax``), or a SpecError with positions.

Lark LALR with a contextual lexer, built once per process from
``grammar/train.lark`` (its tables shipped beside it as JSON, see ``_parser``). A small
post-lexer drops newlines inside brackets (so lists and expressions may span
lines) and bounds nesting; ``_build`` turns Lark's tree into the syntax
dataclasses, spans computed from the tokens. Lark's exceptions never reach the
user: ``_explain`` maps them to diagnostics with a location and, for the
mistakes people actually make, a hint.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

from specrun.resources import resource_dir
from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic, SpecError

MAX_BYTES = 1_000_000
MAX_DEPTH = 64  # brackets, blocks and expression nesting

RESERVED = {"when", "by", "and", "or", "not", "true", "false", "expect"}

_OPEN = {"LSQB": "RSQB", "LPAR": "RPAR", "LBRACE": "RBRACE"}
_CLOSE = {v: k for k, v in _OPEN.items()}


class _NestingTooDeep(Exception):
    def __init__(self, token: Token, what: str = "brackets and blocks"):
        self.token, self.what = token, what


# Operators in one run of an expression (no bracket or comma between them). Each of the
# few precedence levels nests one deeper per operator, so a run this long is always
# deeper than MAX_DEPTH: refused while lexing, before a 300,000-term sum fills memory.
_OPERATORS = {"ADD", "MINUS", "MUL", "COMPARE", "OR", "AND", "NOT"}
MAX_RUN = 8 * MAX_DEPTH


class _PostLex:
    """Drop newlines inside [...] and (...), merge runs of them; refuse absurd nesting."""

    always_accept = ("_NL",)

    def process(self, stream):
        brackets = 0  # [ and ( only: inside them a newline is just space
        depth = 0
        after_newline = False  # comment lines split newlines in two; the grammar wants one
        runs = [0]  # operators since the last bracket, comma or line, per open bracket
        for tok in stream:
            if tok.type == "_NL":
                if brackets or after_newline:
                    continue
                after_newline = True
                runs[-1] = 0
                yield tok
                continue
            after_newline = False
            if tok.type in _OPEN:
                depth += 1
                brackets += tok.type != "LBRACE"
                if depth > MAX_DEPTH:
                    raise _NestingTooDeep(tok)
                runs.append(0)
            elif tok.type in _CLOSE:
                depth = max(0, depth - 1)
                if tok.type != "RBRACE":
                    brackets = max(0, brackets - 1)
                if len(runs) > 1:
                    runs.pop()
            elif tok.type == "COMMA":
                runs[-1] = 0
            elif tok.type in _OPERATORS:
                runs[-1] += 1
                if runs[-1] > MAX_RUN:
                    raise _NestingTooDeep(tok, "expression")
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


_LARK_OPTIONS = dict(parser="lalr", lexer="contextual", keep_all_tokens=True, maybe_placeholders=False)


TABLES = "train.tables.json"  # beside the grammar; `python -m specrun.spec.parse` writes it


def grammar_key(grammar: str, start: str) -> str:
    """What the shipped tables were built from: the grammar, the start rule and the options.
    (The lark version is recorded apart: tables from another lark are rebuilt, not stale.)"""
    import hashlib

    return hashlib.sha256(f"{grammar}\0{start}\0{sorted(_LARK_OPTIONS.items())}".encode("utf-8")).hexdigest()


def _lark_version() -> str:
    import lark

    return lark.__version__


def build_tables(start: str = "start") -> dict:
    """The LALR tables for ``grammar/train.lark`` as plain JSON data (integer keys spelled out)."""
    from lark.grammar import Rule
    from lark.lexer import TerminalDef

    grammar = (resource_dir("grammar") / "train.lark").read_text(encoding="utf-8")
    data, memo = Lark(grammar, start=start, **_LARK_OPTIONS).memo_serialize([TerminalDef, Rule])
    data["options"] = {k: v for k, v in data["options"].items() if k not in ("postlex", "lexer_callbacks")}
    return {"grammar_sha256": grammar_key(grammar, start), "lark": _lark_version(),
            "tables": _to_json({"data": data, "memo": memo})}


def _to_json(value):
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _to_json(v) for k, v in value.items()}
        return {"__int_keys__": [[k, _to_json(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(obj: dict):
    if set(obj) == {"__int_keys__"}:
        return {int(k): tuple(v) if isinstance(v, list) else v for k, v in obj["__int_keys__"]}
    return obj


def write_tables() -> Path:
    import json

    path = resource_dir("grammar") / TABLES
    path.write_text(json.dumps(build_tables(), sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def reload_parser() -> None:
    """Forget the parsers built in this process: the next parse reads the grammar and its
    tables again (after regenerating them, or in a test that changes what they hold)."""
    _parser.cache_clear()


@lru_cache(maxsize=None)
def _parser(start: str = "start") -> Lark:
    """The LALR parser, from the tables shipped beside the grammar (JSON, never a pickle).

    Generating the tables costs ~0.1-0.3 s, loading them ~0.02 s. Tables that no longer
    match the grammar (an edited grammar, not yet regenerated) are ignored and the parser
    is built in memory; a test keeps the shipped file current. Nothing is read from or
    written to a cache directory: whoever can write there could otherwise run code here.
    """
    import json

    grammar = (resource_dir("grammar") / "train.lark").read_text(encoding="utf-8")
    runtime = dict(postlex=_PostLex(), lexer_callbacks={"COMMENT": _comments})
    if start == "start":
        try:
            shipped = json.loads((resource_dir("grammar") / TABLES).read_text(encoding="utf-8"),
                                 object_hook=_from_json)
            if shipped["grammar_sha256"] == grammar_key(grammar, start) and shipped["lark"] == _lark_version():
                return Lark.__new__(Lark)._load(shipped["tables"], **runtime)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing or unreadable: build below
    return Lark(grammar, start=start, **_LARK_OPTIONS, **runtime)


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


class _BadToken(Exception):
    """A token the grammar accepts but the language does not (raised inside the transformer)."""

    def __init__(self, token: Token, code: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.token, self.code, self.message, self.hint = token, code, message, hint


# Bad tokens met while building the syntax tree: all of them are reported, in order.
# Per thread (an editor may validate from several); no list outside _build: refuse by raising.
_refused = threading.local()


def _refuse(bad: _BadToken) -> None:
    items = getattr(_refused, "items", None)
    if items is None:
        raise bad
    items.append(bad)


def _number(text: str, tok: Token | None = None) -> int | float:
    plain = text.replace("_", "")
    try:
        value = float(plain) if any(c in plain for c in ".eE") else int(plain)
    except ValueError:  # more digits than int() accepts (sys.get_int_max_str_digits)
        value = float("inf")
    if value in (float("inf"), float("-inf")):
        _refuse(_BadToken(tok, "E203", f"number {text[:40]}{'...' if len(text) > 40 else ''} is too large",
                          "numbers must fit a 64-bit float (at most about 1.8e308)"))
        return 0
    return value




def _quantity(text: str, span: s.Span, tok: Token | None = None) -> s.Quantity:
    m = s.QUANTITY.match(text)
    assert m, f"lexer produced a quantity without a unit: {text!r}"
    return s.Quantity(_number(m["number"], tok), m["unit"], text, span)


def _name(tok: Token) -> str:
    """One part of a key or name; reserved words are refused wherever the lexer let them through."""
    text = str(tok)
    if text in RESERVED:
        _refuse(_BadToken(tok, "E107", f"'{text}' is a reserved word and cannot be used as a name",
                          f"reserved words: {', '.join(sorted(RESERVED))}"))
    return text


# ---- Lark tree -> syntax ---------------------------------------------------------
#
# The parser keeps every token (keep_all_tokens) and computes no positions; _build
# walks the tree once, bottom-up and without recursion, and takes each node's span
# from its first and last token. (Lark's propagate_positions and a Transformer did the
# same at twice the cost, and `validate` parses every spec on every run.)

_SKIP = {"_NL", "COMMA", "DOT", "LPAR", "RPAR", "LSQB", "RSQB", "LBRACE", "RBRACE"}


def _build(tree: Tree, path: str):
    """The syntax for ``tree`` (a ``start`` tree): a tuple of statements."""
    built: dict = {}  # id(tree) -> (value, extent)
    stack = [(tree, False)]
    while stack:
        node, ready = stack.pop()
        if not ready:
            stack.append((node, True))
            stack.extend((c, False) for c in node.children if isinstance(c, Tree))
            continue
        kids, extents = [], []
        for c in node.children:
            if isinstance(c, Tree):
                value, extent = built.pop(id(c))
            else:
                value, extent = c, (c.line, c.column, c.end_line, c.end_column)
            kids.append(value)
            extents.append(extent)
        real = [e for e, k in zip(extents, kids) if not (isinstance(k, Token) and k.type == "_NL")]
        if real:
            extent = (real[0][0], real[0][1], real[-1][2], real[-1][3])
        else:
            extent = (1, 1, 1, 1)
        span = s.Span(path, *extent)
        built[id(node)] = (_RULES[node.data](kids, span, path), extent)
    return built[id(tree)][0]


def _values(kids):
    """Children that carry meaning (not punctuation, not keywords)."""
    return [k for k in kids if not (isinstance(k, Token) and k.type not in ("NAME", "NUMBER", "QUANTITY",
                                                                               "STRING", "COMPARE", "ADD",
                                                                               "MINUS", "MUL"))]


def _names(kids) -> tuple[str, ...]:
    return tuple(_name(k) for k in kids if isinstance(k, Token) and k.type == "NAME")


def _r_setting(kids, span, path):
    (key, key_span), rest = kids[0], kids[1:]
    value = next((c for c in rest if not isinstance(c, s.Block)), None)
    block = next((c for c in rest if isinstance(c, s.Block)), None)
    return s.Setting(key, key_span, value, block, None, span)


def _r_gate(kids, span, path):
    (key, key_span), expr = kids[0], kids[-1]  # key WHEN expr
    return s.Setting(key, key_span, None, None, expr, span)


def _r_expect(kids, span, path):
    # EXPECT expr [("by", value) | ("end",) | ("throughout",)] [SEVERITY]
    parts = [k for k in kids if not isinstance(k, Token)]
    expr, when = parts[0], parts[1] if len(parts) > 1 else None
    severity = next((str(k) for k in kids if isinstance(k, Token) and k.type == "SEVERITY"), None)
    kind = when[0] if when else "end"
    return s.Expect(expr, when[1] if when and kind == "by" else None, span,
                    when=kind, severity=severity or "fail",
                    written_when=when is not None, written_severity=severity is not None)


def _r_number(kids, span, path):
    tok = kids[0]
    return s.Number(_number(str(tok), tok), str(tok), span)


def _r_negative(kids, span, path):
    tok = kids[-1]  # MINUS NUMBER
    return s.Number(-_number(str(tok), tok), "-" + str(tok), span)


def _r_range(kids, span, path):
    scale = _name(kids[0]) if isinstance(kids[0], Token) and kids[0].type == "NAME" else None
    return s.Range(kids[-3] if scale else kids[0], kids[-1], span, scale)


def _r_call(kids, span, path):
    name, args = _name(kids[0]), [k for k in kids[1:] if not isinstance(k, Token)]
    pos = tuple(a for a in args if not isinstance(a, tuple))
    kw = tuple(a for a in args if isinstance(a, tuple))
    return s.Call(name, pos, tuple((k, v) for k, v, _ in kw), span, tuple(at for _, _, at in kw))


def _r_binop(kids, span, path):
    left, op, right = _values(kids)
    return s.BinOp(str(op), left, right, span)


_RULES = {
    "start": lambda kids, span, path: tuple(k for k in kids if not isinstance(k, Token)),
    "block": lambda kids, span, path: s.Block(tuple(k for k in kids if not isinstance(k, Token)), span),
    "key": lambda kids, span, path: (_names(kids), span),
    "setting": _r_setting,
    "gate": _r_gate,
    "expect": _r_expect,
    "expect_by": lambda kids, span, path: ("by", next(k for k in kids if not isinstance(k, Token))),
    "expect_at_end": lambda kids, span, path: ("end",),
    "expect_throughout": lambda kids, span, path: ("throughout",),
    "number": _r_number,
    "num": _r_number,
    "negative": _r_negative,
    "quantity": lambda kids, span, path: _quantity(str(kids[0]), span, kids[0]),
    "string": lambda kids, span, path: s.String(_unquote(str(kids[0])), span),
    "true": lambda kids, span, path: s.Bool(True, span),
    "false": lambda kids, span, path: s.Bool(False, span),
    "name": lambda kids, span, path: s.Name(_names(kids), span),
    "list": lambda kids, span, path: s.List(tuple(k for k in kids if not isinstance(k, Token)), span),
    "range": _r_range,
    "ref": lambda kids, span, path: s.Ref(_names(kids), span),
    "call": _r_call,
    "kwarg": lambda kids, span, path: (_name(kids[0]), kids[-1], _span(path, kids[0])),
    "or_": lambda kids, span, path: s.BinOp("or", kids[0], kids[-1], span),
    "and_": lambda kids, span, path: s.BinOp("and", kids[0], kids[-1], span),
    "not_": lambda kids, span, path: s.Not(kids[-1], span),
    "neg": lambda kids, span, path: s.Neg(kids[-1], span),
    "compare": _r_binop,
    "binop": _r_binop,
    "atom": lambda kids, span, path: kids[1],  # "(" expr ")": the expression, its span unchanged
}


def read_source(path: str) -> str:
    """Read a spec file as text, or raise a SpecError saying why it can't be."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SpecError([Diagnostic("E900", f"cannot read {path}: {reason}", s.Span(path, 1, 1, 1, 1))]) from None
    return decode_source(raw, path)


def decode_source(raw: bytes, path: str) -> str:
    if len(raw) > MAX_BYTES:
        raise SpecError([Diagnostic(
            "E106", f"spec file is larger than {MAX_BYTES // 1000} kB", s.Span(path, 1, 1, 1, 1),
            "a .train file describes one run; data belongs in the files it points at")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        # the bytes before the first bad one decode, so columns count characters like Lark's
        col = len(raw[line_start:exc.start].decode("utf-8")) + 1
        shown = raw.decode("utf-8", errors="replace")  # for the excerpt: the bad byte shows as U+FFFD
        raise SpecError([Diagnostic(
            "E103", f"byte 0x{raw[exc.start]:02x} is not valid UTF-8",
            s.Span(path, line, col, line, col + 1),
            "is this a binary file? a .train file is UTF-8 text" if _looks_binary(raw)
            else "save the file as UTF-8")], {path: shown}) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def _looks_binary(raw: bytes) -> bool:
    head = raw[:4096]
    return b"\x00" in head or sum(b < 9 or 13 < b < 32 for b in head) > len(head) // 20


def parse(text: str, path: str = "<string>") -> s.Document:
    """Parse a whole file. Raises SpecError (never a Lark exception)."""
    items, comments = _run(text, path, "start")
    if not items:
        raise SpecError([Diagnostic(
            "E104", "the spec is empty", s.Span(path, 1, 1, 1, 1),
            "a spec starts with `spec NAME`; see specs/ for complete examples")], {path: text})
    return s.Document(items, comments, path, text)


def parse_expression(text: str, path: str = "<expression>") -> s.Expr:
    """One expression, as written after `when` (a gate read back from plan.json)."""
    return parse_statements(f"x when {text}", path)[0].gate


def parse_statements(text: str, path: str) -> tuple[s.Statement, ...]:
    """Parse override text (``--set`` values): statements without the empty-file rule."""
    return _run(text, path, "start")[0]


_CONTROL = re.compile(r"[^\t\n\r\f\x20-\x7e]")


def _check_text(text: str, path: str) -> None:
    """Refuse control characters (and other invisible ones) before Lark sees them.

    Lines are counted on "\n" only, as Lark counts them (str.splitlines would also
    split on \f, \x1c, \x85, U+2028 ...).
    """
    pos = 0
    while True:
        m = _CONTROL.search(text, pos)
        if m is None:
            return
        ch = m.group()
        pos = m.end()
        if ch.isprintable():  # ordinary non-ASCII text: é, 中, emoji
            continue
        line = text.count("\n", 0, m.start()) + 1
        col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
        control = ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0
        hint = "is this a binary file? a .train file is plain text" if control \
            else "an invisible character: delete it and retype the text around it"
        raise SpecError([Diagnostic(
            "E101", f"{'control' if control else 'invisible'} character U+{ord(ch):04X} in the spec",
            s.Span(path, line, col, line, col + 1), hint)], {path: text})


def _run(text: str, path: str, start: str):
    _check_text(text, path)
    with _lock:
        _comments.items = []
        try:
            tree = _parser(start).parse(text)
        except _NestingTooDeep as exc:
            raise SpecError([Diagnostic(
                "E105", f"{exc.what} {'nest' if exc.what.endswith('s') else 'nests'} deeper than {MAX_DEPTH} levels",
                _span(path, exc.token),
                "flatten the structure" if exc.what != "expression" else
                "a chain of more than 60 operators counts as deep nesting too: split it into simpler gates")],
                {path: text}) from None
        except UnexpectedInput as exc:
            raise SpecError([_explain(exc, text, path)], {path: text}) from None
        finally:
            found, _comments.items = _comments.items, []
        comments = tuple(s.Comment(str(t).rstrip(), t.line, t.column) for t in found)
    _refused.items = refused = []
    try:
        items = _build(tree, path)
    finally:
        _refused.items = None
    if refused:
        diags = [Diagnostic(bad.code, bad.message, _span(path, bad.token), bad.hint) for bad in refused]
        raise SpecError(sorted(diags, key=lambda d: (d.span.line, d.span.col)), {path: text})
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
                "a chain of more than 60 operators counts as deep nesting too: "
                "split it into simpler gates")], {path: text})
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
    "QUANTITY": "a quantity such as 500 steps", "STRING": "a string", "COMPARE": "a comparison",
    "ADD": "'+'", "MINUS": "'-'", "MUL": "'*' or '/'",
}
_CLOSER = {"{": "}", "[": "]", "(": ")"}
UNITS = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB, ms, s, min, h, steps, micro_steps, epochs, %"


def _literal(tok_type: str) -> str | None:
    """The fixed text of a keyword or punctuation terminal ('{', 'when', '..')."""
    from lark.lexer import PatternStr

    for term in _parser().terminals:
        if term.name == tok_type:
            return term.pattern.value if isinstance(term.pattern, PatternStr) else None
    return None


def _word(tok_type: str) -> str:
    """How a kind of token reads in 'expected ...'."""
    if tok_type in _TOKEN_WORDS:
        return _TOKEN_WORDS[tok_type]
    literal = _literal(tok_type)
    return f"'{literal}'" if literal is not None else tok_type.lower()


def _describe(tok: Token) -> str:
    """How one token reads in 'unexpected ...'."""
    value = str(tok)
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "';'" if value == ";" else "end of line"
    if tok.type == "NAME":
        return f"name '{value}'"
    if tok.type == "NUMBER":
        return f"number {value}"
    if tok.type == "QUANTITY":
        return f"quantity {value}"
    if tok.type == "STRING":
        return f"string {value if len(value) <= 40 else value[:37] + '...'}"
    return f"'{value}'"


def _expected_set(exc) -> set[str]:
    """Terminals the parser could have taken. Lark's own set may include tokens the
    lexer always accepts (newlines); the parse table is the truth."""
    state = getattr(exc, "state", None)
    try:
        return {t for t in state.parse_conf.states[state.position] if t.isupper()}
    except Exception:
        return set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())


def _expected(names: set[str]) -> str:
    words = sorted({_word(t) for t in names})
    return ", ".join(words[:8]) + (" ..." if len(words) > 8 else "")


def _explain(exc: UnexpectedInput, text: str, path: str) -> Diagnostic:
    line = getattr(exc, "line", 1)
    col = getattr(exc, "column", 1)
    if not isinstance(line, int) or line < 1:  # lark reports EOF as line -1 (or '?')
        lines = text.split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    if not isinstance(col, int) or col < 1:
        col = 1
    span = s.Span(path, line, col, line, col + 1)

    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream
        ch = text[pos] if pos < len(text) else ""
        unclosed = _unclosed_here(text, pos, line, path)
        if unclosed:
            return unclosed
        if ch == '"':
            return Diagnostic("E102", "string is never closed on this line", span,
                              'close it with " before the end of the line')
        if ch == ":":
            return Diagnostic("E101", "unexpected ':'", span,
                              "settings are written `key value`, without ':' or '='")
        if ch == "'":
            return Diagnostic("E101", "unexpected \"'\"", span, 'strings use double quotes: "text"')
        if ch == "\r":
            return Diagnostic("E101", "a carriage return without a newline", span,
                              "save the file with \\n (or \\r\\n) line endings")
        hint = None
        if ch == "%":
            hint = "a percentage is written right after its number: 5%"
        return Diagnostic("E101", f"unexpected character {ch!r}", span, hint)

    tok = getattr(exc, "token", None)
    expected = _expected_set(exc)
    if isinstance(exc, UnexpectedEOF) or (tok is not None and tok.type == "$END"):
        opened = _unclosed(text)
        if opened:
            kind, (oline, ocol) = opened
            return Diagnostic("E100", f"'{kind}' opened at line {oline}, column {ocol} is never closed",
                              s.Span(path, oline, ocol, oline, ocol + 1),
                              f"add the matching '{_CLOSER[kind]}'")
        return Diagnostic("E100", "the file ends in the middle of a setting", span,
                          f"expected {_expected(expected)}")

    assert isinstance(exc, UnexpectedToken)
    if tok.line:
        span = _span(path, tok)
    value = str(tok)
    pos = tok.start_pos if isinstance(tok.start_pos, int) else exc.pos_in_stream or 0
    unclosed = _unclosed_here(text, pos, tok.line, path)
    if unclosed:
        return unclosed
    before = text[:pos].rstrip(" \t\f")
    statement_start = "EXPECT" in expected and "NAME" in expected
    if tok.type == "EQUAL" and "EQUAL" not in expected:
        return Diagnostic("E100", "unexpected '='", span,
                          "settings are written `key value`: drop the '='")
    if value in RESERVED and "NAME" in expected and tok.type != "NAME":
        return Diagnostic("E107", f"'{value}' is a reserved word and cannot be used as a name", span,
                          f"reserved words: {', '.join(sorted(RESERVED))}")
    if tok.type == "RBRACE" and "RBRACE" not in expected and not _unclosed(text[:pos], "{"):
        return Diagnostic("E100", "'}' without a matching '{'", span, "remove it, or open the block it closes")
    if statement_start and tok.type != "_NL":
        hint = None
        if tok.type == "LBRACE":
            hint = "a block belongs to a setting: `name { ... }`"
        elif tok.type == "STRING":
            hint = "setting names are not quoted"
        elif tok.type in ("NUMBER", "QUANTITY"):
            hint = "a setting starts with its name: `name VALUE`"
        return Diagnostic("E100", f"expected a setting name, got {_describe(tok)}", span, hint)
    if tok.type == "NUMBER" and before.endswith(".") and not before.endswith(".."):
        return Diagnostic("E100", f"unexpected {_describe(tok)}", span,
                          f"a number starts with a digit: write 0.{value}")
    if tok.type == "LPAR" and "LPAR" not in expected:
        return Diagnostic("E100", "unexpected '('", span,
                          "a value is a number, name, string or list; an expression needs a gate: "
                          "`key when EXPR`")
    if tok.type == "WHEN" and "WHEN" not in expected:
        return Diagnostic("E100", "unexpected 'when'", span,
                          "a gate is written `key when EXPR`, with no value before 'when'")
    if tok.type == "COMPARE" and "COMPARE" not in expected and "AND" in expected:
        return Diagnostic("E100", f"comparisons do not chain: unexpected {_describe(tok)}", span,
                          "write `a < b and b < c`")
    value_like = ("NAME", "NUMBER", "QUANTITY", "STRING", "LSQB", "LPAR", "TRUE", "FALSE")
    inner = _unclosed(text[:pos])
    if inner and inner[0] in "[(" and tok.type in value_like:
        if inner[0] == "[":
            return Diagnostic("E100", f"unexpected {_describe(tok)} in a list", span,
                              "separate list items with ','")
        return Diagnostic("E100", f"unexpected {_describe(tok)} inside '(...)'", span,
                          "separate arguments with ','; join conditions with 'and' / 'or'")
    if "_NL" in expected and tok.type in value_like and tok.type != "LPAR":
        hint = "one setting per line: start a new line (or separate with ';')"
        if tok.type == "NAME" and before[-1:].isdigit() and (
                text[pos - 1:pos].isdigit() or _close_to_unit(value)):
            hint = f"'{value}' is not a unit; units: {UNITS}"
        return Diagnostic("E100", f"unexpected {_describe(tok)} after a complete setting", span, hint)
    if expected and all(_literal(t) == ".." for t in expected):  # `model mlp 3`: NAME NUMBER starts `log 1..8`
        return Diagnostic("E100", f"unexpected {_describe(tok)}: a name and a number begin a scaled range", span,
                          "a range in a sweep is written `log 1e-4..1e-2`; otherwise one setting per line")
    if tok.type == "_NL":
        return Diagnostic("E108" if expected & {"NUMBER", "NAME", "STRING", "LBRACE"} else "E100",
                          "the line ends before the setting is complete", span,
                          f"expected {_expected(expected)}")
    return Diagnostic("E100", f"unexpected {_describe(tok)}", span, f"expected {_expected(expected)}")


def _close_to_unit(word: str) -> bool:
    import difflib

    units = [u.strip() for u in UNITS.split(",")]
    return word.lower() in {u.lower() for u in units} or bool(
        difflib.get_close_matches(word, units, n=1, cutoff=0.6))


def _unclosed_here(text: str, pos: int, line: int, path: str) -> Diagnostic | None:
    """A '[' or '(' still open at ``pos``, opened on an earlier line and never closed.

    Inside brackets newlines are spaces, so a forgotten ']' shows up as a confusing
    error lines later; name the bracket instead."""
    opened = _unclosed(text[:pos])
    if not opened or opened[0] == "{" or opened[1][0] >= line:
        return None
    if opened not in _unclosed(text, stack=True):
        return None
    kind, (oline, ocol) = opened
    return Diagnostic("E100", f"'{kind}' opened at line {oline}, column {ocol} is never closed",
                      s.Span(path, oline, ocol, oline, ocol + 1), f"add the matching '{_CLOSER[kind]}'")


def _unclosed(text: str, only: str | None = None, stack: bool = False):
    """The innermost bracket left open in ``text`` (ignoring strings and comments);
    with ``stack``, every bracket left open."""
    opened = []
    line, col, i = 1, 1, 0
    in_str = in_comment = False
    n = len(text)
    while i < n:
        ch = text[i]
        if in_comment:
            if ch == "\n":
                in_comment = False
        elif in_str:
            if ch == "\\" and i + 1 < n and text[i + 1] != "\n":
                i += 1
                col += 1
            elif ch in '"\n':
                in_str = False
        elif ch == "#":
            in_comment = True
        elif ch == '"':
            in_str = True
        elif ch in "{[(":
            opened.append((ch, (line, col)))
        elif ch in "}])" and opened:
            opened.pop()
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1
        i += 1
    if stack:
        return opened
    opened = [x for x in opened if only is None or x[0] == only]
    return opened[-1] if opened else None


if __name__ == "__main__":  # after editing grammar/train.lark: regenerate the shipped tables
    print(f"wrote {write_tables()}")
