"""Never lose a run: interrupts save, resumes pick up where the run was, changes are refused or said.

In-process: signals are real (os.kill on this process, through execute()'s handler),
delivered right after a given optimizer step. test_signals.py does the same across
process boundaries (slow).
"""

import json
import signal
from datetime import datetime
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import specrun.engine.execute as execute_mod
import specrun.engine.rundir as rundir_mod
from specrun.cli import main

from .conftest import (FAST_SPEC, csv_rows, events, index_entries, resumes_bit_for_bit, run_inproc, train_losses,
                       write_spec)


def _weights(run_dir, name="final.pt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)["model"]


@pytest.fixture
def reference(tmp_path_factory):
    """The uninterrupted run of FAST_SPEC (once per test that asks)."""
    base = tmp_path_factory.mktemp("reference")
    run_dir = base / "run"
    assert run_inproc(write_spec(base, FAST_SPEC), run_dir).code == 0
    return run_dir


# ---- interrupt and resume ------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_saves_and_the_rerun_resumes_exactly(tmp_path, monkeypatch, signal_at, reference, sig, code):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC)
    run_dir = tmp_path / "run"
    signal_at(5, sig)
    out = run_inproc(spec, run_dir)
    name = signal.Signals(sig).name
    assert (out.status, out.code, out.step) == ("interrupted", code, 5)
    assert out.message == (f"interrupted by {name} at step 5; state saved; continue with: "
                           f"specrun run {spec} --run-dir {run_dir}")
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "interrupted" and status["step"] == 5
    final = [e for e in index_entries(run_dir) if e["kind"] == "final"]
    assert [(e["file"], e["step"]) for e in final] == [("final.pt", 5)]
    assert [e["signal"] for e in events(run_dir, "interrupted")] == [name]

    out = run_inproc(spec, run_dir)
    assert out.code == 0, out.message
    resume = events(run_dir, "resume")
    assert len(resume) == 1 and resume[0]["step"] == 5 and resume[0]["checkpoint"].endswith("final.pt")
    assert train_losses(run_dir) == train_losses(reference)
    expected = _weights(reference)
    for k, w in _weights(run_dir).items():
        assert torch.equal(w, expected[k]), k


@pytest.mark.parametrize("optimizer", ["lion", "galore_adamw"])
def test_bf16_optimizer_state_resumes_exactly(tmp_path, monkeypatch, signal_at, optimizer):
    """bf16 moments are stored with stochastic rounding whose bits come from (seed, step,
    parameter): a resumed run draws the same bits and ends bit for bit where the
    uninterrupted one does."""
    monkeypatch.chdir(tmp_path)
    text = FAST_SPEC.replace("optimizer adamw { lr 0.01 }",
                             f"optimizer {optimizer} {{\n  lr 0.003\n  state_dtype bf16\n}}")
    assert text != FAST_SPEC
    resumes_bit_for_bit(write_spec(tmp_path, text), tmp_path, signal_at)
    # the moments too: Lion's signs would hide a different rounding for a few steps
    moments = [torch.load(d / "checkpoints" / "final.pt", weights_only=True)["optimizer"]["state"]
               for d in (tmp_path / "run", tmp_path / "reference")]
    assert moments[0].keys() == moments[1].keys()
    for i, state in moments[0].items():
        assert state["exp_avg"].dtype == torch.bfloat16
        assert torch.equal(state["exp_avg"], moments[1][i]["exp_avg"]), i


def test_a_second_ctrl_c_stops_without_saving(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from specrun.engine.console import Console

    original = Console.progress

    def progress(self, step, *args):
        original(self, step, *args)
        if step == 3:
            import os

            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Console, "progress", progress)
    run_dir = tmp_path / "run"
    out = run_inproc(write_spec(tmp_path, FAST_SPEC), run_dir)
    assert (out.code, out.message) == (130, "interrupted twice: stopped without saving")
    assert not (run_dir / "checkpoints" / "final.pt").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"


def test_on_interrupt_none_does_not_save(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC.replace("resume latest", "resume latest\n  on_interrupt none"))
    signal_at(2, signal.SIGTERM)
    out = run_inproc(spec, tmp_path / "run")
    assert out.code == 143 and "not saved" in out.message
    assert not (tmp_path / "run" / "checkpoints" / "final.pt").exists()


def test_log_rows_after_a_resume_average_the_same_steps(tmp_path, monkeypatch, signal_at):
    """Log every 4 steps, interrupted at step 6: the row at step 8 still averages steps 5-8."""
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC.replace("log { every 1 step }", "log { every 4 steps }"))
    assert run_inproc(spec, tmp_path / "ref").code == 0
    signal_at(6, signal.SIGINT)
    assert run_inproc(spec, tmp_path / "run").code == 130
    assert run_inproc(spec, tmp_path / "run").code == 0
    _, ref_rows = csv_rows(tmp_path / "ref" / "metrics.csv")
    _, rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == ["4", "8", "12"]
    for mine, theirs in zip(rows, ref_rows):
        assert (mine["train.loss"], mine["train.grad_norm"]) == (theirs["train.loss"], theirs["train.grad_norm"])


def test_an_accepted_spec_change_to_the_optimizer_takes_effect(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC)
    signal_at(6, signal.SIGINT)
    assert run_inproc(spec, tmp_path / "run").code == 130
    changed = write_spec(tmp_path, FAST_SPEC.replace("optimizer adamw { lr 0.01 }",
                                                     "optimizer adamw { lr 0.001; weight_decay 0.5 }"))
    seen = {}
    original = execute_mod.restore

    def restore(run, *args):
        original(run, *args)
        seen.update(run.optimizer.param_groups[0])

    monkeypatch.setattr(execute_mod, "restore", restore)
    assert run_inproc(changed, tmp_path / "run", allow_spec_change=True).code == 0
    assert seen["weight_decay"] == 0.5 and seen["lr"] == pytest.approx(0.001)
    _, rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert {r["train.lr"] for r in rows if int(r["step"]) > 6} == {"0.001"}  # not the checkpoint's 0.01


@pytest.mark.parametrize("named", [False, True], ids=["resume-latest", "run-dir"])
def test_a_run_killed_before_its_first_checkpoint_starts_again_in_place(tmp_path, monkeypatch, signal_at, named):
    """A preempted job requeued with the same command: it starts from step 0 in the same folder;
    what the first attempt wrote is kept and marked (an earlier segment, a restart event)."""
    monkeypatch.chdir(tmp_path)
    signal_at(2, signal.SIGINT)
    no_save = write_spec(tmp_path, FAST_SPEC.replace("resume latest", "resume latest\n  on_interrupt none"))
    run_dir = tmp_path / "run" if named else None
    assert run_inproc(no_save, run_dir).code == 130  # stopped at step 2, before the first checkpoint (step 4)
    (first,) = [run_dir] if named else _only_run(tmp_path)
    assert run_inproc(no_save, run_dir).code == 0  # the same command again
    assert named or _only_run(tmp_path) == [first]
    _, rows = csv_rows(first / "metrics.csv")
    assert [(r["segment"], r["step"]) for r in rows] == [("0", "1"), ("0", "2")] + [
        ("1", str(step)) for step in range(1, 13)]
    (restart,) = events(first, "restart")
    assert restart["segment"] == 1 and "earlier attempt" in restart["message"]
    assert [e["event"] for e in events(first)].count("start") == 2
    assert json.loads((first / "run.json").read_text())["status"] == "finished"


def test_a_changed_spec_with_no_checkpoint_is_not_mixed_in(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    signal_at(2, signal.SIGINT)
    no_save = write_spec(tmp_path, FAST_SPEC.replace("resume latest", "resume latest\n  on_interrupt none"))
    assert run_inproc(no_save, tmp_path / "run").code == 130
    other = write_spec(tmp_path, no_save.read_text().replace("max_steps 12", "max_steps 8"), "other.train")
    refused = run_inproc(other, tmp_path / "run")
    assert refused.code == 1 and "another spec with no checkpoint to continue from" in refused.message
    _, rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == ["1", "2"]  # untouched


def test_an_interrupt_says_how_to_continue_a_resume_none_run(tmp_path, monkeypatch, signal_at):
    """Smoke profiles say `resume none`: the interrupt line gives the way that works."""
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC.replace("resume latest", "resume none"))
    run_dir = tmp_path / "run"
    signal_at(5, signal.SIGINT)
    out = run_inproc(spec, run_dir)
    assert out.message.endswith(f"state saved; continue with: specrun run {spec} --run-dir {run_dir} "
                                "--set checkpoint.resume=latest")
    again = run_inproc(spec, run_dir, sets=("checkpoint.resume=latest",))
    assert again.code == 0 and events(run_dir, "resume")[0]["step"] == 5


def test_the_continue_command_is_the_exact_command(tmp_path, monkeypatch, signal_at):
    """Profile and overrides included: run as printed, it continues the run, not a new one."""
    import shlex

    from click.testing import CliRunner

    from specrun.cli import main

    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC.replace("resume latest", "resume none")
                      + "profile short {\n  max_steps 10\n}\n")
    run_dir = tmp_path / "my run"
    signal_at(3, signal.SIGINT)
    out = run_inproc(spec, run_dir, profile="short", sets=("optimizer.lr=0.02", "model.width=12"))
    command = out.message.split("continue with: ", 1)[1]
    assert command == (f"specrun run {spec} --profile short --set optimizer.lr=0.02 --set model.width=12 "
                       f"--run-dir '{run_dir}' --set checkpoint.resume=latest")
    result = CliRunner().invoke(main, shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    assert events(run_dir, "resume")[0]["step"] == 3 and events(run_dir, "end")[-1]["step"] == 10


# ---- damaged checkpoints ------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "zeros", "flip"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(interrupted, capsys, reference, damage):
    spec, run_dir = interrupted(6)  # step_4.pt and final.pt (step 6)
    final = run_dir / "checkpoints" / "final.pt"
    size = final.stat().st_size
    data = bytearray(final.read_bytes())
    if damage == "flip":  # same size, still a valid zip: only the index's CRC-32 can tell
        data[size // 2: size // 2 + 64] = bytes(b ^ 0xFF for b in data[size // 2: size // 2 + 64])
    final.write_bytes(bytes(data[: size // 3]) if damage == "truncate" else b"\x00" * size
                      if damage == "zeros" else bytes(data))
    capsys.readouterr()

    out = run_inproc(spec, run_dir, quiet=False)
    assert out.code == 0, out.message
    warnings = events(run_dir, "warning")
    assert len(warnings) == 1
    assert warnings[0]["message"].startswith("checkpoint final.pt cannot be loaded")
    assert "falling back to the previous one" in warnings[0]["message"]
    resume = events(run_dir, "resume")
    assert resume[0]["step"] == 4 and resume[0]["checkpoint"].endswith("step_4.pt")
    err = capsys.readouterr().err
    assert "warning: checkpoint final.pt cannot be loaded" in err
    assert "resumed from" in err and "step_4.pt at step 4" in err
    expected = _weights(reference)  # steps 5 and 6 were trained again, identically
    for k, w in _weights(run_dir).items():
        assert torch.equal(w, expected[k]), k


def test_a_damaged_index_is_rebuilt_from_the_files(interrupted, reference):
    spec, run_dir = interrupted(6)  # step_4.pt and final.pt (step 6)
    index = run_dir / "checkpoints" / "index.json"
    index.write_text('{"checkpoints": [{"file": "step_4.pt"')  # cut off mid-write by something else
    out = run_inproc(spec, run_dir)
    assert out.code == 0, out.message
    (warning,) = [e["message"] for e in events(run_dir, "warning")]
    assert "was damaged" in warning and "rebuilt it from the 2 checkpoint file(s)" in warning
    assert events(run_dir, "resume")[0]["step"] == 6  # final.pt, found again
    assert list((run_dir / "checkpoints").glob("index.json.damaged-*"))  # the old one is kept
    kinds = {e["file"]: e["kind"] for e in json.loads(index.read_text())["checkpoints"]}
    assert kinds["final.pt"] == "final"  # never taken for a regular one and rotated away
    expected = _weights(reference)
    for k, w in _weights(run_dir).items():
        assert torch.equal(w, expected[k]), k


def test_no_loadable_checkpoint_fails_the_run(interrupted):
    spec, run_dir = interrupted(6)
    for entry in index_entries(run_dir):
        (run_dir / "checkpoints" / entry["file"]).write_bytes(b"junk")
    out = run_inproc(spec, run_dir)
    assert out.code == 1 and out.message.startswith("no loadable checkpoint in")
    assert len(events(run_dir, "warning")) == 2


# ---- the curriculum on resume -------------------------------------------------------------------------------

def _phases(run_dir) -> dict[int, str]:
    _, rows = csv_rows(run_dir / "metrics.csv")
    return {int(r["step"]): r["phase.curriculum"] for r in rows}


def test_default_resume_keeps_the_phase(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC)
    run_dir = tmp_path / "run"
    signal_at(6, signal.SIGINT)
    run_inproc(spec, run_dir)
    assert run_inproc(spec, run_dir).code == 0
    assert events(run_dir, "resume")[0]["phases"] == {"curriculum": "b"}
    assert [(e["step"], e["old"], e["new"]) for e in events(run_dir, "phase")] == [(3, "a", "b")]
    assert all(_phases(run_dir)[s] == "b" for s in range(7, 13))


def test_resume_phase_start_restarts_the_curriculum(tmp_path, monkeypatch, signal_at, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC.replace("resume latest", "resume latest\n  resume_phase start"))
    run_dir = tmp_path / "run"
    signal_at(6, signal.SIGINT)
    run_inproc(spec, run_dir)
    capsys.readouterr()
    assert run_inproc(spec, run_dir, quiet=False).code == 0
    resume = events(run_dir, "resume")[0]
    assert resume["phases"] == {"curriculum": "a"} and resume["resume_phase"] == "start" and resume["step"] == 6
    assert "(resume_phase start)" in capsys.readouterr().err
    # the step count goes on; phase a starts again at step 6 and needs 3 steps of its own
    assert [(e["step"], e["old"], e["new"]) for e in events(run_dir, "phase")] == [(3, "a", "b"), (9, "a", "b")]
    phases = _phases(run_dir)
    assert [phases[s] for s in range(1, 13)] == ["a", "a"] + ["b"] * 4 + ["a", "a"] + ["b"] * 4
    _, rows = csv_rows(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 13))


def test_a_start_phase_is_where_a_run_begins_and_returns_to(tmp_path, monkeypatch, signal_at):
    """The sha256 document's start_round: `start` names the phase; resume_phase start goes back to it."""
    monkeypatch.chdir(tmp_path)
    three = FAST_SPEC.replace("  phase b {}", "  phase b { promote when phase.steps >= 3 }\n  phase c {}")
    spec = write_spec(tmp_path, three.replace("curriculum {", "curriculum {\n  start b").replace(
        "resume latest", "resume latest\n  resume_phase start"))
    run_dir = tmp_path / "run"
    signal_at(4, signal.SIGINT)
    run_inproc(spec, run_dir)
    assert [(e["step"], e["old"], e["new"]) for e in events(run_dir, "phase")] == [(3, "b", "c")]
    assert run_inproc(spec, run_dir).code == 0
    assert events(run_dir, "resume")[0]["phases"] == {"curriculum": "b"}  # back to b, not to a
    assert [(e["step"], e["new"]) for e in events(run_dir, "phase")] == [(3, "c"), (7, "c")]


PHASE_PARAMS = FAST_SPEC.replace(
    "phase a { promote when phase.steps >= 3 }",
    "phase a {\n    task.noise 3.0\n    promote when phase.steps >= 3\n  }")


def test_phase_parameters_survive_a_resume(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, PHASE_PARAMS)
    reference = tmp_path / "reference"
    assert run_inproc(spec, reference).code == 0
    run_dir = tmp_path / "run"
    signal_at(6, signal.SIGINT)
    run_inproc(spec, run_dir)
    assert run_inproc(spec, run_dir).code == 0
    assert train_losses(run_dir) == train_losses(reference)


# ---- what changed since the run began ------------------------------------------------------------------------------

SGD_SPEC = FAST_SPEC.replace("optimizer adamw { lr 0.01 }", "optimizer sgd { lr 0.1 }")


def test_an_optimizer_that_no_longer_fits_starts_fresh(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    signal_at(6, signal.SIGINT)
    assert run_inproc(write_spec(tmp_path, FAST_SPEC), run_dir).code == 130
    saved = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)

    seen = {}
    original = execute_mod.restore

    def restore(run, state, resume_phase, warn, *args):
        original(run, state, resume_phase, warn, *args)
        seen["weights"] = {k: v.clone() for k, v in run.model.state_dict().items()}
        seen["optimizer"] = run.optimizer.state_dict()
        seen["lr"] = run.optimizer.param_groups[0]["lr"]

    monkeypatch.setattr(execute_mod, "restore", restore)
    out = run_inproc(write_spec(tmp_path, SGD_SPEC), run_dir, allow_spec_change=True)
    assert all(torch.equal(seen["weights"][k], v) for k, v in saved["model"].items())  # weights load
    assert seen["optimizer"]["state"] == {}  # a fresh optimizer
    assert seen["lr"] == pytest.approx(0.1)  # the new spec's LR
    assert [e["step"] for e in events(run_dir, "optimizer_reset")] == [6]
    assert any("optimizer" in e["message"] for e in events(run_dir, "warning"))
    assert out.code == 0, out.message


def test_a_model_that_no_longer_fits_fails_cleanly(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    signal_at(4, signal.SIGINT)
    assert run_inproc(write_spec(tmp_path, FAST_SPEC), run_dir).code == 130
    final = (run_dir / "checkpoints" / "final.pt").read_bytes()
    wider = FAST_SPEC.replace("width 16", "width 24")
    out = run_inproc(write_spec(tmp_path, wider), run_dir, allow_spec_change=True)
    assert out.code == 1 and "\n" not in out.message
    assert "weights do not fit this model" in out.message
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert (run_dir / "checkpoints" / "final.pt").read_bytes() == final  # the run's state is untouched


def _only_run(base):
    runs = sorted((base / "runs" / "fast_test").iterdir())
    return runs


def test_a_changed_spec_is_refused_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ids = iter(f"run-{i}" for i in range(10))
    monkeypatch.setattr(rundir_mod, "new_run_id", lambda: next(ids))
    spec = write_spec(tmp_path, FAST_SPEC.replace("max_steps 12", "max_steps 4"))
    runner = CliRunner()
    assert runner.invoke(main, ["run", str(spec), "--quiet"]).exit_code == 0
    (first,) = _only_run(tmp_path)
    before = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}

    spec.write_text(spec.read_text().replace("lr 0.01", "lr 0.02"))
    refused = runner.invoke(main, ["run", str(spec)])
    assert refused.exit_code == 1
    assert "the spec changed since run" in refused.output
    assert "  optimizer.lr: 0.01 -> 0.02" in refused.output.splitlines()
    assert "--allow-spec-change" in refused.output and "--new" in refused.output
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()} == before  # untouched

    spec.write_text(spec.read_text().replace("max_steps 4", "max_steps 6"))
    allowed = runner.invoke(main, ["run", str(spec), "--allow-spec-change"])
    assert allowed.exit_code == 0, allowed.output
    assert "resuming across a spec change" in allowed.output and "optimizer.lr: 0.01 -> 0.02" in allowed.output
    assert len(events(first, "resume")) == 1 and events(first, "start")[-1]["segment"] == 1
    assert allowed.output.strip().splitlines()[-1] == "finished: finished 6 steps"

    fresh = runner.invoke(main, ["run", str(spec), "--new", "--quiet"])
    assert fresh.exit_code == 0, fresh.output
    runs = _only_run(tmp_path)
    assert [r.name for r in runs] == ["run-0", "run-1"]
    assert "lr 0.02" in (runs[1] / "spec.train").read_text()
    assert events(runs[1], "resume") == [] and events(runs[1], "start")[0]["segment"] == 0


def test_an_allowed_spec_change_is_recorded_in_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    spec = write_spec(tmp_path, FAST_SPEC.replace("max_steps 12", "max_steps 4"))
    assert run_inproc(spec, run_dir).code == 0
    spec.write_text(spec.read_text().replace("lr 0.01", "lr 0.02"))
    assert run_inproc(spec, run_dir, allow_spec_change=True).code == 0
    changes = events(run_dir, "spec_change")
    assert len(changes) == 1 and "optimizer.lr: 0.01 -> 0.02" in changes[0]["changes"]
    assert "lr 0.02" in (run_dir / "spec.train").read_text()  # the spec as run now
    (before,) = run_dir.glob("spec.before-*.train")  # the spec the run began with, kept
    assert "lr 0.01" in before.read_text()
    plan = json.loads((run_dir / "plan.json").read_text())
    from specrun.spec.check import load

    assert plan["spec_hash"] == load(str(spec)).hash
    # a third launch of the changed spec continues without asking again
    spec.write_text(spec.read_text())
    assert run_inproc(spec, run_dir).code == 0


def test_two_new_runs_in_the_same_second_get_two_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2030, 1, 2, 3, 4, 5)

    monkeypatch.setattr(rundir_mod, "datetime", Frozen)
    spec = write_spec(tmp_path, FAST_SPEC.replace("max_steps 12", "max_steps 2"))
    assert run_inproc(spec, new=True).code == 0
    assert run_inproc(spec, new=True).code == 0
    runs = _only_run(tmp_path)
    assert len(runs) == 2
    for run in runs:
        assert len(events(run, "start")) == 1 and (run / "plan.json").exists()


def _named_checkpoint(tmp_path, monkeypatch, signal_at, step: int = 6) -> Path:
    """The final.pt of a source run interrupted at ``step``: what `resume PATH` names."""
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "source"
    signal_at(step, signal.SIGINT)
    assert run_inproc(write_spec(tmp_path, FAST_SPEC), source).code == 130
    return source / "checkpoints" / "final.pt"


def test_resume_from_a_named_checkpoint(tmp_path, monkeypatch, signal_at):
    named = _named_checkpoint(tmp_path, monkeypatch, signal_at)
    spec = write_spec(tmp_path, FAST_SPEC.replace("resume latest", f'resume "{named}"'), "named.train")
    assert run_inproc(spec).code == 0  # a new run directory, started from the named checkpoint
    (run_dir,) = _only_run(tmp_path)
    assert events(run_dir, "resume")[0]["step"] == 6
    _, rows = csv_rows(run_dir / "metrics.csv")
    assert int(rows[0]["step"]) == 7


def test_a_named_checkpoint_of_another_spec_is_used_with_a_warning(tmp_path, monkeypatch, signal_at):
    named = _named_checkpoint(tmp_path, monkeypatch, signal_at)
    other = FAST_SPEC.replace("resume latest", f'resume "{named}"').replace("lr 0.01", "lr 0.005")
    assert run_inproc(write_spec(tmp_path, other, "named.train")).code == 0
    (run_dir,) = _only_run(tmp_path)
    (warning,) = [e["message"] for e in events(run_dir, "warning")]
    assert "was written under another spec" in warning and "going on under this one" in warning


def test_resume_from_a_named_checkpoint_into_a_given_run_dir(tmp_path, monkeypatch, signal_at):
    named = _named_checkpoint(tmp_path, monkeypatch, signal_at)
    spec = write_spec(tmp_path, FAST_SPEC.replace("resume latest", f'resume "{named}"'), "named.train")
    run_dir = tmp_path / "target"
    assert run_inproc(spec, run_dir).code == 0
    assert events(run_dir, "resume")[0]["step"] == 6


def test_a_run_started_from_a_named_checkpoint_can_be_continued(tmp_path, monkeypatch, signal_at):
    """Interrupted after starting from `resume PATH`: the way the refusal message gives must work."""
    named = _named_checkpoint(tmp_path, monkeypatch, signal_at, 4)
    spec = write_spec(tmp_path, FAST_SPEC.replace("resume latest", f'resume "{named}"'), "named.train")
    run_dir = tmp_path / "target"
    signal_at(7, signal.SIGINT)
    assert run_inproc(spec, run_dir).code == 130
    again = run_inproc(spec, run_dir)  # the same command again: refused, with advice
    assert again.code == 1 and "checkpoint.resume=latest" in again.message
    out = run_inproc(spec, run_dir, sets=("checkpoint.resume=latest",))  # the advice
    assert out.code == 0, out.message
    assert [e["step"] for e in events(run_dir, "resume")] == [4, 7]


def test_resume_latest_continues_the_run_of_the_same_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC + "profile smoke {\n  max_steps 10\n}\n")
    assert run_inproc(spec, profile="smoke").code == 0
    (smoke,) = (tmp_path / "runs").glob("*/*")
    # The full spec does not pick up the smoke run (and refuse it as a changed spec): it starts its own.
    full = run_inproc(spec, sets=("max_steps=12",))
    assert full.code == 0, full.message
    assert len(list((tmp_path / "runs").glob("*/*"))) == 2
    # The smoke profile, run again with one more step allowed, continues its own run.
    again = run_inproc(spec, profile="smoke", sets=("max_steps=14",), allow_spec_change=True)
    assert again.code == 0 and again.step == 14
    assert [e["step"] for e in events(smoke, "resume")] == [10]


def _stopped_then_changed_optimizer(tmp_path, signal_at, checkpoint_lines: str):
    """A run with these checkpoint settings stopped at step 6, and its spec with SGD instead of AdamW."""
    spec = FAST_SPEC.replace("resume latest", "resume latest\n  " + checkpoint_lines)
    signal_at(6, signal.SIGINT)
    assert run_inproc(write_spec(tmp_path, spec), tmp_path / "run").code == 130
    return write_spec(tmp_path, spec.replace("optimizer adamw { lr 0.01 }", "optimizer sgd { lr 0.1 }"))


def test_a_spec_that_declares_the_fallback_resumes_a_change_without_a_flag(tmp_path, monkeypatch, signal_at):
    """savant: a changed spec goes on from the weights with a fresh optimizer, no flag needed."""
    monkeypatch.chdir(tmp_path)
    changed = _stopped_then_changed_optimizer(tmp_path, signal_at, "on_spec_change resume\n  optimizer_mismatch fresh")
    out = run_inproc(changed, tmp_path / "run")
    assert out.code == 0, out.message
    assert [e["step"] for e in events(tmp_path / "run", "optimizer_reset")] == [6]
    assert len(events(tmp_path / "run", "spec_change")) == 1


def test_optimizer_mismatch_error_refuses_to_resume(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    changed = _stopped_then_changed_optimizer(tmp_path, signal_at, "optimizer_mismatch error")
    out = run_inproc(changed, tmp_path / "run", allow_spec_change=True)
    assert out.code == 1 and "optimizer_mismatch is error" in out.message
