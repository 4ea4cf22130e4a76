"""bf16 optimizer state (Lion, GaLore-AdamW): stochastic rounding keeps it moving, deterministically.

The round-to-nearest store these tests contrast with is written out inline (``_rtn_*``):
it is what ``state_dtype bf16`` did before, and shows that each bound below can fail.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from specrun.components.optim.galore import GaLoreAdamW
from specrun.components.optim.lion import Lion
from specrun.components.optim.rounding import rounding_generator, stochastic_round_bf16

N = 1024  # elements per test tensor


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bf16 values just below and just above |x| (towards zero, away from zero), signed."""
    bits = x.float().view(torch.int32)
    down = (bits & -65536).view(torch.float32)
    up = ((bits & -65536) + 65536).view(torch.float32)
    return down, up


def _constant_gradient_steps(opt, p, g: float, steps: int) -> None:
    for _ in range(steps):
        p.grad = torch.full_like(p, g)
        opt.step()


# ---- the rounding itself ----------------------------------------------------------------------

def test_stochastic_rounding_picks_a_neighbour_with_the_right_odds():
    """Tolerance: the share rounded up over 200,000 draws is within 0.005 of the exact
    fraction (5 standard deviations of a binomial share at p = 0.3)."""
    x = torch.full((200_000,), 1.0 + 0.3 * 2 ** -7)  # 30 % of the way from 1.0 to the next bf16
    out = stochastic_round_bf16(x, rounding_generator(x.device, 0)).float()
    down, up = _neighbours(x)
    assert bool(((out == down) | (out == up)).all())
    assert abs((out == up).float().mean().item() - 0.3) < 0.005
    assert abs(out.double().mean().item() - x.double().mean().item()) < 0.005 * 2 ** -7  # unbiased


def test_stochastic_rounding_keeps_representable_values_signs_and_specials():
    exact = torch.tensor([0.0, -0.0, 1.0, -2.5, 3.0e38, -1e-40, float("inf"), float("-inf")])
    exact = exact.to(torch.bfloat16).float()  # bf16 values (a subnormal and a near-maximum among them)
    out = stochastic_round_bf16(exact, rounding_generator(exact.device, 1))
    assert torch.equal(out.float(), exact)
    assert torch.equal(torch.signbit(out), torch.signbit(exact))
    assert torch.isnan(stochastic_round_bf16(torch.tensor([float("nan")]), rounding_generator("cpu", 1))).all()
    x = -torch.rand(10_000) * 7  # negative values round in magnitude, as positive ones do
    out = stochastic_round_bf16(x, rounding_generator(x.device, 2)).float()
    down, up = _neighbours(x)
    assert bool(((out == down) | (out == up)).all())


def test_same_key_same_bits_other_key_other_bits():
    x = torch.rand(N)
    a = stochastic_round_bf16(x, rounding_generator(x.device, 0, 5, 3, "exp_avg"))
    b = stochastic_round_bf16(x, rounding_generator(x.device, 0, 5, 3, "exp_avg"))
    assert torch.equal(a, b)
    for other in ((1, 5, 3, "exp_avg"), (0, 6, 3, "exp_avg"), (0, 5, 4, "exp_avg"), (0, 5, 3, "exp_avg_sq")):
        assert not torch.equal(a, stochastic_round_bf16(x, rounding_generator(x.device, *other)))


# ---- Lion ---------------------------------------------------------------------------------------

def _rtn_lion_momentum(g: float, steps: int, beta2: float = 0.99) -> torch.Tensor:
    m = torch.zeros(N, dtype=torch.bfloat16)
    for _ in range(steps):
        m = (m.float() * beta2 + (1 - beta2) * g).to(torch.bfloat16)
    return m.float()


def test_lion_bf16_momentum_reaches_a_constant_gradient():
    """Constant gradient 1.3 for 2,000 steps (beta2 0.99): the fp32 momentum is 1.3 to 1e-9.
    Every bf16 element ends on one of 1.3's two bf16 neighbours (1.296875, 1.3046875), and
    their mean is 1.3 within 0.001 (measured 1.30006). Round to nearest sticks at 1.0."""
    p = nn.Parameter(torch.zeros(N))
    opt = Lion([p], lr=1e-4, betas=(0.9, 0.99), state_dtype="bf16")
    _constant_gradient_steps(opt, p, 1.3, 2000)
    m = opt.state[p]["exp_avg"]
    assert m.dtype == torch.bfloat16
    assert set(m.float().unique().tolist()) <= {1.296875, 1.3046875}
    assert abs(m.float().mean().item() - 1.3) < 1e-3
    assert torch.equal(_rtn_lion_momentum(1.3, 2000), torch.ones(N))  # the stall this fixes


def _lion_run(state_dtype: str, grads, lr: float) -> torch.Tensor:
    torch.manual_seed(1)
    p = nn.Parameter(torch.randn(N))
    opt = Lion([p], lr=lr, betas=(0.9, 0.99), state_dtype=state_dtype, rounding_seed=3)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def test_lion_bf16_after_a_gradient_reversal_tracks_the_fp32_run():
    """1,000 steps of a gradient 1.3, then 1,000 of -0.2. Lion's update turns when
    0.9 m + 0.1 g changes sign, so when it turns depends on how large m had grown.
    Round to nearest (m stuck at 1.0, not 1.3) turns 21 steps early: every parameter ends
    42 x lr from the fp32-state run. Stochastic rounding's error is unbiased but not small:
    on a slow average (beta2 0.99) each step's rounding noise, up to one bf16 step, is
    forgotten only 1 % per step, so m wanders by a few bf16 steps and the turn comes a few
    steps early or late. Bounds after 2,000 steps (1,024 parameters): mean distance within
    6 x lr (measured 3.3), mean signed difference within 2 x lr (measured -1.0: noise makes
    a threshold crossing come early more often than late), largest within 24 x lr
    (measured 16)."""
    lr = 1e-3
    grads = [torch.full((N,), 1.3)] * 1000 + [torch.full((N,), -0.2)] * 1000
    diff = (_lion_run("bf16", grads, lr) - _lion_run("fp32", grads, lr)) / lr
    assert diff.abs().mean().item() <= 6
    assert abs(diff.mean().item()) <= 2
    assert diff.abs().max().item() <= 24
    # the same two phases with round to nearest, written out: the turn comes 21 steps early
    m = _rtn_lion_momentum(1.3, 1000)[0]
    m32 = torch.tensor(1.3 * (1 - 0.99 ** 1000), dtype=torch.float64)
    turns = {}
    for t in range(1000):
        for name, value in (("rtn", m), ("fp32", m32)):
            if name not in turns and 0.9 * value - 0.02 < 0:
                turns[name] = t
        m = (m * 0.99 - 0.002).to(torch.bfloat16).float()
        m32 = m32 * 0.99 - 0.002
    assert 2 * (turns["fp32"] - turns["rtn"]) > 24  # beyond every bound above


def test_lion_bf16_on_random_gradients_stays_near_the_fp32_run():
    """2,000 steps of independent N(0, 1) gradients. Here the momentum moves by more than a
    bf16 step every step, so nothing stalls; what separates the runs is noise: where
    0.9 m + 0.1 g is within the momentum's rounding error of 0 the sign flips, each flip
    costs 2 x lr, and the flips add up as a random walk (growing as sqrt(steps)).
    Bounds (1,024 parameters): largest distance within 40 x lr (measured 24), mean within
    8 x lr (measured 4.7), mean signed difference within 1 x lr (measured +0.2). Round to
    nearest, whose error has half the variance but stalls, measured 22, 3.5 and 0.0 here:
    on noise alone it is as close; the stall is what the two tests above catch."""
    lr = 1e-3
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(N, generator=gen) for _ in range(2000)]
    diff = (_lion_run("bf16", grads, lr) - _lion_run("fp32", grads, lr)) / lr
    assert diff.abs().max().item() <= 40
    assert diff.abs().mean().item() <= 8
    assert abs(diff.mean().item()) <= 1


# ---- GaLore-AdamW (bf16 moments) ----------------------------------------------------------------

def test_adamw_bf16_second_moment_reaches_a_constant_gradient():
    """Constant gradient 2.0 for 2,000 steps (beta2 0.999): v = 4 (1 - 0.999^t) = 3.459 in
    fp32. The bf16 second moment's mean is within 0.2 % of it (measured 0.06 %), every
    element within 10 % (measured 6 %: rounding noise lingers ~1,000 steps in a 0.999
    average). Round to nearest stalls at 1.0, where 0.001 (g^2 - v) drops below half a
    bf16 step of v: the step size comes out 1.9 x too large."""
    steps, g = 2000, 2.0
    p = nn.Parameter(torch.zeros(N))
    opt = GaLoreAdamW([p], lr=1e-3, betas=(0.9, 0.999), state_dtype="bf16")
    _constant_gradient_steps(opt, p, g, steps)
    v = opt.state[p]["exp_avg_sq"].float()
    expected = g * g * (1 - 0.999 ** steps)
    assert abs(v.mean().item() / expected - 1) < 2e-3
    assert (v / expected - 1).abs().max().item() < 0.1
    rtn = torch.zeros(N, dtype=torch.bfloat16)
    for _ in range(steps):
        rtn = (rtn.float() * 0.999 + 0.001 * g * g).to(torch.bfloat16)
    assert rtn.float().max().item() < 0.5 * expected  # the stall this fixes


def test_adamw_bf16_on_biased_random_gradients_stays_near_the_fp32_run():
    """2,000 steps of gradients (0.3 mu + z) * s per element (a persistent mean mu, noise z,
    log-normal scale s). Bound: mean distance within 8 x lr of the fp32-state run (measured
    3.4 x lr; round to nearest, whose second moment sits 19 % high: 14.5 x lr)."""
    lr = 1e-3
    gen = torch.Generator().manual_seed(7)
    mu, scale = torch.randn(N, generator=gen), torch.exp(torch.randn(N, generator=gen))
    grads = [(0.3 * mu + torch.randn(N, generator=gen)) * scale for _ in range(2000)]

    def run(state_dtype):
        p = nn.Parameter(torch.zeros(N))
        opt = GaLoreAdamW([p], lr=lr, state_dtype=state_dtype)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        return p.detach()

    assert ((run("bf16") - run("fp32")).abs().mean() / lr).item() <= 8


def test_bf16_runs_repeat_bit_for_bit_and_the_seed_matters():
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(N, generator=gen) for _ in range(50)]

    def momentum(seed):
        p = nn.Parameter(torch.zeros(N))
        opt = Lion([p], lr=1e-3, state_dtype="bf16", rounding_seed=seed)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        return opt.state[p]["exp_avg"]

    assert torch.equal(momentum(0), momentum(0))
    assert not torch.equal(momentum(0), momentum(1))
