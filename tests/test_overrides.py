"""spec/overrides.py: `--set` options (and profiles) applied to the located data, spanned at
`<--set N>`. tests/test_plan_language.py shows a few of these errors through the CLI; here
are the rules through parse_set and apply_overrides."""

from __future__ import annotations

import pytest

from spec_helpers import BASE
from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic
from specrun.spec.document import locate
from specrun.spec.overrides import apply_overrides, parse_set
from specrun.spec.parse import parse

CURRICULUM = BASE + "curriculum {\n  phase warm { task.features 4 }\n  phase main {}\n}\n"


def _applied(*options: str, text: str = CURRICULUM):
    loc = locate(parse(text, "t.train"))
    for i, option in enumerate(options, 1):
        st = parse_set(option, i)
        assert isinstance(st, s.Setting), st
        apply_overrides(loc, (st,), "--set")
    return loc


def test_a_setting_is_spanned_at_its_option():
    st = parse_set("optimizer.lr=3e-4", 2)
    assert isinstance(st, s.Setting) and st.dotted == "optimizer.lr"
    assert (st.span.path, st.span.line, st.span.col) == ("<--set 2>", 1, 1)


@pytest.mark.parametrize("option, code, col, message, hint", [
    ("=3", "E502", 1, "--set expects path=value, got '=3'", "e.g. --set optimizer.lr=3e-4"),
    ("optimizer.lr=  ", "E502", 13, "--set optimizer.lr= has no value",
     'e.g. --set optimizer.lr=VALUE; a list is [a, b], a string "in quotes"'),
    ("log.text=out/a.log", "E100", 13, "unexpected '/'",
     "a string value goes in double quotes: --set 'log.text=\"out/a.log\"'"),
    ("optimizer.lr=1; batch=3", "E100", 22, "unexpected '='",
     "--set takes one PATH=VALUE: quote the value if it has spaces, repeat --set for another setting"),
    ("batch=1 2", "E100", 9, "unexpected number 2 after a complete setting",
     "--set takes one PATH=VALUE: quote the value if it has spaces, repeat --set for another setting"),
])
def test_a_malformed_option_is_one_located_diagnostic(option, code, col, message, hint):
    diag = parse_set(option, 1)
    assert isinstance(diag, Diagnostic)
    assert (diag.code, diag.span.path, diag.span.col, diag.message, diag.hint) == (code, "<--set 1>", col, message, hint)


def test_a_block_merges_into_the_block_it_overrides():
    loc = _applied("model={ depth 3 }")
    assert loc.data["model"] == {"type": "mlp", "width": 16, "depth": 3}
    assert loc.spans[("model", "depth")].path == "<--set 1>"


def test_a_value_replaces_and_records_where_it_came_from():
    loc = _applied("max_steps=7", 'validation.every="10 steps"')
    assert loc.data["max_steps"] == 7 and loc.spans[("max_steps",)].path == "<--set 1>"
    assert loc.data["validation"] == {"every": "10 steps"}  # a new block: the schema judges it later
    assert loc.diagnostics == []


def test_a_phase_is_reached_by_name_and_its_component_settings_go_under_set():
    loc = _applied("curriculum.warm.task.features=6")
    assert loc.data["curriculum"]["phases"][0] == {"name": "warm", "set": {"task": {"features": 6}}}


def test_a_path_through_a_value_targets_no_setting():
    loc = _applied("batch.size=3")
    (diag,) = loc.diagnostics
    assert (diag.code, diag.message) == ("E500", "--set targets no setting: 'batch.size' goes through a value")
    assert loc.data["batch"] == 4  # left as the file has it


def test_an_unknown_phase_names_the_phases_there_are():
    (diag,) = _applied("curriculum.wram.task.features=6").diagnostics
    assert diag.message == "--set targets no setting: there is no phase 'wram'" and diag.hint == "did you mean 'warm'?"
    (far,) = _applied("curriculum.zzz.task.features=6").diagnostics
    assert far.hint == "phases: warm, main"
