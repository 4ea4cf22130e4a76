"""`specrun fmt` golden cases (black's style): NAME.input.train -> NAME.output.train.

For each case: formatting the input gives exactly the output; the output is a fixed
point; input and output parse to the same tree (spans aside) and keep every comment.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from specrun.spec import syntax as s
from specrun.spec.fmt import format_source
from specrun.spec.parse import parse

FMT = Path(__file__).parent / "data" / "fmt"
CASES = sorted(p.name[: -len(".input.train")] for p in FMT.glob("*.input.train"))


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")  # no newline translation: \r\n stays


def test_enough_cases():
    assert len(CASES) >= 12


@pytest.mark.parametrize("name", CASES)
def test_fmt_golden(name, golden):
    source = _read(FMT / f"{name}.input.train")
    out = format_source(source, f"{name}.input.train")
    expected = golden(FMT / f"{name}.output.train", out)
    assert out == expected
    assert format_source(out) == out, "not a fixed point"
    assert s.shape(parse(out)) == s.shape(parse(source)), "meaning changed"
    assert sorted(c.text for c in parse(out).comments) == sorted(c.text for c in parse(source).comments)
    assert out.endswith("\n") and not out.endswith("\n\n")
    assert all(line == line.rstrip() for line in out.split("\n")), "trailing whitespace"
    assert "\t" not in out.replace('\\t', '') or "\t" in source.split('"')[1::2], "tabs left in layout"


@pytest.mark.parametrize("name", CASES)
def test_output_is_canonical(name):
    """The expected outputs are themselves formatted: fmt leaves them alone."""
    path = FMT / f"{name}.output.train"
    if not path.exists():
        pytest.skip("no output yet")
    text = _read(path)
    assert format_source(text) == text
