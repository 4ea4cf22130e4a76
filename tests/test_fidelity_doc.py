"""docs/fidelity.md quotes spec lines: each quoted line must be in its spec, so the map
from a document's settings to the spec cannot silently go stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fidelity.md"
SECTION = re.compile(r"^## (\w+) — `shared/seeds/(\w+)\.md` → `specs/(\w+)\.train`$", re.M)
NOT_SPEC_TEXT = ("--set ", "specrun ")  # commands, not lines of the spec


def _sections() -> list[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    marks = list(SECTION.finditer(text))
    return [(m.group(3), text[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(text)])
            for i, m in enumerate(marks)]


def _quoted(section: str) -> list[str]:
    """The backticked text of each table row's Spec column."""
    out = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) == 3 and not set(cells[1]) <= {"-"} and cells[1] != "Spec":
            out += [q for q in re.findall(r"`([^`]+)`", cells[1]) if not q.startswith(NOT_SPEC_TEXT)]
    return out


def test_every_reference_spec_has_a_section():
    """A reference spec names its design document (``# Document: shared/seeds/...``)."""
    specs = {p.stem for p in (ROOT / "specs").glob("*.train")
             if "# Document: shared/seeds/" in p.read_text(encoding="utf-8")}
    assert len(specs) == 5 and {name for name, _ in _sections()} == specs


@pytest.mark.parametrize("name, section", _sections(), ids=[n for n, _ in _sections()])
def test_each_quoted_spec_line_is_in_the_spec(name, section):
    spec = (ROOT / "specs" / f"{name}.train").read_text(encoding="utf-8")
    quoted = _quoted(section)
    assert len(quoted) > 15
    missing = [q for q in quoted if q not in spec]
    assert not missing, missing
