"""Specs that grow along one axis, for the linear-time checks (tests/test_validate_growth.py)
and bench/validate_speed.py. Each shape(n) is a spec of about n lines (or n terms, or n items),
valid or not: both paths must stay linear."""

from __future__ import annotations

from spec_helpers import MINIMAL_SPEC

HEAD = MINIMAL_SPEC.replace("spec minimal", "spec shape", 1)
TASK = "task rule_classification {\n  features 8\n}"
assert TASK in HEAD, "unique_items replaces the task block"


def duplicate_lines(n: int) -> str:
    """The same setting n times: n diagnostics, each with an excerpt of the source."""
    return HEAD + "seed 1\n" * n


def profiles(n: int) -> str:
    """n profiles: validate checks the file with each one applied."""
    return HEAD + "".join(f"profile p{i} {{ max_steps {i + 1} }}\n" for i in range(n))


def list_per_line(n: int) -> str:
    """A list of n items written one per line, every other one of the wrong type."""
    items = "".join(f'    "c{i}:train.loss",\n' if i % 2 else f"    {i},\n" for i in range(n))
    return HEAD + "log {\n  columns [\n" + items + "  ]\n}\n"


def unique_items(n: int) -> str:
    """A list the schema wants without repeats (uniqueItems): n different items, the last a repeat."""
    items = [f"m{i}" for i in range(n - 1)] + ["m0"]
    return HEAD.replace(TASK, "task latin_grid {\n  modes [" + ", ".join(items) + "]\n}")


def long_sum(n: int) -> str:
    """A gate expression of n terms."""
    return HEAD + "expect train.loss < " + " + ".join(["1"] * n) + " by 10 steps\n"


def many_gates(n: int) -> str:
    """n expectations, each checked against the metrics the spec knows."""
    return HEAD + "".join(f"expect train.loss < {i + 1} by {i + 10} steps\n" for i in range(n))


SHAPES = {"duplicate lines": duplicate_lines, "profiles": profiles, "list, one item per line": list_per_line,
          "uniqueItems list": unique_items, "long sum": long_sum, "many expectations": many_gates}
