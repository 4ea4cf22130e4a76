"""`specrun sweep`: trials as run directories, pruning, resuming, workers sharing a study.

Most tests run the command in this process on a tiny spec; the slow ones start worker
processes (`--jobs`) and kill a sweep with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from specrun.cli import main
from specrun.engine.console import Console
from specrun.spec.parse import parse
from specrun.sweep import layout
from tests.engine.conftest import FAST_SPEC, env, events, specrun_cmd, write_spec

optuna = pytest.importorskip("optuna")  # in the dev extra: CI has it

SWEPT = FAST_SPEC + """validation {
  every 4 steps
  batches 2
}
sweep {
  minimize val.loss
  trials 3
  optimizer.lr log 1e-3..1e-1
  model.width [8, 16]
}
"""


def _sweep(tmp_path, *args, text=SWEPT):
    spec = write_spec(tmp_path, text)
    result = CliRunner().invoke(main, ["sweep", str(spec), "--base", str(tmp_path / "runs"), *args])
    return result


def _trials(tmp_path, name="sweep") -> list[dict]:
    folder = layout.sweep_dir(tmp_path / "runs", "fast_test", name)
    return [layout.read_trial(p) | {"dir": p} for p in layout.trial_dirs(folder)]


def _study(tmp_path, name="sweep"):
    folder = layout.sweep_dir(tmp_path / "runs", "fast_test", name)
    return optuna.load_study(study_name=f"fast_test.{name}", storage=layout.default_storage(folder))


def test_a_sweep_runs_its_budget_each_trial_a_run_named_by_its_settings(tmp_path):
    result = _sweep(tmp_path)
    assert result.exit_code == 0, result.output
    trials = _trials(tmp_path)
    assert [t["number"] for t in trials] == [0, 1, 2]
    for t in trials:
        assert t["state"] == "finished" and isinstance(t["objective"], float)
        lr, width = t["params"]["optimizer.lr"], t["params"]["model.width"]
        assert t["dir"].name == f"{t['number']:03d}-lr={lr:.3g}-width={width}"
        # a normal run directory: its spec is the spec with the trial's values, and nothing of the sweep
        spec_text = (t["dir"] / "spec.train").read_text()
        assert f"lr {lr!r}" in spec_text and f"width {width}" in spec_text and "sweep" not in spec_text
        assert json.loads((t["dir"] / "run.json").read_text())["status"] == "finished"
        plan = json.loads((t["dir"] / "plan.json").read_text())
        assert plan["trial"] == {"sweep": "sweep", "number": t["number"], "objective": "val.loss", "prune": None}
        # the objective is the trial's last validation
        last = [e for e in events(t["dir"], "validation")][-1]
        assert t["objective"] == pytest.approx(last["metrics"]["loss"])
    best = min(trials, key=lambda t: t["objective"])
    flags = f"--set optimizer.lr={best['params']['optimizer.lr']!r} --set model.width={best['params']['model.width']}"
    assert flags in result.output and f"best: trial {best['number']}," in result.output
    assert [t.state.name for t in _study(tmp_path).trials] == ["COMPLETE"] * 3


def test_runs_groups_trials_under_their_sweep_best_first_and_plot_draws_the_sweep(tmp_path):
    assert _sweep(tmp_path).exit_code == 0
    base = str(tmp_path / "runs")
    listed = CliRunner().invoke(main, ["runs", "--base", base])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0] == "sweep fast_test/sweep: minimize val.loss, 3 trials (budget 3): 3 finished"
    assert lines[1].split() == ["TRIAL", "VAL.LOSS", "STATUS", "STEP", "SETTINGS", "DURATION", "RUN"]
    ordered = sorted(_trials(tmp_path), key=lambda t: t["objective"])
    assert [line.split()[0] for line in lines[2:]] == [str(t["number"]) for t in ordered]
    assert [line.split()[-1] for line in lines[2:]] == [t["dir"].name for t in ordered]
    as_json = json.loads(CliRunner().invoke(main, ["runs", "--base", base, "--json"]).output)
    assert [r["trial"]["number"] for r in as_json] == [t["number"] for t in ordered]
    assert all(r["status"] == "finished" and r["trial"]["sweep"] == "sweep" for r in as_json)
    plotted = CliRunner().invoke(main, ["plot", "fast_test/sweeps/sweep", "--base", base,
                                        "-o", str(tmp_path / "sweep.png")])
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from specrun.cli.sweep_plot import plot_sweep
    from specrun.cli.sweep_runs import list_sweeps

    fig_path, warnings = plot_sweep(list_sweeps(None, base)[0], tmp_path / "again.svg", ["accuracy"])
    assert warnings == [] and "trial 0 val.accuracy" in fig_path.read_text()


def test_summary_prints_the_best_settings_as_set_flags(tmp_path):
    assert _sweep(tmp_path).exit_code == 0
    again = _sweep(tmp_path, "--summary")
    assert again.exit_code == 0, again.output
    best = min(_trials(tmp_path), key=lambda t: t["objective"])
    lines = again.output.splitlines()
    assert lines[0] == "3 trials (budget 3): 3 finished"
    assert lines[-1] == " ".join(f"--set {k}={v!r}" for k, v in best["params"].items())
    # the flags reproduce the trial: the spec with them is the trial's spec
    import shlex

    from specrun.spec.check import load
    from specrun.spec.fmt import format_data

    sets = tuple(shlex.split(lines[-1])[1::2])
    data = {k: v for k, v in load(str(tmp_path / "spec.train"), None, sets).data.items() if k != "sweep"}
    trial_spec = parse((best["dir"] / "spec.train").read_text(), "spec.train")
    from specrun.spec.check import check

    assert check(trial_spec).data == {**data, "checkpoint": {**data["checkpoint"], "resume": "latest"}}
    assert format_data(data)  # writable as a spec


def test_a_prune_gate_stops_a_trial_and_marks_it_pruned(tmp_path):
    text = SWEPT.replace("  trials 3\n", "  trials 2\n  prune when step >= 5 and val.loss > 0\n")
    result = _sweep(tmp_path, text=text)
    assert result.exit_code == 0, result.output
    for t in _trials(tmp_path):
        status = json.loads((t["dir"] / "run.json").read_text())
        assert t["state"] == status["status"] == "pruned" and status["step"] == 5
        assert "prune when step >= 5 and val.loss > 0" in status["message"]
        assert (t["dir"] / "checkpoints" / "final.pt").exists()  # resumable and exportable like any run
    assert [t.state.name for t in _study(tmp_path).trials] == ["PRUNED", "PRUNED"]
    assert "no trial has finished yet" in result.output


def test_a_grid_runs_every_combination_once_and_no_more(tmp_path):
    text = SWEPT.replace("  optimizer.lr log 1e-3..1e-1\n", "  sampler grid\n  seed [1, 2]\n").replace(
        "trials 3", "trials 10")
    result = _sweep(tmp_path, text=text)
    assert result.exit_code == 0, result.output
    assert "4 trials, sampler grid" in result.output  # the budget is the grid's size
    combos = sorted((t["params"]["seed"], t["params"]["model.width"]) for t in _trials(tmp_path))
    assert combos == [(1, 8), (1, 16), (2, 8), (2, 16)]


def test_a_combination_that_does_not_check_fails_its_trial_and_the_sweep_goes_on(tmp_path):
    # Each choice checks alone against the spec; a warmup of 10 steps in an 8-step run does not.
    text = SWEPT.replace("max_steps 12\n", "max_steps 12\nschedule warmup_cosine { warmup 2 steps }\n").replace(
        "  optimizer.lr log 1e-3..1e-1\n  model.width [8, 16]\n",
        "  sampler grid\n  schedule.warmup [2 steps, 10 steps]\n  max_steps [8, 12]\n").replace(
        "trials 3", "trials 4")
    result = _sweep(tmp_path, text=text)
    assert result.exit_code == 0, result.output
    states = {(str(t["params"]["schedule.warmup"]), t["params"]["max_steps"]): t["state"] for t in _trials(tmp_path)}
    assert states == {("2 steps", 8): "finished", ("2 steps", 12): "finished", ("10 steps", 8): "failed",
                      ("10 steps", 12): "finished"}
    (bad,) = [t for t in _trials(tmp_path) if t["state"] == "failed"]
    assert "E600" in bad["message"] and "warmup of 10 steps is not shorter than the run" in bad["message"]
    listed = CliRunner().invoke(main, ["runs", "--base", str(tmp_path / "runs")]).output
    assert "1 failed" in listed.splitlines()[0]


def test_random_sampling_with_a_storage_url_given_on_the_command_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    result = _sweep(tmp_path, "--set", "sweep.sampler=random", "--storage", url, "--trials", "2")
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="fast_test.sweep", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    assert not (layout.sweep_dir(tmp_path / "runs", "fast_test", "sweep") / "study.db").exists()
    assert layout.shown_storage("postgresql://me:s3cret@db:5432/sweeps") == "postgresql://me:***@db:5432/sweeps"
    info = json.loads((layout.sweep_dir(tmp_path / "runs", "fast_test", "sweep") / "sweep.json").read_text())
    assert info["storage"] == url and info["sampler"] == "random"


def test_a_trial_exports_like_any_run(tmp_path):
    assert _sweep(tmp_path, "--trials", "1").exit_code == 0
    (trial,) = _trials(tmp_path)
    exported = CliRunner().invoke(main, ["export", str(trial["dir"]), "-o", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_the_median_pruner_stops_a_trial_behind_the_earlier_ones(tmp_path):
    # A grid in a fixed (seeded) order: the good learning rate first, then one that cannot learn.
    text = SWEPT.replace("  optimizer.lr log 1e-3..1e-1\n  model.width [8, 16]\n",
                         "  sampler grid\n  pruner median\n  optimizer.lr [0.0000001, 0.05]\n")
    result = _sweep(tmp_path, text=text)
    assert result.exit_code == 0, result.output
    trials = {t["params"]["optimizer.lr"]: t for t in _trials(tmp_path)}
    assert trials[0.05]["number"] == 0 and trials[0.05]["state"] == "finished"
    slow = trials[1e-07]
    assert slow["state"] == "pruned" and "behind the median of earlier trials" in slow["message"]
    assert slow["step"] == 4  # at its first validation


def test_the_watch_reports_the_objective_and_asks_the_median_pruner():
    from specrun.engine.history import History
    from specrun.spec.sweep import Sweep
    from specrun.sweep.trial import Watch

    class Trial:
        def __init__(self):
            self.reported, self.prune = [], False

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return self.prune

    class Run:
        class counters:
            step, segment = 0, 0

        history = History({"val.loss": 1}, set())

    sweep = Sweep("val.loss", "minimize", 4, "tpe", "median", None, None, ())
    trial, run = Trial(), Run()
    watch = Watch(sweep, trial, beat=lambda: None)
    run.counters.step = 1
    assert watch(run) is None and trial.reported == []  # nothing measured yet
    run.history.record("val.loss", 0.9)
    run.counters.step = 4
    assert watch(run) is None and trial.reported == [(4, 0.9)]
    run.counters.step = 5
    assert watch(run) is None and trial.reported == [(4, 0.9)]  # each value once
    run.history.record("val.loss", 0.8)
    trial.prune = True
    run.counters.step = 8
    assert watch(run) == "pruned at step 8: val.loss 0.8 is behind the median of earlier trials"


def test_an_interrupted_sweep_goes_on_without_running_a_finished_trial_again(tmp_path, monkeypatch):
    original, calls = Console.progress, {"n": 0}

    def progress(self, *args, **kwargs):  # Ctrl+C in the middle of the second trial (12 steps each)
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 12 + 6:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Console, "progress", progress)
    first = _sweep(tmp_path)
    assert first.exit_code == 130, first.output
    done, cut = _trials(tmp_path)
    assert done["state"] == "finished" and cut["state"] == "interrupted"
    finished_rows = (done["dir"] / "metrics.csv").read_text()

    second = _sweep(tmp_path)
    assert second.exit_code == 0, second.output
    assert "trial 1 was cut short (interrupted)" in second.output
    trials = _trials(tmp_path)
    assert [t["dir"] for t in trials[:2]] == [done["dir"], cut["dir"]]  # the cut trial kept its folder
    assert [t["state"] for t in trials] == ["finished"] * 3
    assert (done["dir"] / "metrics.csv").read_text() == finished_rows  # not run again
    resumed = events(cut["dir"], "resume")
    assert len(resumed) == 1 and resumed[0]["step"] == 6  # from the checkpoint the interrupt saved
    assert trials[1]["params"] == cut["params"]
    states = [(t.number, t.state.name, t.user_attrs.get("retry_of")) for t in _study(tmp_path).trials]
    assert states == [(0, "COMPLETE", None), (1, "FAIL", None), (2, "COMPLETE", 1), (3, "COMPLETE", None)]


def test_a_sweep_begun_with_another_search_is_not_continued_by_this_one(tmp_path):
    assert _sweep(tmp_path, "--trials", "1").exit_code == 0
    other = _sweep(tmp_path, text=SWEPT.replace("[8, 16]", "[8, 32]"))
    assert other.exit_code == 1 and "was begun with another spec or search" in other.output
    assert _sweep(tmp_path, "--name", "wider", "--trials", "1",
                  text=SWEPT.replace("[8, 16]", "[8, 32]")).exit_code == 0
    assert len(_trials(tmp_path, "wider")) == 1


def test_a_bad_sweep_is_refused_before_anything_runs(tmp_path):
    result = _sweep(tmp_path, text=SWEPT.replace("model.width [8, 16]", "model.width []"))
    assert result.exit_code == 1
    assert "error[E203]: sweep: model.width has no choices" in result.output
    assert not (tmp_path / "runs").exists()
    none = _sweep(tmp_path, text=FAST_SPEC)
    assert none.exit_code == 1 and "has no sweep block" in none.output
    nothing = _sweep(tmp_path, "--summary")
    assert nothing.exit_code == 1 and "no sweep sweep of" in nothing.output and not (tmp_path / "runs").exists()


def test_without_optuna_the_command_says_how_to_get_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)
    result = _sweep(tmp_path)
    assert result.exit_code == 1 and "pip install 'specrun[sweep]'" in result.output


# ---- worker processes --------------------------------------------------------------------------

@pytest.mark.slow
def test_parallel_workers_share_one_sqlite_study(tmp_path):
    spec = write_spec(tmp_path, SWEPT)
    proc = subprocess.run(specrun_cmd("sweep", spec, "--base", tmp_path / "runs", "--trials", 4, "--jobs", 2),
                          env=env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = _study(tmp_path).trials
    assert sorted(t.state.name for t in trials if not t.user_attrs.get("unused")) == ["COMPLETE"] * 4
    assert len({t.user_attrs["pid"] for t in trials if t.state.name == "COMPLETE"}) == 2  # two processes
    assert [t["state"] for t in _trials(tmp_path)] == ["finished"] * 4


@pytest.mark.slow
def test_a_killed_sweep_resumes_where_it_stopped(tmp_path):
    text = SWEPT.replace("max_steps 12", "max_steps 400").replace("every 4 steps\n  keep", "every 20 steps\n  keep")
    spec = write_spec(tmp_path, text)
    cmd = specrun_cmd("sweep", spec, "--base", tmp_path / "runs", "--trials", 2)
    proc = subprocess.Popen(cmd, env=env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it once trial 1 has a checkpoint
        found = [t for t in _trials(tmp_path) if t["number"] == 1]
        index = found[0]["dir"] / "checkpoints" / "index.json" if found else None
        if index is not None and index.exists():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _trials(tmp_path)
    assert [t["state"] for t in first] == ["finished", "running"]
    again = subprocess.run(cmd, env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "trial 1 was cut short (its process is gone)" in again.stdout
    trials = _trials(tmp_path)
    assert [t["state"] for t in trials] == ["finished", "finished"], again.stdout
    assert trials[1]["dir"] == first[1]["dir"] and len(events(first[1]["dir"], "resume")) == 1


@pytest.mark.slow
def test_the_builtin_rule_sweep_beats_the_default_in_under_two_minutes(tmp_path, repo):
    """The deliverable of docs/sweeps.md: the reference spec's own sweep, on a CPU."""
    spec = repo / "specs" / "builtin_rule.train"
    default = subprocess.run(specrun_cmd("run", spec, "--quiet"), env=env(), cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert default.returncode == 0, default.stdout + default.stderr
    (run_dir,) = [p for p in (tmp_path / "runs" / "builtin_rule").iterdir() if p.name != "sweeps"]
    default_loss = events(run_dir, "validation")[-1]["metrics"]["loss"]

    started = time.perf_counter()
    swept = subprocess.run(specrun_cmd("sweep", spec), env=env(), cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    seconds = time.perf_counter() - started
    assert swept.returncode == 0, swept.stdout + swept.stderr
    trials = [layout.read_trial(p) for p in layout.trial_dirs(tmp_path / "runs" / "builtin_rule" / "sweeps" / "sweep")]
    best = min((t for t in trials if t["state"] == "finished"), key=lambda t: t["objective"])
    print(f"default val.loss {default_loss:.4f}; best of {len(trials)} trials {best['objective']:.4f} "
          f"({best['params']}) in {seconds:.0f}s")
    assert len(trials) == 8 and best["objective"] < default_loss
    assert seconds < 120


# ---- the study's bookkeeping, without training ---------------------------------------------------

def _bare_study(tmp_path):
    from specrun.sweep import study as st

    return optuna.create_study(study_name="s", storage=st.storage(f"sqlite:///{tmp_path / 's.db'}"))


def test_a_trial_silent_on_another_machine_is_retried_once_a_live_one_never(tmp_path):
    from specrun.sweep import study as st

    study = _bare_study(tmp_path)
    silent, alive = study.ask(), study.ask()
    for trial, beat in ((silent, time.time() - st.GRACE_S - 60), (alive, time.time())):
        trial.suggest_float("optimizer.lr", 1e-4, 1e-2)
        for key, value in (("host", "another-machine"), ("pid", 1), ("heartbeat", beat),
                           ("run_dir", "runs/x/sweeps/s/000")):
            trial.set_user_attr(key, value)
    said = []
    assert st.reclaim_stale(study, said.append) == 1
    assert st.reclaim_stale(study, said.append) == 0  # claimed once: never twice
    by_number = {t.number: t for t in study.trials}
    assert by_number[0].state.name == "FAIL" and by_number[0].user_attrs["reclaimed"]
    assert by_number[1].state.name == "RUNNING"
    retry = by_number[2]
    assert retry.state.name == "WAITING" and retry.system_attrs["fixed_params"] == by_number[0].params
    assert retry.user_attrs == {"run_dir": "runs/x/sweeps/s/000", "retry_of": 0}
    assert said == ["trial 0 was cut short (silent): it runs again from its last checkpoint"]
    assert st.spent(study) == 2 and st.waiting(study)  # the retry takes the place of the trial it repeats


def test_trials_asked_for_past_the_budget_are_found_out(tmp_path):
    from specrun.sweep import study as st

    study = _bare_study(tmp_path)
    first, second = study.ask(), study.ask()  # two workers asked for the last place at once
    assert not st.over_budget(study, first, 1) and st.over_budget(study, second, 1)
    second.set_user_attr("unused", True)
    assert st.spent(study) == 1
