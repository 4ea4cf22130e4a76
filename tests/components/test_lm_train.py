"""End to end on the synthetic corpus: the validation loss falls, a sample comes out."""

from __future__ import annotations

import pytest
import torch

from specrun.components.api import Context
from specrun.components.lm.model import build_model
from specrun.components.lm.task import build_task
from specrun.components.losses import build_cross_entropy
from specrun.components.optim.muon import build_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train(tmp_path, steps, model_params, optimizer=None, seq_len=48, batch=16, lr=3e-3, hook=None):
    torch.manual_seed(0)
    ctx = Context(seed=0, device="cpu", batch_size=batch, cache_dir=str(tmp_path / "cache"))
    task = build_task({"seq_len": seq_len, "packing": "concat",
                       "synthetic": {"samples": 4000, "val_samples": 200}}, ctx)
    model = build_model(model_params, task.model_info(), ctx)
    loss_fn = build_cross_entropy({}, ctx)
    opt = optimizer(model, ctx) if optimizer else torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))

    def val_loss():
        model.eval()
        with torch.no_grad():
            losses = [loss_fn(model(b), b) for b in task.val_batches(4)]
        model.train()
        return float(torch.stack(losses).mean())

    before = val_loss()
    stream = task.train_batches(0)
    for step in range(steps):
        if hook:
            hook(model, step)
        b = next(stream)
        out = model(b)
        loss = loss_fn(out, b) + out.get("aux_loss", 0.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    after = val_loss()
    sample = task.generate(model, ["What is 25 + 17? A:"], 6)
    return before, after, sample, out


def test_validation_loss_falls(tmp_path):
    before, after, sample, _ = train(tmp_path, 80, {"width": 48, "depth": 2, "heads": 2}, seq_len=32)
    assert before > 5.0  # ~ln(259) at init
    assert after < 0.6 * before, (before, after)
    assert isinstance(sample[0], str) and len(sample) == 1


def test_cognate_style_model_learns_with_mugrokfast(tmp_path):
    def opt(model, ctx):
        return build_optimizer({"lr": 3e-3, "muon_lr": 0.02, "grokfast_lambda": 0.02}, model, ctx)

    before, after, _, out = train(tmp_path, 60, {"width": 48, "depth": 2, "heads": 2, "ltm": {"dim": 16},
                                                 "act": {"enabled": True}}, optimizer=opt, seq_len=32)
    assert after < 0.6 * before, (before, after)
    assert float(out["metrics"]["act_variance"]) > 0


def test_aura_style_model_learns_through_switch_and_stages(tmp_path):
    def hook(model, step):
        if step == 20:
            model.set_switch("memory.enable", True)
        if step == 40:
            model.set_params({"stage": 2})

    params = {"width": 48, "depth": 2, "heads": 2, "stage": 1,
              "memory": {"place_cells": 64, "replay_buffer": 1024}, "language_zone": {"depth": 1}}
    before, after, _, out = train(tmp_path, 80, params, hook=hook, seq_len=32)
    assert after < 0.6 * before, (before, after)
    assert "zone_balance" in out["metrics"]
