"""Known-bad specs and the exact text `specrun validate` prints for each.

tests/data/errors/NAME.train is validated from inside its folder (so paths print as
NAME.train); NAME.expected is the whole of stdout: location, code, message, source
line, caret and hint of every problem. A change in wording, location or hint shows up
here as a diff to review.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from specrun.cli import main

ERRORS = Path(__file__).parent / "data" / "errors"
CASES = sorted(p.name[: -len(".train")] for p in ERRORS.glob("*.train"))


def test_enough_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", CASES)
def test_error_golden(name, monkeypatch, golden):
    monkeypatch.chdir(ERRORS)
    result = CliRunner().invoke(main, ["validate", f"{name}.train"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    expected = golden(ERRORS / f"{name}.expected", result.stdout)
    assert result.stdout == expected
    # every problem names this file, a code and a position on a real line
    text = (ERRORS / f"{name}.train").read_bytes().decode("utf-8", "replace")
    n_lines = len(text.split("\n"))
    for line in result.stdout.splitlines():
        if line.startswith(f"{name}.train:"):
            _, lineno, col, rest = line.split(":", 3)
            assert 1 <= int(lineno) <= n_lines and int(col) >= 1
            assert rest.startswith(" error[E")


def test_json_format_matches_text(monkeypatch):
    """The same problems come out as JSON, one object each, with the same positions."""
    import json

    monkeypatch.chdir(ERRORS)
    runner = CliRunner()
    for name in ("unknown_metric", "duplicate_block_setting", "missing_close_brace"):
        text = runner.invoke(main, ["validate", f"{name}.train"]).stdout
        items = json.loads(runner.invoke(main, ["validate", "--format", "json", f"{name}.train"]).stdout)
        heads = [line for line in text.splitlines() if line.startswith(f"{name}.train:")]
        assert [f"{d['path']}:{d['line']}:{d['col']}: error[{d['code']}]: {d['message']}" for d in items] == heads
    assert os.getcwd() == str(ERRORS)


def test_every_code_is_known_and_documented():
    import re

    from specrun.spec.diagnostics import CODES

    repo = ERRORS.parents[2]
    used = set()
    for path in (repo / "src" / "specrun").rglob("*.py"):
        used |= set(re.findall(r'"(E\d{3})"', path.read_text(encoding="utf-8")))
    assert used <= set(CODES), used - set(CODES)
    doc = (repo / "docs" / "errors.md").read_text(encoding="utf-8")
    assert [c for c in CODES if f"### {c}\n" not in doc] == []


def test_documented_examples_are_current():
    """docs/errors.md shows golden outputs; they must be what validate prints today."""
    import re

    doc = (ERRORS.parents[2] / "docs" / "errors.md").read_text(encoding="utf-8")
    shown = re.findall(r"```\n\$ specrun validate (\w+)\.train\n(.*?)\n```", doc, re.S)
    assert len(shown) >= 20
    for name, text in shown:
        expected = ERRORS / f"{name}.expected"
        if expected.exists():
            assert text + "\n" == expected.read_text(encoding="utf-8"), name
