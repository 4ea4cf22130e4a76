"""The Plan's typed sections: built from its settings for every reference spec and profile,
equal again after plan.json, and refusing a setting no section declares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specrun.plan import Plan, build_plan
from specrun.sections import Best, CheckpointPolicy, PlanError, Sections
from specrun.spec.check import load
from specrun.spec.parse import parse
from specrun.spec.values import Gate

from spec_helpers import MINIMAL_SPEC

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "specs").glob("*.train"))


def _plans(path: Path):
    profiles = [p.name for p in parse(path.read_text(), str(path)).items if type(p).__name__ == "Profile"]
    return [build_plan(load(str(path), profile)) for profile in [None] + profiles]


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_reference_plan_has_typed_sections_that_survive_plan_json(path):
    for plan in _plans(path):
        again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
        assert Sections.of(again.settings) == Sections.of(plan.settings)
        assert again.checkpoint == plan.checkpoint and again.expectations == plan.expectations
        assert all(isinstance(e.expr, Gate) for e in plan.expectations)
        assert isinstance(plan.checkpoint.keep, int) and isinstance(plan.log.progress, float)


def test_sections_read_the_spec(tmp_path):
    spec = tmp_path / "s.train"
    spec.write_text(MINIMAL_SPEC + """
checkpoint {
  keep 5
  best {
    metric val.loss
    min_delta 0.01
  }
  on_interrupt none
}
validation { every 10 steps }
memory { ram_limit 2GB }
log {
  progress 5s
  include [perplexity]
}
expect train.loss < 3 by 50 steps warn
expect train.loss < 9 throughout
""")
    plan = build_plan(load(str(spec)))
    assert plan.checkpoint.keep == 5 and plan.checkpoint.on_interrupt == "none"
    assert plan.checkpoint.best == Best("val.loss", None, "best.pt", 0.01)
    assert plan.validation.every == 10 and plan.validation.batches == 10
    assert plan.memory.ram_limit == 2 * 10**9 and plan.memory.scope == "system"
    assert plan.log.progress == 5.0 and plan.log.include == ["perplexity"]
    first, second = plan.expectations
    assert (first.by, first.severity, first.at_end) == (50, "warn", False)
    assert second.throughout and second.by is None and second.severity == "fail"
    assert plan.distributed is None and plan.world_size == 1 and plan.profiler is None
    assert plan.stop is None and plan.max_steps == 100 and plan.clip_grad_norm is None


def test_a_setting_no_section_declares_is_refused():
    ck = {"dir": "c", "name": "n", "keep": 1, "final": "f", "resume": "none", "resume_phase": "checkpoint",
          "on_interrupt": "save", "on_spec_change": "refuse", "optimizer_mismatch": "fresh"}
    assert CheckpointPolicy.of(ck).keep == 1
    with pytest.raises(PlanError, match="checkpoint: keep_every not a setting"):
        CheckpointPolicy.of({**ck, "keep_every": 3})
    with pytest.raises(TypeError):  # and one it needs is missing
        CheckpointPolicy.of({k: v for k, v in ck.items() if k != "keep"})
