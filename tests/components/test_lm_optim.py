"""mugrokfast: Muon + AdamW + Grokfast EMA against hand-written definitions."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from specrun.components.api import Context
from specrun.components.optim.muon import MuGrokfast, build_optimizer, newton_schulz_fp32, split_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CTX = Context(seed=0, device="cpu", batch_size=1)
P = {"lr": 1e-2, "muon_lr": 2e-2, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8,
     "muon_momentum": 0.95, "nesterov": True, "ns_steps": 5, "muon_adjust_lr": "original",
     "grokfast_lambda": 0.5, "grokfast_alpha": 0.9, "muon_ns_dtype": "bfloat16"}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 6)
        self.hidden = nn.Linear(6, 4)  # weight 2-D -> Muon, bias -> AdamW (no decay)
        self.wide = nn.Linear(4, 8, bias=False)  # tall after transpose: A/B = 2 -> lr adjust sqrt(2)
        self.head = nn.Linear(8, 10, bias=False)
        self.norm = nn.Parameter(torch.ones(6))
        self.no_muon = {"head.weight"}


def fake_grads(model, step):
    g = torch.Generator().manual_seed(100 + step)
    return {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}


def newton_schulz(g, steps=5, a=3.4445, b=-4.7750, c=2.0315, eps=1e-7, dtype=torch.bfloat16):
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):  # x <- a x + (b G + c G^2) x, G = x x^T, in bf16 as torch does
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def reference(model, steps, ns_dtype=torch.bfloat16):
    """The definitions, one parameter at a time."""
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    muon_names = {"hidden.weight", "wide.weight"}
    ema, m, v, buf = {}, {}, {}, {}
    b1, b2 = P["betas"]
    for t in range(1, steps + 1):
        grads = fake_grads(model, t)
        for n, g in grads.items():
            ema[n] = g.clone() if n not in ema else P["grokfast_alpha"] * ema[n] + (1 - P["grokfast_alpha"]) * g
            g = g + P["grokfast_lambda"] * ema[n]
            p = params[n]
            if n in muon_names:
                buf[n] = P["muon_momentum"] * buf.get(n, torch.zeros_like(g)) + (1 - P["muon_momentum"]) * g
                update = (1 - P["muon_momentum"]) * g + P["muon_momentum"] * buf[n]
                o = newton_schulz(update, dtype=ns_dtype).float()
                lr = P["muon_lr"]
                adjusted = lr * math.sqrt(max(1, p.shape[0] / p.shape[1]))
                params[n] = p * (1 - lr * P["weight_decay"]) - adjusted * o
            else:
                wd = P["weight_decay"] if p.ndim >= 2 else 0.0
                m[n] = b1 * m.get(n, torch.zeros_like(g)) + (1 - b1) * g
                v[n] = b2 * v.get(n, torch.zeros_like(g)) + (1 - b2) * g * g
                p = p * (1 - P["lr"] * wd)
                mhat, vhat = m[n] / (1 - b1 ** t), v[n] / (1 - b2 ** t)
                params[n] = p - P["lr"] * mhat / (vhat.sqrt() + P["eps"])
    return params


def run(model, opt, steps, first=1):
    for t in range(first, first + steps):
        grads = fake_grads(model, t)
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        opt.step()
        opt.zero_grad()


def test_split_puts_hidden_matrices_on_muon():
    muon, decay, no_decay = split_parameters(Tiny())
    assert [n for n, _ in muon] == ["hidden.weight", "wide.weight"]
    assert [n for n, _ in decay] == ["emb.weight", "head.weight"]
    assert [n for n, _ in no_decay] == ["norm", "hidden.bias"]


def test_matches_hand_definitions():
    model = Tiny()
    expected = reference(copy.deepcopy(model), 3)
    opt = build_optimizer(P, model, CTX)
    run(model, opt, 3)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize("setting", ["float32", "auto"])
def test_float32_newton_schulz_on_cpu(setting):
    from torch.optim import _muon

    original = _muon._zeropower_via_newtonschulz
    model = Tiny()
    expected = reference(copy.deepcopy(model), 3, ns_dtype=torch.float32)
    opt = build_optimizer({**P, "muon_ns_dtype": setting}, model, CTX)
    run(model, opt, 3)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-5, atol=1e-6, msg=n)
    assert _muon._zeropower_via_newtonschulz is original  # restored after each step
    # the float32 iteration agrees with torch's bf16 one to bf16 precision
    g = torch.randn(12, 5)
    torch.testing.assert_close(newton_schulz_fp32(g, (3.4445, -4.7750, 2.0315), 5, 1e-7),
                               original(g, (3.4445, -4.7750, 2.0315), 5, 1e-7).float(), atol=0.08, rtol=0.05)


def test_grokfast_filter_alone():
    model = Tiny()
    opt = build_optimizer({**P, "grokfast_lambda": 2.0, "grokfast_alpha": 0.5}, model, CTX)
    g1, g2 = torch.randn(4, 6), torch.randn(4, 6)
    model.hidden.weight.grad = g1.clone()
    opt.filter_gradients()
    torch.testing.assert_close(model.hidden.weight.grad, g1 + 2.0 * g1)  # ema starts at g1
    model.hidden.weight.grad = g2.clone()
    opt.filter_gradients()
    torch.testing.assert_close(model.hidden.weight.grad, g2 + 2.0 * (0.5 * g1 + 0.5 * g2))
    # parameters without gradients (a disabled module) are skipped, their ema kept
    assert model.wide.weight.grad is None
    # the engine's curriculum writes optimizer settings into every group
    for group in opt.param_groups:
        group["grokfast_lambda"] = 0.0
    g3 = torch.randn(4, 6)
    model.hidden.weight.grad = g3.clone()
    opt.filter_gradients()
    torch.testing.assert_close(model.hidden.weight.grad, g3)


def test_state_dict_round_trip_is_exact():
    a = Tiny()
    opt_a = build_optimizer(P, a, CTX)
    sched_a = torch.optim.lr_scheduler.LambdaLR(opt_a, lambda s: 1.0 / (1 + s))
    for t in range(1, 4):
        run(a, opt_a, 1, first=t)
        sched_a.step()
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict(), "sched": sched_a.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b = Tiny()
    b.load_state_dict(saved["model"])
    opt_b = build_optimizer({**P, "grokfast_lambda": 0.0}, b, CTX)  # restored from the checkpoint
    sched_b = torch.optim.lr_scheduler.LambdaLR(opt_b, lambda s: 1.0 / (1 + s))
    opt_b.load_state_dict(saved["opt"])
    sched_b.load_state_dict(saved["sched"])
    assert opt_b.grokfast_lambda == P["grokfast_lambda"]
    assert [g["lr"] for g in opt_b.param_groups] == [g["lr"] for g in opt_a.param_groups]
    for t in range(4, 7):
        run(a, opt_a, 1, first=t)
        sched_a.step()
        run(b, opt_b, 1, first=t)
        sched_b.step()
    for (n, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(x, y), n


def test_scheduler_scales_every_group():
    model = Tiny()
    opt = build_optimizer(P, model, CTX)
    assert isinstance(opt, torch.optim.Optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == sorted([0.5 * P["lr"]] * 2 + [0.5 * P["muon_lr"]])
    # the inner optimizers see the scheduled rates
    assert opt.muon.param_groups[0]["lr"] == 0.5 * P["muon_lr"]
    assert all(g["lr"] == 0.5 * P["lr"] for g in opt.adamw.param_groups)
    run(model, opt, 1)
    sched.step()


def test_works_with_causal_lm_and_set_params():
    from specrun.components.lm.model import build_model
    info = {"vocab_size": 259, "seq_len": 16}
    m = build_model({"width": 32, "depth": 1, "heads": 2, "tie_embeddings": False,
                     "memory": {"place_cells": 8}}, info, CTX)
    opt = build_optimizer(P, m, CTX)
    muon_names = {n for n, p in m.named_parameters() if any(p is q for q in opt.muon.param_groups[0]["params"])}
    assert "head.weight" not in muon_names and "tok_emb.weight" not in muon_names
    assert not any("place_" in n for n in muon_names)
    assert "stack.blocks.0.attn.qkv.weight" in muon_names
    opt.set_params({"grokfast_lambda": 0.1})
    assert opt.grokfast_lambda == 0.1
    with pytest.raises(NotImplementedError):
        opt.add_param_group({"params": [torch.zeros(2, 2, requires_grad=True)]})
    assert isinstance(opt, MuGrokfast)
