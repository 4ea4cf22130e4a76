"""check: a syntax tree -> a Spec, or every problem at once, located (specrun.spec.check)."""

from __future__ import annotations

import pytest

from spec_helpers import BASE
from specrun.spec.check import check, check_all_profiles, load
from specrun.spec.diagnostics import SpecError
from specrun.spec.parse import parse


def test_profile_then_set_apply_in_order():
    text = BASE + "profile small {\n  batch 2\n  optimizer.lr 1e-2\n}\n"
    spec = check(parse(text, "t.train"), "small", ("optimizer.lr=5e-3",))
    assert spec.data["batch"] == 2 and spec.data["optimizer"]["lr"] == 5e-3
    assert spec.profile == "small" and spec.overrides == ("optimizer.lr=5e-3",)


def test_every_error_is_collected_sorted_and_located():
    text = BASE.replace("batch 4", "batch -4").replace("lr 1e-3", "lr 0")
    with pytest.raises(SpecError) as err:
        check(parse(text, "t.train"))
    spans = [(d.span.line, d.span.col) for d in err.value.diagnostics]
    assert len(spans) == 2 and spans == sorted(spans)
    assert all(d.span.path == "t.train" for d in err.value.diagnostics)


def test_a_set_error_points_at_the_option():
    with pytest.raises(SpecError) as err:
        check(parse(BASE, "t.train"), None, ("optimizer.lr=-1",))
    (diag,) = err.value.diagnostics
    assert diag.span.path == "<--set 1>" and "optimizer.lr" in diag.message


def test_every_profile_is_checked_by_validate():
    text = BASE + "profile broken {\n  batch 0\n}\n"
    found = check_all_profiles(parse(text, "t.train"))
    assert any("batch" in d.message for d in found)


def test_the_hash_is_the_experiment_not_its_layout_or_where_it_resumes():
    a = check(parse(BASE, "t.train"))
    b = check(parse(BASE.replace("batch 4", "batch   4  # four"), "t.train"))
    c = check(parse(BASE, "t.train"), None, ("checkpoint.resume=none",))
    d = check(parse(BASE, "t.train"), None, ("batch=8",))
    assert a.hash == b.hash == c.hash != d.hash


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "t.train"
    path.write_text(BASE)
    assert load(str(path)).name == "t"
