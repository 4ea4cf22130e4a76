"""Optimizer adamw8bit: the 32-bit fallback and its one-line message; the 8-bit path with a stand-in."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from specrun.components.api import Context
from specrun.components.optim import adam8bit

PARAMS = {"lr": 2e-3, "betas": [0.8, 0.95], "weight_decay": 0.1, "eps": 1e-7}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is faster, and far faster on a shared, loaded CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


def _ctx(device):
    notes: list[str] = []
    return Context(seed=0, device=torch.device(device), batch_size=4, log=notes.append), notes


def _no_bitsandbytes(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "bitsandbytes" else real(name, *a, **k))
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)


def test_cpu_falls_back_to_adamw_with_one_message():
    ctx, notes = _ctx("cpu")
    opt = adam8bit.build_optimizer(PARAMS, _model(), ctx)
    assert type(opt) is torch.optim.AdamW
    assert notes == ["adamw8bit: needs CUDA; this run is on cpu; using 32-bit AdamW"]
    group = opt.param_groups[0]
    assert group["lr"] == 2e-3 and group["betas"] == (0.8, 0.95) and group["eps"] == 1e-7
    # decay on matrices only: the biases and the LayerNorm gain are in a no-decay group
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(p.dim() >= 2 for p in opt.param_groups[0]["params"])
    assert all(p.dim() < 2 for p in opt.param_groups[1]["params"])


def test_cuda_without_bitsandbytes_says_how_to_install(monkeypatch):
    _no_bitsandbytes(monkeypatch)
    ctx, notes = _ctx("cuda")  # only the device's type is read: no GPU needed
    opt = adam8bit.build_optimizer(PARAMS, _model(), ctx)
    assert type(opt) is torch.optim.AdamW
    assert notes == ["adamw8bit: bitsandbytes is not installed (pip install bitsandbytes); "
                     "using 32-bit AdamW"]


def test_cuda_with_a_broken_bitsandbytes_falls_back(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: object() if name == "bitsandbytes" else real(name, *a, **k))

    def broken(name, *a, **k):
        raise RuntimeError("CUDA Setup failed despite GPU being available.\nmore lines")

    monkeypatch.setattr(adam8bit.importlib, "import_module", broken)
    ctx, notes = _ctx("cuda")
    opt = adam8bit.build_optimizer(PARAMS, _model(), ctx)
    assert type(opt) is torch.optim.AdamW
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith("adamw8bit: bitsandbytes failed to import (RuntimeError: CUDA Setup failed")
    assert notes[0].endswith("; using 32-bit AdamW")


def test_cuda_with_bitsandbytes_uses_adamw8bit(monkeypatch):
    made = {}

    class FakeAdamW8bit(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            made.update(kwargs)
            super().__init__(params, **kwargs)

    fake = types.ModuleType("bitsandbytes")
    fake.optim = types.SimpleNamespace(AdamW8bit=FakeAdamW8bit)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: object() if name == "bitsandbytes" else real(name, *a, **k))
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    ctx, notes = _ctx("cuda")
    opt = adam8bit.build_optimizer(PARAMS, _model(), ctx)
    assert isinstance(opt, FakeAdamW8bit) and notes == []
    assert made == {"lr": 2e-3, "betas": (0.8, 0.95), "eps": 1e-7, "weight_decay": 0.1}


def test_fallback_trains(monkeypatch):
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


@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
                    reason="needs CUDA and bitsandbytes")
def test_real_bitsandbytes_on_cuda():  # pragma: no cover - no GPU in CI
    model = _model().cuda()
    ctx, notes = _ctx("cuda")
    opt = adam8bit.build_optimizer(PARAMS, model, ctx)
    assert notes == [] and type(opt).__name__ == "AdamW8bit"
    model(torch.randn(3, 4, device="cuda")).sum().backward()
    opt.step()
