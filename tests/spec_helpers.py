"""Checking spec text in tests: a minimal valid spec and its diagnostics, shared by
the language test files."""

from __future__ import annotations

from specrun.spec.check import check_all_profiles
from specrun.spec.diagnostics import Diagnostic, SpecError
from specrun.spec.parse import parse

MINIMAL_SPEC = """\
spec minimal
task rule_classification {
  features 8
}
model mlp {
  width 16
}
loss cross_entropy
optimizer adamw {
  lr 1e-3
}
batch 4
max_steps 100
"""

# The language tests' spec: the same, named `t`.
BASE = MINIMAL_SPEC.replace("spec minimal", "spec t", 1)


def diags(text: str) -> list[Diagnostic]:
    try:
        return check_all_profiles(parse(text, "t.train"))
    except SpecError as err:
        return err.diagnostics


def codes(text: str) -> list[str]:
    return [d.code for d in diags(text)]


def one(text: str) -> Diagnostic:
    found = diags(text)
    assert len(found) == 1, [f"{d.span}: {d.code} {d.message}" for d in found]
    return found[0]
