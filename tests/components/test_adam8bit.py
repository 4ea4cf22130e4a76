"""Optimizer adamw8bit: bitsandbytes wherever its AdamW8bit actually steps (probed once), else the
32-bit fallback with a one-line message saying why."""

from __future__ import annotations

import importlib.util
import io
import sys
import types

import pytest
import torch

from specrun.components.api import Context
from specrun.components.optim import adam8bit
from specrun.components.optim.common import decay_groups

PARAMS = {"lr": 2e-3, "betas": [0.8, 0.95], "weight_decay": 0.1, "eps": 1e-7}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _fresh_probe():
    """Each test sees its own (possibly faked) bitsandbytes, not a verdict cached by another."""
    adam8bit.probe_bitsandbytes.cache_clear()
    yield
    adam8bit.probe_bitsandbytes.cache_clear()


def _model(width: int = 8):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.LayerNorm(width), torch.nn.Linear(width, 2))


def _ctx(device):
    notes: list[str] = []
    return Context(seed=0, device=torch.device(device), batch_size=4, log=notes.append), notes


def _fake_bitsandbytes(monkeypatch, adamw8bit_class):
    fake = types.ModuleType("bitsandbytes")
    fake.__version__ = "9.9.9"
    fake.optim = types.SimpleNamespace(AdamW8bit=adamw8bit_class)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: object() if name == "bitsandbytes" else real(name, *a, **k))
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)


def _train(model, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 4, generator=gen)).square().mean().backward()
        opt.step()


def test_real_bitsandbytes_steps_8bit_adamw_on_this_cpu():
    """bitsandbytes (dev extra) runs AdamW8bit on CPUs: no fallback, 8-bit state, tracks AdamW.

    Tolerance: 8-bit blockwise moments make each step differ from 32-bit AdamW's by a
    fraction of lr; after 20 steps the weights stay within 3 x lr of torch's AdamW
    (measured 1.25 x lr after 50 steps on a 64-256-64 MLP).
    """
    ctx, notes = _ctx("cpu")
    model = _model(width=1024)  # 4 x 1024 = 4096 elements: bitsandbytes' smallest 8-bit tensor
    opt = adam8bit.build_optimizer(PARAMS, model, ctx)
    assert notes == [] and type(opt).__name__ == "AdamW8bit"
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    reference = _model(width=1024)
    ref_opt = torch.optim.AdamW(decay_groups(reference, 0.1), lr=2e-3, betas=(0.8, 0.95), eps=1e-7)
    _train(model, opt, 20, seed=0)
    _train(reference, ref_opt, 20, seed=0)
    assert opt.state[model[0].weight]["state1"].dtype == torch.uint8
    for p, q in zip(model.parameters(), reference.parameters()):
        assert (p - q).abs().max() <= 3 * 2e-3


def test_real_bitsandbytes_state_round_trip_resumes_exactly():
    ctx, _ = _ctx("cpu")
    model = _model(width=1024)
    opt = adam8bit.build_optimizer(PARAMS, model, ctx)
    _train(model, opt, 3, seed=0)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # the engine never unpickles arbitrary objects
    resumed = _model(width=1024)
    resumed.load_state_dict(saved["model"])
    opt2 = adam8bit.build_optimizer(PARAMS, resumed, ctx)
    opt2.load_state_dict(saved["opt"])
    _train(model, opt, 4, seed=1)
    _train(resumed, opt2, 4, seed=1)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_not_installed_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "bitsandbytes" else real(name, *a, **k))
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    ctx, notes = _ctx("cpu")
    opt = adam8bit.build_optimizer(PARAMS, _model(), ctx)
    assert type(opt) is torch.optim.AdamW
    assert notes == ["adamw8bit: bitsandbytes is not installed (pip install bitsandbytes); "
                     "using 32-bit AdamW"]
    group = opt.param_groups[0]
    assert group["lr"] == 2e-3 and group["betas"] == (0.8, 0.95) and group["eps"] == 1e-7
    # decay on matrices only: the biases and the LayerNorm gain are in a no-decay group
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(p.dim() >= 2 for p in opt.param_groups[0]["params"])
    assert all(p.dim() < 2 for p in opt.param_groups[1]["params"])


def test_a_broken_import_falls_back_with_its_first_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: object() if name == "bitsandbytes" else real(name, *a, **k))

    def broken(name, *a, **k):
        raise RuntimeError("CUDA Setup failed despite GPU being available.\nmore lines")

    monkeypatch.setattr(adam8bit.importlib, "import_module", broken)
    ctx, notes = _ctx("cuda")  # only the device's type is read before the step: no GPU needed
    opt = adam8bit.build_optimizer(PARAMS, _model(), ctx)
    assert type(opt) is torch.optim.AdamW
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith("adamw8bit: bitsandbytes failed to import (RuntimeError: CUDA Setup failed")
    assert notes[0].endswith("; using 32-bit AdamW")


def test_a_device_where_the_step_fails_falls_back_and_says_so(monkeypatch):
    class NoKernel(torch.optim.AdamW):
        def step(self, closure=None):
            raise NotImplementedError("no 8-bit optimizer kernel for this device\nsecond line")

    _fake_bitsandbytes(monkeypatch, NoKernel)
    ctx, notes = _ctx("cpu")
    opt = adam8bit.build_optimizer(PARAMS, _model(), ctx)
    assert type(opt) is torch.optim.AdamW
    assert notes == ["adamw8bit: bitsandbytes 9.9.9 cannot step AdamW8bit on cpu (NotImplementedError: "
                     "no 8-bit optimizer kernel for this device); using 32-bit AdamW"]


def test_a_step_that_keeps_32bit_state_is_not_taken_for_8bit(monkeypatch):
    _fake_bitsandbytes(monkeypatch, torch.optim.AdamW)  # steps fine, but its state is fp32
    ctx, notes = _ctx("cpu")
    assert type(adam8bit.build_optimizer(PARAMS, _model(), ctx)) is torch.optim.AdamW
    assert notes == ["adamw8bit: bitsandbytes 9.9.9 AdamW8bit kept no 8-bit state on cpu; using 32-bit AdamW"]


def test_the_probe_runs_once_per_device_type(monkeypatch):
    made = []

    class Working(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            made.append(kwargs)
            super().__init__(params, **kwargs)

        def step(self, closure=None):
            super().step(closure)
            for p, st in self.state.items():
                st["state1"] = torch.zeros(p.shape, dtype=torch.uint8)

    _fake_bitsandbytes(monkeypatch, Working)
    ctx, notes = _ctx("cpu")
    for _ in range(3):
        assert isinstance(adam8bit.build_optimizer(PARAMS, _model(), ctx), Working)
    assert notes == []
    assert made[0] == {"lr": 1e-3}  # the probe's own optimizer, once
    assert made[1:] == [{"lr": 2e-3, "betas": (0.8, 0.95), "eps": 1e-7, "weight_decay": 0.1}] * 3


def test_fallback_trains(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "bitsandbytes" else real(name, *a, **k))
    ctx, _ = _ctx("cpu")
    model = _model()
    opt = adam8bit.build_optimizer({"lr": 1e-2}, model, ctx)  # defaults fill the rest
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
