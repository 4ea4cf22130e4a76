"""The language core: parse, check, values, expressions, fmt's format_data, diagnostics."""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from specrun.spec import syntax as s
from specrun.spec.check import check, check_all_profiles, load
from specrun.spec.diagnostics import Diagnostic, SpecError, render
from specrun.spec.document import locate
from specrun.spec.expr import Context, evaluate
from specrun.spec.fmt import format_data, format_source
from specrun.spec.parse import decode_source, parse
from specrun.spec.values import Gate, IntRange, Qty

from spec_helpers import BASE, codes, diags, one  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "specs").glob("*.train"))

# ---- reference specs ------------------------------------------------------------------------

def _profiles(path: Path) -> list[str | None]:
    return [None] + list(locate(parse(path.read_text(encoding="utf-8"), str(path))).profiles)


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_reference_spec_is_valid_and_formatted(spec):
    text = spec.read_text(encoding="utf-8")
    found = check_all_profiles(parse(text, str(spec)))
    assert [d for d in found if d.severity == "error"] == []
    # Warnings may come from a smoke profile's shorter run; the file as written has none.
    assert [d.message for d in found if "(with profile " not in d.message] == []
    out = format_source(text, str(spec))
    assert format_source(out) == out
    assert out == text, f"run `specrun fmt {spec.relative_to(REPO)}`"


@pytest.mark.parametrize("spec,profile", [(p, prof) for p in SPECS for prof in _profiles(p)],
                         ids=lambda v: v.stem if isinstance(v, Path) else str(v))
def test_format_data_round_trips(spec, profile):
    """A run's spec.train (format_data of the checked data) means exactly what ran."""
    checked = load(str(spec), profile)
    text = format_data(checked.data)
    again = check(parse(text, str(spec.with_name("spec.train"))))  # beside it: code it names is found
    assert again.data == checked.data
    assert format_source(text) == text  # and it is already in the canonical layout
    assert again.hash == checked.hash


def test_format_data_corner_cases():
    data = check(parse(BASE, "t")).data
    data = dict(data, description="when", task=dict(data["task"], sampler={"type": "uniform"}))
    text = format_data(data)
    assert 'description "when"' in text and "sampler uniform {}" in text
    again = locate(parse(text)).data
    assert again["description"] == "when" and again["task"]["sampler"] == {"type": "uniform"}


# ---- parse -------------------------------------------------------------------------------------

def test_spans_and_values():
    doc = parse("spec x\noptimizer adamw {\n  lr 1e-4\n  betas [0.9, 0.99]\n}\nwarm 5 %\nr -2..3\n")
    opt = doc.items[1]
    assert opt.key == ("optimizer",) and opt.value.dotted == "adamw"
    lr = opt.block.items[0]
    assert (lr.span.line, lr.span.col, lr.value.span.col) == (3, 3, 6)
    assert lr.value.value == 1e-4 and lr.value.text == "1e-4"
    assert doc.items[2].value == s.Quantity(5, "%", "5 %", doc.items[2].value.span)
    assert doc.items[3].value.lo.value == -2 and doc.items[3].value.hi.value == 3


@pytest.mark.parametrize("text,value,unit", [
    ("500steps", 500, "steps"), ("1 step", 1, "step"), ("10 GB", 10, "GB"), ("512MiB", 512, "MiB"),
    ("2min", 2, "min"), ("250ms", 250, "ms"), ("1e3 steps", 1000.0, "steps"), ("80_000 steps", 80000, "steps"),
    ("0.5 epochs", 0.5, "epochs"), ("5%", 5, "%"),
])
def test_quantities(text, value, unit):
    q = parse(f"x {text}\n").items[0].value
    assert isinstance(q, s.Quantity) and (q.value, q.unit) == (value, unit)


def test_minus_is_one_token_everywhere():
    """`a.b - c` once failed: LALR shares the state after a dotted name between keys and
    expressions, and a second "-" terminal made the lexer guess wrong."""
    gate = parse("stop when train.loss - val.loss > -1\n").items[0].gate
    assert gate.op == ">" and gate.left.op == "-" and isinstance(gate.right, s.Neg)
    assert parse("x.y -1\n").items[0].value.value == -1
    assert format_source("stop when (train.loss-val.loss)-1 > 0\n") == "stop when train.loss - val.loss - 1 > 0\n"


@pytest.mark.parametrize("text", ["when 3\n", "x.when 3\n", "x and\n", "stop when or > 1\n", "x a.true\n",
                                  "stop when f(by=1)\n"])
def test_reserved_words(text):
    with pytest.raises(SpecError) as err:
        parse(text)
    assert err.value.diagnostics[0].code == "E107"


def test_comments_are_collected_and_parser_is_reentrant():
    doc = parse("# a\nspec x  # b\n")
    assert [(c.text, c.line, c.col) for c in doc.comments] == [("# a", 1, 1), ("# b", 2, 9)]
    with pytest.raises(SpecError):
        parse("# c\nspec x {\n")
    assert parse("spec y\n").comments == ()  # no comment left over from the failed parse


@pytest.mark.parametrize("raw,code,where", [
    (b"", "E104", (1, 1)),
    (b"# nothing\n", "E104", (1, 1)),
    (b"spec x\n\x00\x01", "E101", (2, 1)),
    (b"spec x\ndescription \"caf\xc3\xa9 \xe9\"\n", "E103", (2, 19)),
    (b"spec x\nseed 0\x0c1\n", "E100", (2, 8)),  # form feed is whitespace; lines still count on \n only
    ("spec x\x85\nseed 1\n".encode(), "E101", (1, 7)),  # NEL splits str.splitlines(), not the parser's lines
    ("spec x\u2028\nseed 1\n".encode(), "E101", (1, 7)),
    (b"a 1\rb 2\n", "E101", (1, 4)),
    (b"x " + b"9" * 5000 + b"\n", "E203", (1, 3)),
    (b"x 1e400\n", "E203", (1, 3)),
])
def test_bad_input_is_a_diagnostic(raw, code, where):
    with pytest.raises(SpecError) as err:
        parse(decode_source(raw, "t.train"), "t.train")
    diag = err.value.diagnostics[0]
    assert diag.code == code and (diag.span.line, diag.span.col) == where
    render(err.value.diagnostics, err.value.sources)  # renders without error


def test_too_large_file():
    with pytest.raises(SpecError) as err:
        decode_source(b"#" * 1_000_001, "big.train")
    assert err.value.diagnostics[0].code == "E106"


def test_the_shipped_parse_tables_match_the_grammar(monkeypatch):
    """grammar/train.tables.json is generated; after editing the grammar run `python -m specrun.spec.parse`.

    Lark numbers states and tokens differently from one process to the next, so the check is
    the grammar's hash recorded in the file, and the same trees and errors from both parsers.
    """
    import json

    from specrun.resources import resource_dir
    from specrun.spec import parse as p

    grammar = (resource_dir("grammar") / "train.lark").read_text(encoding="utf-8")
    shipped = json.loads((resource_dir("grammar") / p.TABLES).read_text(encoding="utf-8"))
    assert shipped["grammar_sha256"] == p.grammar_key(grammar, "start"), \
        "stale: run `python -m specrun.spec.parse`"
    # Tables from another lark version are rebuilt in memory (checked below), not used.
    texts = [f.read_text(encoding="utf-8") for f in sorted(resource_dir("specs").glob("*.train"))]
    texts += [f.read_text(encoding="utf-8", errors="replace")
              for f in sorted((Path(__file__).parent / "data" / "errors").glob("*.train"))]
    texts += [BASE, "spec a\nx = 1\n", "spec a\nx {\n", "spec a\nx [1,\n 2\n", "when 1\n"]

    def outcomes():
        p.reload_parser()
        out = []
        for text in texts:
            try:
                out.append(repr(p.parse(text, "t.train")))
            except SpecError as exc:
                out.append(str(exc))
        return out

    try:
        from_file = outcomes()
        monkeypatch.setattr(p, "grammar_key", lambda grammar, start: "force a build in memory")
        assert outcomes() == from_file
    finally:
        p.reload_parser()


class _Planted:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def test_the_parser_reads_no_cache_directory(tmp_path, monkeypatch):
    """No pickle is loaded from a place others can write: a planted cache file never runs."""
    import pickle

    from specrun.spec import parse as p

    marker = tmp_path / "pwned"
    for folder in (tmp_path / "env", tmp_path / "xdg" / "specrun"):
        folder.mkdir(parents=True)
        for name in ("train-grammar.lark.pickle", "tables.pickle"):
            (folder / name).write_bytes(pickle.dumps(_Planted(marker)))
    monkeypatch.setenv("SPECRUN_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = sorted(tmp_path.rglob("*"))
    p.reload_parser()
    try:
        assert p.parse("spec b\nx 1 # c\n").comments[0].text == "# c"
    finally:
        p.reload_parser()
    assert not marker.exists() and sorted(tmp_path.rglob("*")) == before


def test_stale_tables_are_ignored_and_the_parser_built_in_memory(monkeypatch):
    from specrun.spec import parse as p

    monkeypatch.setattr(p, "grammar_key", lambda grammar, start: "edited since")
    p.reload_parser()
    try:
        assert p.parse("spec c\nx [1,\n 2]\n").items[1].value is not None
    finally:
        p.reload_parser()


def test_tables_from_another_lark_version_are_not_used(monkeypatch):
    """A newer lark installed beside the shipped tables: they are rebuilt in memory, not loaded."""
    import lark

    from specrun.spec import parse as p

    built = []
    monkeypatch.setattr(lark, "__version__", "0.0.1")
    monkeypatch.setattr(p, "Lark", type("CountingLark", (lark.Lark,), {
        "__init__": lambda self, *a, **kw: (built.append(1), lark.Lark.__init__(self, *a, **kw))[1]}))
    p.reload_parser()
    try:
        assert p.parse("spec c\nx [1,\n 2]\n").items[1].value is not None
    finally:
        p.reload_parser()
    assert built == [1]


# ---- check -------------------------------------------------------------------------------------

def test_base_is_valid():
    assert diags(BASE) == []


def test_integer_settings_refuse_floats():
    d = one(BASE.replace("batch 4", "batch 4.0"))
    assert (d.code, d.message, d.hint) == ("E201", "batch expects a whole number, got 4.0", "write 4")


def test_duplicate_in_a_second_block():
    found = diags(BASE + "model mlp {\n  width 32\n}\n")
    assert [d.code for d in found] == ["E205", "E205"]
    assert found[1].message == "'model.width' is set twice (first at line 6)"
    assert (found[1].span.line, found[1].span.col) == (15, 3)
    assert diags(BASE + "model.depth 3\n") == []  # a block and a dotted key merge


def test_phase_settings_are_checked_against_the_component():
    text = BASE + "curriculum {\n  phase a {\n    task.featurs 3\n    model.width 0\n  }\n  phase b {}\n}\n"
    found = diags(text)
    assert [(d.code, d.message) for d in found] == [
        ("E200", "unknown setting 'featurs' in curriculum.a.task"),
        ("E203", "curriculum.a.model.width must be at least 1, got 0")]
    assert found[0].hint == "did you mean 'features'?"


def test_errors_point_at_values_and_overrides():
    d = one(BASE + "profile smoke {\n  model.width 0\n}\n")
    assert (d.span.line, d.span.col) == (15, 15)
    d = one(BASE + "validation {\n  every 10 steps\n}\nstop when step > 5 and val.loss > 1\n".replace(
        "validation {\n  every 10 steps\n}\n", ""))
    assert (d.code, d.span.line, d.span.col) == ("E600", 14, 24)


def test_ranges():
    assert codes(BASE.replace("features 8", "features 8\n  sizes 3..2")) == ["E200"]
    from specrun.spec.schema import SPEC_TYPES

    assert SPEC_TYPES["range"](None, IntRange(3, 16))
    assert not SPEC_TYPES["range"](None, IntRange(16, 3))
    assert not SPEC_TYPES["range"](None, IntRange(1.5, 3))


@pytest.mark.parametrize("extra", [
    "precision 3\n", "schedule 5\n", "checkpoint 4\n", "curriculum 3\n", "curriculum { phases [1, 2] }\n",
    "curriculum { phases 3\n  phase a {}\n}\n", "max_steps \"x\"\nschedule cosine\n", "task [1] {}\n",
    "checkpoint { best 3 }\n", "checkpoint { best { metric 3 } }\n", "curriculum { axes [1] }\n",
    "curriculum { axis a { phases 3 } }\n", "stop when reached(3)\n", "stop when mean(1, 2) > 0\n",
    "model.width.x 3\n", "expect 3 by 2 GB\n", "schedule warmup_cosine { warmup 5 epochs }\n",
])
def test_malformed_data_never_crashes_the_checker(extra):
    assert codes(BASE.replace("max_steps 100\n", "") + extra)


def test_reached_names_phases_not_metrics():
    text = BASE + "curriculum {\n  phase a {\n    promote when step > 1\n  }\n  phase b {}\n}\n"
    assert diags(text + "stop when reached(b)\n") == []
    d = one(text + "stop when reached(bb)\n")
    assert (d.code, d.hint) == ("E402", "did you mean 'b'?")


# ---- values and expressions --------------------------------------------------------------------

@pytest.mark.parametrize("qty,text", [
    (Qty(500, "steps"), "500 steps"), (Qty(1, "steps"), "1 step"), (Qty(80000, "steps"), "80_000 steps"),
    (Qty(10, "GB"), "10GB"), (Qty(0.5, "epochs"), "0.5 epochs"), (Qty(5, "%"), "5%"), (Qty(1e-05, "s"), "1e-05s"),
])
def test_qty_text_round_trips(qty, text):
    assert str(qty) == text
    from specrun.spec.values import plain

    assert plain(parse(f"x {text}\n").items[0].value) == qty


def test_evaluate():
    ctx = Context(scalars={"step": 10.0}, series={"train.loss": deque([3.0, 2.0, 1.0])},
                  firsts={"train.loss": 3.0})
    gate = parse("x when step >= 10 and mean(train.loss, 3) < 0.9 * first(train.loss)\n").items[0].gate
    assert evaluate(gate, ctx) is True
    missing = parse("x when val.loss < 1\n").items[0].gate
    assert evaluate(missing, ctx) is False  # no data yet: the gate waits
    # three-valued inside: unknown stays unknown under `not`, and the gate still waits
    for text, value in [("not (val.loss < 1)", False), ("not not (val.loss < 1)", False),
                        ("val.loss < 1 or step > 5", True), ("val.loss < 1 and step > 5", False),
                        ("not (val.loss < 1 and step > 5)", False), ("not (step > 50)", True),
                        ("not (val.loss < 1 and step > 50)", True)]:
        assert evaluate(parse(f"x when {text}\n").items[0].gate, ctx) is value, text
    assert evaluate(parse("x when mean(val.loss, 2)\n").items[0].gate, ctx) is None  # a number: unknown
    assert Gate(gate) == Gate(parse("x when (step >= 10) and (mean(train.loss,3) < 0.9*first(train.loss))\n")
                              .items[0].gate)


# ---- diagnostics ---------------------------------------------------------------------------------

def test_excerpt_with_tabs_and_long_lines():
    d = Diagnostic("E100", "m", s.Span("f", 1, 3, 1, 4))
    assert render([d], {"f": "\t\tx 1\n"}) == "f:1:3: error[E100]: m\n 1 |         x 1\n   |         ^"
    long = "x " + "a" * 300 + " BAD" + "b" * 300
    d = Diagnostic("E100", "m", s.Span("f", 1, 304, 1, 307))
    lines = render([d], {"f": long}).splitlines()
    assert lines[1][5:][lines[2].index("^") - 5:].startswith("BAD") and len(lines[1]) < 200


# ---- torch-free --------------------------------------------------------------------------------

def test_validate_never_imports_torch():
    code = (
        "import sys\n"
        "from specrun.cli import main\n"
        "try:\n"
        "    main(['validate', *sys.argv[1:]])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'matplotlib', 'optuna') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *map(str, SPECS)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
