"""`specrun plot`: what is drawn (metrics, promotions, thresholds), and that the PNG is a picture."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from specrun.cli.commands import plot_command
from specrun.cli.plot import (
    Gate, PlotError, PlotUnavailable, build_figure, default_metrics, expand, gate_series, gate_thresholds,
    gates, load, phase_spans, plot_runs, run_labels,
)

pytest.importorskip("matplotlib")

PLAN = {
    "name": "toy",
    "profile": None,
    "curriculum": [
        {"axis": "size", "phases": [
            {"name": "small", "promote": "phase.steps >= 20 and mean(train.accuracy, 10) >= 0.75"},
            {"name": "big", "promote": None}]},
        {"axis": "mode", "phases": [
            {"name": "easy", "promote": "0.8 > val.loss or step >= 5000"},
            {"name": "hard", "promote": None}]},
    ],
    "switches": [{"target": "model", "name": "memory.enable", "gate": "train.bits > 3"}],
    "settings": {"stop": "plateau(val.loss, patience=3, min_delta=0.01)",
                 "expect": [{"expr": "train.loss < 0.9 * first(train.loss)", "by": 100}],
                 "checkpoint": {"best": {"metric": "val.accuracy"}}},
}


def make_run(base: Path, run_id: str, loss_scale: float = 1.0, promote_at: int = 30) -> Path:
    path = base / "toy" / run_id
    path.mkdir(parents=True)
    (path / "plan.json").write_text(json.dumps(PLAN))
    rows = ["step,segment,phase.size,phase.mode,train.loss,train.accuracy,train.bits,val.loss,val.accuracy"]
    for step in range(10, 110, 10):
        val = f"{loss_scale * 2 / step ** 0.5:.4f},{min(1, step / 90):.3f}" if step % 50 == 0 else ","
        rows.append(f"{step},0,{'small' if step < promote_at else 'big'},easy,"
                    f"{loss_scale * 3 / step ** 0.5:.4f},{min(1.0, step / 100):.3f},{step / 20},{val}")
    (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    events = [{"time": 1.0, "step": 0, "event": "start"},
              {"time": 2.0, "step": promote_at, "event": "phase", "axis": "size", "old": "small", "new": "big",
               "values": {}},
              {"time": 3.0, "step": 100, "event": "end", "status": "finished"}]
    (path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (path / "run.json").write_text(json.dumps({"status": "finished", "spec": "toy", "started": 1.0,
                                               "updated": 3.0, "step": 100}))
    return path


def assert_picture(png: Path) -> None:
    from matplotlib.image import imread

    assert png.exists() and png.stat().st_size > 5000
    pixels = imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 500
    rgb = pixels[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05, "the image is (nearly) one colour"
    assert len({tuple(c) for c in rgb[:: 97]}) > 10, "too few distinct colours for a chart"


# ---- what the gates read ---------------------------------------------------------------------

def test_gates_and_their_series():
    found = gates(PLAN)
    assert [g.label for g in found] == ["promote size.small", "promote mode.easy", "stop",
                                        "switch model.memory.enable", "expect"]
    assert gate_series(found[0].text) == {"train.accuracy"}
    assert gate_series(found[2].text) == {"val.loss"}
    assert default_metrics([load_plan_only(PLAN)]) == [
        "train.loss", "val.loss", "train.accuracy", "train.bits", "val.accuracy"]


def load_plan_only(plan):
    from specrun.cli.plot import RunData

    return RunData(Path("x"), "x", plan, {})


@pytest.mark.parametrize("text, expected", [
    ("phase.steps >= 500 and mean(train.accuracy, 100) >= 0.95", [("train.accuracy", 0.95)]),
    ("0.8 > val.loss or step >= 5000", [("val.loss", 0.8)]),  # constant on the left; `step` is no series
    ("val.loss < -0.5", [("val.loss", -0.5)]),
    ("train.loss < 0.9 * first(train.loss)", []),  # relative: no fixed line to draw
    ("ema(train.acc, 0.1) >= 0.9 and val.loss <= 2", [("train.acc", 0.9), ("val.loss", 2.0)]),
])
def test_thresholds(text, expected):
    assert [(t.series, t.value) for t in gate_thresholds(Gate("g", text))] == expected


def test_thresholds_fall_back_to_text_when_unparseable():
    # written by some other version of the language: still find the obvious comparison
    found = gate_thresholds(Gate("promote a", "mean(train.accuracy, 100) >= 0.95 @@ new_syntax"))
    assert [(t.series, t.value) for t in found] == [("train.accuracy", 0.95)]
    assert found[0].label == "promote a: mean(train.accuracy, 100) >= 0.95 @@ new_syntax"


def test_expand_short_names():
    available = {"train.loss", "val.loss", "train.accuracy"}
    assert expand(["accuracy", "loss", "val.x"], available) == ["train.accuracy", "train.loss", "val.loss", "val.x"]


# ---- the figure -----------------------------------------------------------------------------------

def test_figure_panels_promotions_thresholds(tmp_path):
    run = load(make_run(tmp_path, "r1"))
    fig, warnings = build_figure([run])
    assert warnings == []
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["loss", "accuracy", "bits"]
    loss, accuracy, bits = axes
    labels = {line.get_label() for line in loss.lines}
    assert {"train.loss", "val.loss"} <= labels
    # the promotion at step 30: a vertical line on every panel
    for ax in axes:
        assert any(list(line.get_xdata()) == [30, 30] for line in ax.lines)
    # a promotion gate's threshold over its phase's steps only; other gates' across the run
    horizontal = lambda ax: {line.get_ydata()[0] for line in ax.lines if list(line.get_xdata()) == [0, 1]}
    spans = lambda ax: {(seg[0][0], seg[1][0], seg[0][1]) for c in ax.collections for seg in c.get_segments()}
    assert spans(accuracy) == {(0, 30, 0.75)}  # size.small lasted until the promotion at step 30
    assert spans(loss) == {(0, 100, 0.8)}  # mode.easy: the whole run
    assert horizontal(bits) == {3} and spans(bits) == set()  # a switch: across the run
    # a compound gate is labelled whole, not by the half that has a constant
    assert any(t.get_text() == "promote size.small: phase.steps >= 20 and mean(train.accuracy, 10) >= 0.75"
               for t in accuracy.texts)


def test_phase_spans_follow_the_promotions(tmp_path):
    run = load(make_run(tmp_path, "r1", promote_at=40))
    assert phase_spans(run, "size", "small") == [(0, 40)] and phase_spans(run, "size", "big") == [(40, 100)]
    assert phase_spans(run, "mode", "hard") == []


def test_legends_name_runs_by_profile_and_overrides(tmp_path):
    def run_with(run_id, profile=None, overrides=()):
        path = make_run(tmp_path, run_id)
        (path / "plan.json").write_text(json.dumps({**PLAN, "profile": profile, "overrides": list(overrides)}))
        return path

    a = run_with("20260101-000000-1", "smoke", ["optimizer.lr=1e-3"])
    b = run_with("20260101-000100-2", "smoke", ["optimizer.lr=3e-3"])
    c = run_with("20260101-000200-3")
    assert run_labels([a, b, c]) == ["-p smoke optimizer.lr=1e-3", "-p smoke optimizer.lr=3e-3", "(as written)"]
    d = run_with("20260101-000300-4", "smoke", ["optimizer.lr=1e-3"])  # the same again: the id tells them apart
    assert run_labels([a, d]) == [a.name, d.name]
    assert run_labels([a, b, d])[0] == f"-p smoke optimizer.lr=1e-3 {a.name}"


def test_promotions_at_the_same_step_are_labelled_side_by_side(tmp_path):
    path = make_run(tmp_path, "r1")
    with open(path / "events.jsonl", "a") as fh:  # mode promotes at step 30 too, as size does
        fh.write(json.dumps({"time": 2.5, "step": 30, "event": "phase", "axis": "mode", "old": "easy",
                             "new": "hard", "values": {}}) + "\n")
    fig, _ = build_figure([load(path)])
    labels = [t for t in fig.axes[0].texts if "→" in t.get_text()]
    assert sorted(t.get_text() for t in labels) == ["mode: easy→hard", "size: small→big"]
    assert len({t.xyann for t in labels}) == 2  # offset from each other, not drawn on top


@pytest.mark.parametrize("name, says", [("plot.txt", "use .png, .svg or .pdf"), ("blocker/plot.png", "cannot write")])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, name, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should go")
    run = make_run(tmp_path / "runs", "r1")
    result = CliRunner().invoke(plot_command, [str(run), "-o", name])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert says in result.output


def test_png_is_written_and_not_blank(tmp_path):
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", loss_scale=1.5, promote_at=60)
    out, warnings = plot_runs([load(a), load(b)], tmp_path / "out" / "cmp.png")
    assert out == tmp_path / "out" / "cmp.png"
    assert_picture(out)


def test_overlay_uses_one_colour_per_run(tmp_path):
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", loss_scale=1.5)
    fig, _ = build_figure([load(a), load(b)], ["loss"])
    (ax,) = fig.axes
    data = [line for line in ax.lines if not line.get_label().startswith("_")]  # not the axh/axv lines
    assert {line.get_label() for line in data} == {"a train.loss", "a val.loss", "b train.loss", "b val.loss"}
    assert len({line.get_color() for line in data}) == 2


def test_requested_metric_missing(tmp_path):
    run = load(make_run(tmp_path, "r"))
    fig, warnings = build_figure([run], ["loss", "val.nothing"])
    assert warnings == ["no run has val.nothing"]
    with pytest.raises(PlotError, match="nothing to plot: nope"):
        build_figure([run], ["nope"])


def test_val_series_from_events_when_csv_lacks_it(tmp_path):
    path = make_run(tmp_path, "r")
    (path / "metrics.csv").write_text("step,train.loss\n10,1.0\n20,0.8\n")
    with open(path / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"time": 4, "step": 20, "event": "validation", "metrics": {"loss": 0.7}}) + "\n")
    assert load(path).metrics["val.loss"] == [(20, 0.7)]


def test_matplotlib_missing_says_how_to_install(tmp_path, monkeypatch):
    run = load(make_run(tmp_path, "r"))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(PlotUnavailable, match=r"pip install 'specrun\[plot\]'"):
        plot_runs([run], tmp_path / "x.png")
    result = CliRunner().invoke(plot_command, [str(run.path), "-o", str(tmp_path / "y.png")])
    assert result.exit_code == 1 and "pip install 'specrun[plot]'" in result.output
    assert not (tmp_path / "y.png").exists()


# ---- the command ------------------------------------------------------------------------------------

def test_command_spec_name_means_latest_run(tmp_path, monkeypatch):
    base = tmp_path / "runs"
    make_run(base, "old")
    newest = make_run(base, "zz-new", promote_at=70)
    data = json.loads((newest / "run.json").read_text())
    (newest / "run.json").write_text(json.dumps({**data, "started": 100.0}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(plot_command, ["toy", "--metric", "accuracy"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "wrote plot.png"
    assert_picture(tmp_path / "plot.png")


def test_command_unknown_run(tmp_path):
    result = CliRunner().invoke(plot_command, ["nosuch", "--base", str(tmp_path)])
    assert result.exit_code == 1 and "no runs of spec 'nosuch'" in result.output
