"""The Plan stands alone: built once from a Spec, it round-trips through plan.json,
lists every gate in one place, and says what changed between two runs without text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specrun.plan import Plan, build_plan, plan_changes
from specrun.spec.check import load
from specrun.spec.parse import parse

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "specs").glob("*.train"))


def _profiles(path: Path) -> list[str | None]:
    return [None] + sorted(p.name for p in parse(path.read_text(), str(path)).items
                           if type(p).__name__ == "Profile")


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_plan_json_round_trips(path):
    for profile in _profiles(path):
        plan = build_plan(load(str(path), profile))
        text = json.dumps(plan.to_json())
        again = Plan.from_json(json.loads(text))
        assert again == plan, (path.name, profile)
        assert json.dumps(again.to_json()) == text


def test_gates_are_listed_once(tmp_path):
    spec = tmp_path / "g.train"
    spec.write_text((REPO / "specs" / "builtin_rule.train").read_text()
                    + "stop when plateau(val.loss, patience=3)\n")
    plan = build_plan(load(str(spec)))
    texts = [str(g) for g in plan.gates]
    assert "plateau(val.loss, patience=3)" in texts
    assert any(t.startswith("phase.steps >=") for t in texts)  # a promotion
    assert any("first(train.loss)" in t for t in texts)  # the expectation


def test_changes_between_plans_name_the_setting():
    path = str(REPO / "specs" / "builtin_rule.train")
    before = build_plan(load(path)).to_json()
    after = build_plan(load(path, None, ("optimizer.lr=0.02", "checkpoint.resume=none")))
    assert plan_changes(before, after) == ["optimizer.lr: 0.003 -> 0.02"]
    assert plan_changes({"settings": "x"}, after) == ["(the earlier run's plan.json cannot be read)"]


def test_spec_text_is_the_canonical_spec():
    plan = build_plan(load(str(REPO / "specs" / "builtin_rule.train"), "smoke"))
    assert plan.spec_text.startswith("spec builtin_rule\n")
    assert build_plan(load(str(REPO / "specs" / "builtin_rule.train"), "smoke")).spec_text == plan.spec_text
