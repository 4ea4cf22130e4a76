"""Learning-rate schedules at their boundary steps, floors, and warmup given in % of the run."""

import math

import pytest
import torch

import specrun.engine.loop as loop
from specrun.engine.schedule import build_scheduler, fast_forward, lr_factor
from specrun.sections import SchedulePolicy

from .conftest import load_plan, make_run, run_inproc, write_spec

T, W = 100, 10  # total steps, warmup steps


def cos_factor(progress: float, floor: float = 0.0) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def test_constant():
    for step in (0, W - 1, W, T - 1, T, T + 5):
        assert lr_factor("constant", step, T, 0, 0.0, 0.0) == 1.0
    assert lr_factor("constant", 0, None, 0, 0.0, 0.0) == 1.0  # an endless run


def test_linear_warmup():
    f = lambda step: lr_factor("linear_warmup", step, T, W, 0.0, 0.0)  # noqa: E731
    assert f(0) == 0.0
    assert f(W - 1) == pytest.approx((W - 1) / W)
    assert f(W) == 1.0
    assert f(T - 1) == 1.0 and f(T) == 1.0
    # warmup_start: the factor at step 0
    g = lambda step: lr_factor("linear_warmup", step, T, W, 0.1, 0.0)  # noqa: E731
    assert g(0) == pytest.approx(0.1)
    assert g(W // 2) == pytest.approx(0.1 + 0.9 * 0.5)
    assert g(W) == 1.0
    # monotone through the warmup
    assert all(g(s) < g(s + 1) for s in range(W))


def test_cosine():
    f = lambda step: lr_factor("cosine", step, T, 0, 0.0, 0.0)  # noqa: E731
    assert f(0) == 1.0
    assert f(T // 2) == pytest.approx(0.5)
    assert f(T - 1) == pytest.approx(cos_factor((T - 1) / T))
    assert f(T) == pytest.approx(0.0, abs=1e-12)
    assert f(T + 50) == pytest.approx(0.0, abs=1e-12)  # clamped past the end
    assert all(f(s) >= f(s + 1) for s in range(T + 5))


def test_warmup_cosine():
    f = lambda step: lr_factor("warmup_cosine", step, T, W, 0.0, 0.1)  # noqa: E731
    assert f(0) == 0.0
    assert f(W - 1) == pytest.approx((W - 1) / W)
    assert f(W) == pytest.approx(1.0)  # the peak: the cosine starts after the warmup
    assert f(W + (T - W) // 2) == pytest.approx(cos_factor(0.5, 0.1))
    assert f(T - 1) == pytest.approx(cos_factor((T - 1 - W) / (T - W), 0.1))
    assert f(T) == pytest.approx(0.1)
    assert f(T + 7) == pytest.approx(0.1)
    assert min(f(s) for s in range(W, T + 10)) >= 0.1 - 1e-12


def test_min_ratio_floor_through_the_scheduler():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2)
    sched = build_scheduler(opt, SchedulePolicy(type="cosine", min_ratio=0.25), 20, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    lrs = []
    for _ in range(25):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[19 - 1] > 0.05  # step 19: still above the floor
    assert lrs[20 - 1] == pytest.approx(0.05)  # 0.25 of 0.2 at the end of the run
    assert min(lrs) == pytest.approx(0.05)


def test_eta_min_floor_is_absolute():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-3)
    sched = build_scheduler(opt, SchedulePolicy(type="warmup_cosine", eta_min=1e-4), 30, 5)
    assert opt.param_groups[0]["lr"] == 0.0  # step 0 of the warmup
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    for _ in range(30):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_eta_min_is_every_groups_floor():
    """mugrokfast has a Muon group at 10x AdamW's LR: both must end at eta_min."""
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-2}])
    sched = build_scheduler(opt, SchedulePolicy(type="cosine", eta_min=1e-5), 20, 0)
    for _ in range(20):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-5, 1e-5])


def test_fast_forward_puts_a_fresh_scheduler_at_a_step():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, SchedulePolicy(type="warmup_cosine", min_ratio=0.1), 50, 10)
    fast_forward(sched, 30)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_factor("warmup_cosine", 30, 50, 10, 0.0, 0.1))


WARMUP_PCT = """
spec warm
task rule_classification
model mlp {{ width 8; depth 1 }}
loss cross_entropy
optimizer adamw {{ lr 1e-3 }}
batch 4
max_steps {steps}
schedule warmup_cosine {{
  warmup {warmup}
  min_ratio 0.1
}}
"""


def test_warmup_percent_resolves_to_steps(tmp_path):
    _, plan = load_plan(write_spec(tmp_path, WARMUP_PCT.format(steps=80000, warmup="5%")))
    assert plan.settings["schedule"]["warmup"] == 4000
    assert plan.resolved["schedule.warmup"] == "5% of 80,000 steps"
    assert plan.to_json()["settings"]["schedule"]["warmup"] == 4000

    run = make_run(tmp_path, WARMUP_PCT.format(steps=80000, warmup="5%"), "warm_run.train")
    factor = run.scheduler.lr_lambdas[0]
    assert factor(3999) == pytest.approx(3999 / 4000)
    assert factor(4000) == pytest.approx(1.0)
    assert factor(80000) == pytest.approx(0.1)


def test_each_step_uses_the_lr_of_its_index(tmp_path, monkeypatch):
    """Optimizer step k (1-based) runs at base_lr * lr_factor(k - 1)."""
    monkeypatch.chdir(tmp_path)
    used = []
    original = loop.optimizer_step

    def step(run, nonfinite):
        used.append(run.optimizer.param_groups[0]["lr"])
        return original(run, nonfinite)

    monkeypatch.setattr(loop, "optimizer_step", step)
    spec = write_spec(tmp_path, WARMUP_PCT.format(steps=12, warmup="25%"))
    assert run_inproc(spec, tmp_path / "run").code == 0
    expected = [1e-3 * lr_factor("warmup_cosine", k, 12, 3, 0.0, 0.1) for k in range(12)]
    assert used == pytest.approx(expected)
    assert used[0] == 0.0 and used[3] == pytest.approx(1e-3)
