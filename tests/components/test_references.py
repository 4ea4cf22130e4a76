"""Numerics against independent implementations, each test with its tolerance.

- Lion (fp32 state) against lion-pytorch, the reference implementation (dev extra): bit for bit.
- LR schedules against torch.optim.lr_scheduler: within 1e-12 relative.
- RMSNorm against torch.nn.RMSNorm: bit for bit in fp32, one bf16 rounding for bf16 input.
- SelfAttention against torch.nn.MultiheadAttention: bit for bit (causal, additive bias).
- Every SHA-256 round state against a direct transcription of FIPS 180-4 section 6.2.2,
  and the digest against hashlib: exact.
BitLinear against BitNet's reference code: tests/components/test_sha256_model.py.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import lion_pytorch
import numpy as np
import pytest
import torch
from torch import nn

from specrun.components.nn import RMSNorm, SelfAttention
from specrun.components.optim.lion import Lion
from specrun.components.sha256 import trace as T
from specrun.engine.schedule import build_scheduler
from specrun.sections import SchedulePolicy


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- Lion -----------------------------------------------------------------------------------------

def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 4))


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lion_matches_lion_pytorch_bit_for_bit(weight_decay):
    """200 steps of a small MLP on a moving regression target. Tolerance: none (torch.equal)."""
    ours, ref = _mlp(0), _mlp(0)
    opt = Lion(ours.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=weight_decay)
    ref_opt = lion_pytorch.Lion(ref.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        x = torch.randn(16, 12, generator=gen)
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            (model(x) - x[:, :4]).square().mean().backward()
            o.step()
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg"], ref_opt.state[q]["exp_avg"])


# ---- LR schedules ---------------------------------------------------------------------------------

def _lrs(make, steps: int, lr: float = 0.1) -> list[float]:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's deprecation notes
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


TOTAL, WARMUP = 100, 10
L = torch.optim.lr_scheduler


@pytest.mark.parametrize("schedule, torch_scheduler", [
    ({"type": "cosine", "min_ratio": 0.1},
     lambda o: L.CosineAnnealingLR(o, T_max=TOTAL, eta_min=0.01)),
    ({"type": "cosine", "eta_min": 0.002},
     lambda o: L.CosineAnnealingLR(o, T_max=TOTAL, eta_min=0.002)),
    ({"type": "linear_warmup", "warmup_start": 0.05},
     lambda o: L.LinearLR(o, start_factor=0.05, end_factor=1.0, total_iters=WARMUP)),
    ({"type": "warmup_cosine", "warmup_start": 0.05, "min_ratio": 0.1},
     lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.05, total_iters=WARMUP),
                                  L.CosineAnnealingLR(o, T_max=TOTAL - WARMUP, eta_min=0.01)],
                              milestones=[WARMUP])),
])
def test_schedules_match_torch_schedulers(schedule, torch_scheduler):
    """Every step's LR within 1e-12 relative of torch's (measured 3e-15: torch's recursive
    form vs our closed form). Past the last step torch's cosine climbs back up; ours holds
    its floor."""
    warmup = WARMUP if schedule["type"] != "cosine" else 0
    ours = _lrs(lambda o: build_scheduler(o, SchedulePolicy.of(schedule), TOTAL, warmup), TOTAL + 5)
    ref = _lrs(torch_scheduler, TOTAL + 1)
    for step, (a, b) in enumerate(zip(ours, ref)):
        assert abs(a - b) <= 1e-12 * b, (step, a, b)
    if schedule["type"] != "linear_warmup":
        assert ours[TOTAL:] == [ours[TOTAL]] * 5


# ---- RMSNorm and attention ------------------------------------------------------------------------

def test_rmsnorm_matches_torch():
    """fp32: bit for bit. bf16 input (normalised in fp32, rounded once to bf16, then scaled
    by the fp32 gain): within one bf16 rounding, 2^-8 relative, of torch's fp32 result."""
    torch.manual_seed(0)
    ours = RMSNorm(64)
    ref = nn.RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(64))
        ref.weight.copy_(ours.weight)
    x = torch.randn(8, 16, 64) * 3
    assert torch.equal(ours(x), ref(x))
    xb = x.to(torch.bfloat16)
    expected = ref(xb.float())
    assert ((ours(xb).float() - expected).abs() <= 2 ** -8 * expected.abs()).all()


@pytest.mark.parametrize("mask", ["none", "causal", "bias"])
def test_self_attention_matches_multihead_attention(mask):
    """Fused qkv / out projections loaded into nn.MultiheadAttention (no biases, batch first).
    Tolerance: none (torch.equal); the additive bias is the relative-position bias the SHA-256
    model passes, expanded per head as MultiheadAttention wants it."""
    torch.manual_seed(1)
    b, t, d, h = 4, 16, 64, 4
    attn = SelfAttention(d, h, causal=mask == "causal")
    ref = nn.MultiheadAttention(d, h, bias=False, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.out_proj.weight.copy_(attn.out.weight)
    x = torch.randn(b, t, d)
    if mask == "bias":
        bias = torch.randn(1, h, t, t)
        ours, ref_mask = attn(x, bias), bias.expand(b, h, t, t).reshape(b * h, t, t)
    else:
        ours = attn(x)
        ref_mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1) if mask == "causal" else None
    expected, _ = ref(x, x, x, attn_mask=ref_mask, need_weights=False)
    assert torch.equal(ours, expected)


# ---- SHA-256 --------------------------------------------------------------------------------------

def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & 0xFFFFFFFF


def _primes(n: int) -> list[int]:
    out = []
    candidate = 2
    while len(out) < n:
        if all(candidate % p for p in out):
            out.append(candidate)
        candidate += 1
    return out


def _icbrt(n: int) -> int:
    lo, hi = 0, 1 << (n.bit_length() // 3 + 1)
    while lo < hi:  # the largest x with x^3 <= n
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if mid ** 3 <= n else (lo, mid - 1)
    return lo


# FIPS 180-4 4.2.2 / 5.3.3: the first 32 fractional bits of the cube roots of the first 64
# primes and of the square roots of the first 8, in exact integer arithmetic.
K = [_icbrt(p << 96) & 0xFFFFFFFF for p in _primes(64)]
IV = [math.isqrt(p << 64) & 0xFFFFFFFF for p in _primes(8)]


def _fips_states(block: list[int], init: list[int]) -> list[tuple[int, ...]]:
    """FIPS 180-4 6.2.2 steps 1-3 in plain Python integers: the state before round 0 and after each."""
    k = K
    w = list(block)
    for t in range(16, 64):
        s0 = _rotr(w[t - 15], 7) ^ _rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = _rotr(w[t - 2], 17) ^ _rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((s1 + w[t - 7] + s0 + w[t - 16]) & 0xFFFFFFFF)
    a, b, c, d, e, f, g, h = init
    states = [(a, b, c, d, e, f, g, h)]
    for t in range(64):
        t1 = (h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[t] + w[t]) & 0xFFFFFFFF
        t2 = ((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & 0xFFFFFFFF
        h, g, f, e, d, c, b, a = g, f, e, (d + t1) & 0xFFFFFFFF, c, b, a, (t1 + t2) & 0xFFFFFFFF
        states.append((a, b, c, d, e, f, g, h))
    return states


def test_the_derived_constants_are_the_standard_ones():
    assert K[0] == 0x428A2F98 and K[63] == 0xC67178F2 and IV[0] == 0x6A09E667 and IV[7] == 0x5BE0CD19


def test_every_round_state_matches_fips_180_4_and_the_digest_hashlib():
    """Random single-block messages from the IV and random blocks from random chaining values.
    Tolerance: none (every word of every round state equal)."""
    rng = np.random.default_rng(0)
    messages = [rng.bytes(int(n)) for n in rng.integers(0, 56, size=8)]
    blocks = np.stack([T.pad_single_block(m) for m in messages])
    states, _ = T.trace_np(blocks, 64)
    iv = IV
    for i, message in enumerate(messages):
        expected = _fips_states([int(v) for v in blocks[i]], iv)
        assert [tuple(int(v) for v in row) for row in states[i]] == expected
        assert T.digest_from_trace(states[i:i + 1])[0] == hashlib.sha256(message).digest()
    random_blocks = rng.integers(0, 2 ** 32, size=(4, 16), dtype=np.uint32)
    init = rng.integers(0, 2 ** 32, size=(4, 8), dtype=np.uint32)
    states, _ = T.trace_np(random_blocks, 64, init=init)
    for i in range(4):
        expected = _fips_states([int(v) for v in random_blocks[i]], [int(v) for v in init[i]])
        assert [tuple(int(v) for v in row) for row in states[i]] == expected
