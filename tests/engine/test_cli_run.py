"""`specrun run` end to end: the built-in spec trains, the run directory holds what it promises."""

import json
import platform

import pytest
import torch
from click.testing import CliRunner

import specrun
from specrun.spec.check import load
from specrun.cli import main

from .conftest import FAST_SPEC, ROOT, csv_rows, events, write_spec

BUILTIN = ROOT / "specs" / "builtin_rule.train"


def _run(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


def test_builtin_spec_full_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    result = _run(BUILTIN, "--run-dir", run_dir, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == "finished: finished 200 steps\n"  # --quiet: the final line only

    # spec.train: the spec as run, canonical; it re-parses and means the same spec
    again = load(str(run_dir / "spec.train"))
    plan = json.loads((run_dir / "plan.json").read_text())
    assert again.hash == plan["spec_hash"] == load(str(BUILTIN)).hash
    assert len(plan["spec_hash"]) == 16
    assert plan["versions"] == {"python": platform.python_version(), "torch": torch.__version__,
                                "specrun": specrun.__version__}
    assert plan["settings"]["schedule"]["warmup"] == 20  # 10% of 200

    header, rows = csv_rows(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(10, 201, 10))
    assert {"train.loss", "train.accuracy", "val.accuracy", "phase.curriculum", "segment"} <= set(header)
    assert float(rows[-1]["train.loss"]) < 0.9 * float(rows[0]["train.loss"])
    assert rows[-1]["phase.curriculum"] == "main"

    names = [e["event"] for e in events(run_dir)]
    assert names[0] == "start" and names[-1] == "end"
    assert events(run_dir, "end")[0]["status"] == "finished"
    assert [e["step"] for e in events(run_dir, "validation")] == [50, 100, 150, 200]

    index = json.loads((run_dir / "checkpoints" / "index.json").read_text())["checkpoints"]
    files = {e["file"]: e for e in index}
    assert {f for f, e in files.items() if e["kind"] == "regular"} == {"step_150.pt", "step_200.pt"}  # keep 2
    assert files["final.pt"]["step"] == 200 and "best.pt" in files
    on_disk = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert on_disk == set(files) | {"index.json"}  # nothing unlisted, nothing half-written
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "finished" and status["step"] == 200


def test_without_quiet_the_console_narrates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run(BUILTIN, "--profile", "smoke", "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    steps = load(str(BUILTIN), "smoke").data["max_steps"]
    assert lines[-1] == f"finished: finished {steps} steps"
    assert any(line.startswith("promoted curriculum: warm -> main at step") for line in lines)
    assert any(line.startswith("checkpoint final.pt") for line in lines)
    assert any(line.startswith("validation at step 50") for line in lines)


def test_overrides_are_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    spec = write_spec(tmp_path, FAST_SPEC)
    result = _run(spec, "--run-dir", run_dir, "--quiet", "--set", "optimizer.lr=0.02", "--set", "max_steps=4")
    assert result.exit_code == 0, result.output
    assert result.output == "finished: finished 4 steps\n"
    text = (run_dir / "spec.train").read_text()
    assert "lr 0.02" in text and "max_steps 4" in text
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["overrides"] == ["optimizer.lr=0.02", "max_steps=4"]
    assert load(str(run_dir / "spec.train")).hash == plan["spec_hash"]


def test_broken_expectation_exits_1_and_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    spec = write_spec(tmp_path, FAST_SPEC + "expect train.loss < 0 by 5 steps\n")
    result = _run(spec, "--run-dir", run_dir, "--quiet")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("failed: expectation broken at step 5: expect train.loss < 0 by 5 steps (train.loss=")
    failed = events(run_dir, "expectation_failed")
    assert [e["step"] for e in failed] == [5] and failed[0]["expect"] == "train.loss < 0"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    _, rows = csv_rows(run_dir / "metrics.csv")
    assert int(rows[-1]["step"]) == 4  # stopped at step 5, before its log row


def test_broken_final_expectation_exits_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC.replace("max_steps 12", "max_steps 3") + "expect train.accuracy > 2\n")
    result = _run(spec, "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(
        "failed: expectation broken at the end of the run: expect train.accuracy > 2")


def test_expectation_that_holds_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC + "expect train.loss < 100 * first(train.loss) by 5 steps\n")
    result = _run(spec, "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output


def test_an_expectation_past_the_end_of_the_run_is_not_silently_dropped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, FAST_SPEC + "expect train.loss < 0 by 100 steps\n")  # max_steps 12
    run_dir = tmp_path / "run"
    result = _run(spec, "--run-dir", run_dir)
    assert result.exit_code != 0 or any(
        line.startswith("warning: expectation never checked") and "expect train.loss < 0" in line
        for line in result.output.splitlines())
    if result.exit_code == 0:
        assert any("never checked" in e["message"] for e in events(run_dir, "warning"))


def test_an_expectation_by_epochs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # epoch_size 128 / batch 8 = 16 micro-batches = 8 optimizer steps (accumulate 2)
    spec = write_spec(tmp_path, FAST_SPEC + "expect train.loss < 0 by 1 epoch\n")
    result = _run(spec, "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].startswith("failed: expectation broken at step 8: ")


def test_every_epoch_falls_on_the_step_that_completes_the_epoch(tmp_path, monkeypatch):
    """5 micro-batches an epoch at accumulate 2 is 2.5 steps: epochs end at steps 3, 5, 8, 10."""
    monkeypatch.chdir(tmp_path)
    spec = FAST_SPEC.replace("epoch_size 128", "epoch_size 40").replace(
        "  every 4 steps\n  keep 2\n", '  every 1 epoch\n  name "epoch_{epoch}.pt"\n  keep 10\n').replace(
        "max_steps 12", "max_steps 10") + "validation {\n  every 1 epoch\n  batches 1\n}\n"
    result = _run(write_spec(tmp_path, spec), "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    assert [e["step"] for e in events(tmp_path / "run", "validation")] == [3, 5, 8, 10]
    saved = [(e["step"], e["file"]) for e in events(tmp_path / "run", "checkpoint") if e.get("kind") == "regular"]
    assert saved == [(3, "epoch_1.pt"), (5, "epoch_2.pt"), (8, "epoch_3.pt"), (10, "epoch_4.pt")]


def _failure(tmp_path, monkeypatch, extra: str) -> str:
    """FAST_SPEC plus ``extra`` run from the command line: it must fail; its last line."""
    monkeypatch.chdir(tmp_path)
    result = _run(write_spec(tmp_path, FAST_SPEC + extra), "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 1, result.output
    return result.output.strip().splitlines()[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast is supported on CUDA")
def test_unsupported_precision_with_policy_error_fails_in_one_line(tmp_path, monkeypatch):
    assert _failure(tmp_path, monkeypatch, "precision fp16 { on_unsupported error }\n") == (
        "failed: fp16 autocast needs a CUDA or MPS device; stopping, as precision.on_unsupported is error "
        "(fallback would: this run computes in fp32 on cpu)")
    assert not (tmp_path / "run" / "error.txt").exists()  # an expected failure, not a bug with a traceback


def test_checkpoints_every_n_steps_and_every_epoch(tmp_path, monkeypatch):
    """checkpoint.every [4 steps, 1 epoch]: whichever comes first (epochs end at 3, 5, 8, 10)."""
    monkeypatch.chdir(tmp_path)
    spec = FAST_SPEC.replace("epoch_size 128", "epoch_size 40").replace(
        "  every 4 steps\n  keep 2\n", "  every [4 steps, 1 epoch]\n  keep 10\n").replace("max_steps 12", "max_steps 10")
    result = _run(write_spec(tmp_path, spec), "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    saved = [e["step"] for e in events(tmp_path / "run", "checkpoint") if e.get("kind") == "regular"]
    assert saved == [3, 4, 5, 8, 10]


def test_all_validation_batches_need_a_finite_split(tmp_path, monkeypatch):
    assert _failure(tmp_path, monkeypatch, "validation {\n  every 4 steps\n  batches all\n}\n") == (
        "failed: validation.batches all: task rule_classification generates its validation data without end; "
        "give a number of batches")


def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should go")
    result = _run(write_spec(tmp_path, FAST_SPEC), "--run-dir", tmp_path / "blocker" / "run", "--quiet")
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("failed: cannot create the run directory: Not a directory"), last


def test_a_console_that_went_away_does_not_stop_the_run():
    """`specrun run ... 2>&1 | head`: once head exits, writes fail; the run must go on, silently."""
    from specrun.engine.console import Console

    class Closed:
        writes = 0

        def write(self, text):
            Closed.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def isatty(self):
            return False

    console = Console(stream=Closed())
    console.say("first line")  # fails quietly
    console.say("second line")  # and the console has gone quiet
    assert console.quiet and Closed.writes == 1
