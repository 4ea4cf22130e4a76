"""`specrun diff` golden cases: NAME.a.train, NAME.b.train -> NAME.expected.

NAME.expected is the whole stdout of `specrun diff NAME.a.train NAME.b.train`; empty
means "same meaning" and exit 0, anything else exit 1. Diffing a file with itself, or
b with a, says nothing / the same lines reversed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from specrun.cli import main
from specrun.spec.diff import diff
from specrun.spec.parse import parse

DIFF = Path(__file__).parent / "data" / "diff"
CASES = sorted(p.name[: -len(".a.train")] for p in DIFF.glob("*.a.train"))


def test_enough_cases():
    assert len(CASES) >= 6
    assert any(not (DIFF / f"{n}.expected").read_text() for n in CASES if (DIFF / f"{n}.expected").exists())


@pytest.mark.parametrize("name", CASES)
def test_diff_golden(name, monkeypatch, golden):
    monkeypatch.chdir(DIFF)
    result = CliRunner().invoke(main, ["diff", f"{name}.a.train", f"{name}.b.train"])
    expected = golden(DIFF / f"{name}.expected", result.stdout)
    assert result.stdout == expected
    assert result.exit_code == (1 if expected else 0), result.output


@pytest.mark.parametrize("name", CASES)
def test_diff_is_symmetric(name):
    a = parse((DIFF / f"{name}.a.train").read_text(encoding="utf-8"))
    b = parse((DIFF / f"{name}.b.train").read_text(encoding="utf-8"))
    assert diff(a, a) == [] and diff(b, b) == []
    forward = sorted(line.split(": ", 1)[0] for line in diff(a, b))
    backward = sorted(line.split(": ", 1)[0] for line in diff(b, a))
    assert forward == backward
