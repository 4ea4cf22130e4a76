"""Gradient clipping: the logged norm is the norm before clipping, the update uses clipped gradients."""

import math

import pytest
import torch

from specrun.engine.step import micro_step, optimizer_step, unscale_and_clip
from specrun.engine.readout import Readout

from .conftest import csv_rows, make_run, params_copy, run_inproc, write_spec

SPEC = """
spec clip
seed 2
task rule_classification {{ features 8; classes 3 }}
model mlp {{ width 16; depth 2 }}
loss cross_entropy
optimizer sgd {{ lr 1.0 }}
batch 32
max_steps 3
{clip}
log {{ every 1 step }}
"""


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"inputs": 3 * torch.randn(32, 8, generator=g), "targets": torch.randint(0, 3, (32,), generator=g)}


def _one_step(tmp_path, clip):
    run = make_run(tmp_path, SPEC.format(clip=f"clip_grad_norm {clip}" if clip else ""))
    micro_step(run, _batch(), 1.0)
    grads = {n: p.grad.detach().clone() for n, p in run.model.named_parameters()}
    before = params_copy(run.model)
    pre_clip = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
    norm = unscale_and_clip(run, run.plan.settings.get("clip_grad_norm"))
    nonfinite = Readout(norm.device).nonfinite(norm, norm)
    optimizer_step(run, nonfinite)
    stepped = not nonfinite.item()
    after = params_copy(run.model)
    delta = {n: after[n] - before[n] for n in before}
    return stepped, float(norm), pre_clip, grads, delta


def _norm(tensors) -> float:
    return math.sqrt(sum(float(t.pow(2).sum()) for t in tensors.values()))


def test_update_is_clipped_and_the_reported_norm_is_not(tmp_path):
    clip = 0.05
    stepped, norm, pre_clip, grads, delta = _one_step(tmp_path, clip)
    assert stepped
    assert pre_clip > 4 * clip  # the case under test: clipping is active
    assert norm == pytest.approx(pre_clip, rel=1e-5)  # what the loop logs as grad_norm
    assert _norm(delta) <= clip * (1 + 1e-5)
    assert _norm(delta) == pytest.approx(clip, rel=1e-3)
    # SGD with lr 1: the update is exactly minus the clipped gradient
    coef = clip / (pre_clip + 1e-6)
    for n, g in grads.items():
        torch.testing.assert_close(delta[n], -coef * g, rtol=1e-4, atol=1e-7)


def test_no_clipping_below_the_threshold(tmp_path):
    stepped, norm, pre_clip, grads, delta = _one_step(tmp_path, 1e6)
    assert stepped and norm == pytest.approx(pre_clip, rel=1e-5)
    for n, g in grads.items():
        torch.testing.assert_close(delta[n], -g, rtol=1e-5, atol=1e-7)


def test_no_clip_setting_steps_with_the_raw_gradient(tmp_path):
    stepped, norm, pre_clip, grads, delta = _one_step(tmp_path, None)
    assert stepped and norm == pytest.approx(pre_clip, rel=1e-5)
    for n, g in grads.items():
        torch.testing.assert_close(delta[n], -g, rtol=1e-5, atol=1e-7)


def test_metrics_csv_logs_the_pre_clip_norm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, SPEC.format(clip="clip_grad_norm 0.001"))
    out = run_inproc(spec, tmp_path / "run")
    assert out.code == 0, out.message
    _, rows = csv_rows(tmp_path / "run" / "metrics.csv")
    norms = [float(r["train.grad_norm"]) for r in rows]
    assert len(norms) == 3
    assert all(n > 0.01 for n in norms), norms  # a post-clip norm would read 0.001
