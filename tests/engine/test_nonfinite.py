"""Non-finite steps are skipped, counted and logged; too many in a row end the run."""

import json

import pytest
import torch
from click.testing import CliRunner

import specrun.engine.loop as loop
from specrun.engine.step import micro_step, optimizer_step, rescale_grads, unscale_and_clip
from specrun.cli import main
from specrun.components.builtin import RuleClassification

from specrun.engine.readout import Readout

from .conftest import csv_rows, events, make_run, params_copy, run_inproc, write_spec

SPEC = """
spec nonfinite
seed 4
task rule_classification { features 8; classes 3 }
model mlp { width 16; depth 2 }
loss cross_entropy
optimizer adamw { lr 0.01 }
batch 8
accumulate 2
max_steps 12
clip_grad_norm 1.0
checkpoint { every 4 steps }
log { every 1 step }
"""


def _poison(monkeypatch, indices):
    """Micro-batches of the training stream whose index is in ``indices`` carry a NaN input."""
    original = RuleClassification._batch

    def batch(self, stream, index):
        out = original(self, stream, index)
        if stream == 0 and (index in indices if not callable(indices) else indices(index)):
            out["inputs"] = out["inputs"].clone()
            out["inputs"][0, 0] = float("nan")
        return out

    monkeypatch.setattr(RuleClassification, "_batch", batch)


def _record_steps(monkeypatch):
    """Weights before and after each optimizer step the loop takes."""
    calls = []
    original = loop.optimizer_step

    def step(run, nonfinite):
        before = params_copy(run.model)
        original(run, nonfinite)
        calls.append((before, params_copy(run.model), not nonfinite.item()))

    monkeypatch.setattr(loop, "optimizer_step", step)
    return calls


def test_helpers_skip_a_nan_step_without_touching_weights(tmp_path):
    run = make_run(tmp_path, SPEC)
    g = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randn(8, 8, generator=g), "targets": torch.randint(0, 3, (8,), generator=g)}
    batch["inputs"][3, 2] = float("nan")
    before = params_copy(run.model)
    loss, _ = micro_step(run, batch, 0.5)
    assert not torch.isfinite(loss)
    norm = unscale_and_clip(run, 1.0)
    nonfinite = Readout(norm.device).nonfinite(loss, norm)
    assert nonfinite.item() == 1.0
    optimizer_step(run, nonfinite)  # fused AdamW: skipped on the device
    assert not torch.isfinite(norm)
    after = params_copy(run.model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.grad is None for p in run.model.parameters())  # the poisoned gradients are gone
    # AdamW never stepped: its step counts and moments are where a fresh optimizer's are
    for state in run.optimizer.state_dict()["state"].values():
        assert float(state["step"]) == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()


@pytest.mark.parametrize("skip_on", ["host", "device"])
def test_one_nan_step_is_skipped_and_counted(tmp_path, monkeypatch, skip_on):
    """On the CPU the flag is read on the host; on a GPU fused AdamW skips with found_inf."""
    if skip_on == "device":
        monkeypatch.setattr(Readout, "free_reads", ())
    monkeypatch.chdir(tmp_path)
    _poison(monkeypatch, {4})  # micro-batches 4 and 5 make optimizer step 3
    calls = _record_steps(monkeypatch)
    run_dir = tmp_path / "run"
    out = run_inproc(write_spec(tmp_path, SPEC), run_dir)
    assert out.code == 0, out.message

    skips = events(run_dir, "skip")
    assert [(e["step"], e["consecutive"]) for e in skips] == [(3, 1)]
    assert str(skips[0]["loss"]).lower() == "nan"

    _, rows = csv_rows(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2] + list(range(4, 13))
    assert [int(r["skipped"]) for r in rows] == [0, 0] + [1] * 9
    assert all(float(r["train.loss"]) == float(r["train.loss"]) for r in rows)  # no NaN reached the log

    assert len(calls) == 12
    for i, (before, after, stepped) in enumerate(calls, 1):
        unchanged = all(torch.equal(before[n], after[n]) for n in before)
        assert stepped is (i != 3) and unchanged is (i == 3), i

    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert final["counters"]["skipped"] == 1 and final["counters"]["step"] == 12
    steps = {float(s["step"]) for s in final["optimizer"]["state"].values()}
    assert steps == {11.0}  # AdamW took 11 steps, not 12


def test_consecutive_count_resets_after_a_good_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _poison(monkeypatch, {4, 6, 14})  # steps 3, 4 and 8
    run_dir = tmp_path / "run"
    out = run_inproc(write_spec(tmp_path, SPEC + "nonfinite { max_consecutive 3 }\n"), run_dir)
    assert out.code == 0, out.message
    assert [(e["step"], e["consecutive"]) for e in events(run_dir, "skip")] == [(3, 1), (4, 2), (8, 1)]


def test_persistent_nan_ends_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _poison(monkeypatch, lambda i: i >= 4)
    run_dir = tmp_path / "run"
    out = run_inproc(write_spec(tmp_path, SPEC + "nonfinite { max_consecutive 3 }\n"), run_dir)
    assert out.code == 1 and out.status == "failed"
    assert "\n" not in out.message
    assert "nonfinite.max_consecutive is 3" in out.message
    assert out.message.startswith("3 consecutive steps had non-finite loss or gradients")
    assert [(e["step"], e["consecutive"]) for e in events(run_dir, "skip")] == [(3, 1), (4, 2), (5, 3)]
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "failed" and status["step"] == 5


def test_persistent_nan_exit_code_and_last_line_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _poison(monkeypatch, lambda i: i >= 4)
    spec = write_spec(tmp_path, SPEC + "nonfinite { max_consecutive 3 }\n")
    result = CliRunner().invoke(main, ["run", str(spec), "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("failed: 3 consecutive steps") and "nonfinite.max_consecutive" in lines[0]


def test_expectation_is_checked_even_if_its_step_was_skipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _poison(monkeypatch, {6})  # step 4 is skipped
    spec = write_spec(tmp_path, SPEC + "expect train.loss < 0 by 4 steps\n")  # can never hold
    out = run_inproc(spec, tmp_path / "run")
    assert out.code == 1, out.message


def test_events_stay_strict_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _poison(monkeypatch, {4})
    run_dir = tmp_path / "run"
    assert run_inproc(write_spec(tmp_path, SPEC), run_dir).code == 0

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    for line in (run_dir / "events.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=refuse)


# ---- nonfinite.scope micro_batch: the savant document's "that specific batch is skipped" ----------

MICRO = SPEC + "nonfinite { scope micro_batch }\n"


def test_a_dropped_micro_batch_leaves_the_mean_gradient_of_the_others(tmp_path):
    g = torch.Generator().manual_seed(0)
    clean = {"inputs": torch.randn(8, 8, generator=g), "targets": torch.randint(0, 3, (8,), generator=g)}
    poisoned = {"inputs": clean["inputs"].clone(), "targets": clean["targets"]}
    poisoned["inputs"][3, 2] = float("nan")

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run = make_run(tmp_path / "a", MICRO)
    assert micro_step(run, poisoned, 0.5, drop_nonfinite=True) == (None, {})
    assert all(p.grad is None for p in run.model.parameters())  # no backward for it
    loss, _ = micro_step(run, clean, 0.5, drop_nonfinite=True)
    rescale_grads(run, 2.0)  # one of two kept: its gradient is the mean
    reference = make_run(tmp_path / "b", MICRO)
    micro_step(reference, clean, 1.0)
    for p, q in zip(run.model.parameters(), reference.model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=1e-7)


def test_micro_batch_scope_keeps_the_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _poison(monkeypatch, {4})  # micro-batch 4 of step 3 (micro-batches 4 and 5)
    out = run_inproc(write_spec(tmp_path, MICRO), tmp_path / "run")
    assert out.code == 0, out.message
    assert events(tmp_path / "run", "skip") == []  # the step went on with micro-batch 5
    assert [(e["step"], e["micro"]) for e in events(tmp_path / "run", "skip_micro_batch")] == [(3, 5)]
    _, rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert [r["skipped"] for r in rows] == ["0"] * 12
    assert all(float(r["train.loss"]) == float(r["train.loss"]) for r in rows)  # no NaN reached the log


def test_micro_batch_scope_skips_a_step_with_nothing_left(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _poison(monkeypatch, {4, 5})
    spec = MICRO + "validation { every 3 steps; batches 1 }\n"
    out = run_inproc(write_spec(tmp_path, spec), tmp_path / "run")
    assert out.code == 0, out.message
    assert [e["step"] for e in events(tmp_path / "run", "skip")] == [3]
    assert len(events(tmp_path / "run", "skip_micro_batch")) == 2
    # what is due on a skipped step still happens
    assert [e["step"] for e in events(tmp_path / "run", "validation")] == [3, 6, 9, 12]


def test_the_skip_flag_is_the_same_read_on_the_host_or_computed_on_the_device():
    """Alone on the CPU the flag is read (a constant tensor); across ranks it is computed, a fresh
    tensor each step, since it is all-reduced in place. Both say the same."""
    values = [torch.tensor(v) for v in (1.0, float("nan"), float("inf"), -float("inf"))]
    for loss in values:
        for norm in values:
            host = Readout(torch.device("cpu")).nonfinite(loss, norm)
            shared = Readout(torch.device("cpu"), alone=False)
            device = shared.nonfinite(loss, norm)
            assert host.item() == device.item() == float(not (loss.isfinite() and norm.isfinite()))
            assert shared.nonfinite(loss, norm) is not device  # its own tensor, to all-reduce


def test_the_readout_gives_the_same_numbers_read_at_once_or_at_the_interval():
    """Alone on the CPU what nonfinite() read is kept as numbers; a metric tensor still waits for
    the interval's one stack. Across ranks everything waits. The steps read back alike."""
    steps = [(torch.tensor(1.5), torch.tensor(0.25), {"accuracy": torch.tensor(0.5)}),
             (torch.tensor(float("nan")), torch.tensor(2.0), {}),
             (torch.tensor(0.75), torch.tensor(float("inf")), {"accuracy": torch.tensor(1, dtype=torch.int64)})]
    read = []
    for readout in (Readout(torch.device("cpu")), Readout(torch.device("cpu"), alone=False)):
        for i, (loss, norm, metrics) in enumerate(steps):
            readout.add(i + 1, 1e-3, {"loss": loss, "grad_norm": norm, "_skip": readout.nonfinite(loss, norm), **metrics})
        read.append(readout.read())
        assert len(readout) == 0
    alone, shared = read
    assert [(s, lr, sorted(v)) for s, lr, v in alone] == [(s, lr, sorted(v)) for s, lr, v in shared]
    for (_, _, a), (_, _, b) in zip(alone, shared):
        assert all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)  # NaN reads back as NaN
    assert [v["_skip"] for _, _, v in alone] == [0.0, 1.0, 1.0] and alone[2][2]["accuracy"] == 1.0
