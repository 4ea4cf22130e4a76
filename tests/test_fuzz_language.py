"""Property-based fuzzing of the language front end (hypothesis).

Whatever the bytes, `validate` (the functions the CLI calls: decode_source, parse,
check_all_profiles) raises nothing but SpecError, and every diagnostic points at a
line and column inside the file. Whatever parses, fmt keeps its meaning and is a
fixed point. Bounded to run in seconds.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specrun.spec import syntax as s
from specrun.spec.check import check_all_profiles
from specrun.spec.diagnostics import SpecError, render
from specrun.spec.fmt import format_document
from specrun.spec.parse import decode_source, parse

REPO = Path(__file__).resolve().parents[1]
SPECS = [p.read_text(encoding="utf-8") for p in sorted((REPO / "specs").glob("*.train"))]
SPEC = SPECS[0] if SPECS else "spec x\n"

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# characters the grammar cares about, plus some it does not
SYNTAX = list("{}[]()<>=!+-*/.,;:#\"'\\_%\t\n \r") + ["when", "and", "or", "not", "true", "false",
                                                     "expect", "by", "steps", "GB", "phase", "profile"]
PIECE = st.one_of(st.sampled_from(SYNTAX), st.characters(codec="utf-8"), st.sampled_from(list("abcxyz019eE")))


def pieces(max_size: int):
    return st.lists(PIECE, max_size=max_size).map("".join)


def validate(raw: bytes, path: str = "fuzz.train"):
    """What `specrun validate` does for one file; returns the diagnostics and their text."""
    try:
        text = decode_source(raw, path)
    except SpecError as err:
        return err.diagnostics, err.sources.get(path, "")
    try:
        return check_all_profiles(parse(text, path)), text
    except SpecError as err:
        return err.diagnostics, text


def assert_sane(raw: bytes):
    diagnostics, text = validate(raw)
    lines = text.split("\n")
    for d in diagnostics:
        assert d.span.path == "fuzz.train"
        assert 1 <= d.span.line <= len(lines), (d, len(lines))
        assert 1 <= d.span.col <= len(lines[d.span.line - 1]) + 1, (d, lines[d.span.line - 1])
        assert d.code[0] in "EW" and d.message
    if diagnostics:
        for fmt in ("text", "json", "github"):
            render(diagnostics, {"fuzz.train": text}, fmt)
    return text


def assert_fmt_holds(text: str):
    """fmt's output re-parses to the same tree, keeps the comments and is a fixed point
    (format_source checks the same; this is the independent check, with fewer parses)."""
    try:
        doc = parse(text)
    except SpecError:
        return
    out = format_document(doc)
    again = parse(out)
    assert s.shape(again) == s.shape(doc)
    assert sorted(c.text for c in again.comments) == sorted(c.text for c in doc.comments)
    assert format_document(again) == out


@FUZZ
@given(pieces(150))
def test_random_text(text):
    assert_sane(text.encode("utf-8"))
    assert_fmt_holds(text)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(raw):
    assert_sane(raw)


def _mutate(text: str, ops) -> str:
    for kind, pos, piece in ops:
        pos = pos % (len(text) + 1)
        if kind == "delete":
            text = text[:pos] + text[pos + 1 + len(piece):]
        elif kind == "insert":
            text = text[:pos] + piece + text[pos:]
        else:  # duplicate a stretch
            text = text[:pos] + text[pos:pos + 1 + len(piece)] + text[pos:]
    return text


MUTATIONS = st.lists(st.tuples(st.sampled_from(["delete", "insert", "duplicate"]), st.integers(0, 10**6),
                               pieces(3)), min_size=1, max_size=6)


@settings(FUZZ, max_examples=60)
@given(st.sampled_from(SPECS or [SPEC]), MUTATIONS)
def test_mutated_reference_specs(spec, ops):
    text = _mutate(spec, ops)
    assert_sane(text.encode("utf-8"))
    assert_fmt_holds(text)


@settings(FUZZ, max_examples=30)
@given(st.sampled_from(SPECS or [SPEC]), st.integers(0, 10**6), st.sampled_from(list("{}[]()\"#\n;")))
def test_one_bracket_more_or_less(spec, pos, ch):
    pos %= len(spec) + 1
    for text in (spec[:pos] + ch + spec[pos:], spec[:pos] + spec[pos + 1:]):
        assert_sane(text.encode("utf-8"))
        assert_fmt_holds(text)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.sampled_from(["[", "(", "{"]), st.integers(1, 400), st.booleans())
def test_deep_nesting(opener, depth, closed):
    closer = {"[": "]", "(": ")", "{": "}"}[opener]
    body = {"[": "x " + "[" * depth + "1" + "]" * depth * closed,
            "(": "stop when " + "(" * depth + "step" + ")" * depth * closed,
            "{": "a " * 0 + "a {\n" * depth + "b 1\n" + "}\n" * depth * closed}[opener]
    del closer
    assert_sane(("spec deep\n" + body + "\n").encode())
    assert_fmt_holds("spec deep\n" + body + "\n")


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.integers(1, 1000), st.sampled_from([" + ", " - ", " * ", " and ", " or ", " < "]),
       st.sampled_from(["-", "not ", ""]))
def test_long_chains(n, op, prefix):
    text = "spec chain\nstop when " + op.join(["step"] * n) + " > 1\nx when " + prefix * n + "step\n"
    assert_sane(text.encode())
    assert_fmt_holds(text)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.integers(1000, 200_000), st.sampled_from(["a", "1", " ", "[1,", "\"", "#", "é", "\t"]))
def test_very_long_lines(n, piece):
    text = "spec long\nx " + piece * (n // len(piece)) + "\n"
    assert_sane(text.encode())


def test_known_crashers():
    """Inputs that once got past the front end as something other than a SpecError."""
    for text in ["x " + "9" * 5000, "x 1e999", "spec x\ncurriculum { phases 3\n phase a {} }",
                 "spec x\nprecision 3\nschedule 5", "spec x\nexpect 1\nexpect 2",
                 "stop when train.loss - val.loss > 0", "spec x\ncurriculum { axis a { phases 3 } }"]:
        assert_sane(text.encode())
        assert_fmt_holds(text)
