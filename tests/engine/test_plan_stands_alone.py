"""execute() needs nothing but the Plan: no spec text parsed, no schema, no formatter, no lark.

The plan is built first (that parses and checks the spec); then every way back to the
language is made to fail, and the run, its interruption and its resume (which compares
the two plans) still go through.
"""

from __future__ import annotations

import lark
import pytest

import specrun.plan as plan_module
import specrun.spec.fmt as fmt
import specrun.spec.parse as parse
import specrun.spec.schema as schema
from specrun.engine.execute import Options, execute

from .conftest import FAST_SPEC, load_plan, train_losses, write_spec


def _forbidden(*args, **kwargs):
    raise AssertionError("execute went back to the spec's language")


@pytest.fixture
def no_way_back(monkeypatch):
    """From here on, parsing, the schema, the formatter and lark all fail."""

    def forbid():
        for module, name in ((parse, "parse"), (parse, "parse_expression"), (schema, "spec_schema"),
                             (plan_module, "spec_schema"), (fmt, "format_data"), (plan_module, "format_data"),
                             (lark.Lark, "__init__"), (lark.Lark, "_load")):
            monkeypatch.setattr(module, name, _forbidden)

    return forbid


def test_a_run_its_interrupt_and_its_resume_use_only_the_plan(tmp_path, monkeypatch, signal_at, no_way_back):
    monkeypatch.chdir(tmp_path)
    _, plan = load_plan(write_spec(tmp_path, FAST_SPEC + "expect train.loss < 100 by 6 steps\n"))
    parse.reload_parser()  # a parser built earlier in this process must not be reused either
    no_way_back()
    try:
        signal_at(5)
        assert execute(plan, Options(run_dir=str(tmp_path / "run"), quiet=True)).code == 130
        out = execute(plan, Options(run_dir=str(tmp_path / "run"), quiet=True))
        assert out.code == 0, out.message
    finally:
        monkeypatch.undo()
        parse.reload_parser()
    assert sorted(train_losses(tmp_path / "run")) == list(range(1, 13))
