"""The Python API: the CLI's code paths, callable from a script."""

from __future__ import annotations

import pytest

import specrun
from specrun.spec.diagnostics import SpecError

from .conftest import FAST_SPEC, csv_rows, write_spec


def test_load_spec_applies_profile_and_overrides(tmp_path):
    path = write_spec(tmp_path, FAST_SPEC + "profile short {\n  max_steps 4\n}\n")
    spec = specrun.load_spec(path, profile="short", overrides=["optimizer.lr=0.05"])
    plan = specrun.build_plan(spec)
    assert plan.settings["max_steps"] == 4 and plan.components["optimizer"]["params"]["lr"] == 0.05
    assert plan.profile == "short" and plan.overrides == ("optimizer.lr=0.05",)
    assert specrun.build_plan(path, "short").settings["max_steps"] == 4


def test_spec_errors_raise_with_every_problem(tmp_path):
    path = write_spec(tmp_path, FAST_SPEC)
    with pytest.raises(SpecError) as err:
        specrun.load_spec(path, overrides=["lr=1", "optimizer.lr=-1"])
    assert [d.code for d in err.value.diagnostics] == ["E200", "E203"]
    assert "did you mean 'optimizer.lr'?" in err.value.render()
    assert [d.code for d in specrun.validate(path, overrides=["optimizer.lr=-1"])] == ["E203"]


def test_run_calls_back_with_each_metrics_row(tmp_path):
    rows = []
    result = specrun.run(write_spec(tmp_path, FAST_SPEC), run_dir=str(tmp_path / "run"), on_metrics=rows.append)
    assert result.ok and result.status == "finished" and result.step == 12
    assert result.run_dir == str(tmp_path / "run")
    _, written = csv_rows(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == [int(r["step"]) for r in written] == list(range(1, 13))
    assert rows[-1]["train.loss"] == pytest.approx(float(written[-1]["train.loss"]), rel=1e-5)


def test_reading_runs_back(tmp_path):
    specrun.run(write_spec(tmp_path, FAST_SPEC), run_dir=str(tmp_path / "runs" / "fast_test" / "one"))
    (info,) = specrun.runs("fast_test", base=tmp_path / "runs")
    assert info.status == "finished" and info.step == 12 and info.run_id == "one"
    assert specrun.read_run("fast_test", base=tmp_path / "runs").run_id == "one"
    assert [s for s, _ in specrun.metrics(info.path)["train.loss"]] == list(range(1, 13))
    assert [e["event"] for e in specrun.events(info.path)][0] == "start"
