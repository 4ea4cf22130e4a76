"""Every check `specrun validate` makes grows linearly with the spec (issue #14, item 1).

Each shape is validated at two sizes, eight times apart, and the CPU time compared: linear
work grows about 8x (less where fixed costs weigh), quadratic work up to 64x. A ratio, never a wall-clock limit, so a slow or
busy machine does not fail it. bench/validate_speed.py prints the seconds per 10k lines.
"""

from __future__ import annotations

import gc
import time

import pytest

from specrun.spec.check import check_all_profiles
from specrun.spec.diagnostics import SpecError, render
from specrun.spec.parse import parse

from spec_shapes import SHAPES  # tests/ is on sys.path (rootdir conftest)

GROWTH = 8
LIMIT = 14.0  # measured: 8-10 now; 17-47 for the shapes that were quadratic

SMALL = {"duplicate lines": 500, "profiles": 125, "list, one item per line": 1000, "uniqueItems list": 500,
         "long sum": 1000, "many expectations": 125}


def validate_text(text: str) -> str:
    """What `specrun validate` does with one file: parse, check it and every profile, render."""
    try:
        diags = check_all_profiles(parse(text, "shape.train"))
    except SpecError as err:
        diags = err.diagnostics
    return render(sorted(diags, key=lambda d: d.sort_key()), {"shape.train": text}, "text")


def cpu_seconds(text: str, repeats: int = 3) -> float:
    """Best CPU time of a few runs, the garbage collector paused: its passes grow with whatever
    else the process holds, which is not the checks' own work."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            validate_text(text)
            best = min(best, time.process_time() - start)
        finally:
            gc.enable()
    return best


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_validate_work_grows_linearly(shape):
    make, n = SHAPES[shape], SMALL[shape]
    validate_text(make(n))  # warm: parser tables, schemas, catalog
    small, large = cpu_seconds(make(n)), cpu_seconds(make(GROWTH * n))
    ratio = large / max(small, 1e-3)
    assert ratio < LIMIT, f"{shape}: {GROWTH}x the size took {ratio:.1f}x the time ({small:.3f}s -> {large:.3f}s)"


def test_the_shapes_say_what_is_wrong():
    """Each shape is refused or accepted with a located message, not by a crash or a timeout."""
    assert "'seed' is set twice" in validate_text(SHAPES["duplicate lines"](3))
    assert "more than 100 profiles" in validate_text(SHAPES["profiles"](101))
    assert validate_text(SHAPES["profiles"](100)) == ""
    assert "log.columns.2 expects a name or a string, got 2" in validate_text(SHAPES["list, one item per line"](50))
    assert 'task.modes lists "m0" twice' in validate_text(SHAPES["uniqueItems list"](5))
    assert "expression nests deeper than 64 levels" in validate_text(SHAPES["long sum"](300_000))
    assert validate_text(SHAPES["many expectations"](20)) == ""
