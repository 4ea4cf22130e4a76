"""Fuzzing what a run directory holds (issue #14): index.json, run.json, plan.json, metrics.csv,
events.jsonl and the checkpoints are read back from disk, so any bytes in them are possible.

Whatever the damage, `specrun runs` and `specrun plot` show the run (marked damaged where it is),
the checkpointer skips or rebuilds what it cannot trust, and resuming ends with an exit status and
one line — never a traceback. Nothing outside the run directory is touched.
"""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specrun.cli import main
from specrun.cli.plot import load_healthy
from specrun.cli.runs import list_runs
from specrun.engine.checkpoint import Checkpointer

from .conftest import FAST_SPEC, run_inproc, write_spec

FILES = ["checkpoints/index.json", "run.json", "plan.json", "metrics.csv", "events.jsonl", "checkpoints/final.pt"]
FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real run (12 steps, checkpoints at 8 and 12, final.pt), copied for each mutation."""
    base = tmp_path_factory.mktemp("fuzz_rundir")
    spec = write_spec(base, FAST_SPEC)
    run_dir = base / "runs" / "fast_test" / "r0"
    import os

    cwd = os.getcwd()
    os.chdir(base)
    try:
        assert run_inproc(spec, run_dir).code == 0
    finally:
        os.chdir(cwd)
    return spec, run_dir


def _mutate(path, how, data) -> None:
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))])
    elif how == "flip":
        if raw:
            at = data.draw(st.integers(0, len(raw) - 1))
            path.write_bytes(raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:])
    elif how == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=200)))
    elif how == "json":
        path.write_text(json.dumps(data.draw(JSON)))
    elif how == "field" and path.suffix == ".json":
        try:
            doc = json.loads(raw)
        except ValueError:
            return
        node = doc
        while isinstance(node, (dict, list)) and node:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            key = data.draw(st.sampled_from(keys))
            if not isinstance(node[key], (dict, list)) or data.draw(st.booleans()):
                node[key] = data.draw(JSON)
                break
            node = node[key]
        path.write_text(json.dumps(doc))


def _copy(run_dir, tmp_path):
    target = tmp_path / "runs" / "fast_test" / "r0"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run_dir, target)
    return target


@FUZZ
@given(data=st.data(), name=st.sampled_from(FILES),
       how=st.sampled_from(["truncate", "flip", "bytes", "json", "field"]))
def test_runs_plot_and_the_checkpointer_survive_any_damage(finished_run, tmp_path, data, name, how):
    spec, original = finished_run
    run_dir = _copy(original, tmp_path)
    _mutate(run_dir / name, how, data)
    (info,) = list_runs(base=tmp_path / "runs")
    assert info.run_id == "r0" and info.status in ("finished", "damaged", "unknown", "interrupted")
    loaded, warnings = load_healthy([run_dir], ["r0"])
    assert len(loaded) + len(warnings) >= 1
    ck = Checkpointer(run_dir / "checkpoints", 2, "step_{step}.pt", "best.pt", "final.pt")
    found = ck.load_latest(lambda message: None)
    assert found is None or found[1].parent == run_dir / "checkpoints"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing written beside the run


@pytest.mark.parametrize("name, text", [
    ("checkpoints/index.json", '{"checkpoints": [{"file": "../../../../etc/passwd", "step": 99, "kind": "final", '
                               '"bytes": 1}]}'),
    ("checkpoints/index.json", '{"checkpoints": "none"}'),
    ("checkpoints/index.json", "\x00\x01garbage"),
    ("run.json", '{"status": 5, "step": "twelve", "started": "yesterday", "phases": [1]}'),
    ("run.json", "[]"),
    ("metrics.csv", b"step,train.loss\n1,\xff\xfe\n2,0.5\n"),
    ("metrics.csv", "step,train.loss\n1,0.5\x00\n"),
    ("events.jsonl", '{"event": "validation", "step": "x", "metrics": {"loss": 1}}\n[1, 2]\n'),
    ("plan.json", '{"curriculum": "abc", "settings": []}'),
    ("checkpoints/final.pt", b"PK\x03\x04 not a zip"),
])
def test_resuming_and_the_commands_end_cleanly_on_a_damaged_run(finished_run, tmp_path, monkeypatch, name, text):
    spec, original = finished_run
    run_dir = _copy(original, tmp_path)
    target = run_dir / name
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    runs = runner.invoke(main, ["runs", "--base", str(tmp_path / "runs")])
    assert runs.exception is None or isinstance(runs.exception, SystemExit), runs.output
    assert "r0" in runs.output
    plot = runner.invoke(main, ["plot", str(run_dir), "-o", str(tmp_path / "p.svg")])
    assert plot.exception is None or isinstance(plot.exception, SystemExit), plot.output
    out = run_inproc(spec, run_dir, sets=("max_steps=14",), allow_spec_change=True)
    assert out.code in (0, 1) and "traceback in" not in out.message, out.message


def test_runs_and_plot_show_the_healthy_runs_and_mark_the_damaged(finished_run, tmp_path):
    _, original = finished_run
    root = tmp_path / "runs" / "fast_test"
    for name in ("healthy", "bad_status", "bad_metrics"):
        shutil.copytree(original, root / name)
    (root / "bad_status" / "run.json").write_text('{"status": "finished", "step": "12", "started": []}')
    (root / "bad_metrics" / "metrics.csv").write_bytes(b"step,train.loss\n1,\xff\n2,0.5\n")
    by_id = {r.run_id: r for r in list_runs(base=tmp_path / "runs")}
    assert by_id["healthy"].status == "finished" and by_id["healthy"].message == "finished 12 steps"
    assert by_id["bad_status"].status == "damaged" and "step, started of the wrong type" in by_id["bad_status"].message
    assert by_id["bad_metrics"].status == "damaged" and "not UTF-8" in by_id["bad_metrics"].message
    table = CliRunner().invoke(main, ["runs", "--base", str(tmp_path / "runs")])
    assert table.exit_code == 0 and all(name in table.output for name in by_id) and "damaged" in table.output
    (root / "bad_status" / "plan.json").write_text('{"curriculum": "x"}')
    plot = CliRunner().invoke(main, ["plot", *(str(root / n) for n in by_id), "-o", str(tmp_path / "p.png")])
    assert plot.exit_code == 0, plot.output
    assert "plan.json is damaged" in plot.output and (tmp_path / "p.png").exists()
